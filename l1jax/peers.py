"""The Numba peer: the loop a performance-minded user writes instead of l1jax.

Runs are trained in parallel (``prange``), each on its own contiguous float32 slice
``start[r]:start[r + 1]`` of ``x`` [2, N] (feature-major) and ``y`` [N], from ``theta[r]`` =
(w1, w2, b), updated in place, with plain SGD on the mean L1 subgradient sign(r) * (x, 1)
(sign(0) = 0).  The kernels are written for the two features of every benchmark workload, so the
parameters live in registers; each run works on views of its slice, whose indices start at 0, so
no negative-index wraparound blocks vectorization.  Minibatch epochs visit ``order`` (uint32
indices local to the run's slice) in batches, the last one ragged and averaged over its real
count; :func:`train_minibatch` shuffles ``order`` in place once per epoch per run before visiting
it, so after a one-epoch call ``order`` is the order it used.

:func:`draw_data` draws the runs' data the way such a user would, inside the same kind of loop
(the benchmark times it beside l1jax, whose timings include drawing its data).

Fastmath is limited to ``reassoc``: the float32 sums may be reordered (vectorized), which moves
each by at most the float32 rounding bound that any summation order has; no NaN/Inf assumptions,
no approximate functions, no contraction.  Without it the full-batch sums stay sequential and
scalar, about ten times slower.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint64

_GOLDEN = uint64(0x9E3779B97F4A7C15)
FASTMATH = {"reassoc"}
_UNIT = np.float32(2.0 ** -24)  # a 24-bit integer times this: a float32 uniform on [0, 1)
_TWO_PI = np.float32(2 * math.pi)


@njit(inline="always")
def _sign(r: np.float32) -> np.float32:
    """sign(r) with sign(0) = 0, branch-free: residual signs are unpredictable near the optimum."""
    return np.float32(r > 0) - np.float32(r < 0)


@njit(inline="always")
def _splitmix(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """SplitMix64: the next state and 64 well-mixed bits."""
    state = state + _GOLDEN
    z = (state ^ (state >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return state, z ^ (z >> uint64(31))


@njit
def _shuffle(order: np.ndarray, state: np.uint64) -> np.uint64:
    """Fisher-Yates in place; j = the high 32 bits times (i + 1) >> 32 (bias below n / 2^32)."""
    for i in range(order.shape[0] - 1, 0, -1):
        state, v = _splitmix(state)
        j = ((v >> uint64(32)) * uint64(i + 1)) >> uint64(32)
        order[i], order[j] = order[j], order[i]
    return state


@njit(inline="always")
def _uniforms(v: np.uint64) -> tuple[np.float32, np.float32]:
    """Two float32 uniforms on [0, 1) from the top and middle 24 bits of v."""
    return (np.float32(v >> uint64(40)) * _UNIT,
            np.float32((v >> uint64(16)) & uint64(0xFFFFFF)) * _UNIT)


@njit(parallel=True)
def draw_data(x: np.ndarray, y: np.ndarray, start: np.ndarray, seed: int) -> None:
    """Each dataset's samples in place, the benchmark's data: x ~ U(0, 1)^2 [2, N],
    y = 2 x1 + 3 x2 + N(0, 1) [N], dataset r = start[r]:start[r + 1] from its own SplitMix64
    stream seeded by (seed, r) (so the same whatever the thread count), the noise by Box-Muller
    in pairs of samples.  5.9 ns a sample on the 2-core Xeon of the README against 16.5 for
    NumPy's generator (12 on two threads) and 22 for ``np.random`` inside Numba."""
    for r in prange(start.shape[0] - 1):
        a, z = start[r], start[r + 1]
        state = uint64(seed) * _GOLDEN + uint64(r)
        for i in range(a, z, 2):
            state, v = _splitmix(state)
            state, q = _splitmix(state)
            x[0, i], x[1, i] = _uniforms(v)
            u1, u2 = _uniforms(q)
            radius = np.float32(math.sqrt(np.float32(-2.0) * math.log(u1 + _UNIT)))  # u1 + 2^-24 > 0
            y[i] = np.float32(2.0) * x[0, i] + np.float32(3.0) * x[1, i] + radius * np.float32(math.cos(_TWO_PI * u2))
            if i + 1 < z:
                state, v = _splitmix(state)
                x[0, i + 1], x[1, i + 1] = _uniforms(v)
                y[i + 1] = (np.float32(2.0) * x[0, i + 1] + np.float32(3.0) * x[1, i + 1]
                            + radius * np.float32(math.sin(_TWO_PI * u2)))


