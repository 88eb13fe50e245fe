"""`l1jax report` on small sweeps of each kind: every file is written, labels match the results,
and metrics.csv equals a plain NumPy computation from results.npz."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from l1jax.analysis import claims as C
from l1jax.analysis.report import report
from l1jax.cli import main
from l1jax.engine.config import ConfigError, config_from_dict
from l1jax.engine.results import Results
from l1jax.engine.sweep import run_to_dir
from l1jax.study.study import FigureWorker

FILES = ["claims.json", "figures/curves.png", "figures/final.png", "figures/heatmaps.png",
         "figures/rate.png", "figures/spread.png", "figures/steps.png", "metrics.csv", "report.md",
         "theory.csv"]


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _read_metrics(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DtypeWarning (mixed column types) fails the test
        return pd.read_csv(path)


@pytest.fixture(scope="module")
def two_optimizers(tmp_path_factory):
    """adam and sgd, full batch and minibatch, laplace noise, nested coupling, a test set."""
    out = tmp_path_factory.mktemp("two") / "run"
    cfg = config_from_dict({"data": {"noise": "laplace", "test_size": 150, "coupling": "nested"},
                            "train": {"epochs": 8, "optimizer": ["adam", "sgd"], "learning_rate": [0.05, 0.3],
                                      "batch_size": ["full", 16]},
                            "sweep": {"sizes": [20, 60], "seeds": 5}})
    run_to_dir(cfg, out)
    assert main(["report", str(out), "--quiet"]) == 0
    return out


def test_report_writes_every_file_with_labels_from_the_results(two_optimizers):
    out = two_optimizers / "report"
    assert _files(out) == FILES
    assert all((out / f).stat().st_size > 5000 for f in FILES if f.endswith(".png"))
    text = (out / "report.md").read_text()
    assert "noise Laplace(0, s)" in text and "optimizers adam, sgd" in text
    assert not re.search(r"\bnan\b", text, re.I)
    res = Results.load(two_optimizers)
    df = _read_metrics(out / "metrics.csv")
    assert set(df.optimizer) == {"adam", "sgd"}
    assert df.full_batch.dtype == bool and df.batch_size.dtype == np.int64
    assert sorted(df.groupby(["full_batch", "batch_size"]).groups) == [(False, 16), (True, 0)]
    # adam's row in the table of report.md carries adam's numbers
    final = res.train_l1[0, 1, 1, 0, :, -1]  # adam, batch 16, lr 0.3, n = 20
    grid = text.split("## The whole curve")[0]  # the twin's table has rows with the same first cells
    row = [l for l in grid.splitlines() if l.startswith("| adam | minibatch 16 | 0.3 | 20 |")]
    assert len(row) == 1 and f"{final.mean():.4g} [" in row[0]
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert [c["key"] for c in claims] == ["faster_small", "slower_steadier_large", "lowest_final_test",
                                          "lowest_final_train", "variable_small", "lr_interacts"]
    assert {e["outcome"] for c in claims for e in c["evidence"]} <= set(C.OUTCOMES)
    settings = {e["setting"] for c in claims for e in c["evidence"]}
    assert {"adam, full batch, lr 0.3", "sgd, batch 16, lr 0.05", "adam, batch 16"} <= settings


def test_figures_drawn_beside_are_the_figures_drawn_in_process(two_optimizers, tmp_path):
    """The study's figure worker (a spawned process) writes the same PNG bytes as the report's own
    drawing, and a drawing that fails there raises from ``wait``."""
    worker = FigureWorker()
    r = report(two_optimizers, tmp_path / "beside", draw=worker.draw)
    worker.draw(r.analysis._replace(results=None), tmp_path / "broken", None)
    with pytest.raises(AttributeError):
        worker.wait()
    assert [f.name for f in r.figures] == ["curves.png", "steps.png", "rate.png", "final.png", "spread.png",
                                           "heatmaps.png"]
    for f in r.figures:
        assert f.read_bytes() == (two_optimizers / "report" / "figures" / f.name).read_bytes(), f.name
    assert "the figures drawn beside the study" in r.report.read_text()


def test_theory_csv_pairs_each_grid_point_and_epoch_with_the_measured_curve(two_optimizers):
    res = Results.load(two_optimizers)
    df = _read_metrics(two_optimizers / "report" / "theory.csv")
    assert tuple(df.columns) == ("sweep", "optimizer", "full_batch", "batch_size", "learning_rate", "size",
                                 "epoch", "steps", "twin_l1", "predicted_train_l1", "predicted_test_l1",
                                 "measured_train_l1", "measured_se")
    assert len(df) == res.train_l1[..., 0, :].size
    row = df[(df.optimizer == "adam") & (df.batch_size == 16) & (df.learning_rate == 0.3) & (df["size"] == 60)]
    ok = ~res.diverged[0, 1, 1, 1]
    v = res.train_l1[0, 1, 1, 1][ok].astype(np.float64)  # adam, batch 16, lr 0.3, n = 60
    np.testing.assert_allclose(row.measured_train_l1, v.mean(0), rtol=1e-6)
    np.testing.assert_allclose(row.measured_se, v.std(0, ddof=1) / np.sqrt(ok.sum()), rtol=1e-5)
    assert list(row.steps) == [4 * e for e in range(9)]  # ceil(60 / 16) steps an epoch
    assert np.isfinite(df[["twin_l1", "predicted_train_l1", "predicted_test_l1"]]).all().all()
    start = df[df.epoch == 0]  # before any step the prediction is the population L1 at the start
    assert (start.twin_l1 == start.predicted_train_l1).all()
    claims = json.loads((two_optimizers / "report" / "claims.json").read_text())["claims"]
    assert claims[0]["twin_explains"]["explains"] in (True, False)
    assert claims[4]["twin_explains"]["explains"] is None  # spreads: not what the twin predicts


def test_metrics_csv_equals_numpy_on_results(two_optimizers):
    res = Results.load(two_optimizers)
    df = _read_metrics(two_optimizers / "report" / "metrics.csv").set_index(
        ["optimizer", "batch_size", "learning_rate", "size", "metric"])
    ok = res.diverged_epoch < 0
    for (o, opt), (b, bs), (l, lr), (s, n) in [((0, "adam"), (1, 16), (0, 0.05), (1, 60)),
                                               ((1, "sgd"), (0, 0), (1, 0.3), (0, 20))]:
        runs = ok[o, b, l, s]
        want = {"final_train_l1": res.train_l1[o, b, l, s, :, -1],
                "final_test_l1": res.test_l1[o, b, l, s, :, -1],
                "generalization_gap": res.test_l1[o, b, l, s, :, -1] - res.train_l1[o, b, l, s, :, -1],
                "initial_rate_per_epoch": (res.train_l1[o, b, l, s, :, 0] - res.train_l1[o, b, l, s, :, 5]) / 5}
        for metric, v in want.items():
            v = v.astype(np.float64)[runs]
            row = df.loc[(opt, bs, lr, n, metric)]
            half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
            np.testing.assert_allclose([row["mean"], row["sd"], row["ci_low"], row["ci_high"]],
                                       [v.mean(), v.std(ddof=1), v.mean() - half, v.mean() + half],
                                       rtol=2e-6, atol=1e-8)
            assert row["n_runs"] == v.size and row["n_diverged"] == (~runs).sum()
    # the certified-optimum flags: 5 seeds per size, all certified on this gaussian design
    assert df.n_certified.dtype == np.int64 and (df.n_certified == 5).all()
    assert df.uses_lstar.dtype == bool
    assert set(df.index.get_level_values("metric")[df.uses_lstar]) == {
        "suboptimality", "epochs_to_50", "epochs_to_90", "steps_to_50", "steps_to_90", "closed_90",
        "exact_optimum", "exact_fit_test_l1"}
    certified = json.loads((two_optimizers / "report" / "claims.json").read_text())["optima_certified"]
    assert certified == [{"size": 20, "certified": 5, "datasets": 5}, {"size": 60, "certified": 5, "datasets": 5}]


@pytest.mark.parametrize("kind", ["csv_one_size", "diverged_no_test_set_one_seed"])
def test_report_of_other_kinds_says_what_does_not_apply(tmp_path, monkeypatch, kind):
    if kind == "csv_one_size":  # a csv path relative to the config, run and reported from elsewhere
        rng = np.random.default_rng(1)
        x = rng.normal(size=(50, 3))
        rows = ["u,v,w,target"] + [f"{a},{b},{c},{a - 2 * b + rng.normal()}" for a, b, c in x]
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "t.csv").write_text("\n".join(rows) + "\n")
        (tmp_path / "conf" / "c.toml").write_text(
            '[data]\nsource = "csv"\npath = "t.csv"\ntarget = "target"\n[train]\nepochs = 6\n'
            'learning_rate = [0.1, 0.2]\n[sweep]\nsizes = [30]\nseeds = 4\n')
        monkeypatch.chdir(tmp_path / "conf")
        assert main(["run", "c.toml", "--out", str(tmp_path / "run"), "--quiet"]) == 0
        monkeypatch.chdir(tmp_path)
    else:  # the article's update at lr 1e8 overflows: a grid point where every run diverged
        raw = {"data": {"test_size": 0}, "train": {"epochs": 6, "gradient": "seed", "learning_rate": [0.01, 1e8]},
               "sweep": {"sizes": [10, 30], "seeds": 1}}
        run_to_dir(config_from_dict(raw), tmp_path / "run")
    rep = report(tmp_path / "run", tmp_path / "rep")
    twinless = {"figures/steps.png", "theory.csv"}  # the article's update has no population twin
    assert _files(tmp_path / "rep") == [f for f in FILES if kind == "csv_one_size" or f not in twinless]
    text = rep.report.read_text()
    assert not re.search(r"\b(nan|inf)\b", text, re.I)
    df = _read_metrics(rep.metrics)
    metrics = set(df.metric)
    if kind == "csv_one_size":
        assert "csv file `t.csv`, target `target`" in text and "synthetic" not in text
        assert "No Bayes floor or theory for csv data" in text and "Bayes L1 floor" not in text
        assert all(c.verdict == C.NOT_APPLICABLE for c in rep.claim_list)
        assert "one size (n = 30)" in text and "final_test_l1" in metrics
        with open(tmp_path / "conf" / "t.csv", "a") as f:  # the data file changes after the run
            f.write("1,2,3,4\n")
        with pytest.raises(ConfigError, match="t.csv has changed since the run"):
            report(tmp_path / "run", tmp_path / "rep2")
    else:
        assert "no test set" in text and "final train L1 | final test L1" not in text
        assert "final_test_l1" not in metrics and "generalization_gap" not in metrics
        lost = df[(df.learning_rate == 1e8) & (df.metric == "final_train_l1")]
        assert (lost.n_diverged == 1).all() and lost["mean"].isna().all() and (lost.n_runs == 0).all()
        exact = df[df.metric == "exact_optimum"]
        assert (exact.n_diverged == 0).all() and (exact.n_runs == 1).all()
        assert "| 1e+08 | 10 | no finite run |" in text
        assert rep.claim_list[-1].verdict == C.INCONCLUSIVE and not rep.claim_list[-1].evidence


def test_report_refuses_a_directory_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    (tmp_path / "chunks").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    assert "unfinished run" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["report", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_report_into_an_unwritable_place_is_one_line(two_optimizers, capsys):
    for bad in (two_optimizers / "results.npz", "/proc/l1jax-report"):
        assert main(["report", str(two_optimizers), "--out", str(bad), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("l1jax: error:") and err.count("\n") == 0
