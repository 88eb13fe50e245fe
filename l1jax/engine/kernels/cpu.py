"""Fused CPU kernels (Numba, called from inside the jitted program as typed XLA FFI handlers).

* ``sgd_epochs``: minibatch epochs of plain SGD (constant learning rate) for every run of a
  block, dataset by dataset (its samples stay in cache for all the call's epochs): per epoch its
  Feistel order (``data.py``'s round keys, cycle walks and network, recomputed here, round by
  round over chunks of positions), then its steps in sequence, each run gathering its batch
  through the order (two features) or each batch gathered once into a small contiguous buffer
  that serves every learning rate (any other feature count).
* ``full_sgd_epochs``: full-batch epochs of plain SGD (constant learning rate), dataset by
  dataset, each a pass over the dataset's tiles and the update.
* ``full_batch_sums``: the full-batch pass: per dataset and learning rate the sum of |r| and of
  the subgradient terms, every tile read once (from cache) for all learning rates.

Each run's sums depend only on its own data and parameters (the order of a sum is fixed by the
compiled loop, the same whatever the other runs of the call are), so a run's numbers do not
depend on the block, chunk or device count.  The sums over a batch or a tile are vectorized and
use fused multiply-adds (``FASTMATH``), so they round differently from XLA's.  All but the
minibatch epochs of more than two features use 512-bit vectors where the CPU has them, even where
LLVM's tuning prefers 256-bit ones (``wide``): the order, the bits and the full-batch epochs were
measured faster so, the full-batch pass as fast (it shares their tile loop), the minibatch epochs
of more features not faster.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numba import cfunc, njit, types

from l1jax.engine import data as D
from l1jax.engine.kernels import FULL_BATCH, FULL_SGD, SAMPLE_BITS, SGD_EPOCHS, _Child, await_child
from l1jax.engine.kernels import cpu_ffi as F
from l1jax.engine.kernels.wide import wide_vectors

# Reordered float32 sums (vectorized) and fused multiply-adds; no NaN or Inf assumptions and no
# approximate functions, so a diverging run still becomes NaN or Inf, as on the XLA path.
FASTMATH = {"reassoc", "contract"}
SEED_GRADIENT = 1  # gradient mode code: 0 the L1 subgradient, 1 the article's r * (x, 1)


# ---------------------------------------------------------------- the Feistel order
#
# ``data.py`` defines a minibatch order: per dataset and epoch the round keys (from threefry
# fold_in(shuffle key, epoch)), the cycle walks of the excess grid values, and the network applied
# to each position.  The kernel recomputes all of it, so an epoch needs nothing from XLA.

CHUNK = 512  # positions of the order computed together, round by round (two 2 KiB lanes in L1)


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


@njit(inline="always")
def _rounds_after_first(left, right, keys, a32, b32):
    """Rounds 1 to 7 of the network, then the grid value L b + R."""
    left, right = _round(left, right, keys[1], b32)
    left, right = _round(left, right, keys[2], a32)
    left, right = _round(left, right, keys[3], b32)
    left, right = _round(left, right, keys[4], a32)
    left, right = _round(left, right, keys[5], b32)
    left, right = _round(left, right, keys[6], a32)
    left, right = _round(left, right, keys[7], b32)
    return np.uint32(np.uint32(left * b32) + right)


assert D.FEISTEL_ROUNDS == 8, "the kernels unroll data.py's 8 rounds"


@njit(inline="always")
def _rotl(x, r):
    return np.uint32(np.uint32(x << np.uint32(r)) | np.uint32(x >> np.uint32(32 - r)))


@njit(inline="always")
def _four_rounds(x0, x1, r0, r1, r2, r3):
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl(x1, r0) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl(x1, r1) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl(x1, r2) ^ x0)
    x0 = np.uint32(x0 + x1)
    x1 = np.uint32(_rotl(x1, r3) ^ x0)
    return x0, x1


@njit(inline="always")
def _threefry2x32(k0, k1, x0, x1):
    """``data.threefry2x32`` on uint32 scalars (20 rounds, JAX's rotations and key schedule),
    written out so that a loop over counters vectorizes (AVX-512 rotates)."""
    k2 = np.uint32(k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = np.uint32(x0 + k0), np.uint32(x1 + k1)
    x0, x1 = _four_rounds(x0, x1, 13, 15, 26, 6)
    x0, x1 = np.uint32(x0 + k1), np.uint32(x1 + k2 + np.uint32(1))
    x0, x1 = _four_rounds(x0, x1, 17, 29, 16, 24)
    x0, x1 = np.uint32(x0 + k2), np.uint32(x1 + k0 + np.uint32(2))
    x0, x1 = _four_rounds(x0, x1, 13, 15, 26, 6)
    x0, x1 = np.uint32(x0 + k0), np.uint32(x1 + k1 + np.uint32(3))
    x0, x1 = _four_rounds(x0, x1, 17, 29, 16, 24)
    x0, x1 = np.uint32(x0 + k1), np.uint32(x1 + k2 + np.uint32(4))
    x0, x1 = _four_rounds(x0, x1, 13, 15, 26, 6)
    return np.uint32(x0 + k2), np.uint32(x1 + k0 + np.uint32(5))


@njit(cache=True)
def round_keys(k0, k1, epoch, keys):
    """``data.round_keys`` of the shuffle key with data (k0, k1): keys [8] of the epoch's
    network (fold_in(key, epoch) is threefry2x32(key, (0, epoch)))."""
    f0, f1 = _threefry2x32(np.uint32(k0), np.uint32(k1), np.uint32(0), np.uint32(epoch))
    for r in range(keys.shape[0]):
        keys[r] = _mix(np.uint32(f0 ^ _mix(np.uint32(f1 + np.uint32(np.uint32(r) * np.uint32(0x9E3779B9))))))


@njit(cache=True)
def cycle_walks(keys, n, a, b, walks):
    """``data.cycle_walks``: walks[k] = the first value below n on the cycle of n + k, for the
    a b - n excess values (at most a b - n network passes each)."""
    a32, b32, n32 = np.uint32(a), np.uint32(b), np.uint32(n)
    limit = a * b - n
    for k in range(limit):
        v = np.uint32(n + k)
        steps = 0
        while v >= n32 and steps < limit:
            left, right = _round(np.uint32(v // b32), np.uint32(v % b32), keys[0], a32)
            v = _rounds_after_first(left, right, keys, a32, b32)
            steps += 1
        walks[k] = v


@njit(inline="always")
def _first_round_table(first_round, a32, b32, key):
    """first_round[c] = the first round's F (scaled to a) of column c < b: the same for every row
    of the grid, so an epoch hashes it once per column."""
    for c in range(np.int64(b32)):
        first_round[c] = np.uint32(np.uint32((_mix(np.uint32(np.uint32(c) ^ key)) >> np.uint32(16)) * a32) >> np.uint32(16))


@njit(inline="always")
def _first_round(left, right, c, top, col, b, a32, first_round):
    """left, right [:c] = the grid coordinates after the first round of the c positions from
    grid coordinates (top, col) on: row segments, one vectorized loop each (slices, so indexing
    needs no check for negative indices); returns the coordinates of the position after them."""
    q = 0
    while q < c:
        seg = min(c - q, b - col)
        table, dl, dr, top32, col32 = first_round[col:], left[q:], right[q:], np.uint32(top), np.uint32(col)
        for j in range(seg):
            s = np.uint32(top32 + table[j])
            dl[j] = np.uint32(col32 + np.uint32(j))
            dr[j] = min(s, np.uint32(s - a32))  # (top + F) mod a, as a min: see _rounds
        q += seg
        col += seg
        if col == b:
            col, top = 0, top + 1
    return top, col


@njit(inline="always")
def _rounds(left, right, c, keys, a32, b32):
    """Rounds 1 to 7 of the network on left, right [:c], round by round: each round is one loop
    of independent lanes, so the cores run it at the multiplier's throughput (on an Intel Xeon a
    position's seven rounds in one chain ran at the multiplier's 10-cycle latency, 2.7x slower).
    x mod m for x < 2 m is min(x, x - m), unsigned (a compare and select ran at half the speed)."""
    for r in range(1, D.FEISTEL_ROUNDS):
        m = b32 if r % 2 == 1 else a32
        key = keys[r]
        for j in range(c):
            h = np.uint32(np.uint32((_mix(np.uint32(right[j] ^ key)) >> np.uint32(16)) * m) >> np.uint32(16))
            s = np.uint32(left[j] + h)
            left[j] = right[j]
            right[j] = min(s, np.uint32(s - m))


@njit(cache=True)
def epoch_order(order, first_round, lanes, n, a, b, keys, walks):
    """order[p] = sample visited at position p of the epoch, p < n (``data.visit``): CHUNK
    positions at a time (scratch lanes [2, CHUNK]), the first round from its table, the other
    rounds round by round, then the grid value L b + R; the rare excess images are replaced by
    their cycle walks in a last loop (so the others vectorize)."""
    wide_vectors()
    a32, b32 = np.uint32(a), np.uint32(b)
    _first_round_table(first_round, a32, b32, keys[0])
    left, right = lanes[0], lanes[1]
    top = col = 0
    for s in range(0, n, CHUNK):
        c = min(CHUNK, n - s)
        top, col = _first_round(left, right, c, top, col, b, a32, first_round)
        _rounds(left, right, c, keys, a32, b32)
        dest = order[s:]
        for j in range(c):
            dest[j] = np.int32(np.uint32(np.uint32(left[j] * b32) + right[j]))
    if a * b > n:
        for q in range(n):
            v = np.uint32(order[q])
            if v >= n:
                order[q] = np.int32(walks[v - n])


@njit(inline="always")
def _start_epoch(key_data, ds, epoch, n, a, b, keys, walks, order, first_round, lanes):
    """The epoch's round keys, cycle walks and whole order."""
    round_keys(key_data[ds, 0], key_data[ds, 1], epoch, keys)
    cycle_walks(keys, n, a, b, walks)
    epoch_order(order, first_round, lanes, n, a, b, keys, walks)


