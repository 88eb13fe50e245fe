"""Config validation: every bad input is one clear line, refused before any compute."""

import subprocess
import sys
from pathlib import Path

import pytest

from l1jax.cli import main
from l1jax.study.study import SWEEPS
from l1jax.engine.config import ConfigError, config_from_dict, load_config


GOOD_CSV = "a,b,t\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(20))
CSVS = {  # name in BAD -> the file's bytes (None: a directory)
    "CSV": GOOD_CSV.encode(),
    "BADCELL": b"a,b,t\n1,2,3\n4,oops,6\n",
    "NANCELL": b"a,b,t\n1,2,nan\n",
    "DUPLICATE": b"a,t,t\n" + b"1,2,3\n" * 20,  # the second t would be a feature: target leak
    "BIGCELL": b"a,b,t\n" + b"1,2,3\n" * 19 + b"1e300,2,3\n",  # finite in float64, inf in float32
    "BIGSUM": b"a,b,t\n" + b"1,2,3e38\n" * 20,  # every cell fits float32, their sum does not
    "LATIN1": "\u00e5,b,t\n1,2,3\n".encode("latin-1"),
    "HUGEFIELD": b"a,b,t\n1,2," + b"3" * 200_000 + b"\n",  # beyond the csv module's field limit
    "DIRECTORY": None,
}
INT32_MAX = 2**31 - 1

