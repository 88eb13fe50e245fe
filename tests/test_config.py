"""Config validation: every bad input is one clear line, refused before any compute."""

import subprocess
import sys
from pathlib import Path

import pytest

from l1jax.cli import main
from l1jax.study.study import SWEEPS
from l1jax.engine.config import ConfigError, config_from_dict, load_config


def _csv(tmp_path: Path, text: str) -> str:
    p = tmp_path / "d.csv"
    p.write_text(text)
    return str(p)


GOOD_CSV = "a,b,t\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(20))

BAD = [  # (raw config, words the one-line message must contain)
    ({"model": {"depth": 2}}, "a section among [data], [train], [sweep]"),
    ({"data": {"foo": 1}}, "data.foo is not a known key"),
    ({"train": {"epochs": 0}}, "train.epochs = 0 is not allowed: expected an integer >= 1"),
    ({"train": {"epochs": 2.5}}, "train.epochs = 2.5"),
    ({"train": {"epochs": "100"}}, "train.epochs = '100'"),
    ({"train": {"epochs": True}}, "train.epochs = True"),
    ({"train": {"learning_rate": [0.01, -0.1]}}, "train.learning_rate = -0.1 is not allowed: expected a finite number > 0"),
    ({"train": {"learning_rate": 0}}, "train.learning_rate = 0"),
    ({"train": {"learning_rate": []}}, "expected a non-empty list"),
    ({"train": {"learning_rate": [0.1, 0.1]}}, "without repeated values"),
    ({"train": {"optimizer": "lbfgs"}}, "train.optimizer = 'lbfgs' is not allowed: expected one of sgd | momentum"),
    ({"train": {"batch_size": [0]}}, "train.batch_size = 0 is not allowed: expected \"full\" or an integer >= 1"),
    ({"train": {"batch_size": ["half"]}}, "train.batch_size = 'half'"),
    ({"train": {"gradient": "l2"}}, "train.gradient = 'l2' is not allowed: expected one of l1 | seed"),
    ({"train": {"schedule": "step"}}, "train.schedule = 'step'"),
    ({"train": {"init": "uniform"}}, "train.init = 'uniform'"),
    ({"train": {"record_every": 0}}, "train.record_every = 0"),
    ({"sweep": {"sizes": [100, 0]}}, "sweep.sizes = 0 is not allowed: expected an integer >= 1"),
    ({"sweep": {"sizes": [100, -5]}}, "sweep.sizes = -5"),
    ({"sweep": {"sizes": []}}, "sweep.sizes = [] is not allowed: expected a non-empty list"),
    ({"sweep": {"sizes": [10, 10]}}, "without repeated sizes"),
    ({"sweep": {"seeds": 0}}, "sweep.seeds = 0"),
    ({"sweep": {"base_seed": -1}}, "sweep.base_seed = -1 is not allowed: expected an integer in [0, 2**32)"),
    ({"data": {"true_weights": [1.0]}}, "data.true_weights = [1.0] is not allowed: expected a list of length n_features = 2"),
    ({"data": {"true_weights": [1.0, "x"]}}, "expected a list of finite numbers"),
    ({"data": {"n_features": 0}}, "data.n_features = 0"),
    ({"data": {"noise": "cauchy"}}, "data.noise = 'cauchy' is not allowed: expected one of gaussian | laplace | student_t | contaminated"),
    ({"data": {"noise_scale": 0}}, "data.noise_scale = 0 is not allowed: expected a finite number > 0"),
    ({"data": {"noise_df": 1.0}}, "data.noise_df = 1.0"),
    ({"data": {"outlier_fraction": 1.5}}, "data.outlier_fraction = 1.5 is not allowed: expected a finite number >= 0.0 and <= 1.0"),
    ({"data": {"test_size": -1}}, "data.test_size = -1 is not allowed: expected an integer >= 0"),
    ({"data": {"coupling": "paired"}}, "data.coupling = 'paired'"),
    ({"data": {"source": "parquet"}}, "data.source = 'parquet' is not allowed: expected one of synthetic | csv"),
    ({"data": {"path": "x.csv"}}, 'data.path = \'x.csv\' is not allowed: expected no value: it applies only to source = "csv"'),
    ({"data": {"source": "csv", "path": "missing.csv", "target": "t"}}, "expected an existing csv file"),
    ({"data": {"source": "csv", "path": "CSV", "target": "y"}}, "data.target = 'y' is not allowed: expected one of the columns"),
    ({"data": {"source": "csv", "path": "CSV"}}, "data.target = None"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "n_features": 2}}, "data.n_features = 2"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t"}, "sweep": {"sizes": [10, 17]}},
     "sweep.sizes = [10, 17] is not allowed: expected sizes <= 16"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "test_fraction": 1.0}}, "data.test_fraction = 1.0"),
    ({"data": {"source": "csv", "path": "BADCELL", "target": "t"}}, "line 3, column 'b' holds 'oops': expected a finite number"),
    ({"data": {"source": "csv", "path": "NANCELL", "target": "t"}}, "line 2, column 't' holds 'nan'"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_config_is_one_clear_line(raw, message, tmp_path):
    paths = {"CSV": _csv(tmp_path, GOOD_CSV),
             "BADCELL": str(_write(tmp_path / "bad.csv", "a,b,t\n1,2,3\n4,oops,6\n")),
             "NANCELL": str(_write(tmp_path / "nan.csv", "a,b,t\n1,2,nan\n"))}
    data = raw.get("data", {})
    if data.get("path") in paths:
        raw = {**raw, "data": {**data, "path": paths[data["path"]]}}
    raw.setdefault("sweep", {}).setdefault("sizes", [10, 16] if data.get("source") == "csv" else [10])
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = _write(tmp_path / "bad.toml", "[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("path", list(SWEEPS.values()))
def test_embedded_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path):
    cfg = _write(tmp_path / "c.toml", "[train]\nepochs = -3\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "l1jax", "run", str(cfg), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "l1jax: error: train.epochs = -3 is not allowed: expected an integer >= 1"]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run"])
    assert e.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_cli_accelerator_workload_on_the_cpu_is_refused_before_measuring(tmp_path, capsys):
    record, docs = tmp_path / "r.json", tmp_path / "b.md"
    code = main(["bench", "--workload", "bench-lr", "--json", str(record), "--docs", str(docs)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "l1jax: error: --workload bench-lr is sized for an accelerator (1.8e+12 sample-epochs): "
        "run it on a GPU, or pass --force"]
    assert not record.exists() and not docs.exists()
