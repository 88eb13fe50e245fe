"""The weak cases of the second hardening round (issue 22): each is one line with exit 2, a
warning that costs only the cache, or a truthful reason, and leaves nothing of the user's
changed."""

import os

import numpy as np
import pytest

from l1jax.analysis import claims as C
from l1jax.engine import cache
from l1jax.engine.config import config_from_dict
from l1jax.engine.results import Results
from l1jax.engine.sweep import run_to_dir
from tests.test_cli_errors import CONFIG, _one_line


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("toml", ['[train]\nlearning_rate = "' + "x" * 100_000 + '"\n',
                                  "[train]\n" + "k" * 100_000 + " = 1\n"])
def test_a_huge_value_is_named_not_echoed(tmp_path, capsys, toml):
    path = tmp_path / "long.toml"
    path.write_text(toml)
    line = _one_line(capsys, ["run", path, "--out", tmp_path / "o"])
    assert len(line) < 500 and "100,0" in line and "characters" in line, line[:500]


@pytest.mark.parametrize("data", ["noise_scale = 1e38", "true_weights = [3e38, 3e38]",
                                  "true_bias = 1e30"])
def test_targets_beyond_float32_are_refused(tmp_path, capsys, data):
    path = tmp_path / "big.toml"
    path.write_text(f"[data]\n{data}\n")
    line = _one_line(capsys, ["run", path, "--out", tmp_path / "o"])
    assert "beyond float32" in line and not (tmp_path / "o").exists()


def test_the_largest_allowed_targets_stay_finite():
    """At the limit (noise_scale 1e20, so targets ~1e20 x the noise draw), a run's losses are
    finite: the limit refuses only what would overflow."""
    from l1jax.engine.sweep import run

    cfg = config_from_dict({"data": {"noise_scale": 1e20, "test_size": 20},
                            "train": {"epochs": 2}, "sweep": {"sizes": [8], "seeds": 2}})
    res = run(cfg)
    assert np.isfinite(res.train_l1).all() and np.isfinite(res.test_l1).all()


def test_empty_out_is_refused_not_the_current_directory(tmp_path, capsys, conf, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for argv in (["run", conf, "--out", ""], ["study", "--out", ""], ["report", tmp_path, "--out", ""]):
        assert "--out is empty" in _one_line(capsys, argv)
    assert sorted(os.listdir(tmp_path)) == before


def test_report_out_on_a_file_is_one_line(tmp_path, capsys, conf):
    run_to_dir(config_from_dict({"data": {"test_size": 0}, "train": {"epochs": 3},
                                 "sweep": {"sizes": [10], "seeds": 2}}), tmp_path / "r")
    (tmp_path / "f").write_text("mine")
    assert "is not a directory" in _one_line(capsys, ["report", tmp_path / "r", "--out", tmp_path / "f"])
    assert "lies under" in _one_line(capsys, ["report", tmp_path / "r", "--out", tmp_path / "f" / "sub"])
    assert (tmp_path / "f").read_text() == "mine"


def test_compilation_cache_that_cannot_be_used_is_a_warning(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "file", tmp_path / "file" / "below"):
        assert cache.enable_compilation_cache(path) is None
        err = capsys.readouterr().err
        assert err.startswith("l1jax: warning: the compilation cache") and err.count("\n") == 1


def test_read_only_compilation_cache_is_a_warning(tmp_path, capsys, monkeypatch):
    """A read-only mount (os.access says no; as root a chmod would not show it)."""
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    assert cache.enable_compilation_cache(tmp_path / "ro") is None
    assert "cannot be used" in capsys.readouterr().err


def test_a_refused_run_leaves_no_index_for_the_next_config(tmp_path, capsys, conf):
    out = tmp_path / "o"
    line = _one_line(capsys, ["run", conf, "--out", out, "--memory-budget", "1"])
    assert "memory budget" in line
    assert not (out / "chunks").exists()
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("epochs = 3", "epochs = 4"))
    assert main_ok(["run", other, "--out", out, "--quiet"])


def main_ok(argv) -> bool:
    from l1jax.cli import main

    return main([str(a) for a in argv]) == 0


def test_export_never_replaces_another_runs_files(tmp_path, capsys):
    cfg = config_from_dict({"data": {"test_size": 0}, "train": {"epochs": 3}, "sweep": {"sizes": [10], "seeds": 2}})
    for name in ("a", "b"):
        run_to_dir(cfg, tmp_path / name)
    before = (tmp_path / "b" / "results.npz").read_bytes()
    for target in ("results.npz", "manifest.json", "chunks/x.csv"):
        line = _one_line(capsys, ["export", tmp_path / "a", "--csv", tmp_path / "b" / target])
        assert "results directory of another run" in line
    assert (tmp_path / "b" / "results.npz").read_bytes() == before
    Results.load(tmp_path / "b")


def test_claim_3a_of_an_all_diverged_sweep_with_a_test_set_says_so(tmp_path):
    """The claim reads only the final test L1 (all NaN once every run diverged) and the config:
    a sweep with a test set says that every run diverged, not that there is no test set."""
    from types import SimpleNamespace

    from l1jax.engine.sweep import run

    cfg = config_from_dict({"data": {"test_size": 20}, "train": {"epochs": 3, "learning_rate": [3e38]},
                            "sweep": {"sizes": [8, 16], "seeds": 2}})
    res = run(cfg)
    assert res.diverged.all()
    final_test = np.where(res.diverged, np.nan, res.test_l1[..., -1])
    claim = C.claim_lowest_final_test(SimpleNamespace(results=res, metrics=SimpleNamespace(final_test=final_test)))
    assert claim.verdict == C.NOT_APPLICABLE and "every run diverged" in claim.detail