@njit(inline="always")
def _note_divergence(theta, ds, bad, epoch):
    """bad[ds, h] = epoch + 1 for every run h whose parameters are no longer all finite after
    ``epoch``, unless an earlier epoch is noted (a non-finite parameter stays non-finite)."""
    for h in range(theta.shape[1]):
        if bad[ds, h] == NOT_DIVERGED and not np.all(np.isfinite(theta[ds, h])):
            bad[ds, h] = epoch + 1


# ---------------------------------------------------------------- minibatch epochs
#
# Dataset by dataset (its samples stay in cache for all the call's epochs), epoch by epoch, every
# learning rate's run takes its step from the batch (gathered through the epoch's order by the
# run itself with two features; with any other count gathered once into a small contiguous
# buffer): r = ((b - y) + x_1 w_1) + x_2 w_2 ..., the sums of s = sign(r) (or r) times (x, 1)
# over the batch in one vectorized loop, and optax.sgd's update theta + (-lr) (sum / c) (seed
# mode: the mean times -2).  Everything is in one function per feature count (two features: one
# pass per batch and run; any other: a pass per feature), since calls and array views per batch
# cost more than the batch's arithmetic.

NOT_DIVERGED = np.iinfo(np.int32).max


@njit(fastmath=FASTMATH, cache=True)
def _epochs_two_features(x, y, theta, lr, table, key_data, first_epoch, epochs, width, mode, bad,
                         order, first_round, buf, lanes, walks, keys):
    """``sgd_epochs_arrays`` for two features: each run's step gathers its batch itself, in the
    vectorized loop of its sums (vector gathers; on an Intel Xeon 1.2x faster for one learning
    rate than a batch gathered once into ``buf``, as fast for two, 0.8x for six), and every
    run's sums come from the same loop, so its numbers do not depend on how many learning rates
    share its dataset."""
    wide_vectors()
    for ds in range(theta.shape[0]):
        first, n, a, b = table[ds, 0], table[ds, 1], table[ds, 2], table[ds, 3]
        x0_all, x1_all, y_all = x[0, first:first + n], x[1, first:first + n], y[first:first + n]
        for epoch in range(first_epoch, first_epoch + epochs):
            _start_epoch(key_data, ds, epoch, n, a, b, keys, walks, order, first_round, lanes)
            for s in range(0, n, width):
                c = min(width, n - s)
                visit = order[s:]
                m = np.float32(c)
                for h in range(theta.shape[1]):
                    w0, w1, bias = theta[ds, h, 0], theta[ds, h, 1], theta[ds, h, 2]
                    g0 = g1 = gb = np.float32(0.0)
                    for j in range(c):
                        # a 31-bit index: 32-bit gathers, 8 lanes (a uint32 index took 64-bit ones, 4 lanes: 1.15x slower)
                        i = np.int32(visit[j] & np.int32(0x7FFFFFFF))
                        x0, x1 = x0_all[i], x1_all[i]
                        r = ((bias - y_all[i]) + x0 * w0) + x1 * w1
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
            _note_divergence(theta, ds, bad, epoch)


