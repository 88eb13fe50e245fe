"""Exact optima of a sweep's datasets: L*, the exact L1 fit, its held-out L1 and whether its
optimality certificate holds, per (size, seed) (``optimum.py``: stage 1 in the compiled program,
stage 2 on the host)."""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import numpy as np

from l1jax.engine import data as D
from l1jax.engine.config import Config
from l1jax.engine.table import load_csv
from l1jax.analysis.optimum import finish, lad_vertex
from l1jax.engine.plan import full_batch_group, seed_chunks
from l1jax.engine.sweep import compile_program, default_memory_budget, group_inputs, n_features
from l1jax.engine.train import TrainInputs, build_data, build_test


# Datasets one exact-optimum program solves at most.  On the CPU backend (jax 0.10.2) a program of
# 24000 or more datasets (6000 seeds x 4 sizes) hung with every thread idle, while 20000 finished
# in 10 s; chunks below that size cost nothing measurable (25000 seeds x 4 sizes: 21 s).
MAX_DATASETS = 16384


class Optima(NamedTuple):
    """Exact L1 fit of every dataset [size, seed]."""

    theta: np.ndarray  # [size, seed, p]
    lstar: np.ndarray  # minimal train L1
    test_l1: np.ndarray  # held-out L1 of the exact fit (NaN without a test set)
    certified: np.ndarray  # bool: the float64 optimality certificate holds (else L* is unverified)


def held_out_l1(theta: np.ndarray, x: jax.Array, y: jax.Array) -> np.ndarray:
    """Mean |x.w + b - y| in float64 of each fit theta [D, p] over its held-out set: x [d, D or 1,
    M] feature-major, y [D or 1, M] (``build_test``): [D]."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    pred = theta[:, -1:] + sum(theta[:, j, None] * x[j] for j in range(len(x)))
    return np.mean(np.abs(pred - y), axis=1)


def exact_optima(cfg: Config, memory_budget: int | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> Optima:
    """L*, the exact fit and its test L1 for every (size, seed) dataset, in chunks of replicates
    that fit ``memory_budget`` bytes (default: ``sweep.default_memory_budget()``); equal chunks
    share one compiled program; ``on_chunk(seeds)`` is told of each finished chunk."""
    table = load_csv(cfg.data, cfg.sweep.base_seed) if cfg.data.source == "csv" else None
    full = full_batch_group("sgd", cfg.sweep.sizes, cfg.sweep.seeds)
    has_test = cfg.data.source == "csv" or cfg.data.test_size > 0
    p = n_features(cfg, table) + 1
    # packed data, the design rows and IRLS's per-slot outer products
    per_seed = full.replicate_slots * 4 * (p + 2) * (p + 4)
    budget = min(memory_budget or default_memory_budget(),
                 per_seed * max(1, MAX_DATASETS // len(cfg.sweep.sizes)))
    chunks = seed_chunks(cfg.sweep.seeds, per_seed, budget)
    # every chunk runs at the first one's width (the last computes a few extra replicates and
    # drops them), so one program serves all
    group = dataclasses.replace(full, seeds=chunks[0][1] - chunks[0][0])

    def vertex(inp: TrainInputs) -> tuple[jax.Array, ...]:
        """Stage 1's bases and fits, the data they are of and the held-out sets, if any."""
        keys = D.streams(inp.base_seed, inp.rep, inp.size, cfg.data.coupling == "nested")
        data = build_data(cfg, group, inp, keys)
        basis, theta, _ = lad_vertex(data, group.n_datasets)
        return basis, theta, data, *(build_test(cfg, inp, keys) if has_test else ())

    program = None
    parts = []
    shape = (len(cfg.sweep.sizes), group.seeds)
    for s0, s1 in chunks:
        inputs = group_inputs(cfg, group, table, s0)
        if program is None:
            program, _ = compile_program(vertex, inputs)
        basis, theta, data, *test_set = program(inputs)
        fit = finish(data, group.n_datasets, basis, theta)
        test = held_out_l1(fit.theta, *test_set) if has_test else np.full(fit.loss.shape, np.nan)
        keep = slice(0, s1 - s0)
        parts.append((fit.theta.reshape(*shape, -1)[:, keep], fit.loss.reshape(shape)[:, keep],
                      test.reshape(shape)[:, keep], fit.certified.reshape(shape)[:, keep]))
        if on_chunk is not None:
            on_chunk(s1 - s0)
    theta, lstar, test, certified = (np.concatenate(v, axis=1) for v in zip(*parts))
    return Optima(theta.astype(np.float32), lstar.astype(np.float32), test.astype(np.float32), certified)
