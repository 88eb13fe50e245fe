"""Exact minimum of each dataset's training L1 loss (least-absolute-deviation regression).

All datasets of a packed group are solved together: per-dataset quantities come from
per-tile sums and ``segment_sum`` over the tile owners, so nothing loops over datasets.

Method.  IRLS (weighted least squares with weights 1 / max(|r|, eps)) brings every dataset
near its optimum.  LAD is a linear program, so it has an optimal *vertex*: a fit that
interpolates p = d + 1 samples (the basis B).  From the vertex of the p independent samples
with the smallest IRLS residuals, a simplex descent finishes exactly:

* at a vertex the loss f(theta) = sum_i |r_i| has directional derivative 1 + sigma * v_k
  along the edge that frees basis sample k with sign sigma (X_B delta = sigma e_k), where
  v = X_B^-T g and g = sum_{i not in B} sign(r_i) (x_i, 1);
* if every |v_k| <= 1 then 0 is in the subdifferential of the convex f (basis samples take
  the multipliers -v_k in [-1, 1]): the vertex is a global optimum, a certificate;
* otherwise the edge of the largest |v_k| descends; the loss along it is convex piecewise
  linear with breakpoints where a residual crosses 0, and the exact line minimum is the
  first breakpoint at which the slope turns non-negative (a weighted median, found from the
  smallest breakpoints of each tile, ``_line_minimum``).  That sample enters the basis in
  place of sample k.

Each pivot strictly lowers the loss when no further residual is exactly zero (samples in
general position, true almost surely for continuous data), so no vertex repeats, and there are
finitely many vertices: the descent ends at a certified optimum.  In float32 a pivot is taken
only if its predicted decrease exceeds ``PIVOT_GAIN`` of the loss, since neighbouring vertices
tied to rounding level would otherwise cycle; ``max_pivots`` bounds the work.  The IRLS fit is
returned only where no valid vertex exists (a singular basis on degenerate data).

Accuracy (float32): L* is the loss of the exact vertex (its p interpolated residuals counted
as 0, which float32 theta only approximates to rounding level), summed in two passes; it
matches a float64 linear program to ~1e-7 relative.  Datasets barely larger than p, whose L*
is a few residuals, can be off by ~1e-5 relative from float32 rounding of the fit.  Data with
exact ties (integer-valued targets and features) have degenerate vertices, where the descent
can stop early: up to ~2e-4 relative was seen there.

Assumes each dataset has at least p samples and a full-rank design [x, 1].
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from l1jax.engine.data import Packed

IRLS_ITERS = 16
MAX_PIVOTS = 256
IRLS_EPS = 1e-4  # IRLS weight floor, relative to the dataset's mean |r|
PIVOT_GAIN = 1e-9  # least loss decrease, relative to the loss, of a pivot (float32 ties)
CANDIDATES_PER_PARAM = 4  # smallest-|r| samples searched for the starting basis, per parameter
PIVOT_CANDIDATES = 16  # smallest breakpoints kept per tile in a line search


def _design(data: Packed) -> jax.Array:
    """Rows (x, 1) of every slot, zero rows for padding: [tiles, T, p]."""
    return jnp.concatenate([jnp.moveaxis(data.x, 0, -1), data.mask[..., None]], axis=-1)


def _segsum(v: jax.Array, owner: jax.Array, n_datasets: int) -> jax.Array:
    """Per-dataset sums of per-tile values (tiles are sorted by owner)."""
    return jax.ops.segment_sum(v, owner, n_datasets, indices_are_sorted=True)


def _residuals(xd: jax.Array, y: jax.Array, theta: jax.Array, owner: jax.Array) -> jax.Array:
    """r = (x, 1).theta - y of every slot under its dataset's theta [D, p]: [tiles, T]."""
    return jnp.einsum("tjp,tp->tj", xd, theta[owner]) - y


def _mean_abs(r: jax.Array, data: Packed, n_datasets: int) -> jax.Array:
    """Mean |r| over each dataset's real samples, in two passes (a rough mean, then the mean
    deviation from it) so float32 rounding stays relative to the spread, not the total."""
    count = _segsum(jnp.sum(data.mask, axis=1), data.owner, n_datasets)

    def mean(v: jax.Array) -> jax.Array:
        return _segsum(jnp.sum(v * data.mask, axis=1), data.owner, n_datasets) / count

    rough = mean(jnp.abs(r))
    return rough + mean(jnp.abs(r) - rough[data.owner][:, None])