@njit(fastmath=FASTMATH, cache=True)
def _epochs_any_features(x, y, theta, lr, table, key_data, first_epoch, epochs, width, mode, bad,
                         order, first_round, buf, lanes, walks, keys):
    """``sgd_epochs_arrays`` for any number of features d: buf rows x_1..x_d, y, r (256-bit
    vectors where LLVM prefers them: 512-bit ones were not measured faster here)."""
    p = theta.shape[2]
    d = p - 1
    r = buf[p]
    grad = np.empty(p, np.float32)
    for ds in range(theta.shape[0]):
        first, n, a, b = table[ds, 0], table[ds, 1], table[ds, 2], table[ds, 3]
        mine, y_mine = x[:, first:first + n], y[first:first + n]
        for epoch in range(first_epoch, first_epoch + epochs):
            _start_epoch(key_data, ds, epoch, n, a, b, keys, walks, order, first_round, lanes)
            for s in range(0, n, width):
                c = min(width, n - s)
                visit = order[s:]
                for j in range(c):
                    i = np.uint32(visit[j])  # unsigned: no check for negative indices (a third faster)
                    for k in range(d):
                        buf[k, j] = mine[k, i]
                    buf[d, j] = y_mine[i]
                m = np.float32(c)
                for h in range(theta.shape[1]):
                    th = theta[ds, h]
                    yb = buf[d]
                    for j in range(c):
                        r[j] = th[d] - yb[j]
                    for k in range(d):
                        w, xb = th[k], buf[k]
                        for j in range(c):
                            r[j] = r[j] + xb[j] * w
                    if mode != SEED_GRADIENT:
                        for j in range(c):
                            r[j] = _sign(r[j])
                    for k in range(d):
                        xb = buf[k]
                        acc = np.float32(0.0)
                        for j in range(c):
                            acc += r[j] * xb[j]
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
            _note_divergence(theta, ds, bad, epoch)


