"""A whole minibatch epoch of plain SGD as one Pallas kernel (GPU; interpret mode elsewhere).

The XLA path (``train.minibatch_epoch``) scans the rows of a lane schedule: every step of an
epoch is a handful of small kernels, so on a GPU an epoch costs n / B launches whatever the
number of runs.  Here one kernel runs the epoch: each program owns ``lanes`` runs, keeps their
parameters in registers and loops over their steps; a step gathers each run's batch through the
epoch's order (``epoch_order``: the Feistel shuffle of ``data.visit``, the same permutation as
the XLA path), sums the L1 subgradient over the batch and takes the SGD step
``theta + (-lr) * g``, the update ``optax.sgd`` makes (``advance_states`` then moves the optax
states by the steps taken, through optax itself).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from l1jax.engine import data as D
from l1jax.engine.optim import learning_rate

DEFAULT_LANES = 1  # runs per program; tuned on an H200 by scripts/gpu_probe.py
DEFAULT_WARPS = 1


class FusedLayout(NamedTuple):
    """The group's samples for the fused epoch: sample-major rows [slots, d + 1] (x then y), and
    per dataset its first slot, size and shuffle domain; per slot its dataset and position."""

    samples: jax.Array  # [slots, d + 1]
    first_slot: jax.Array  # [D] int32
    size: jax.Array  # [D] int32
    domain: D.Domain  # [D] each
    walk_width: int
    owner: jax.Array  # [slots] int32 dataset of each slot
    position: jax.Array  # [slots] uint32 position of the slot within its dataset


def fused_layout(data: D.Packed, rank: np.ndarray, first_slot: np.ndarray, size: jax.Array,
                 sizes: np.ndarray) -> FusedLayout:
    """The fused view of a group's packed data (host numpy: each tile's ``rank`` within its dataset
    [tiles], each dataset's ``first_slot`` and ``sizes`` [D]).  Per-slot maps are broadcasts, not
    repeats: XLA constant-folds a repeat's cumulative sum, which took 40 s on 6e6 slots."""
    d, tiles, tile = data.x.shape
    samples = jnp.concatenate([data.x.reshape(d, -1), data.y.reshape(1, -1)]).T
    owner = jnp.broadcast_to(data.owner[:, None], (tiles, tile)).reshape(-1)
    position = D.slot_index(jnp.asarray(rank), tile).reshape(-1).astype(jnp.uint32)
    dom = D.domains(sizes)
    return FusedLayout(samples, jnp.asarray(first_slot, jnp.int32), size,
                       D.Domain(*(jnp.asarray(v) for v in dom)), int(np.max(dom.a * dom.b - dom.n)),
                       owner, position)


def epoch_order(layout: FusedLayout, shuffle_keys: jax.Array, epoch: jax.Array) -> jax.Array:
    """[slots] int32: slot ``first + j`` of a dataset holds the slot of the sample its epoch visits
    j-th (``data.visit``, one vectorized pass); slots past its size hold its first slot."""
    keys = jax.vmap(D.round_keys, (0, None))(shuffle_keys, epoch)  # [D, rounds]
    walks = D.cycle_walks(keys, layout.domain, layout.walk_width)  # [D, width]
    o = layout.owner
    dom = D.Domain(*(v[o] for v in layout.domain))
    pos = jnp.minimum(layout.position, dom.n - 1)  # padding slots: any valid position
    sample = D.visit(*D.split_position(pos, dom.b), keys[o], dom, walks[o])
    return layout.first_slot[o] + sample


class RunTable(NamedTuple):
    """Per run (dataset-major, ``lanes``-padded) what the kernel reads: theta [R, p], learning
    rate, total steps, optax step count, and its dataset's first slot and size."""

    theta: jax.Array
    lr: jax.Array
    total: jax.Array
    count: jax.Array
    first: jax.Array
    size: jax.Array