def _weighted_lstsq(xd: jax.Array, y: jax.Array, w: jax.Array, owner: jax.Array,
                    n_datasets: int) -> jax.Array:
    """Per-dataset weighted least squares from segment-summed normal equations: [D, p]."""
    a = _segsum(jnp.einsum("tj,tjp,tjq->tpq", w, xd, xd), owner, n_datasets)
    b = _segsum(jnp.einsum("tj,tjp,tj->tp", w, xd, y), owner, n_datasets)
    return jnp.linalg.solve(a, b[..., None])[..., 0]


def irls(data: Packed, n_datasets: int, iters: int = IRLS_ITERS) -> jax.Array:
    """Approximate LAD fits [D, p]: least squares, then ``iters`` reweightings 1/max(|r|, eps)."""
    xd = _design(data)

    def body(_: int, theta: jax.Array) -> jax.Array:
        r = _residuals(xd, data.y, theta, data.owner)
        eps = IRLS_EPS * _mean_abs(r, data, n_datasets)[data.owner][:, None]
        w = data.mask * eps / jnp.maximum(jnp.abs(r), eps)  # 1/max(|r|, eps), rescaled to <= 1
        new = _weighted_lstsq(xd, data.y, w, data.owner, n_datasets)
        # a near-interpolating fit can make the float32 system singular: keep the last good fit
        return jnp.where(jnp.all(jnp.isfinite(new), axis=1, keepdims=True), new, theta)

    theta0 = _weighted_lstsq(xd, data.y, data.mask, data.owner, n_datasets)
    return lax.fori_loop(0, iters, body, theta0)