@njit(inline="always")
def _fresh_runs(frame, theta_arg, bad_ret, n_data, n_lr, p):
    """The runs' parameters [D, H, p] copied from argument ``theta_arg`` to result 0 (where the
    epochs kernels update them in place), and result ``bad_ret`` [D, H] set to NOT_DIVERGED and
    returned."""
    flat_in = F.arg(frame, theta_arg, n_data * n_lr * p, np.float32)
    flat = F.ret(frame, 0, n_data * n_lr * p, np.float32)
    for i in range(flat.shape[0]):  # a loop, not a slice assignment: no shape-error path to compile
        flat[i] = flat_in[i]
    bad = F.ret(frame, bad_ret, (n_data, n_lr), np.int32)
    for i in range(n_data):
        for h in range(n_lr):
            bad[i, h] = NOT_DIVERGED
    return bad


@njit(inline="always")
def _sgd_frame(frame):
    """The arrays of a ``sgd_epochs`` call frame (see ``_sgd_two_handler``), the runs' parameters
    copied to the result and ``bad`` set to NOT_DIVERGED: the arguments of the epochs kernels
    (x [d, slots], y [slots], theta [D, H, p] updated in place, table [D, 4] (first slot, n, a,
    b), key_data [D, 2] (shuffle keys), the first epoch, the epochs, width, mode, bad [D, H] (1 +
    the first epoch after which a run is not finite, or NOT_DIVERGED); scratch order [>= max
    n], first_round [>= max b], buf [p + 1, >= width], lanes [2, CHUNK], walks [>= max a b - n,
    >= 1], keys [8])."""
    d, slots = F.arg_dim(frame, 0, 0), F.arg_dim(frame, 0, 1)
    n_data, n_lr, p = F.arg_dim(frame, 2, 0), F.arg_dim(frame, 2, 1), F.arg_dim(frame, 2, 2)
    settings = F.arg(frame, 6, 4, np.int32)
    width = np.int64(settings[0])
    bad = _fresh_runs(frame, 2, 1, n_data, n_lr, p)
    return (F.arg(frame, 0, (d, slots), np.float32), F.arg(frame, 1, slots, np.float32),
            F.ret(frame, 0, (n_data, n_lr, p), np.float32), F.arg(frame, 3, n_lr, np.float32),
            F.arg(frame, 4, (n_data, 4), np.int32), F.arg(frame, 5, (n_data, 2), np.uint32),
            np.int64(settings[2]), np.int64(settings[3]), width, settings[1], bad,
            F.ret(frame, 2, F.ret_dim(frame, 2, 0), np.int32), F.ret(frame, 3, F.ret_dim(frame, 3, 0), np.uint32),
            F.ret(frame, 4, (p + 1, width), np.float32), F.ret(frame, 5, (2, CHUNK), np.uint32),
            F.ret(frame, 6, F.ret_dim(frame, 6, 0), np.uint32), F.ret(frame, 7, 8, np.uint32))


def _sgd_two_handler(address):
    """FFI handler of ``sgd_epochs`` with two features: args x [d, slots] f32, y [slots] f32,
    theta [D, H, p] f32, lr [H] f32, table [D, 4] i32, key_data [D, 2] u32, settings [4] i32
    (width, mode, first epoch, epochs); results theta [D, H, p] f32, bad [D, H] i32 and scratch:
    order [max n] i32, first_round [max b] u32, buf [p + 1, width] f32, lanes [2, CHUNK] u32,
    walks [W] u32, keys [8] u32."""
    frame, status = F.enter(address, np.int64(7), np.int64(8))
    if status != F.PROCEED:
        return status
    _epochs_two_features(*_sgd_frame(frame))
    return 0


def _sgd_any_handler(address):
    """``_sgd_two_handler`` for any number of features."""
    frame, status = F.enter(address, np.int64(7), np.int64(8))
    if status != F.PROCEED:
        return status
    _epochs_any_features(*_sgd_frame(frame))
    return 0


# ---------------------------------------------------------------- synthetic samples' bits
#
# ``data.sample_bits``, the hashing behind every synthetic sample (four fifths of XLA's time to
# generate the data), computed here 4x faster per core: one vectorized loop per row and word.


@njit(cache=True)
def sample_bits_arrays(key_data, j, words, out, folded):
    """out[w, r, t] = word w of ``data.sample_bits`` for key data key_data [R, 2] and indices
    j [R, T], then (if out has words + 2 rows) the folded keys' two words; folded: scratch [2, T]."""
    wide_vectors()
    tile = j.shape[1]
    f0, f1 = folded[0], folded[1]
    for r in range(j.shape[0]):
        k0, k1, jr = key_data[r, 0], key_data[r, 1], j[r]
        for t in range(tile):
            f0[t], f1[t] = _threefry2x32(k0, k1, np.uint32(0), np.uint32(jr[t]))
        for w in range(words):
            ow = out[w, r]
            for t in range(tile):
                y0, y1 = _threefry2x32(f0[t], f1[t], np.uint32(0), np.uint32(w))
                ow[t] = np.uint32(y0 ^ y1)
        if out.shape[0] > words:
            k0_out, k1_out = out[words, r], out[words + 1, r]
            for t in range(tile):  # not a slice assignment: no shape-error path to compile
                k0_out[t], k1_out[t] = f0[t], f1[t]


