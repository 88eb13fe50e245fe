"""Fused CPU kernels (Numba, called from inside the jitted program as typed XLA FFI handlers).

* ``sgd_epoch``: a whole minibatch epoch of plain SGD (constant learning rate) for every run of
  a block: per dataset its epoch's Feistel order (``data.py``'s network and cycle walks,
  recomputed here position by position), then its steps in sequence; each batch is gathered
  once into a small contiguous buffer and serves every learning rate.
* ``full_batch_sums``: the full-batch pass: per dataset and learning rate the sum of |r| and of
  the subgradient terms, every tile read once (from cache) for all learning rates.

Each run's sums depend only on its own data and parameters (the order of a sum is fixed by the
compiled loop, the same whatever the other runs of the call are), so a run's numbers do not
depend on the block, chunk or device count.  The sums over a batch or a tile are vectorized and
use fused multiply-adds (``FASTMATH``), so they round differently from XLA's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numba import cfunc, njit, types

from l1jax.engine import data as D
from l1jax.engine.kernels import cpu_ffi as F

# Reordered float32 sums (vectorized) and fused multiply-adds; no NaN or Inf assumptions and no
# approximate functions, so a diverging run still becomes NaN or Inf, as on the XLA path.
FASTMATH = {"reassoc", "contract"}
SEED_GRADIENT = 1  # gradient mode code: 0 the L1 subgradient, 1 the article's r * (x, 1)


# ---------------------------------------------------------------- the Feistel order

@njit(inline="always")
def _sign(r):
    """sign(r), 0 at 0 and at NaN (as ``step.sign``): copysign where r is not 0, a masked
    select that vectorizes in fewer instructions than two comparisons."""
    return np.copysign(np.float32(1.0), r) if (r > 0 or r < 0) else np.float32(0.0)


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
def epoch_order(order, first_round, n, a, b, keys, walks):
    """order[p] = sample visited at position p of the epoch, p < n: ``data.visit`` of every
    position, row by row of the a x b grid (no division; the first round's hash of each column,
    the same for every row, is tabulated in ``first_round`` [>= b]), then the rare excess images
    replaced by their cycle walks (a second loop, so the first vectorizes)."""
    a32, b32 = np.uint32(a), np.uint32(b)
    for j in range(b):
        first_round[j] = np.uint32(np.uint32((_mix(np.uint32(np.uint32(j) ^ keys[0])) >> np.uint32(16)) * a32)
                                   >> np.uint32(16))
    k1, k2, k3, k4, k5, k6, k7 = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7]
    for left0 in range(a):
        row = order[left0 * b:min((left0 + 1) * b, n)]
        top = np.uint32(left0)
        for j in range(row.shape[0]):
            s = np.uint32(top + first_round[j])
            left, right = np.uint32(j), (np.uint32(s - a32) if s >= a32 else s)
            left, right = _round(left, right, k1, b32)
            left, right = _round(left, right, k2, a32)
            left, right = _round(left, right, k3, b32)
            left, right = _round(left, right, k4, a32)
            left, right = _round(left, right, k5, b32)
            left, right = _round(left, right, k6, a32)
            left, right = _round(left, right, k7, b32)
            row[j] = np.int32(np.uint32(left * b32 + right))
    for q in range(n):
        v = np.uint32(order[q])
        if v >= n:
            order[q] = np.int32(walks[v - n])


assert D.FEISTEL_ROUNDS == 8, "epoch_order unrolls data.py's 8 rounds"


# ---------------------------------------------------------------- a minibatch epoch
#
# Each batch is gathered once (through the epoch's order) into a small contiguous buffer, then
# every learning rate's run takes its step from it: r = ((b - y) + x_1 w_1) + x_2 w_2 ..., the
# sums of s = sign(r) (or r) times (x, 1) over the batch in one vectorized loop, and optax.sgd's
# update theta + (-lr) (sum / c) (seed mode: the mean times -2).  Everything of an epoch is in
# one function per feature count (two features: one pass per batch and run; any other: a pass per
# feature), since calls and array views per batch cost more than the batch's arithmetic.


@njit(fastmath=FASTMATH, cache=True)
def _epoch_two_features(samples, theta, lr, table, keys, walks, width, mode, order, first_round, buf):
    """``sgd_epoch_arrays`` for two features."""
    x0_all, x1_all, y_all = samples[0], samples[1], samples[2]
    b0, b1, by = buf[0], buf[1], buf[2]
    for ds in range(theta.shape[0]):
        first, n = table[ds, 0], table[ds, 1]
        epoch_order(order, first_round, n, table[ds, 2], table[ds, 3], keys[ds], walks[ds])
        for s in range(0, n, width):
            c = min(width, n - s)
            for j in range(c):
                i = first + order[s + j]
                b0[j], b1[j], by[j] = x0_all[i], x1_all[i], y_all[i]
            m = np.float32(c)
            for h in range(theta.shape[1]):
                w0, w1, bias = theta[ds, h, 0], theta[ds, h, 1], theta[ds, h, 2]
                g0 = g1 = gb = np.float32(0.0)
                for j in range(c):
                    x0, x1 = b0[j], b1[j]
                    r = ((bias - by[j]) + x0 * w0) + x1 * w1
                    if mode != SEED_GRADIENT:
                        r = _sign(r)
                    g0 += r * x0
                    g1 += r * x1
                    gb += r
                step = -lr[h]
                if mode == SEED_GRADIENT:
                    g0, g1, gb = np.float32(-2.0) * (g0 / m), np.float32(-2.0) * (g1 / m), np.float32(-2.0) * (gb / m)
                else:
                    g0, g1, gb = g0 / m, g1 / m, gb / m
                theta[ds, h, 0] = w0 + step * g0
                theta[ds, h, 1] = w1 + step * g1
                theta[ds, h, 2] = bias + step * gb


@njit(fastmath=FASTMATH, cache=True)
def _epoch_any_features(samples, theta, lr, table, keys, walks, width, mode, order, first_round, buf):
    """``sgd_epoch_arrays`` for any number of features d: buf rows x_1..x_d, y, r."""
    p = samples.shape[0]
    d = p - 1
    r = buf[p]
    grad = np.empty(p, np.float32)
    for ds in range(theta.shape[0]):
        first, n = table[ds, 0], table[ds, 1]
        epoch_order(order, first_round, n, table[ds, 2], table[ds, 3], keys[ds], walks[ds])
        for s in range(0, n, width):
            c = min(width, n - s)
            for j in range(c):
                i = first + order[s + j]
                for k in range(p):
                    buf[k, j] = samples[k, i]
            m = np.float32(c)
            for h in range(theta.shape[1]):
                th = theta[ds, h]
                y = buf[d]
                for j in range(c):
                    r[j] = th[d] - y[j]
                for k in range(d):
                    w, x = th[k], buf[k]
                    for j in range(c):
                        r[j] = r[j] + x[j] * w
                if mode != SEED_GRADIENT:
                    for j in range(c):
                        r[j] = _sign(r[j])
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
                step = -lr[h]
                for k in range(p):
                    g = grad[k] / m
                    if mode == SEED_GRADIENT:
                        g = np.float32(-2.0) * g
                    th[k] = th[k] + step * g


@njit(cache=True)
def sgd_epoch_arrays(samples, theta, lr, table, keys, walks, width, mode, order, first_round, buf):
    """One epoch of every run (see ``sgd_epoch``), on plain arrays: samples [p, slots] (x rows
    then y), theta [D, H, p] updated in place, table [D, 4] (first slot, n, a, b); scratch
    order [>= max n], first_round [>= max b], buf [p + 1, >= width]."""
    if samples.shape[0] == 3:
        _epoch_two_features(samples, theta, lr, table, keys, walks, width, mode, order, first_round, buf)
    else:
        _epoch_any_features(samples, theta, lr, table, keys, walks, width, mode, order, first_round, buf)


@cfunc(types.int64(types.int64), cache=True)
def _sgd_epoch_handler(address):
    """FFI handler: args samples [p, slots] f32, theta [D, H, p] f32, lr [H] f32, table [D, 4] i32,
    keys [D, 8] u32, walks [D, W] u32, settings [2] i32 (width, mode); results theta [D, H, p]
    and scratch: order [max n] i32, first_round [max b] u32, buf [p + 1, width] f32."""
    frame = F.frame_words(address)
    if F.answer_metadata(frame):
        return 0
    err = F.check_frame(frame, 7, 4)
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
                     F.ret(frame, 2, F.ret_dim(frame, 2, 0), np.uint32),
                     F.ret(frame, 3, (p + 1) * width, np.float32).reshape((p + 1, width)))
    return 0


# ---------------------------------------------------------------- the full-batch pass
#
# Tile by tile (a tile holds up to T samples of one dataset and stays in L1), every learning
# rate's run sums |r|, s x_k and s over the tile's real samples in one vectorized loop; the
# tile's sums are added to its dataset's in tile order.


@njit(fastmath=FASTMATH, cache=True)
def _sums_two_features(x, y, count, owner, theta, mode, l1, grad):
    """``full_batch_sums_arrays`` for two features."""
    for t in range(y.shape[0]):
        o, c = owner[t], count[t]
        x0, x1, yt = x[0, t], x[1, t], y[t]
        for h in range(theta.shape[1]):
            w0, w1, bias = theta[o, h, 0], theta[o, h, 1], theta[o, h, 2]
            a = g0 = g1 = gb = np.float32(0.0)
            for j in range(c):
                r = ((bias - yt[j]) + x0[j] * w0) + x1[j] * w1
                if mode != SEED_GRADIENT:
                    sg = _sign(r)
                    a += sg * r  # |r|, exactly, in one multiply-add
                else:
                    sg = r
                    a += abs(r)
                g0 += sg * x0[j]
                g1 += sg * x1[j]
                gb += sg
            l1[o, h] += a
            grad[o, h, 0] += g0
            grad[o, h, 1] += g1
            grad[o, h, 2] += gb


@njit(fastmath=FASTMATH, cache=True)
def _sums_any_features(x, y, count, owner, theta, mode, l1, grad, r):
    """``full_batch_sums_arrays`` for any number of features d (r: scratch [>= T])."""
    d = x.shape[0]
    for t in range(y.shape[0]):
        o, c = owner[t], count[t]
        yt = y[t]
        for h in range(theta.shape[1]):
            th = theta[o, h]
            for j in range(c):
                r[j] = th[d] - yt[j]
            for k in range(d):
                w, xk = th[k], x[k, t]
                for j in range(c):
                    r[j] = r[j] + xk[j] * w
            a = np.float32(0.0)
            for j in range(c):
                a += abs(r[j])
            l1[o, h] += a
            if mode != SEED_GRADIENT:
                for j in range(c):
                    r[j] = _sign(r[j])
            for k in range(d):
                xk = x[k, t]
                acc = np.float32(0.0)
                for j in range(c):
                    acc += r[j] * xk[j]
                grad[o, h, k] += acc
            acc = np.float32(0.0)
            for j in range(c):
                acc += r[j]
            grad[o, h, d] += acc


@njit(cache=True)
def full_batch_sums_arrays(x, y, count, owner, theta, mode, l1, grad, r):
    """Per dataset and learning rate the sums of |r| (``l1`` [D, H]) and of the gradient terms
    (``grad`` [D, H, p]), both zeroed here, over the packed tiles x [d, tiles, T], y [tiles, T]
    with ``count`` real samples and dataset ``owner`` each; r: scratch [>= T]."""
    l1[:] = 0
    grad[:] = 0
    if x.shape[0] == 2:
        _sums_two_features(x, y, count, owner, theta, mode, l1, grad)
    else:
        _sums_any_features(x, y, count, owner, theta, mode, l1, grad, r)


@cfunc(types.int64(types.int64), cache=True)
def _full_batch_handler(address):
    """FFI handler: args x [d, tiles, T] f32, y [tiles, T] f32, count [tiles] i32, owner [tiles]
    i32, theta [D, H, p] f32, settings [1] i32 (mode); results l1 [D, H], grad [D, H, p] f32 and
    scratch [T] f32."""
    frame = F.frame_words(address)
    if F.answer_metadata(frame):
        return 0
    err = F.check_frame(frame, 6, 3)
    if err != 0:
        return err
    d, tiles, tile = F.arg_dim(frame, 0, 0), F.arg_dim(frame, 0, 1), F.arg_dim(frame, 0, 2)
    n_data, n_lr, p = F.arg_dim(frame, 4, 0), F.arg_dim(frame, 4, 1), F.arg_dim(frame, 4, 2)
    full_batch_sums_arrays(F.arg(frame, 0, d * tiles * tile, np.float32).reshape((d, tiles, tile)),
                           F.arg(frame, 1, tiles * tile, np.float32).reshape((tiles, tile)),
                           F.arg(frame, 2, tiles, np.int32), F.arg(frame, 3, tiles, np.int32),
                           F.arg(frame, 4, n_data * n_lr * p, np.float32).reshape((n_data, n_lr, p)),
                           F.arg(frame, 5, 1, np.int32)[0],
                           F.ret(frame, 0, n_data * n_lr, np.float32).reshape((n_data, n_lr)),
                           F.ret(frame, 1, n_data * n_lr * p, np.float32).reshape((n_data, n_lr, p)),
                           F.ret(frame, 2, tile, np.float32))
    return 0


# ---------------------------------------------------------------- JAX side

SGD_EPOCH = "l1jax_cpu_sgd_epoch"
FULL_BATCH = "l1jax_cpu_full_batch_sums"


@functools.cache
def register() -> None:
    """Register the handlers with XLA's CPU platform (once per process)."""
    for name, handler in ((SGD_EPOCH, _sgd_epoch_handler), (FULL_BATCH, _full_batch_handler)):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler.address), platform="cpu", api_version=1)