def _tile_smallest(key: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k smallest keys of every tile, ascending, and their flat slots: [tiles, k] each."""
    tiles, t = key.shape
    neg, idx = lax.top_k(-key, k)
    return -neg, idx + (t * jnp.arange(tiles, dtype=jnp.int32))[:, None]


def _sort_by_dataset(owner: jax.Array, key: jax.Array,
                     *values: jax.Array) -> tuple[jax.Array, ...]:
    """Flatten per-tile candidates [tiles, k] and sort them by (dataset, key)."""
    k = key.shape[1]
    flat = (jnp.repeat(owner, k), key.reshape(-1)) + tuple(v.reshape(-1) for v in values)
    return lax.sort(flat, num_keys=2)


def _smallest_slots(key: jax.Array, data: Packed, n_datasets: int,
                    k: int) -> tuple[jax.Array, jax.Array]:
    """Flat slots [D, k] of each dataset's k smallest keys over real samples, and which exist."""
    kt = min(k, key.shape[1])
    val, slot = _tile_smallest(jnp.where(data.mask > 0, key, jnp.inf), kt)
    o_s, val_s, slot_s = _sort_by_dataset(data.owner, val, slot)
    tiles = _segsum(jnp.ones_like(data.owner), data.owner, n_datasets)
    pos = ((jnp.cumsum(tiles) - tiles) * kt)[:, None] + jnp.arange(k, dtype=jnp.int32)
    inside = pos < o_s.shape[0]
    pos = jnp.minimum(pos, o_s.shape[0] - 1)
    mine = o_s[pos] == jnp.arange(n_datasets, dtype=jnp.int32)[:, None]
    return slot_s[pos], inside & mine & jnp.isfinite(val_s[pos])


def _independent_rows(rows: jax.Array, ok: jax.Array) -> jax.Array:
    """Indices of the first p linearly independent rows of ``rows`` [K, p] (greedy Gram-Schmidt)."""
    p = rows.shape[1]

    def body(i: int, carry: tuple[jax.Array, jax.Array, jax.Array]):
        q, chosen, count = carry
        c = rows[i]
        res = c - q.T @ (q @ c)
        res = res - q.T @ (q @ res)  # re-orthogonalize: float32 Gram-Schmidt needs it twice
        norm = jnp.linalg.norm(res)
        take = ok[i] & (count < p) & (norm > 1e-4 * jnp.linalg.norm(c))
        at = jnp.minimum(count, p - 1)
        q = jnp.where(take, q.at[at].set(res / jnp.maximum(norm, 1e-30)), q)
        chosen = jnp.where(take, chosen.at[at].set(i), chosen)
        return q, chosen, count + take.astype(jnp.int32)

    init = (jnp.zeros((p, p), rows.dtype), jnp.zeros(p, jnp.int32), jnp.int32(0))
    return lax.fori_loop(0, rows.shape[0], body, init)[1]


def _starting_basis(theta: jax.Array, data: Packed, n_datasets: int) -> jax.Array:
    """Flat slots [D, p] of p independent samples with the smallest residuals under theta."""
    xd = _design(data)
    p = xd.shape[-1]
    r = _residuals(xd, data.y, theta, data.owner)
    cand, ok = _smallest_slots(jnp.abs(r), data, n_datasets, CANDIDATES_PER_PARAM * p)
    rows = xd.reshape(-1, p)[cand]
    return jnp.take_along_axis(cand, jax.vmap(_independent_rows)(rows, ok), axis=1)


def _vertex(basis: jax.Array, xd: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The fit interpolating the basis samples [D, p] and the inverse of their design [D, p, p]."""
    p = xd.shape[-1]
    xb = xd.reshape(-1, p)[basis]
    theta = jnp.linalg.solve(xb, y.reshape(-1)[basis][..., None])[..., 0]
    return theta, jnp.linalg.inv(xb)


def _free(basis: jax.Array, mask: jax.Array) -> jax.Array:
    """Real samples outside the basis: [tiles, T] bool."""
    in_basis = jnp.zeros(mask.size, bool).at[basis.reshape(-1)].set(True).reshape(mask.shape)
    return (mask > 0) & ~in_basis


def _segment_starts(seg: jax.Array) -> jax.Array:
    """Where a sorted segment-id array begins a new segment."""
    return jnp.concatenate([jnp.ones(1, bool), seg[1:] != seg[:-1]])


def _segmented_cumsum(v: jax.Array, start: jax.Array) -> jax.Array:
    """Inclusive cumulative sum of v restarting at every segment start."""

    def op(a: tuple[jax.Array, jax.Array], b: tuple[jax.Array, jax.Array]):
        return a[0] | b[0], jnp.where(b[0], b[1], a[1] + b[1])

    return lax.associative_scan(op, (start, v))[1]


def _line_minimum(brk: jax.Array, jump: jax.Array, s0: jax.Array, owner: jax.Array,
                  n_datasets: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Slot [D] of the breakpoint where each dataset's line search stops, whether one exists,
    and the loss decrease (sum of |r|) that the step achieves.

    The slope starts at s0 < 0 and rises by ``jump`` at each breakpoint ``brk`` [tiles, T].  Only
    the k smallest breakpoints of each tile are sorted, which orders all breakpoints exactly up
    to ``bound``, the smallest per-tile k-th one.  The search stops at the first breakpoint where
    the slope turns >= 0 (the line minimum) or, if that lies beyond ``bound``, at the last known
    breakpoint: the slope is still negative there, so it is a shorter, still strict, descent.
    """
    tiles, t = brk.shape
    kt = min(PIVOT_CANDIDATES, t)
    brk_k, slot_k = _tile_smallest(brk, kt)
    tile_bound = brk_k[:, -1] if kt < t else jnp.full(tiles, jnp.inf)
    bound = jax.ops.segment_min(tile_bound, owner, n_datasets, indices_are_sorted=True)
    o_s, brk_s, jump_s, slot_s = _sort_by_dataset(owner, brk_k, jump.reshape(-1)[slot_k], slot_k)
    pos = jnp.arange(o_s.shape[0], dtype=jnp.int32)
    start = _segment_starts(o_s)
    slope_after = s0[o_s] + _segmented_cumsum(jump_s, start)
    known = (brk_s <= bound[o_s]) & jnp.isfinite(brk_s)
    kw = dict(segment_ids=o_s, num_segments=n_datasets, indices_are_sorted=True)
    first = jax.ops.segment_min(jnp.where(known & (slope_after >= 0), pos, o_s.shape[0]), **kw)
    last = jax.ops.segment_max(jnp.where(known, pos, -1), **kw)
    stop = jnp.where(first < o_s.shape[0], first, last)
    # decrease = -(integral of the slope up to the stop): slope_before * (t_i - t_{i-1}) per piece
    prev = jnp.where(start, 0.0, jnp.concatenate([jnp.zeros(1, brk_s.dtype), brk_s[:-1]]))
    piece = (jump_s - slope_after) * (brk_s - prev)
    decrease = jax.ops.segment_sum(jnp.where(pos <= stop[o_s], piece, 0.0), **kw)
    return slot_s[jnp.maximum(stop, 0)], stop >= 0, decrease


def _vertex_residuals(basis: jax.Array, xd: jax.Array,
                      data: Packed) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Fit [D, p] and inverse basis design of the vertex, its residuals with the interpolated
    (basis) ones set to their exact value 0, and the real non-basis slots."""
    theta, inv = _vertex(basis, xd, data.y)
    free = _free(basis, data.mask)
    return theta, inv, jnp.where(free, _residuals(xd, data.y, theta, data.owner), 0.0), free


def _pivot(basis: jax.Array, data: Packed, n_datasets: int) -> tuple[jax.Array, jax.Array]:
    """One simplex step of every dataset: the next basis and whether it differs."""
    xd = _design(data)
    d_idx = jnp.arange(n_datasets, dtype=jnp.int32)
    _, inv, r, free = _vertex_residuals(basis, xd, data)
    g = _segsum(jnp.einsum("tj,tjp->tp", jnp.sign(r), xd), data.owner, n_datasets)
    v = jnp.einsum("dqk,dq->dk", inv, g)  # X_B^-T g
    k = jnp.argmax(jnp.abs(v), axis=1)
    vk = v[d_idx, k]
    delta = -jnp.sign(vk)[:, None] * inv[d_idx, :, k]  # descending edge: X_B delta = -sign(v_k) e_k
    a = jnp.einsum("tjp,tp->tj", xd, delta[data.owner])
    # slope of the loss along delta at 0+: the freed sample gives +1, zero residuals give |a|
    slope = jnp.where(free, jnp.where(r != 0, jnp.sign(r) * a, jnp.abs(a)), 0.0)
    s0 = 1.0 + _segsum(jnp.sum(slope, axis=1), data.owner, n_datasets)
    # breakpoints ahead: residuals heading to zero; crossing one raises the slope by 2|a|
    ahead = free & (r * a < 0)
    brk = jnp.where(ahead, -r / jnp.where(ahead, a, 1.0), jnp.inf)
    jump = jnp.where(ahead, 2.0 * jnp.abs(a), 0.0)
    entering, found, decrease = _line_minimum(brk, jump, s0, data.owner, n_datasets)
    total = _segsum(jnp.sum(jnp.abs(r), axis=1), data.owner, n_datasets)
    moved = (s0 < 0) & found & (decrease > PIVOT_GAIN * total)
    new = basis.at[d_idx, k].set(entering)
    return jnp.where(moved[:, None], new, basis), moved


def _descend(start: jax.Array, data: Packed, n_datasets: int, max_pivots: int) -> jax.Array:
    """Pivot from the ``start`` basis until no dataset moves (or ``max_pivots``): the last basis."""

    def body(s: tuple[jax.Array, jax.Array, jax.Array]):
        step, basis, _ = s
        return (step + 1, *_pivot(basis, data, n_datasets))

    init = (jnp.int32(0), start, jnp.ones(n_datasets, bool))
    return lax.while_loop(lambda s: (s[0] < max_pivots) & jnp.any(s[2]), body, init)[1]


@partial(jax.jit, static_argnames=("n_datasets", "irls_iters", "max_pivots"))
def lad_optimum(data: Packed, n_datasets: int, irls_iters: int = IRLS_ITERS,
                max_pivots: int = MAX_PIVOTS) -> tuple[jax.Array, jax.Array]:
    """Exact LAD fit theta [D, p] (weights, then bias) and minimal mean |r| L* [D] of every dataset.

    L* is the loss of the exact vertex: its p interpolated residuals count as 0, which the
    float32 theta only approximates to rounding level.
    """
    xd = _design(data)
    theta_irls = irls(data, n_datasets, irls_iters)
    basis = _descend(_starting_basis(theta_irls, data, n_datasets), data, n_datasets, max_pivots)
    theta_v, _, r_v, _ = _vertex_residuals(basis, xd, data)
    valid = jnp.all(jnp.isfinite(theta_v), axis=1)  # a singular basis only on degenerate data
    theta = jnp.where(valid[:, None], theta_v, theta_irls)
    r = jnp.where(valid[data.owner][:, None], r_v, _residuals(xd, data.y, theta, data.owner))
    return theta, _mean_abs(r, data, n_datasets)


def lad_optimum_arrays(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact LAD fit theta [p] and minimal mean |r| of one unpadded dataset x [N, d], y [N]."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    data = Packed(x.T[:, None], y[None], jnp.full(1, y.shape[0], jnp.int32), jnp.zeros(1, jnp.int32))
    theta, loss = lad_optimum(data, 1)
    return theta[0], loss[0]