def _sample_bits_handler(address):
    """FFI handler: args key_data [R, 2] u32, j [R, T] i32, settings [1] i32 (words); results
    out [rows, R, T] u32 (rows = words, or words + 2 with the folded keys) and scratch [2, T] u32."""
    frame, status = F.enter(address, np.int64(3), np.int64(2))
    if status != F.PROCEED:
        return status
    rows, tile = F.arg_dim(frame, 1, 0), F.arg_dim(frame, 1, 1)
    out_rows = F.ret_dim(frame, 0, 0)
    sample_bits_arrays(F.arg(frame, 0, (rows, 2), np.uint32), F.arg(frame, 1, (rows, tile), np.int32),
                       np.int64(F.arg(frame, 2, 1, np.int32)[0]),
                       F.ret(frame, 0, (out_rows, rows, tile), np.uint32), F.ret(frame, 1, (2, tile), np.uint32))
    return 0


# ---------------------------------------------------------------- the full-batch pass
#
# Tile by tile (a tile holds up to T samples of one dataset and stays in L1), every learning
# rate's run sums |r|, s x_k and s over the tile's real samples in one vectorized loop; the
# tile's sums are added to its dataset's in tile order.  ``full_batch_sums`` makes one such
# pass over every tile; ``full_sgd_epochs`` makes whole epochs of plain SGD, dataset by dataset
# (its tiles stay in cache for all the call's epochs), each a pass over the dataset's tiles then
# optax.sgd's update, so no epoch returns to XLA.


@njit(inline="always")
def _tile_two(x0, x1, yt, c, w0, w1, bias, mode):
    """One run's sums over a tile's c samples, two features: (sum |r|, sum s x_1, sum s x_2, sum s)."""
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
    return a, g0, g1, gb


@njit(inline="always")
def _tile_any(x, yt, t, c, th, mode, r, g):
    """One run's sums over tile t's c samples, any number of features d (parameters th [d + 1],
    scratch r [>= c]): adds sum s x_k and sum s to g [d + 1], returns sum |r|."""
    d = x.shape[0]
    for j in range(c):
        r[j] = th[d] - yt[j]
    for k in range(d):
        w, xk = th[k], x[k, t]
        for j in range(c):
            r[j] = r[j] + xk[j] * w
    a = np.float32(0.0)
    for j in range(c):
        a += abs(r[j])
    if mode != SEED_GRADIENT:
        for j in range(c):
            r[j] = _sign(r[j])
    for k in range(d):
        xk = x[k, t]
        acc = np.float32(0.0)
        for j in range(c):
            acc += r[j] * xk[j]
        g[k] += acc
    acc = np.float32(0.0)
    for j in range(c):
        acc += r[j]
    g[d] += acc
    return a


@njit(fastmath=FASTMATH, cache=True)
def _sums_two_features(x, y, count, owner, theta, mode, l1, grad):
    """``full_batch_sums_arrays`` for two features."""
    wide_vectors()
    for t in range(y.shape[0]):
        o, c = owner[t], count[t]
        x0, x1, yt = x[0, t], x[1, t], y[t]
        for h in range(theta.shape[1]):
            a, g0, g1, gb = _tile_two(x0, x1, yt, c, theta[o, h, 0], theta[o, h, 1], theta[o, h, 2], mode)
            l1[o, h] += a
            grad[o, h, 0] += g0
            grad[o, h, 1] += g1
            grad[o, h, 2] += gb


@njit(fastmath=FASTMATH, cache=True)
def _sums_any_features(x, y, count, owner, theta, mode, l1, grad, r):
    """``full_batch_sums_arrays`` for any number of features d (r: scratch [>= T])."""
    wide_vectors()
    for t in range(y.shape[0]):
        o, c = owner[t], count[t]
        for h in range(theta.shape[1]):
            l1[o, h] += _tile_any(x, y[t], t, c, theta[o, h], mode, r, grad[o, h])


@njit(inline="always")
def _tile_ranges(owner, ranges):
    """ranges[i], ranges[i + 1] = the first and past-the-last tile of dataset i (tiles follow
    their datasets in order; a dataset without tiles gets an empty range)."""
    t = 0
    ranges[0] = 0
    for i in range(ranges.shape[0] - 1):
        while t < owner.shape[0] and owner[t] == i:
            t += 1
        ranges[i + 1] = t


@njit(inline="always")
def _full_update(theta, ds, lr, size, mode, acc, l1_first, bad, epoch, first_epoch):
    """After an epoch's pass over dataset ds (acc [H, p + 1]: sum |r|, then the gradient sums):
    the first epoch's sum |r| kept, optax.sgd's update theta + (-lr) (sum / n) (seed mode: the
    mean times -2), and the first bad epoch noted as the XLA path does (``full_batch_epoch``):
    this epoch where the loss is not finite, the next where the parameters are not."""
    p = theta.shape[2]
    n = size[ds]
    for h in range(theta.shape[1]):
        if epoch == first_epoch:
            l1_first[ds, h] = acc[h, 0]
        if bad[ds, h] == NOT_DIVERGED and not np.isfinite(acc[h, 0]):
            bad[ds, h] = epoch
        step = -lr[h]
        for k in range(p):
            g = acc[h, k + 1] / n
            if mode == SEED_GRADIENT:
                g = np.float32(-2.0) * g
            theta[ds, h, k] = theta[ds, h, k] + step * g
        if bad[ds, h] == NOT_DIVERGED and not np.all(np.isfinite(theta[ds, h])):
            bad[ds, h] = epoch + 1


