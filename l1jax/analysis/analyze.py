"""One sweep's analysis: exact optima, per-run metrics, per-epoch curve statistics and theory,
computed from a results directory in chunks of seeds that fit a memory budget."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from l1jax.analysis import stats
from l1jax.analysis.metrics import RunMetrics, rate_window, run_metrics
from l1jax.analysis.optima import Optima, exact_optima
from l1jax.analysis.rate_theory import StartTerms, applies, pool_terms, synthetic_terms
from l1jax.analysis.theory import bayes_l1_floor, expected_test_l1
from l1jax.engine.config import Config
from l1jax.engine.plan import seed_chunks
from l1jax.engine.results import Results
from l1jax.engine.sweep import default_memory_budget
from l1jax.engine.table import load_csv

CURVE_BYTES = 8 * 8  # per recorded value of a chunk: float64 copies of train and test, masks


class Curves(NamedTuple):
    """Per grid point and recorded epoch [opt, batch, lr, size, epoch]: statistics over seeds of
    train and test L1 (diverged runs left out), with Student t 95% intervals."""

    train: stats.Summary
    test: stats.Summary


class Analysis(NamedTuple):
    results: Results
    optima: Optima
    metrics: RunMetrics  # per run
    curves: Curves
    k: int  # the rate window, in epochs
    floor: float | None  # Bayes L1 floor; None for csv data (its noise law is unknown)
    theory: np.ndarray | None  # [size] large-n expected test L1 of the exact fit; None for csv
    rate_terms: StartTerms | None  # population terms of the rate theory; None where it does not apply


def has_test_set(cfg: Config) -> bool:
    """Whether the runs recorded a held-out L1."""
    return cfg.data.test_size > 0 if cfg.data.source == "synthetic" else cfg.data.test_fraction > 0


def analyze(res: Results, k: int | None = None, memory_budget: int | None = None,
            quiet: bool = True) -> Analysis:
    """Optima, metrics, curves and theory of one sweep, reading ``res`` (which may be memory
    mapped) one chunk of seeds at a time; ``k`` is the rate window (default ``rate_window``)."""
    cfg = res.config
    k = rate_window(cfg.recorded_epochs) if k is None else k
    budget = memory_budget or default_memory_budget()
    run_shape = res.arrays["diverged_epoch"].shape
    n_rec = len(cfg.recorded_epochs)
    chunks = seed_chunks(cfg.sweep.seeds, math.prod(run_shape[:4]) * n_rec * CURVE_BYTES, budget)
    bar = tqdm(total=2 * cfg.sweep.seeds, desc="analysis", unit="seed", disable=quiet)
    bar.set_postfix_str("exact optima")
    opt = exact_optima(cfg, memory_budget, on_chunk=bar.update)
    bar.set_postfix_str("metrics and curves")
    per_run = {f: np.empty(run_shape, np.float32) for f in RunMetrics._fields}
    train_m = test_m = None
    for s0, s1 in chunks:
        seeds = slice(s0, s1)
        train = np.asarray(res.train_l1[..., seeds, :])
        test = np.asarray(res.test_l1[..., seeds, :])
        div = np.asarray(res.diverged_epoch[..., seeds])
        m = run_metrics(cfg, train, test, div, opt.lstar[:, seeds], k)
        for f, v in m._asdict().items():
            per_run[f][..., seeds] = v
        ok = (div < 0)[..., None]
        part = [stats.moments(np.where(ok, v, np.nan), axis=4) for v in (train, test)]
        train_m = part[0] if train_m is None else stats.merge(train_m, part[0])
        test_m = part[1] if test_m is None else stats.merge(test_m, part[1])
        bar.update(s1 - s0)
    bar.close()
    curves = Curves(stats.t_summary(train_m, cfg.sweep.seeds), stats.t_summary(test_m, cfg.sweep.seeds))
    floor = theory = None
    if cfg.data.source == "synthetic":
        floor = bayes_l1_floor(cfg.data)
        theory = np.asarray(expected_test_l1(cfg.data, np.asarray(cfg.sweep.sizes, float)))
    return Analysis(res, opt, RunMetrics(**per_run), curves, k, floor, theory, rate_terms(cfg))


def rate_terms(cfg: Config) -> StartTerms | None:
    """The rate theory's population terms for a sweep (None if its training is not plain
    gradient steps on the L1 subgradient at a constant rate)."""
    if applies(cfg) is not None:
        return None
    if cfg.data.source == "csv":
        return pool_terms(cfg, load_csv(cfg.data, cfg.sweep.base_seed))
    return synthetic_terms(cfg)