@njit(fastmath=FASTMATH)
def _full_run(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, w1: np.float32, w2: np.float32,
              b: np.float32, lr: np.float32, epochs: int) -> tuple[np.float32, np.float32, np.float32]:
    """``epochs`` full-batch steps of one run."""
    m = np.float32(y.shape[0])
    for _ in range(epochs):
        g1 = g2 = gb = np.float32(0.0)
        for i in range(y.shape[0]):
            sg = _sign(w1 * x1[i] + w2 * x2[i] + b - y[i])
            g1 += sg * x1[i]
            g2 += sg * x2[i]
            gb += sg
        w1, w2, b = w1 - lr * (g1 / m), w2 - lr * (g2 / m), b - lr * (gb / m)
    return w1, w2, b


@njit(fastmath=FASTMATH)
def _epoch(x1: np.ndarray, x2: np.ndarray, y: np.ndarray, order: np.ndarray, w1: np.float32,
           w2: np.float32, b: np.float32, lr: np.float32, batch: int) -> tuple[np.float32, np.float32, np.float32]:
    """One minibatch epoch of one run, visiting ``order``."""
    n = order.shape[0]
    for s in range(0, n, batch):
        e = min(s + batch, n)
        g1 = g2 = gb = np.float32(0.0)
        for q in range(s, e):
            i = order[q]
            sg = _sign(w1 * x1[i] + w2 * x2[i] + b - y[i])
            g1 += sg * x1[i]
            g2 += sg * x2[i]
            gb += sg
        m = np.float32(e - s)
        w1, w2, b = w1 - lr * (g1 / m), w2 - lr * (g2 / m), b - lr * (gb / m)
    return w1, w2, b


@njit(parallel=True)
def train_full(x: np.ndarray, y: np.ndarray, start: np.ndarray, theta: np.ndarray, lr: np.ndarray,
               epochs: int) -> None:
    """Full-batch SGD of every run for ``epochs`` epochs."""
    for r in prange(theta.shape[0]):
        a, z = start[r], start[r + 1]
        theta[r, 0], theta[r, 1], theta[r, 2] = _full_run(x[0, a:z], x[1, a:z], y[a:z], theta[r, 0],
                                                          theta[r, 1], theta[r, 2], lr[r], epochs)


@njit(parallel=True)
def train_minibatch(x: np.ndarray, y: np.ndarray, start: np.ndarray, theta: np.ndarray, lr: np.ndarray,
                    epochs: int, batch: int, order: np.ndarray, seed: int) -> None:
    """Minibatch SGD of every run, ``order`` reshuffled per run before each epoch (run r's
    stream is seeded by (seed, r))."""
    for r in prange(theta.shape[0]):
        a, z = start[r], start[r + 1]
        state = uint64(seed) * _GOLDEN + uint64(r)
        w1, w2, b = theta[r, 0], theta[r, 1], theta[r, 2]
        for _ in range(epochs):
            state = _shuffle(order[a:z], state)
            w1, w2, b = _epoch(x[0, a:z], x[1, a:z], y[a:z], order[a:z], w1, w2, b, lr[r], batch)
        theta[r, 0], theta[r, 1], theta[r, 2] = w1, w2, b
