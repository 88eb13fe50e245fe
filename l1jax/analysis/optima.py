"""Analysis of a sweep: exact optima of its datasets, theory, rate metrics, statistics."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from l1jax.engine import data as D
from l1jax.engine.config import Config
from l1jax.engine.table import load_csv
from l1jax.analysis.metrics import RunMetrics, run_metrics
from l1jax.analysis.optimum import lad_optimum
from l1jax.engine.plan import full_batch_group, seed_chunks
from l1jax.engine.results import Results
from l1jax.engine.step import mean_l1
from l1jax.engine.sweep import compile_program, default_memory_budget, group_inputs, n_features
from l1jax.analysis.theory import bayes_l1_floor, expected_test_l1
from l1jax.engine.train import build_data, build_test


class Optima(NamedTuple):
    """Exact L1 fit of every dataset [size, seed]."""

    theta: np.ndarray  # [size, seed, p]
    lstar: np.ndarray  # minimal train L1
    test_l1: np.ndarray  # held-out L1 of the exact fit (NaN without a test set)


class Analysis(NamedTuple):
    results: Results
    optima: Optima
    metrics: RunMetrics
    floor: float  # Bayes L1 floor (synthetic; NaN for csv)
    theory: np.ndarray  # [size] large-n expected test L1 of the exact fit (NaN for csv)


def exact_optima(cfg: Config, memory_budget: int | None = None) -> Optima:
    """L*, the exact fit and its test L1 for every (size, seed) dataset, in chunks of replicates
    that fit ``memory_budget`` bytes (default: ``sweep.default_memory_budget()``); equal chunks
    share one compiled program."""
    table = load_csv(cfg.data, cfg.sweep.base_seed) if cfg.data.source == "csv" else None
    full = full_batch_group("sgd", cfg.sweep.sizes, cfg.sweep.seeds)
    has_test = cfg.data.source == "csv" or cfg.data.test_size > 0
    p = n_features(cfg, table) + 1
    # packed data, the design rows and IRLS's per-slot outer products
    per_seed = sum(full.tiles_per_dataset) * full.tile * 4 * (p + 2) * (p + 4)
    programs: dict[int, Any] = {}
    parts = []
    for s0, s1 in seed_chunks(cfg.sweep.seeds, per_seed, memory_budget or default_memory_budget()):
        group = dataclasses.replace(full, seeds=s1 - s0)

        def solve(inp, group=group):
            keys = D.streams(inp.base_seed, inp.rep, inp.size, cfg.data.coupling == "nested")
            theta, lstar = lad_optimum(build_data(cfg, group, inp, keys), group.n_datasets)
            if has_test:
                tx, ty = build_test(cfg, inp, keys)
                test = mean_l1(tx, ty, theta[:, None, :])[:, 0]
            else:
                test = jnp.full(lstar.shape, jnp.nan)
            return theta, lstar, test

        inputs = group_inputs(cfg, group, table, s0)
        if group.seeds not in programs:
            programs[group.seeds], _ = compile_program(solve, inputs)
        shape = (len(cfg.sweep.sizes), group.seeds)
        theta, lstar, test = (np.asarray(v) for v in programs[group.seeds](inputs))
        parts.append((theta.reshape(*shape, -1), lstar.reshape(shape), test.reshape(shape)))
    return Optima(*(np.concatenate(v, axis=1) for v in zip(*parts)))


def analyze(res: Results, k: int = 5) -> Analysis:
    """Exact optima, metrics and theory of one sweep."""
    cfg = res.config
    opt = exact_optima(cfg)
    if cfg.data.source == "synthetic":
        floor = bayes_l1_floor(cfg.data)
        theory = np.asarray(expected_test_l1(cfg.data, np.asarray(cfg.sweep.sizes, float)))
    else:
        floor, theory = float("nan"), np.full(len(cfg.sweep.sizes), np.nan)
    return Analysis(res, opt, run_metrics(res, opt.lstar, k), floor, theory)