@njit(fastmath=FASTMATH, cache=True)
def _full_epochs_two_features(x, y, count, owner, theta, lr, size, mode, first_epoch, epochs, l1_first, bad,
                              ranges, acc, r):
    """``full_sgd_epochs`` for two features."""
    wide_vectors()
    _tile_ranges(owner, ranges)
    for ds in range(theta.shape[0]):
        for epoch in range(first_epoch, first_epoch + epochs):
            acc[:] = 0
            for t in range(ranges[ds], ranges[ds + 1]):
                c = count[t]
                x0, x1, yt = x[0, t], x[1, t], y[t]
                for h in range(theta.shape[1]):
                    a, g0, g1, gb = _tile_two(x0, x1, yt, c, theta[ds, h, 0], theta[ds, h, 1], theta[ds, h, 2], mode)
                    acc[h, 0] += a
                    acc[h, 1] += g0
                    acc[h, 2] += g1
                    acc[h, 3] += gb
            _full_update(theta, ds, lr, size, mode, acc, l1_first, bad, epoch, first_epoch)


@njit(fastmath=FASTMATH, cache=True)
def _full_epochs_any_features(x, y, count, owner, theta, lr, size, mode, first_epoch, epochs, l1_first, bad,
                              ranges, acc, r):
    """``full_sgd_epochs`` for any number of features (r: scratch [>= T])."""
    wide_vectors()
    _tile_ranges(owner, ranges)
    for ds in range(theta.shape[0]):
        for epoch in range(first_epoch, first_epoch + epochs):
            acc[:] = 0
            for t in range(ranges[ds], ranges[ds + 1]):
                for h in range(theta.shape[1]):
                    acc[h, 0] += _tile_any(x, y[t], t, count[t], theta[ds, h], mode, r, acc[h, 1:])
            _full_update(theta, ds, lr, size, mode, acc, l1_first, bad, epoch, first_epoch)


@njit(inline="always")
def _full_frame(frame):
    """The arrays of a ``full_batch_sums`` call frame (see ``_full_two_handler``), the sums
    zeroed: x [d, tiles, T], y [tiles, T], count [tiles], owner [tiles], theta [D, H, p], mode,
    l1 [D, H], grad [D, H, p] and scratch r [T]."""
    d, tiles, tile = F.arg_dim(frame, 0, 0), F.arg_dim(frame, 0, 1), F.arg_dim(frame, 0, 2)
    n_data, n_lr, p = F.arg_dim(frame, 4, 0), F.arg_dim(frame, 4, 1), F.arg_dim(frame, 4, 2)
    l1, grad = F.ret(frame, 0, n_data * n_lr, np.float32), F.ret(frame, 1, n_data * n_lr * p, np.float32)
    for i in range(l1.shape[0]):
        l1[i] = 0
    for i in range(grad.shape[0]):
        grad[i] = 0
    return (F.arg(frame, 0, (d, tiles, tile), np.float32), F.arg(frame, 1, (tiles, tile), np.float32),
            F.arg(frame, 2, tiles, np.int32), F.arg(frame, 3, tiles, np.int32),
            F.arg(frame, 4, (n_data, n_lr, p), np.float32), F.arg(frame, 5, 1, np.int32)[0],
            F.ret(frame, 0, (n_data, n_lr), np.float32), F.ret(frame, 1, (n_data, n_lr, p), np.float32),
            F.ret(frame, 2, tile, np.float32))


def _full_two_handler(address):
    """FFI handler of ``full_batch_sums`` with two features: args x [d, tiles, T] f32, y [tiles,
    T] f32, count [tiles] i32, owner [tiles] i32, theta [D, H, p] f32, settings [1] i32 (mode);
    results l1 [D, H], grad [D, H, p] f32 and scratch [T] f32."""
    frame, status = F.enter(address, np.int64(6), np.int64(3))
    if status != F.PROCEED:
        return status
    _sums_two_features(*_full_frame(frame)[:-1])
    return 0


def _full_any_handler(address):
    """``_full_two_handler`` for any number of features."""
    frame, status = F.enter(address, np.int64(6), np.int64(3))
    if status != F.PROCEED:
        return status
    _sums_any_features(*_full_frame(frame))
    return 0