def _sgd_kernel(order_ref, samples_ref, theta_ref, lr_ref, total_ref, count_ref, first_ref,
                size_ref, out_ref, *, lanes: int, batch: int, width: int, n_features: int,
                gradient: str, schedule: str) -> None:
    """One program: ``lanes`` runs through every step of their epoch (see module docstring).
    Loads run ahead of the arithmetic: while step s computes, step s + 1's samples and step
    s + 2's slots are in flight, so a step waits for one memory latency, not two in a row."""
    run = pl.program_id(0) * lanes + jnp.arange(lanes, dtype=jnp.int32)
    n, first = size_ref[run], first_ref[run]
    lr0, total, count = lr_ref[run], total_ref[run], count_ref[run]
    p = n_features + 1
    j = jnp.arange(width, dtype=jnp.int32)[None, :]

    def valid(s: jax.Array) -> jax.Array:  # [lanes, width]: batch positions of step s that exist
        return (j < batch) & (s * batch + j < n[:, None])

    def slots(s: jax.Array) -> jax.Array:
        return order_ref[jnp.where(valid(s), first[:, None] + s * batch + j, 0)]

    def rows(slot: jax.Array) -> tuple[jax.Array, ...]:  # features then y, [lanes, width] each
        return tuple(samples_ref[slot, k] for k in range(p))

    def step(s: jax.Array, carry: tuple) -> tuple:
        theta, x, next_slot = carry
        x_next, after_next = rows(next_slot), slots(s + 2)  # in flight during this step
        r = theta[-1][:, None] - x[-1]
        for k in range(n_features):
            r = r + x[k] * theta[k][:, None]
        if gradient == "l1":
            r = jnp.where(r > 0, 1.0, jnp.where(r < 0, -1.0, 0.0)).astype(r.dtype)
        r = jnp.where(valid(s), r, 0.0)
        sums = [jnp.sum(r * x[k], axis=1) for k in range(n_features)] + [jnp.sum(r, axis=1)]
        used = jnp.clip(n - s * batch, 0, batch)
        mean = [g / jnp.maximum(used, 1).astype(g.dtype) for g in sums]
        grad = mean if gradient == "l1" else [-2.0 * g for g in mean]  # step.gradient_from_sums
        rate = -learning_rate(schedule, lr0, count + s, total)  # optax.sgd: theta + (-lr) * g
        theta = tuple(jnp.where(used > 0, th + rate * g, th) for th, g in zip(theta, grad))
        return theta, x_next, after_next

    theta = tuple(theta_ref[run, k] for k in range(p))
    n_steps = jnp.max((n + batch - 1) // batch)
    theta, _, _ = jax.lax.fori_loop(0, n_steps, step, (theta, rows(slots(0)), slots(1)))
    for k in range(p):
        out_ref[run, k] = theta[k]


def run_epoch(order: jax.Array, samples: jax.Array, runs: RunTable, *, batch: int, gradient: str,
              schedule: str, lanes: int, warps: int, interpret: bool = False) -> jax.Array:
    """New theta [R, p] of every run after one epoch of SGD steps (R a multiple of ``lanes``)."""
    n_runs, p = runs.theta.shape
    kernel = functools.partial(_sgd_kernel, lanes=lanes, batch=batch, width=1 << (batch - 1).bit_length(),
                               n_features=p - 1, gradient=gradient, schedule=schedule)
    params = None if interpret else plgpu.CompilerParams(num_warps=warps, num_stages=1)
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(runs.theta.shape, runs.theta.dtype),
                          grid=(n_runs // lanes,), interpret=interpret, compiler_params=params,
                          name="l1jax_sgd_epoch")(order, samples, *runs)


def run_table(theta: jax.Array, count: jax.Array, lr: jax.Array, total: jax.Array,
              layout: FusedLayout, lanes: int) -> RunTable:
    """Every run's kernel inputs, run r = dataset * H + learning rate, padded to whole programs
    with runs of size 0 (no steps): theta [D, H, p], count [D, H], lr [H], total steps [D]."""
    n_data, n_lr, p = theta.shape
    pad = -(n_data * n_lr) % lanes
    per_dataset = lambda v: jnp.broadcast_to(v[:, None], (n_data, n_lr)).reshape(-1)
    flat = lambda v: jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
    return RunTable(flat(theta.reshape(-1, p)), flat(jnp.tile(lr, n_data)), flat(per_dataset(total)),
                    flat(count.reshape(-1)), flat(per_dataset(layout.first_slot)),
                    flat(per_dataset(layout.size)))
