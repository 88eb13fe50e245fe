"""Time the CPU kernels' parts on one core, beside the Numba peer's loops: the minibatch order
(an epoch's round keys, cycle walks and network; ns a position), the SGD epochs kernel and the
peer's minibatch epoch (ns a sample; then its shuffle and its steps apart), the full-batch
pass and the peer's full-batch loop (ns a sample), a synthetic sample's generation (its bits in the Numba kernel, then the samples as
``build_data`` makes them, bits included, with erfinv and x @ w alone; ns a sample).  One
dataset of n = 32768 samples, one learning rate, best of three; the process is pinned to one
core (XLA's thread pool included).  The Intel Xeon's and the AMD EPYC's numbers in the
README's Speed section that take a kernel apart come from here: `python scripts/kernel_parts.py`."""

import os
import time

if hasattr(os, "sched_setaffinity"):  # one core for everything, XLA's thread pool included, before JAX starts
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import jax
import jax.numpy as jnp
import numpy as np
from numba import njit

from l1jax import peers
from l1jax.engine import data as D
from l1jax.engine.config import DataConfig
from l1jax.engine.kernels import cpu as K
from l1jax.engine.sweep import host_description

N, EPOCHS, BATCH = 32768, 20, 32


@njit
def orders(order, first_round, lanes, n, a, b, keys, walks, epochs):
    """Every epoch's order, as the SGD kernel computes it."""
    for epoch in range(epochs):
        K._start_epoch(np.zeros((1, 2), np.uint32), 0, epoch, n, a, b, keys, walks, order, first_round, lanes)


@njit
def peer_shuffles(order, epochs):
    """The Numba peer's Fisher-Yates shuffle alone, once an epoch, on one run's order."""
    state = np.uint64(1)
    for _ in range(epochs):
        state = peers._shuffle(order, state)


@njit
def peer_steps(x, y, order, lr, epochs):
    """The Numba peer's minibatch steps alone, every epoch through the same (shuffled) order."""
    w1 = w2 = b = np.float32(0.0)
    for _ in range(epochs):
        w1, w2, b = peers._epoch(x[0], x[1], y, order, w1, w2, b, lr, BATCH)
    return w1


def best(fn, *args) -> float:
    fn(*args)  # compile
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def generation_rows() -> dict[str, float]:
    """Seconds a sample of the default synthetic data (two features, gaussian noise) takes: its
    bits in the Numba kernel, and the samples from them (bits included) as ``build_data`` makes
    them, then erfinv and ``x @ w`` alone."""
    tiles, tile = N // 512, 512
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(tiles))
    j = jnp.arange(tiles * tile, dtype=jnp.int32).reshape(tiles, tile)
    v = jax.random.uniform(jax.random.key(0), (tiles, tile), minval=-0.99, maxval=0.99)
    xs, w = jax.random.uniform(jax.random.key(0), (tiles, tile, 2)), jnp.asarray([2.0, 3.0])
    parts = {
        "synthetic bits, Numba kernel (ns a sample)": (jax.jit(lambda k, i: K.sample_bits(k, i, 3, False)[0]), (keys, j)),
        "synthetic samples, bits included (ns a sample)": (
            jax.jit(lambda k, i: D.synthetic_rows(k, i, DataConfig(), K.sample_bits)), (keys, j)),
        "  of which erfinv (ns a sample)": (jax.jit(jax.scipy.special.erfinv), (v,)),
        "  of which x @ w (ns a sample)": (jax.jit(lambda x: x @ w), (xs,)),
    }
    return {name: best(lambda: jax.block_until_ready(fn(*args))) / (tiles * tile) for name, (fn, args) in parts.items()}


def main() -> None:
    rng = np.random.default_rng(0)
    a, b = D.grid_sides(N)
    keys, walks = np.empty(8, np.uint32), np.zeros(max(a * b - N, 1), np.uint32)
    order, first_round, lanes = np.empty(N, np.int32), np.empty(b, np.uint32), np.empty((2, K.CHUNK), np.uint32)
    x, y = rng.random((2, N), dtype=np.float32), rng.random(N, dtype=np.float32)
    theta = rng.standard_normal((1, 1, 3)).astype(np.float32)
    lr = np.array([0.01], np.float32)
    table, key_data = np.array([[0, N, a, b]], np.int32), np.array([[1, 2]], np.uint32)
    bad = np.full((1, 1), K.NOT_DIVERGED, np.int32)
    buf = np.empty((4, BATCH), np.float32)
    per = N * EPOCHS
    rows = {
        "order (ns a position)": best(orders, order, first_round, lanes, N, a, b, keys, walks, EPOCHS) / per,
        "SGD epochs kernel, batch 32 (ns a sample)":
            best(K._epochs_two_features, x, y, theta, lr, table, key_data, 0, EPOCHS, BATCH, 0, bad, order,
                 first_round, buf, lanes, walks, keys) / per,
        "Numba peer's minibatch epoch, shuffle included (ns a sample)":
            best(peers.train_minibatch, x, y, np.array([0, N]), theta[0].copy(), lr, EPOCHS, BATCH,
                 np.arange(N, dtype=np.uint32), 0) / per,
        "  of which its Fisher-Yates shuffle (ns a position)":
            best(peer_shuffles, np.arange(N, dtype=np.uint32), EPOCHS) / per,
        "  of which its steps through a shuffled order (ns a sample)":
            best(peer_steps, x, y, rng.permutation(N).astype(np.uint32), lr[0], EPOCHS) / per,
    }
    tile = 2048
    xt, yt = x.reshape(2, N // tile, tile), y.reshape(N // tile, tile)
    count, owner = np.full(N // tile, tile, np.int32), np.zeros(N // tile, np.int32)
    l1, grad = np.zeros((1, 1), np.float32), np.zeros((1, 1, 3), np.float32)
    full_epochs = 300
    rows["full-batch pass kernel (ns a sample)"] = best(
        lambda: [K._sums_two_features(xt, yt, count, owner, theta, 0, l1, grad) for _ in range(full_epochs)]) / (N * full_epochs)
    rows["Numba peer's full-batch loop (ns a sample)"] = best(
        peers._full_run, x[0], x[1], y, *theta[0, 0], lr[0], full_epochs) / (N * full_epochs)
    rows.update(generation_rows())
    print(f"{host_description()}, one core, n = {N}:")
    for name, seconds in rows.items():
        print(f"  {name}: {seconds * 1e9:.2f}")


if __name__ == "__main__":
    main()