@njit(inline="always")
def _full_sgd_frame(frame):
    """The arrays of a ``full_sgd_epochs`` call frame (see ``_full_sgd_two_handler``), the runs'
    parameters copied to the result and ``bad`` set to NOT_DIVERGED: the arguments of the
    full-batch epochs kernels."""
    d, tiles, tile = F.arg_dim(frame, 0, 0), F.arg_dim(frame, 0, 1), F.arg_dim(frame, 0, 2)
    n_data, n_lr, p = F.arg_dim(frame, 4, 0), F.arg_dim(frame, 4, 1), F.arg_dim(frame, 4, 2)
    settings = F.arg(frame, 7, 3, np.int32)
    bad = _fresh_runs(frame, 4, 2, n_data, n_lr, p)
    return (F.arg(frame, 0, (d, tiles, tile), np.float32), F.arg(frame, 1, (tiles, tile), np.float32),
            F.arg(frame, 2, tiles, np.int32), F.arg(frame, 3, tiles, np.int32),
            F.ret(frame, 0, (n_data, n_lr, p), np.float32), F.arg(frame, 5, n_lr, np.float32),
            F.arg(frame, 6, n_data, np.float32), settings[0], np.int64(settings[1]), np.int64(settings[2]),
            F.ret(frame, 1, (n_data, n_lr), np.float32), bad, F.ret(frame, 3, n_data + 1, np.int32),
            F.ret(frame, 4, (n_lr, p + 1), np.float32), F.ret(frame, 5, tile, np.float32))


def _full_sgd_two_handler(address):
    """FFI handler of ``full_sgd_epochs`` with two features: args x [d, tiles, T] f32, y [tiles,
    T] f32, count [tiles] i32, owner [tiles] i32, theta [D, H, p] f32, lr [H] f32, size [D] f32,
    settings [3] i32 (mode, first epoch, epochs); results theta [D, H, p] f32, the first epoch's
    sum |r| [D, H] f32, bad [D, H] i32 and scratch: ranges [D + 1] i32, acc [H, p + 1] f32, r [T]
    f32."""
    frame, status = F.enter(address, np.int64(8), np.int64(6))
    if status != F.PROCEED:
        return status
    _full_epochs_two_features(*_full_sgd_frame(frame))
    return 0


def _full_sgd_any_handler(address):
    """``_full_sgd_two_handler`` for any number of features."""
    frame, status = F.enter(address, np.int64(8), np.int64(6))
    if status != F.PROCEED:
        return status
    _full_epochs_any_features(*_full_sgd_frame(frame))
    return 0


# ---------------------------------------------------------------- JAX side

_HANDLERS = {SGD_EPOCHS: _sgd_any_handler, SGD_EPOCHS + "_2": _sgd_two_handler,
             FULL_BATCH: _full_any_handler, FULL_BATCH + "_2": _full_two_handler,
             FULL_SGD: _full_sgd_any_handler, FULL_SGD + "_2": _full_sgd_two_handler, SAMPLE_BITS: _sample_bits_handler}
_COMPILED: dict[str, object] = {}  # target -> its handler (kept: XLA holds only its address)
SIGNATURE = types.int64(types.int64)  # a typed XLA FFI handler: the call frame's address -> its error


def target(name: str) -> str:
    """The FFI target ``name``, its handler compiled (or loaded from Numba's disk cache) and
    registered with XLA's CPU platform on first use, so a process compiles only the kernels it
    runs (from a cold cache all five took about 19 s of CPU on the 2-core EPYC).  If the child of
    ``kernels.prepare_cpu`` is compiling it, this waits for it and loads its result."""
    with _Child.lock:
        if name not in _COMPILED:
            await_child(name)
            handler = cfunc(SIGNATURE, cache=True)(_HANDLERS[name])
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler.address), platform="cpu", api_version=1)
            _COMPILED[name] = handler
    return name


def to_compile(names: list[str]) -> list[str]:
    """The targets among ``names`` (in order, once each) whose handlers neither this process has
    loaded nor Numba's disk cache holds: the ones worth compiling ahead in another process."""
    return [name for name in dict.fromkeys(names) if name not in _COMPILED and not _in_disk_cache(name)]


def _in_disk_cache(name: str) -> bool:
    """Whether Numba's disk cache holds target ``name``'s handler for this machine (a lookup as
    ``cfunc(cache=True)`` makes before compiling: milliseconds).  It uses Numba's internal
    ``CFunc``; where that is missing or differs, False (the handler then goes to the child,
    which loads it)."""
    try:
        from numba.core.ccallback import CFunc
        from numba.core.sigutils import normalize_signature

        handler = CFunc(_HANDLERS[name], normalize_signature(SIGNATURE), locals={}, options={})
        handler.enable_caching()
        return handler._cache.load_overload(handler._sig, handler._targetdescr.target_context) is not None
    except Exception:  # noqa: BLE001 - any failure of an internal API means "not known to be cached"
        return False


def compile_to_cache(names: list[str]) -> None:
    """The child of ``kernels.prepare_cpu``: compile each target's handler into Numba's disk
    cache, naming each on stdout when done."""
    for name in names:
        cfunc(SIGNATURE, cache=True)(_HANDLERS[name])
        print(name, flush=True)


def _features_variant(name: str, p: int) -> str:
    """The target of kernel ``name`` for p parameters (two features and a bias have their own)."""
    return target(name + "_2" if p == 3 else name)