BAD = [  # (raw config, words the one-line message must contain)
    ({"model": {"depth": 2}}, "a section among [data], [train], [sweep]"),
    ({"data": {"foo": 1}}, "data.foo is not a known key"),
    ({"train": {"epochs": 0}}, "train.epochs = 0 is not allowed: expected an integer >= 1"),
    ({"train": {"epochs": 2.5}}, "train.epochs = 2.5"),
    ({"train": {"epochs": "100"}}, "train.epochs = '100'"),
    ({"train": {"epochs": True}}, "train.epochs = True"),
    ({"train": {"epochs": INT32_MAX}}, f"train.epochs = {INT32_MAX} is not allowed: expected an integer >= 1 and <= {INT32_MAX - 1}"),
    ({"train": {"epochs": 10**6, "batch_size": ["full", 32, 2]}, "sweep": {"sizes": [100, 10**4]}},
     "train.epochs = 1000000 is not allowed: expected at most 429496 epochs: size 10000 at batch size 2 takes 5000 steps an epoch, and a run's steps are counted in int32"),
    ({"train": {"record_every": 2**31}}, f"train.record_every = 2147483648 is not allowed: expected an integer >= 1 and <= {INT32_MAX}"),
    ({"train": {"batch_size": [32, 2**31]}}, f'train.batch_size = 2147483648 is not allowed: expected "full" or an integer >= 1 and <= {INT32_MAX}'),
    ({"train": {"learning_rate": [0.1, 1e300]}}, "train.learning_rate = 1e+300 is not allowed: expected a finite number > 0.0 in float32 (|value| <= 3.4e+38)"),
    ({"train": {"learning_rate": [0.1, 1e-50]}}, "train.learning_rate = 1e-50 is not allowed: expected a finite number > 0.0 in float32"),  # 0 in float32
    ({"train": {"learning_rate": float("inf")}}, "train.learning_rate = inf is not allowed"),
    ({"train": {"learning_rate": float("nan")}}, "train.learning_rate = nan is not allowed"),
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
    ({"sweep": {"sizes": [3000000000]}}, "sweep.sizes = 3000000000 is not allowed: expected an integer >= 1 and <= 1073741824"),
    ({"sweep": {"sizes": [2**29, 2**29 + 1]}}, "sweep.sizes = [536870912, 536870913] is not allowed: expected sizes summing to at most 1073741824"),
    ({"sweep": {"seeds": 0}}, "sweep.seeds = 0"),
    ({"sweep": {"seeds": 99999999999999999}}, f"sweep.seeds = 99999999999999999 is not allowed: expected an integer >= 1 and <= {INT32_MAX}"),
    ({"sweep": {"base_seed": -1}}, "sweep.base_seed = -1 is not allowed: expected an integer in [0, 2**32)"),
    ({"sweep": {"base_seed": 2**32}}, "sweep.base_seed = 4294967296 is not allowed: expected an integer in [0, 2**32)"),
    ({"data": {"true_weights": [1.0]}}, "data.true_weights = [1.0] is not allowed: expected a list of length n_features = 2"),
    ({"data": {"true_weights": [1.0, "x"]}}, "data.true_weights = 'x' is not allowed: expected a finite number"),
    ({"data": {"true_weights": [1.0, 1e39]}}, "data.true_weights = 1e+39 is not allowed: expected a finite number in float32"),
    ({"data": {"true_weights": 2.0}}, "data.true_weights = 2.0 is not allowed: expected a list of finite numbers"),
    ({"data": {"true_bias": -1e39}}, "data.true_bias = -1e+39 is not allowed"),
    ({"data": {"n_features": 0}}, "data.n_features = 0"),
    ({"data": {"n_features": 2**31}}, f"data.n_features = 2147483648 is not allowed: expected an integer >= 1 and <= {INT32_MAX}"),
    ({"data": {"noise": "cauchy"}}, "data.noise = 'cauchy' is not allowed: expected one of gaussian | laplace | student_t | contaminated"),
    ({"data": {"noise_scale": 0}}, "data.noise_scale = 0 is not allowed: expected a finite number > 0"),
    ({"data": {"noise_scale": float("inf")}}, "data.noise_scale = inf is not allowed"),
    ({"data": {"noise_df": 1.0}}, "data.noise_df = 1.0"),
    ({"data": {"noise_df": 1 + 1e-9}}, "data.noise_df = 1.000000001 is not allowed: expected a finite number > 1.0 in float32"),
    ({"data": {"outlier_fraction": 1.5}}, "data.outlier_fraction = 1.5 is not allowed: expected a finite number >= 0.0 and <= 1.0"),
    ({"data": {"outlier_fraction": float("nan")}}, "data.outlier_fraction = nan is not allowed"),
    ({"data": {"test_size": -1}}, "data.test_size = -1 is not allowed: expected an integer >= 0"),
    ({"data": {"test_size": 2**31}}, f"data.test_size = 2147483648 is not allowed: expected an integer >= 0 and <= {INT32_MAX}"),
    ({"data": {"coupling": "paired"}}, "data.coupling = 'paired'"),
    ({"data": {"source": "parquet"}}, "data.source = 'parquet' is not allowed: expected one of synthetic | csv"),
    ({"data": {"path": "x.csv"}}, 'data.path = \'x.csv\' is not allowed: expected no value: it applies only to source = "csv"'),
    ({"data": {"source": "csv", "path": "missing.csv", "target": "t"}}, "missing.csv' does not exist: expected a readable UTF-8 csv file"),
    ({"data": {"source": "csv", "path": "DIRECTORY", "target": "t"}}, "DIRECTORY' is a directory: expected a readable UTF-8 csv file"),
    ({"data": {"source": "csv", "path": "LATIN1", "target": "t"}}, "LATIN1' is not UTF-8 text (byte 0xe5 at offset 0)"),
    ({"data": {"source": "csv", "path": "HUGEFIELD", "target": "t"}}, "HUGEFIELD is not a valid csv file: field larger than field limit"),
    ({"data": {"source": "csv", "path": "CSV", "target": "y"}}, "data.target = 'y' is not allowed: expected one of the columns"),
    ({"data": {"source": "csv", "path": "CSV"}}, "data.target = None"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "n_features": 2}}, "data.n_features = 2"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t"}, "sweep": {"sizes": [10, 17]}},
     "sweep.sizes = [10, 17] is not allowed: expected sizes <= 16"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "test_fraction": 1.0}}, "data.test_fraction = 1.0"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "test_size": 5}},
     "data.test_size = 5 is not allowed: expected no value: a csv source holds out a fraction of its rows: set data.test_fraction"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "noise": "laplace"}},
     "data.noise = 'laplace' is not allowed: expected no value: a csv source takes its targets, noise included, from the file"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "outlier_fraction": 0.2}}, "data.outlier_fraction = 0.2"),
    ({"data": {"source": "csv", "path": "CSV", "target": "t", "noise_scale": -1}},
     "data.noise_scale = -1 is not allowed: expected no value: a csv source takes its targets"),
    ({"data": {"source": "csv", "path": "DUPLICATE", "target": "t"}}, "DUPLICATE header names 't' more than once: expected distinct column names"),
    ({"data": {"source": "csv", "path": "BIGCELL", "target": "t"}},
     "BIGCELL line 21, column 'a' holds '1e300': expected a finite number with |value| <= 3.4e+38 (float32)"),
    ({"data": {"source": "csv", "path": "BIGSUM", "target": "t"}},
     "BIGSUM column 't' has absolute values summing to 6e+39: expected at most 3.4e+38"),
    ({"data": {"source": "csv", "path": "BADCELL", "target": "t"}}, "line 3, column 'b' holds 'oops': expected a finite number"),
    ({"data": {"source": "csv", "path": "NANCELL", "target": "t"}}, "line 2, column 't' holds 'nan'"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_config_is_one_clear_line(raw, message, tmp_path):
    data = raw.get("data", {})
    name = data.get("path")
    if name in CSVS:
        path = tmp_path / name
        path.mkdir() if CSVS[name] is None else path.write_bytes(CSVS[name])
        raw = {**raw, "data": {**data, "path": str(path)}}
    raw.setdefault("sweep", {}).setdefault("sizes", [10, 16] if data.get("source") == "csv" else [10])
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=tmp_path)
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def _one_line(call, *args) -> str:
    with pytest.raises(ConfigError) as e:
        call(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_and_malformed_files(tmp_path):
    expected = ": expected a readable UTF-8 TOML file"
    assert _one_line(load_config, tmp_path / "nope.toml") == (
        f"config file '{tmp_path / 'nope.toml'}' does not exist{expected}")
    assert _one_line(load_config, tmp_path) == f"config file '{tmp_path}' is a directory{expected}"
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[train] # \u00e9\n".encode("latin-1"))
    assert _one_line(load_config, latin) == (
        f"config file '{latin}' is not UTF-8 text (byte 0xe9 at offset 10){expected}")
    bad = _write(tmp_path / "bad.toml", "[train\nepochs = 3\n")
    assert "is not valid TOML" in _one_line(load_config, bad)
    bom = tmp_path / "bom.toml"
    bom.write_bytes("\ufeff[train]\nepochs = 3\n".encode())
    assert load_config(bom).train.epochs == 3


@pytest.mark.parametrize("locked,what", [("t.csv", "data.path"), ("c.toml", "config file")])
def test_unreadable_files_are_one_line(tmp_path, monkeypatch, locked, what):
    (tmp_path / "t.csv").write_text(GOOD_CSV)
    toml = _write(tmp_path / "c.toml", '[data]\nsource = "csv"\npath = "t.csv"\ntarget = "t"\n'
                  '[sweep]\nsizes = [10]\n')
    assert load_config(toml).data.source == "csv"
    read_text = Path.read_text

    def denied(self: Path, *args, **kwargs) -> str:  # as chmod 000 would, which root ignores
        if self.name == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    message = _one_line(load_config, toml)
    assert message.startswith(f"{what} ") and str(tmp_path / locked) in message
    assert message.endswith("cannot be read (Permission denied): expected a readable UTF-8 "
                            + ("csv" if locked == "t.csv" else "TOML") + " file")


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
        "l1jax: error: train.epochs = -3 is not allowed: expected an integer >= 1 and <= 2147483646"]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_config_that_is_a_directory_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "l1jax", "run", ".", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "l1jax: error: config file '.' is a directory: expected a readable UTF-8 TOML file"]


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