def sgd_epoch(samples: jax.Array, theta: jax.Array, lr: jax.Array, table: jax.Array, keys: jax.Array,
              walks: jax.Array, width: int, max_size: int, max_side: int, gradient: str) -> jax.Array:
    """Every run's parameters [D, H, p] after one minibatch epoch of plain SGD at constant
    learning rates: samples [p, slots] (x rows, then y), table [D, 4] int32 (first slot, size,
    grid sides a, b), the epoch's Feistel round keys [D, 8] and cycle walks [D, W] uint32;
    ``width`` samples a batch, ``max_size`` the largest dataset, ``max_side`` its largest grid side b."""
    register()
    p = samples.shape[0]
    walks = walks if walks.shape[1] else jnp.zeros((walks.shape[0], 1), jnp.uint32)
    settings = jnp.concatenate([jnp.asarray([width], jnp.int32), _mode(gradient)])
    out = jax.ffi.ffi_call(SGD_EPOCH, (jax.ShapeDtypeStruct(theta.shape, jnp.float32),
                                       jax.ShapeDtypeStruct((max_size,), jnp.int32),
                                       jax.ShapeDtypeStruct((max_side,), jnp.uint32),
                                       jax.ShapeDtypeStruct((p + 1, width), jnp.float32)),
                           vmap_method="sequential")
    return out(samples, theta, lr, table, keys, walks, settings)[0]


def _mode(gradient: str) -> jax.Array:
    return jnp.asarray([SEED_GRADIENT if gradient == "seed" else 0], jnp.int32)


def full_batch_sums(x: jax.Array, y: jax.Array, count: jax.Array, owner: jax.Array, theta: jax.Array,
                    gradient: str) -> tuple[jax.Array, jax.Array]:
    """Per dataset the sums of |r| [D, H] and of the gradient terms [D, H, p] over its packed
    tiles (x [d, tiles, T], y [tiles, T], ``count`` real samples and dataset ``owner`` each) at
    theta [D, H, p]; ``step.packed_sums`` computes the same in XLA."""
    register()
    shapes = (jax.ShapeDtypeStruct(theta.shape[:2], jnp.float32), jax.ShapeDtypeStruct(theta.shape, jnp.float32),
              jax.ShapeDtypeStruct((y.shape[1],), jnp.float32))
    out = jax.ffi.ffi_call(FULL_BATCH, shapes, vmap_method="sequential")
    l1, grad, _ = out(x, y, count, owner, theta, _mode(gradient))
    return l1, grad