def sgd_epochs(x: jax.Array, y: jax.Array, theta: jax.Array, lr: jax.Array, table: jax.Array, key_data: jax.Array,
               first_epoch: jax.Array, epochs: int, width: int, max_size: int, max_side: int, walk_width: int,
               gradient: str) -> tuple[jax.Array, jax.Array]:
    """Every run's parameters [D, H, p] after ``epochs`` minibatch epochs of plain SGD at constant
    learning rates from epoch ``first_epoch``, and per run 1 + the first epoch after which it was
    not finite [D, H] (``NOT_DIVERGED`` if none): samples x [d, slots], y [slots], table [D, 4]
    int32 (first slot, size, grid sides a, b), key_data [D, 2] uint32 (shuffle keys); ``width``
    samples a batch, ``max_size`` the largest dataset, ``max_side`` its largest grid side b,
    ``walk_width`` the largest excess a b - n."""
    p = theta.shape[2]
    settings = jnp.concatenate([jnp.asarray([width], jnp.int32), _mode(gradient),
                                jnp.asarray(first_epoch, jnp.int32)[None], jnp.asarray([epochs], jnp.int32)])
    scratch = (((max_size,), jnp.int32), ((max_side,), jnp.uint32), ((p + 1, width), jnp.float32),
               ((2, CHUNK), jnp.uint32), ((max(walk_width, 1),), jnp.uint32), ((8,), jnp.uint32))
    out = jax.ffi.ffi_call(_features_variant(SGD_EPOCHS, p), (jax.ShapeDtypeStruct(theta.shape, jnp.float32),
                                        jax.ShapeDtypeStruct(theta.shape[:2], jnp.int32),
                                        *(jax.ShapeDtypeStruct(s, t) for s, t in scratch)),
                           vmap_method="sequential")
    theta, bad, *_ = out(x, y, theta, lr, table, key_data, settings)
    return theta, bad


def _mode(gradient: str) -> jax.Array:
    return jnp.asarray([SEED_GRADIENT if gradient == "seed" else 0], jnp.int32)


def full_batch_sums(x: jax.Array, y: jax.Array, count: jax.Array, owner: jax.Array, theta: jax.Array,
                    gradient: str) -> tuple[jax.Array, jax.Array]:
    """Per dataset the sums of |r| [D, H] and of the gradient terms [D, H, p] over its packed
    tiles (x [d, tiles, T], y [tiles, T], ``count`` real samples and dataset ``owner`` each) at
    theta [D, H, p]; ``step.packed_sums`` computes the same in XLA."""
    shapes = (jax.ShapeDtypeStruct(theta.shape[:2], jnp.float32), jax.ShapeDtypeStruct(theta.shape, jnp.float32),
              jax.ShapeDtypeStruct((y.shape[1],), jnp.float32))
    out = jax.ffi.ffi_call(_features_variant(FULL_BATCH, theta.shape[2]), shapes, vmap_method="sequential")
    l1, grad, _ = out(x, y, count, owner, theta, _mode(gradient))
    return l1, grad


def full_sgd_epochs(x: jax.Array, y: jax.Array, count: jax.Array, owner: jax.Array, theta: jax.Array,
                    lr: jax.Array, size: jax.Array, first_epoch: jax.Array, epochs: int,
                    gradient: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every run's parameters [D, H, p] after ``epochs`` full-batch epochs of plain SGD at
    constant learning rates lr [H] from epoch ``first_epoch`` over the packed tiles (as
    ``full_batch_sums``; size [D] float32 the datasets' sizes), the first epoch's sums of |r|
    [D, H], and per run its first bad epoch [D, H] (``NOT_DIVERGED`` if none)."""
    p, tile = theta.shape[2], y.shape[1]
    settings = jnp.concatenate([_mode(gradient), jnp.asarray(first_epoch, jnp.int32)[None],
                                jnp.asarray([epochs], jnp.int32)])
    shapes = ((theta.shape, jnp.float32), (theta.shape[:2], jnp.float32), (theta.shape[:2], jnp.int32),
              ((theta.shape[0] + 1,), jnp.int32), ((theta.shape[1], p + 1), jnp.float32), ((tile,), jnp.float32))
    out = jax.ffi.ffi_call(_features_variant(FULL_SGD, p), tuple(jax.ShapeDtypeStruct(s, t) for s, t in shapes),
                           vmap_method="sequential")
    theta, l1_first, bad, *_ = out(x, y, count, owner, theta, lr, size, settings)
    return theta, l1_first, bad


def sample_bits(keys: jax.Array, j: jax.Array, words: int,
                with_keys: bool = True) -> tuple[jax.Array, jax.Array | None]:
    """``data.sample_bits`` (the same bits and folded keys, to the bit) by the kernel."""
    kd = jax.random.key_data(keys).astype(jnp.uint32).reshape(-1, 2)
    j2 = j.astype(jnp.int32).reshape(kd.shape[0], -1)
    rows = words + 2 if with_keys else words
    out, _ = jax.ffi.ffi_call(target(SAMPLE_BITS), (jax.ShapeDtypeStruct((rows, *j2.shape), jnp.uint32),
                                            jax.ShapeDtypeStruct((2, j2.shape[1]), jnp.uint32)),
                              vmap_method="sequential")(kd, j2, jnp.asarray([words], jnp.int32))
    out = jnp.moveaxis(out, 0, -1).reshape(*j.shape, rows)
    return out[..., :words], (out[..., words:] if with_keys else None)
