"""Fused CPU kernels (Numba, called from inside the jitted program as typed XLA FFI handlers).

* ``sgd_epoch``: a whole minibatch epoch of plain SGD (constant learning rate) for every run of
  a block: per dataset its epoch's Feistel order (``data.py``'s network and cycle walks,
  recomputed here position by position), then its steps in sequence; each batch is gathered
  once into a small contiguous buffer and serves every learning rate.
* ``full_batch_sums``: the full-batch pass: per dataset and learning rate the sum of |r| and of
  the subgradient terms, every tile read once (from cache) for all learning rates.

Each run's sums depend only on its own data and parameters (the order of a sum is fixed by the
compiled loop, the same whatever the other runs of the call are), so a run's numbers do not
depend on the block, chunk or device count.  The sums over a batch or a tile are vectorized
(fastmath ``reassoc`` on those loops only), so they may round differently from XLA's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numba import cfunc, njit, types

from l1jax.engine import data as D
from l1jax.engine.kernels import cpu_ffi as F

MASK32 = 0xFFFFFFFF
SEED_GRADIENT = 1  # gradient mode code: 0 the L1 subgradient, 1 the article's r * (x, 1)


# ---------------------------------------------------------------- the Feistel order

@njit(inline="always")
def _mix(x):
    """lowbias32 (``data._mix``): uint32 in, uint32 out (every step truncated to 32 bits, so
    LLVM keeps 32-bit lanes and vectorizes)."""
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x7FEB352D))
    x = np.uint32(x ^ (x >> np.uint32(15)))
    x = np.uint32(x * np.uint32(0x846CA68B))
    return np.uint32(x ^ (x >> np.uint32(16)))


@njit(inline="always")
def _round(left, right, key, m):
    """One Feistel round (``data._network``): (L, R) -> (R, (L + F(R)) mod m)."""
    s = np.uint32(left + np.uint32(np.uint32((_mix(np.uint32(right ^ key)) >> np.uint32(16)) * m) >> np.uint32(16)))
    return right, np.uint32(s - m) if s >= m else s


@njit(cache=True)
def epoch_order(order, n, a, b, keys, walks):
    """order[p] = sample visited at position p of the epoch, p < n: ``data.visit`` of every
    position, row by row of the a x b grid (no division), then the rare excess images replaced
    by their cycle walks (a second loop, so the first vectorizes)."""
    a32, b32 = np.uint32(a), np.uint32(b)
    for left0 in range(a):
        row = order[left0 * b:min((left0 + 1) * b, n)]
        for right0 in range(row.shape[0]):
            left, right = _round(np.uint32(left0), np.uint32(right0), keys[0], a32)
            left, right = _round(left, right, keys[1], b32)
            left, right = _round(left, right, keys[2], a32)
            left, right = _round(left, right, keys[3], b32)
            left, right = _round(left, right, keys[4], a32)
            left, right = _round(left, right, keys[5], b32)
            left, right = _round(left, right, keys[6], a32)
            left, right = _round(left, right, keys[7], b32)
            row[right0] = np.int32(np.uint32(left * b32 + right))
    for q in range(n):
        v = np.uint32(order[q])
        if v >= n:
            order[q] = np.int32(walks[v - n])


assert D.FEISTEL_ROUNDS == 8, "epoch_order unrolls data.py's 8 rounds"


# ---------------------------------------------------------------- one batch of one run

@njit(fastmath={"reassoc"}, cache=True)
def _batch_sums(buf, c, theta, grad, mode):
    """Gradient sums of one run over the c samples of ``buf`` [p + 2, B] (rows: x_1..x_d, y,
    scratch) at ``theta`` [p]: grad[k] = sum s x_k, grad[d] = sum s, s = sign(r) (or r)."""
    d = buf.shape[0] - 2
    r = buf[d + 1]
    for j in range(c):
        r[j] = theta[d] - buf[d, j]
    for k in range(d):
        w = theta[k]
        x = buf[k]
        for j in range(c):
            r[j] = r[j] + x[j] * w
    if mode == SEED_GRADIENT:
        pass
    else:
        for j in range(c):
            r[j] = np.float32(r[j] > 0) - np.float32(r[j] < 0)
    for k in range(d):
        x = buf[k]
        acc = np.float32(0.0)
        for j in range(c):
            acc += r[j] * x[j]
        grad[k] = acc
    acc = np.float32(0.0)
    for j in range(c):
        acc += r[j]
    grad[d] = acc


@njit(cache=True)
def _sgd_step(theta, grad, c, lr, mode):
    """optax.sgd's update on the mean gradient: theta + (-lr) * (sum / c) (seed mode: -2 times)."""
    m = np.float32(c)
    for k in range(theta.shape[0]):
        g = grad[k] / m
        if mode == SEED_GRADIENT:
            g = np.float32(-2.0) * g
        theta[k] = theta[k] + (-lr) * g


