"""``metrics.csv``: one row per grid point (optimizer, batch, learning rate, size) and metric,
with the mean over seeds, its spread and Student t 95% interval, in types pandas reads cleanly."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np

from l1jax.analysis import stats
from l1jax.analysis.analyze import Analysis, has_test_set
from l1jax.analysis.twin import SweepTwin, seed_mean
from l1jax.engine.files import atomic_file
from l1jax.engine.results import batch_columns

COLUMNS = ("sweep", "optimizer", "full_batch", "batch_size", "learning_rate", "size", "metric",
           "mean", "sd", "se", "ci_low", "ci_high", "n_runs", "n_diverged", "uses_lstar", "n_certified")

# metric name -> (field of RunMetrics or Optima, what it is); test-set metrics only with a test set
METRICS = {
    "initial_rate_per_epoch": ("rate_epoch", "(L(0) - L(k)) / k, train L1 per epoch"),
    "initial_rate_per_step": ("rate_step", "the same per optimizer step"),
    "final_train_l1": ("final_train", "train L1 after the last epoch"),
    "final_test_l1": ("final_test", "held-out L1 after the last epoch"),
    "generalization_gap": ("gap", "final test L1 - final train L1"),
    "suboptimality": ("suboptimality", "final train L1 - L* (the dataset's exact minimum)"),
    "epochs_to_50": ("epochs_50", "first recorded epoch closing 50% of L(0) - L*, runs that did"),
    "epochs_to_90": ("epochs_90", "first recorded epoch closing 90% of L(0) - L*, runs that did"),
    "steps_to_50": ("steps_50", "epochs_to_50 in optimizer steps"),
    "steps_to_90": ("steps_90", "epochs_to_90 in optimizer steps"),
    "closed_90": ("closed_90", "share of runs that closed 90% of the gap"),
    "exact_optimum": ("lstar", "L*, the least train L1 of the dataset (same for every optimizer, "
                      "batch and learning rate)"),
    "exact_fit_test_l1": ("test_l1", "held-out L1 of the exact L1 fit"),
}
TEST_METRICS = ("final_test_l1", "generalization_gap", "exact_fit_test_l1")
OPTIMA = ("lstar", "test_l1")  # fields of Optima: they do not depend on training, nor diverge
# metrics computed from the exact optimum L*: exact only where its certificate holds
USES_LSTAR = ("suboptimality", "epochs_to_50", "epochs_to_90", "steps_to_50", "steps_to_90",
              "closed_90", "exact_optimum", "exact_fit_test_l1")


def metric_names(a: Analysis) -> list[str]:
    """The metrics that apply to this sweep (test-set metrics need a test set)."""
    test = has_test_set(a.results.config)
    return [m for m in METRICS if test or m not in TEST_METRICS]


def metric_values(a: Analysis, name: str) -> np.ndarray:
    """Per-run values of a metric, run-shaped (the optima broadcast over optimizer, batch, lr)."""
    field = METRICS[name][0]
    if field in OPTIMA:
        per_dataset = getattr(a.optima, field)
        return np.broadcast_to(per_dataset, a.metrics.rate_epoch.shape)
    return getattr(a.metrics, field)


def metric_summary(a: Analysis, name: str) -> stats.Summary:
    """Statistics over seeds of a metric at every grid point [opt, batch, lr, size]."""
    v = metric_values(a, name)
    return stats.t_summary(stats.moments(v, axis=-1), v.shape[-1])


def rows(a: Analysis, sweep: str) -> Iterator[list[object]]:
    """metrics.csv rows, grid point by grid point; ``n_certified`` counts the point's datasets
    whose L* is certified, so a mean of a ``uses_lstar`` metric below n_certified = seeds holds
    unverified optima, and says so on its own row."""
    co = a.results.coords
    n_div = a.results.diverged.sum(axis=-1)
    n_cert = a.optima.certified.sum(axis=-1)  # [size]
    sums = {m: metric_summary(a, m) for m in metric_names(a)}
    for (o, b, l, s), nd in np.ndenumerate(n_div):
        full, bs = batch_columns(co["batch_size"][b])
        for m, sm in sums.items():
            yield [sweep, co["optimizer"][o], full, bs, co["learning_rate"][l], co["size"][s], m,
                   *(sm.mean[o, b, l, s], sm.std[o, b, l, s], sm.sem[o, b, l, s],
                     sm.ci_low[o, b, l, s], sm.ci_high[o, b, l, s]),
                   int(sm.n[o, b, l, s]), 0 if METRICS[m][0] in OPTIMA else int(nd),
                   m in USES_LSTAR, int(n_cert[s])]


def _cell(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.9g}"
    return str(v)


def write_metrics_csv(a: Analysis, path: Path, sweep: str) -> Path:
    """Write metrics.csv atomically; an undefined value (an sd of one run) is an empty cell."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([_cell(c) for c in r] for r in rows(a, sweep))
    return path


THEORY_COLUMNS = ("sweep", "optimizer", "full_batch", "batch_size", "learning_rate", "size", "epoch",
                  "steps", "twin_l1", "predicted_train_l1", "predicted_test_l1", "measured_train_l1",
                  "measured_se")


def write_theory_csv(a: Analysis, tw: SweepTwin, path: Path, sweep: str) -> Path:
    """theory.csv: one row per grid point and recorded epoch: the optimizer steps taken, the
    mean over seeds of the runs' twins (population L1) and of the predicted train and held-out
    L1, against the measured mean train L1 and its standard error (the same non-diverged seeds)."""
    co = a.results.coords
    twin, train, test = (seed_mean(v, tw.ok) for v in (tw.curves.loss, tw.predicted.train, tw.predicted.test))
    measured = a.curves.train
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(THEORY_COLUMNS)
        for (o, b, l, s, e), v in np.ndenumerate(twin):
            full, bs = batch_columns(co["batch_size"][b])
            w.writerow([_cell(c) for c in (
                sweep, co["optimizer"][o], full, bs, co["learning_rate"][l], co["size"][s], co["epoch"][e],
                int(tw.curves.steps[b, s, e]), v, train[o, b, l, s, e], test[o, b, l, s, e],
                measured.mean[o, b, l, s, e], measured.sem[o, b, l, s, e])])
    return path