@njit(cache=True)
def sgd_epoch_arrays(samples, theta, lr, table, keys, walks, width, mode, order, buf):
    """One epoch of every run (see ``sgd_epoch``), on plain arrays: samples [p, slots] (x rows
    then y), theta [D, H, p] updated in place, table [D, 4] (first slot, n, a, b)."""
    p = samples.shape[0]
    grad = np.empty(p, np.float32)
    for ds in range(theta.shape[0]):
        first, n, a, b = table[ds, 0], table[ds, 1], table[ds, 2], table[ds, 3]
        epoch_order(order, n, a, b, keys[ds], walks[ds])
        for s in range(0, n, width):
            c = min(width, n - s)
            for k in range(p):
                row, out = samples[k], buf[k]
                for j in range(c):
                    out[j] = row[first + order[s + j]]
            for h in range(theta.shape[1]):
                _batch_sums(buf, c, theta[ds, h], grad, mode)
                _sgd_step(theta[ds, h], grad, c, lr[h], mode)


@cfunc(types.int64(types.int64), cache=True)
def _sgd_epoch_handler(address):
    """FFI handler: args samples [p, slots] f32, theta [D, H, p] f32, lr [H] f32, table [D, 4] i32,
    keys [D, 8] u32, walks [D, W] u32, settings [2] i32 (width, mode); results theta [D, H, p],
    order [max n] i32, buf [p + 1, width] f32 (scratch)."""
    frame = F.frame_words(address)
    if F.answer_metadata(frame):
        return 0
    err = F.check_frame(frame, 7, 3)
    if err != 0:
        return err
    p, slots = F.arg_dim(frame, 0, 0), F.arg_dim(frame, 0, 1)
    n_data, n_lr = F.arg_dim(frame, 1, 0), F.arg_dim(frame, 1, 1)
    wide = F.arg_dim(frame, 5, 1)
    settings = F.arg(frame, 6, 2, np.int32)
    width = np.int64(settings[0])
    samples = F.arg(frame, 0, p * slots, np.float32).reshape((p, slots))
    theta_in = F.arg(frame, 1, n_data * n_lr * p, np.float32)
    theta = F.ret(frame, 0, n_data * n_lr * p, np.float32)
    theta[:] = theta_in
    sgd_epoch_arrays(samples, theta.reshape((n_data, n_lr, p)), F.arg(frame, 2, n_lr, np.float32),
                     F.arg(frame, 3, n_data * 4, np.int32).reshape((n_data, 4)),
                     F.arg(frame, 4, n_data * 8, np.uint32).reshape((n_data, 8)),
                     F.arg(frame, 5, n_data * wide, np.uint32).reshape((n_data, wide)),
                     width, settings[1], F.ret(frame, 1, F.ret_dim(frame, 1, 0), np.int32),
                     F.ret(frame, 2, (p + 1) * width, np.float32).reshape((p + 1, width)))
    return 0


# ---------------------------------------------------------------- JAX side

SGD_EPOCH = "l1jax_cpu_sgd_epoch"


@functools.cache
def register() -> None:
    """Register the handlers with XLA's CPU platform (once per process)."""
    jax.ffi.register_ffi_target(SGD_EPOCH, jax.ffi.pycapsule(_sgd_epoch_handler.address),
                                platform="cpu", api_version=1)


def sgd_epoch(samples: jax.Array, theta: jax.Array, lr: jax.Array, table: jax.Array, keys: jax.Array,
              walks: jax.Array, width: int, max_size: int, gradient: str) -> jax.Array:
    """Every run's parameters [D, H, p] after one minibatch epoch of plain SGD at constant
    learning rates: samples [p, slots] (x rows, then y), table [D, 4] int32 (first slot, size,
    grid sides a, b), the epoch's Feistel round keys [D, 8] and cycle walks [D, W] uint32;
    ``width`` samples a batch, ``max_size`` the largest dataset."""
    register()
    p = samples.shape[0]
    walks = walks if walks.shape[1] else jnp.zeros((walks.shape[0], 1), jnp.uint32)
    settings = jnp.asarray([width, SEED_GRADIENT if gradient == "seed" else 0], jnp.int32)
    out = jax.ffi.ffi_call(SGD_EPOCH, (jax.ShapeDtypeStruct(theta.shape, jnp.float32),
                                       jax.ShapeDtypeStruct((max_size,), jnp.int32),
                                       jax.ShapeDtypeStruct((p + 1, width), jnp.float32)),
                           vmap_method="sequential")
    return out(samples, theta, lr, table, keys, walks, settings)[0]
