"""Exact minimum of each dataset's training L1 loss (least-absolute-deviation regression), with
a certificate of optimality checked in float64.

Two stages, both over many datasets at once:

1. ``lad_vertex`` (JAX, float32, jit): all datasets of a packed group together; per-dataset
   quantities come from per-tile sums and ``segment_sum`` over the tile owners, so nothing loops
   over datasets.  Each dataset's columns and target are first centred and scaled (the L1 fit is
   equivariant under that affine map, so only the conditioning changes).  IRLS (weighted least
   squares with weights 1 / max(|r|, eps)) brings every dataset near its optimum.  LAD is a linear
   program, so it has an optimal *vertex*: a fit that interpolates p = d + 1 samples (the basis
   B).  From the vertex of the p independent samples with the smallest IRLS residuals, simplex
   pivots descend:

   * at a vertex the loss f(theta) = sum_i |r_i| has directional derivative 1 + sigma * v_k
     along the edge that frees basis sample k with sign sigma (X_B delta = sigma e_k), where
     v = X_B^-T g and g = sum_{i not in B} sign(r_i) (x_i, 1);
   * if every |v_k| <= 1, the vertex is optimal (the certificate below);
   * otherwise the edge of the largest |v_k| descends; the loss along it is convex piecewise
     linear with breakpoints where a residual crosses 0, and the exact line minimum is the
     first breakpoint at which the slope turns non-negative (a weighted median, found from the
     smallest breakpoints of each tile, ``_line_minimum``).  That sample enters the basis in
     place of sample k.

   In float32 a pivot is taken only if its predicted decrease exceeds ``PIVOT_GAIN`` of the
   loss, since neighbouring vertices tied to rounding level would otherwise cycle, and
   ``max_pivots`` bounds the work; on degenerate data (ties: more than p zero residuals at a
   vertex) the descent can stop early.  Every pivot is a pass over all datasets, so the descent
   stops once at most 1 / ``HOST_FINISH`` of them still move, and stage 2 finishes those (on the
   article sweep: 9 passes instead of 38, at most 75 of its 4800 datasets still moving).
   So this stage proposes a basis and proves nothing.

2. ``finish`` (NumPy, float64, on the host): the vertex of each proposed basis is solved again in
   float64 (columns centred and scaled again) and its optimality *certificate* checked, all
   datasets at once.  With r = Xd theta - y and Xd = [x, 1], the dual vector u has u_i =
   sign(r_i) off the basis and, on the basis, the values that solve X_B^T u_B = -sum_{i not in B}
   u_i (x_i, 1), so Xd^T u = 0.  Scaled to u' = u / max(1, max |u|), so |u'| <= 1, weak duality
   gives sum_i |r'_i| >= u'.r' = -u'.y = u'.r for every fit theta', so the duality gap
   ``gap = sum |r| - u'.r`` (plus twice |Xd^T u'|.|theta|, the rounding of Xd^T u' = 0) bounds
   how far sum |r| is above its minimum.  A dataset is *certified* iff
   ``gap <= GAP_TOL * sum |r| + ABS_GAP_TOL * sum |y - mean(y)|``: its L* is then within
   GAP_TOL = 1e-9 relative of the exact minimum for the float64 data (the absolute term takes over
   only for an almost exact fit, L* below 1e-3 of the mean |y - mean(y)|).  1e-9 is far above the
   float64 rounding of these sums (~1e-16 log n relative; |u_k| = 1 exactly, on dual-degenerate
   data, computes as 1 +- 1e-14), so a true optimum passes, and 1000 times below the 1e-6 the
   study relies on.  This is the optimality condition of the simplex (|u_B| <= 1) made
   quantitative: it can fail, and says by how much.

   A dataset that fails is repaired alone (``_refit``) on an orthonormal basis Q of its design's
   column span (thin SVD, rank by numpy's ``matrix_rank`` rule): the L1 minimum depends only on
   that span, so a constant column, a duplicate, a dummy constant in a subsample or any
   combination of columns changes nothing, and a near-collinear design becomes perfectly
   conditioned.  Float64 pivots as above (``_repair``) start from its stage-1 basis (or from the
   least-squares fit's smallest residuals), on y perturbed by ``PERTURB`` of its spread so that
   no residual ties, every pivot strictly lowers the loss and none cycles.  Its final basis is
   certified on the unperturbed y, with u_i the sign of the perturbed residual off the basis:
   that is sign(r_i) wherever r_i is not ~0, and a tie (r_i = 0, any u_i in [-1, 1] allowed)
   gets the side the perturbation chose.  The SVD's span is the design's up to its backward
   error (~1e-16 of the largest singular value), which moves sum |r| by at most that times
   |theta|; the certificate adds this to the gap, so a near-collinear design (condition number
   beyond ~1e7, where the exact fit has huge weights) fails it.  Such a full-rank design's final
   basis is then checked in exact rational arithmetic on the float64 data (``_exact_vertex``,
   up to ``EXACT_MAX_TERMS``): X^T u = 0 holds exactly, so |u_B| <= 1 proves the vertex the
   exact minimum, and its sum |r| is exact before the last rounding.  The fit of a
   rank-deficient design is the one of least norm along the dependent directions (one of many
   exact fits).  What fails stays ``certified = False`` (reported, never hidden), with a
   finite fit.

``lad`` is stage 2 alone on one dataset, from the least-squares start: one dataset gains nothing
from stage 1's batching and would compile a program per shape.

Measured against HiGHS (``scipy.optimize.linprog``) on float32 data: certified L* within 1e-14
relative on columns with condition numbers 1e6 and 1e9, integer x and y, 67% of y = 0, repeated
rows and 20,000 rows of counts (``tests/test_lad.py``); stage 1 alone is off by up to 1e-3 there
(it stops at degenerate vertices, and before its last movers).  Where it pivoted to the end it
was within 3e-7 on the study's sweeps; stage 2 now repairs 11 of the main sweep's 240 datasets
and 201 of the article sweep's 4800 (9 and 180 before the early stop).

Rank-deficient designs (tests/test_lad.py, against HiGHS): constant, duplicated and rare 0/1
dummy columns certified within 1e-9; a column a + eps z beside a (eps 1e-6 to 1e-12, condition
numbers to ~1e12) certified (in exact arithmetic where float64 cannot settle it) and within
1e-9 of HiGHS on an exactly equivalent well-conditioned design (HiGHS on the raw design treats
the column as dependent below eps ~1e-9 and is off by 3e-5 there).

Assumes each dataset has at least p samples.
"""

from __future__ import annotations

from fractions import Fraction
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from l1jax.engine.data import Packed
from l1jax.engine.errors import ConfigError

IRLS_ITERS = 16
MAX_PIVOTS = 256
HOST_FINISH = 64  # stage 1 stops pivoting once at most 1 / HOST_FINISH of the datasets still move
IRLS_EPS = 1e-4  # IRLS weight floor, relative to the dataset's mean |r|
PIVOT_GAIN = 1e-9  # least loss decrease, relative to the loss, of a float32 pivot (float32 ties)
CANDIDATES_PER_PARAM = 4  # smallest-|r| samples searched for the starting basis, per parameter
PIVOT_CANDIDATES = 8  # smallest breakpoints kept per tile in a line search (16: 1.3x the time on the article sweep)
GAP_TOL = 1e-9  # certified: duality gap <= GAP_TOL * sum|r| + ABS_GAP_TOL * sum|y - mean(y)|
ABS_GAP_TOL = 1e-12
PERTURB = 1e-9  # repair's tie-breaking perturbation of y, relative to mean |y - mean(y)|
DUAL_TOL = 1e-10  # repair stops once every |v_k| <= 1 + DUAL_TOL (float64 rounding of v ~1e-13)
EXACT_MAX_TERMS = 100_000  # n * p of the largest design certified in rational arithmetic (~1.5 s)
MIN_HADAMARD = 1e-12  # a basis design with |det| below this times the product of its row norms
# counts as singular (1 for orthogonal rows; a guard against dividing by ~0, not a certificate)


class LadFit(NamedTuple):
    """An exact L1 fit: ``theta`` (weights, then bias), ``loss`` (the minimal mean |r|) and
    ``certified`` (the float64 optimality certificate was checked and holds); per dataset in
    ``finish``, scalars in ``lad``."""

    theta: np.ndarray
    loss: np.ndarray
    certified: np.ndarray


# ---- stage 1: JAX, float32, every dataset of a packed group at once -------------------------

def _columns(data: Packed) -> list[jax.Array]:
    """The design's columns x_1 .. x_d, 1 of every slot, 0 for padding: p arrays [tiles, T].
    Stage 1 works on them one by one, in fused elementwise passes: on the CPU a batched
    product over [tiles, T, p] rows ran as one tiny matrix product per tile (the article
    sweep's vertex residuals: 310 ms against 35 ms)."""
    return [*data.x, data.mask]


def _rows(data: Packed, slots: jax.Array) -> jax.Array:
    """Design rows (x, 1) [..., p] of flat slots [...]."""
    return jnp.stack([c.reshape(-1)[slots] for c in _columns(data)], axis=-1)


def _fitted(data: Packed, coef: jax.Array) -> jax.Array:
    """(x, 1).coef of every slot, coef [tiles, p] per tile: [tiles, T] (0 for padding)."""
    cols = _columns(data)
    return sum((c * coef[:, k:k + 1] for k, c in enumerate(cols[1:], 1)), cols[0] * coef[:, :1])


def _segsum(v: jax.Array, owner: jax.Array, n_datasets: int) -> jax.Array:
    """Per-dataset sums of per-tile values (tiles are sorted by owner)."""
    return jax.ops.segment_sum(v, owner, n_datasets, indices_are_sorted=True)


def _residuals(data: Packed, theta: jax.Array) -> jax.Array:
    """r = (x, 1).theta - y of every slot under its dataset's theta [D, p]: [tiles, T]."""
    return _fitted(data, theta[data.owner]) - data.y


def _tile_sums(w: jax.Array, cols: list[jax.Array]) -> jax.Array:
    """Per-tile sums of w times each column: [tiles, len(cols)]."""
    return jnp.stack([jnp.sum(w * c, axis=1) for c in cols], axis=-1)


def _mean(v: jax.Array, data: Packed, n_datasets: int) -> jax.Array:
    """Mean over each dataset's real samples of v [..., tiles, T], in two passes (a rough mean,
    then the mean deviation from it) so float32 rounding stays relative to the spread: [D, ...]."""
    count = _segsum(jnp.sum(data.mask, axis=1), data.owner, n_datasets)

    def once(w: jax.Array) -> jax.Array:
        s = _segsum(jnp.moveaxis(jnp.sum(w * data.mask, axis=-1), -1, 0), data.owner, n_datasets)
        return s / count.reshape(-1, *(1,) * (s.ndim - 1))

    rough = once(v)
    return rough + once(v - jnp.moveaxis(rough[data.owner], 0, -1)[..., None])


def _mean_abs(r: jax.Array, data: Packed, n_datasets: int) -> jax.Array:
    """Mean |r| over each dataset's real samples: [D]."""
    return _mean(jnp.abs(r), data, n_datasets)


class _Scaling(NamedTuple):
    """Per-dataset affine map of the columns and target: x' = (x - shift) / scale, y' = y - y_shift."""

    shift: jax.Array  # [D, d]
    scale: jax.Array  # [D, d]
    y_shift: jax.Array  # [D]


def _standardize(data: Packed, n_datasets: int) -> tuple[Packed, _Scaling]:
    """Each dataset's columns centred and scaled by their mean absolute deviation (1 where a
    column is constant), its target centred; padding stays 0."""
    shift = _mean(data.x, data, n_datasets)  # [D, d]
    centred = data.x - jnp.moveaxis(shift[data.owner], 0, -1)[..., None]
    spread = _mean(jnp.abs(centred), data, n_datasets)
    scale = jnp.where(spread > 0, spread, 1.0)
    y_shift = _mean(data.y, data, n_datasets)
    x = centred / jnp.moveaxis(scale[data.owner], 0, -1)[..., None] * data.mask
    y = (data.y - y_shift[data.owner][:, None]) * data.mask
    return data._replace(x=x, y=y), _Scaling(shift, scale, y_shift)


def _raw_theta(theta: jax.Array, s: _Scaling) -> jax.Array:
    """Fit [D, p] of the standardized data mapped back to the original columns and target."""
    w = theta[:, :-1] / s.scale
    return jnp.concatenate([w, (theta[:, -1] + s.y_shift - jnp.sum(s.shift * w, axis=1))[:, None]], 1)


def _weighted_lstsq(data: Packed, w: jax.Array, n_datasets: int) -> jax.Array:
    """Per-dataset weighted least squares from segment-summed normal equations: [D, p]."""
    cols = _columns(data)
    p = len(cols)
    upper = [(i, j) for i in range(p) for j in range(i, p)]
    sums = _segsum(_tile_sums(w, [cols[i] * cols[j] for i, j in upper] + [c * data.y for c in cols]),
                   data.owner, n_datasets)
    pair = np.array([[upper.index((min(i, j), max(i, j))) for j in range(p)] for i in range(p)])
    return jnp.linalg.solve(sums[:, pair], sums[:, len(upper):, None])[..., 0]


def _finite_or(new: jax.Array, old: jax.Array) -> jax.Array:
    """Rows of ``new`` [D, p] where finite, else those of ``old``."""
    return jnp.where(jnp.all(jnp.isfinite(new), axis=1, keepdims=True), new, old)


def irls(data: Packed, n_datasets: int, iters: int = IRLS_ITERS) -> jax.Array:
    """Approximate LAD fits [D, p]: least squares, then ``iters`` reweightings 1/max(|r|, eps).
    Always finite: a singular system (a rank-deficient design, or a near-interpolating fit)
    keeps the last finite fit, or 0."""
    def body(_: int, theta: jax.Array) -> jax.Array:
        r = _residuals(data, theta)
        eps = IRLS_EPS * _mean_abs(r, data, n_datasets)[data.owner][:, None]
        w = data.mask * eps / jnp.maximum(jnp.abs(r), eps)  # 1/max(|r|, eps), rescaled to <= 1
        return _finite_or(_weighted_lstsq(data, w, n_datasets), theta)

    theta0 = _weighted_lstsq(data, data.mask, n_datasets)
    return lax.fori_loop(0, iters, body, _finite_or(theta0, jnp.zeros_like(theta0)))


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


def _independent_rows(rows: jax.Array, ok: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices of the first p linearly independent rows of ``rows`` [K, p] (greedy Gram-Schmidt),
    and whether there were p."""
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
    _, chosen, count = lax.fori_loop(0, rows.shape[0], body, init)
    return chosen, count == p


def _starting_basis(theta: jax.Array, data: Packed, n_datasets: int) -> tuple[jax.Array, jax.Array]:
    """Flat slots [D, p] of p independent samples with the smallest residuals under theta, and
    whether p were found among the candidates (else the basis is singular)."""
    p = theta.shape[-1]
    r = _residuals(data, theta)
    cand, ok = _smallest_slots(jnp.abs(r), data, n_datasets, CANDIDATES_PER_PARAM * p)
    chosen, found = jax.vmap(_independent_rows)(_rows(data, cand), ok)
    return jnp.take_along_axis(cand, chosen, axis=1), found


def _vertex(basis: jax.Array, data: Packed) -> tuple[jax.Array, jax.Array]:
    """The fit interpolating the basis samples [D, p] and the inverse of their design [D, p, p]."""
    xb = _rows(data, basis)
    theta = jnp.linalg.solve(xb, data.y.reshape(-1)[basis][..., None])[..., 0]
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


def _vertex_residuals(basis: jax.Array, data: Packed) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Fit [D, p] and inverse basis design of the vertex, its residuals with the interpolated
    (basis) ones set to their exact value 0, and the real non-basis slots."""
    theta, inv = _vertex(basis, data)
    free = _free(basis, data.mask)
    return theta, inv, jnp.where(free, _residuals(data, theta), 0.0), free


def _pivot(basis: jax.Array, data: Packed, n_datasets: int) -> tuple[jax.Array, jax.Array]:
    """One simplex step of every dataset: the next basis and whether it differs."""
    d_idx = jnp.arange(n_datasets, dtype=jnp.int32)
    _, inv, r, free = _vertex_residuals(basis, data)
    g = _segsum(_tile_sums(jnp.sign(r), _columns(data)), data.owner, n_datasets)
    v = jnp.einsum("dqk,dq->dk", inv, g)  # X_B^-T g
    k = jnp.argmax(jnp.abs(v), axis=1)
    vk = v[d_idx, k]
    delta = -jnp.sign(vk)[:, None] * inv[d_idx, :, k]  # descending edge: X_B delta = -sign(v_k) e_k
    a = _fitted(data, delta[data.owner])
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
    """Pivot from the ``start`` basis until at most 1 / HOST_FINISH of the datasets still move
    (or ``max_pivots``): the last basis.  A pivot here is a pass over every dataset, so the last
    few movers are left to ``finish``, whose float64 pivots cost about a millisecond each."""

    def body(s: tuple[jax.Array, jax.Array, jax.Array]):
        step, basis, _ = s
        return (step + 1, *_pivot(basis, data, n_datasets))

    def more(s: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        return (s[0] < max_pivots) & (jnp.sum(s[2]) > n_datasets // HOST_FINISH)

    init = (jnp.int32(0), start, jnp.ones(n_datasets, bool))
    return lax.while_loop(more, body, init)[1]


@partial(jax.jit, static_argnames=("n_datasets", "irls_iters", "max_pivots"))
def lad_vertex(data: Packed, n_datasets: int, irls_iters: int = IRLS_ITERS,
               max_pivots: int = MAX_PIVOTS) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Stage 1 of every dataset: the basis it ends on (flat slots [D, p]), that vertex's fit
    theta [D, p] (weights, then bias; the IRLS fit where the basis is singular) and its loss L*
    [D] (the mean |r| with the p interpolated residuals counted as their exact value 0).
    Float32 and uncertified: ``finish`` checks and repairs it."""
    scaled, scaling = _standardize(data, n_datasets)
    theta_irls = irls(scaled, n_datasets, irls_iters)
    start, found = _starting_basis(theta_irls, scaled, n_datasets)
    basis = _descend(start, scaled, n_datasets, max_pivots)  # pivots keep a basis regular
    theta_v, _, r_v, _ = _vertex_residuals(basis, scaled)
    valid = found & jnp.all(jnp.isfinite(theta_v), axis=1)
    theta = jnp.where(valid[:, None], theta_v, theta_irls)
    r = jnp.where(valid[scaled.owner][:, None], r_v, _residuals(scaled, theta))
    return basis, _raw_theta(theta, scaling), _mean_abs(r, scaled, n_datasets)


def lad_optimum(data: Packed, n_datasets: int) -> tuple[jax.Array, jax.Array]:
    """Stage 1 alone (float32, uncertified, traceable): theta [D, p] and L* [D] of every dataset
    (up to 1 / HOST_FINISH of them short of their optimum: ``solve`` finishes those)."""
    return lad_vertex(data, n_datasets)[1:]


# ---- stage 2: NumPy, float64, on the host: certificate and repair ---------------------------

class _Host(NamedTuple):
    """Datasets of a packed layout in float64, each centred and scaled like ``_standardize``."""

    xd: np.ndarray  # [tiles, T, p] rows (x', 1), zero rows for padding
    y: np.ndarray  # [tiles, T] y', 0 for padding
    mask: np.ndarray  # [tiles, T] bool, a real sample
    owner: np.ndarray  # [tiles] dataset of each tile
    shift: np.ndarray  # [D, d]
    scale: np.ndarray  # [D, d]
    y_shift: np.ndarray  # [D]


def _dsum(v: np.ndarray, owner: np.ndarray, n_datasets: int) -> np.ndarray:
    """Per-dataset sums of v [tiles, T] or [tiles, T, k]: [D] or [D, k]."""
    out = np.zeros((n_datasets, *v.shape[2:]))
    np.add.at(out, owner, v.sum(axis=1))
    return out


def _xt(h: _Host, u: np.ndarray, n_datasets: int) -> np.ndarray:
    """Per-dataset Xd^T u of slot values u [tiles, T]: [D, p]."""
    out = np.zeros((n_datasets, h.xd.shape[-1]))
    np.add.at(out, h.owner, np.einsum("tj,tjp->tp", u, h.xd))
    return out


def _host(data: Packed, n_datasets: int) -> _Host:
    """Float64 copy of packed data, standardized per dataset (the same map as ``_standardize``)."""
    x = np.asarray(data.x, np.float64)  # [d, tiles, T]
    y = np.asarray(data.y, np.float64)
    owner = np.asarray(data.owner)
    mask = np.arange(y.shape[1]) < np.asarray(data.count)[:, None]
    count = _dsum(mask.astype(np.float64), owner, n_datasets)

    def mean(v: np.ndarray) -> np.ndarray:
        return _dsum(v * mask, owner, n_datasets) / count

    d = x.shape[0]
    shift, scale = np.zeros((n_datasets, d)), np.ones((n_datasets, d))
    xd = np.empty((*y.shape, d + 1))
    xd[..., d] = mask
    for j, col in enumerate(x):
        shift[:, j] = mean(col)
        centred = col - shift[owner, j][:, None]
        spread = mean(np.abs(centred))
        scale[spread > 0, j] = spread[spread > 0]
        xd[..., j] = centred / scale[owner, j][:, None] * mask
    y_shift = mean(y)
    return _Host(xd, (y - y_shift[owner][:, None]) * mask, mask, owner, shift, scale, y_shift)


def _theta_raw(theta: np.ndarray, h: _Host) -> np.ndarray:
    """Fits [D, p] of the standardized data in the original columns and target."""
    w = theta[:, :-1] / h.scale
    return np.concatenate([w, (theta[:, -1] + h.y_shift - np.sum(h.shift * w, axis=1))[:, None]], 1)


def _theta_standard(theta: np.ndarray, h: _Host) -> np.ndarray:
    """Inverse of ``_theta_raw``."""
    w = theta[:, :-1]
    return np.concatenate([w * h.scale, (theta[:, -1] - h.y_shift + np.sum(h.shift * w, axis=1))[:, None]], 1)


def _regular(xb: np.ndarray) -> np.ndarray:
    """Whether each basis design [..., p, p] is regular (``MIN_HADAMARD``)."""
    with np.errstate(all="ignore"):
        return np.abs(np.linalg.det(xb)) > MIN_HADAMARD * np.prod(np.linalg.norm(xb, axis=-1), axis=-1)


def _basis_solve(h: _Host, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The basis designs [D, p, p] (the identity where singular), whether each is regular, and
    the vertex fits [D, p] interpolating the basis samples."""
    p = h.xd.shape[-1]
    xb = h.xd.reshape(-1, p)[basis]
    regular = _regular(xb)
    xb = np.where(regular[:, None, None], xb, np.eye(p))
    return xb, regular, np.linalg.solve(xb, h.y.reshape(-1)[basis][..., None])[..., 0]


def _certify(h: _Host, theta: np.ndarray, basis: np.ndarray, regular: np.ndarray, xb: np.ndarray,
             u_free: np.ndarray | None = None, rounding: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sum |r| [D] under the fits theta [D, p] of the standardized data, and whether the duality
    gap, plus ``rounding`` (how far sum |r| may be off through the design's own rounding),
    certifies it (module docstring).  The dual vector takes u_i = ``u_free`` (default sign(r_i))
    off the basis and solves Xd^T u = 0 for the basis samples; a singular basis certifies
    nothing."""
    n_datasets, p = theta.shape
    r = (np.einsum("tjp,tp->tj", h.xd, theta[h.owner]) - h.y) * h.mask
    in_basis = np.zeros(h.mask.size, bool)
    in_basis[basis[regular].reshape(-1)] = True
    in_basis = in_basis.reshape(h.mask.shape)
    u = np.where(in_basis | ~h.mask, 0.0, np.sign(r) if u_free is None else u_free)
    g = _xt(h, u, n_datasets)
    u.reshape(-1)[basis[regular]] = -np.linalg.solve(np.swapaxes(xb[regular], 1, 2),
                                                     g[regular][..., None])[..., 0]
    size = np.ones(n_datasets)  # u' = u / max(1, max |u|): |u'| <= 1
    np.maximum.at(size, h.owner, np.max(np.abs(u), axis=1))
    u = u / size[h.owner][:, None]
    total = _dsum(np.abs(r), h.owner, n_datasets)
    off = np.sum(np.abs(_xt(h, u, n_datasets) * theta), axis=1)
    gap = total - _dsum(u * r, h.owner, n_datasets) + 2 * off + rounding  # 2 off: Xd^T u = 0 up to rounding
    spread = _dsum(np.abs(h.y), h.owner, n_datasets)
    return total, regular & (gap <= GAP_TOL * total + ABS_GAP_TOL * spread)


def _start(xd: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """p independent samples with the smallest least-squares residuals (greedy Gram-Schmidt),
    or None where the design has rank < p."""
    p = xd.shape[1]
    theta = np.linalg.lstsq(xd, y, rcond=None)[0]
    q, chosen = np.zeros((0, p)), []
    for i in np.argsort(np.abs(xd @ theta - y), kind="stable"):
        res = xd[i] - q.T @ (q @ xd[i])
        res = res - q.T @ (q @ res)
        if np.linalg.norm(res) > 1e-8 * np.linalg.norm(xd[i]):
            q, chosen = np.vstack([q, res / np.linalg.norm(res)]), chosen + [i]
            if len(chosen) == p:
                return np.array(chosen)
    return None


def _vertex_state(xd: np.ndarray, y: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse basis design [p, p] and residuals [n] (0 on the basis) of one dataset's vertex."""
    inv = np.linalg.inv(xd[basis])
    r = xd @ (inv @ y[basis]) - y
    r[basis] = 0.0
    return inv, r


def _repair(xd: np.ndarray, y: np.ndarray,
            start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Float64 simplex pivots of one dataset (rows xd [n, p], target y [n]) from the ``start``
    basis (or ``_start``'s), as in ``_pivot``: the final basis [p] and the signs [n] of its
    residuals, both for y perturbed by ``PERTURB`` of its spread, so that no residual ties and
    every pivot strictly lowers the loss (no cycling); None where the design has rank < p."""
    n, p = xd.shape
    spread = np.mean(np.abs(y - np.mean(y)))
    y = y + PERTURB * (spread or 1.0) * np.random.default_rng(0).uniform(-1.0, 1.0, n)
    basis = start if start is not None and _regular(xd[start]) else _start(xd, y)
    if basis is None:
        return None
    for _ in range(n + 100 * p):
        inv, r = _vertex_state(xd, y, basis)
        v = inv.T @ (np.sign(r) @ xd)  # X_B^-T g
        k = int(np.argmax(np.abs(v)))
        if abs(v[k]) <= 1.0 + DUAL_TOL:  # v_k = +-1 exactly on dual-degenerate data
            break
        a = xd @ (-np.sign(v[k]) * inv[:, k])  # the edge freeing sample k downhill
        free = np.ones(n, bool)
        free[basis] = False
        ahead = np.flatnonzero(free & (r * a < 0))
        order = np.argsort(-r[ahead] / a[ahead])
        slope = 1.0 - abs(v[k]) + np.sum(np.abs(a[free & (r == 0)])) + np.cumsum(2 * np.abs(a[ahead][order]))
        if slope.size == 0:
            break
        basis = basis.copy()
        basis[k] = ahead[order[int(np.argmax(slope >= 0)) if slope[-1] >= 0 else -1]]
    return basis, np.sign(_vertex_state(xd, y, basis)[1])


class _Span(NamedTuple):
    """One dataset's design xd [n, p] as an orthonormal basis of its column span (thin SVD)."""

    q: np.ndarray  # [n, r], r the numerical rank (numpy's ``matrix_rank`` rule)
    to_theta: np.ndarray  # [p, r]: a fit beta of q's columns is the fit to_theta @ beta of xd's
    error: float  # bound on |(xd - xd_svd) theta| per unit |theta|: the SVD's backward error


def _column_space(xd: np.ndarray) -> _Span:
    """The span of one dataset's design columns: the L1 minimum over a design depends only on
    its column span, so a constant, duplicated or dependent column changes nothing, and an
    ill-conditioned design becomes a perfectly conditioned one (up to the SVD's rounding,
    ``error``, which the certificate charges against the fit's size)."""
    n, p = xd.shape
    u, s, vt = np.linalg.svd(xd, full_matrices=False)
    eps = np.finfo(np.float64).eps
    rank = max(1, int(np.sum(s > s[0] * max(n, p) * eps)))
    return _Span(u[:, :rank], vt[:rank].T / s[:rank], float(np.sqrt(n) * p * eps * s[0]))


def _refit(one: _Host, start: np.ndarray | None,
           raw: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float, bool] | None:
    """``_repair`` and certify one dataset (``one`` holds it alone; ``raw`` its unscaled rows
    (x, 1) [n, p] and target [n]) on an orthonormal basis of its design's column span
    (``_column_space``): its standardized fit [p], sum |r| and certificate; None where no basis
    of rows is found.  A full-rank design the float64 certificate cannot settle (near-collinear
    columns) gets the exact one (``_exact_vertex``)."""
    span = _column_space(one.xd[0])
    full_rank = span.q.shape[1] == one.xd.shape[-1]
    fixed = _repair(span.q, one.y[0], start if full_rank else None)  # a stage-1 basis has p rows
    if fixed is None:
        return None
    on_span = one._replace(xd=span.q[None])
    basis = fixed[0][None]
    xb, regular, beta = _basis_solve(on_span, basis)
    theta = span.to_theta @ beta[0]
    rounding = span.error * float(np.linalg.norm(theta))  # the span is xd's up to this, in sum |r|
    total, certified = _certify(on_span, beta, basis, regular, xb, fixed[1][None], rounding)
    if not certified[0] and full_rank and raw[0].size <= EXACT_MAX_TERMS:
        exact = _exact_vertex(*raw, fixed[0], fixed[1])
        if exact is not None:
            return _theta_standard(exact[0][None], one)[0], exact[1], True
    return theta, float(total[0]), bool(certified[0])


def _exact_solve(a: list[list[Fraction]], b: list[Fraction]) -> list[Fraction] | None:
    """The solution of a [p, p] x = b [p] in rational arithmetic (Gaussian elimination), or
    None where a is singular."""
    m = [row[:] + [v] for row, v in zip(a, b)]
    p = len(m)
    for c in range(p):
        pivot = next((r for r in range(c, p) if m[r][c] != 0), None)
        if pivot is None:
            return None
        m[c], m[pivot] = m[pivot], m[c]
        for r in range(c + 1, p):
            f = m[r][c] / m[c][c]
            if f:
                m[r] = [u - f * v for u, v in zip(m[r], m[c])]
    x: list[Fraction] = [Fraction(0)] * p
    for c in reversed(range(p)):
        x[c] = (m[c][p] - sum(m[c][k] * x[k] for k in range(c + 1, p))) / m[c][c]
    return x


def _exact_vertex(x: np.ndarray, y: np.ndarray, basis: np.ndarray,
                  tie_signs: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The vertex of ``basis`` [p] for rows x [n, p] and target y [n], in exact rational
    arithmetic on their float64 values: its fit [p] and sum |r|, if the simplex optimality
    condition holds exactly (X^T u = 0 with u_i = sign(r_i) off the basis, ``tie_signs`` where
    r_i = 0, and every |u_B| <= 1: then it is the exact minimum), else None."""
    rows = [[Fraction(v) for v in row] for row in x.tolist()]
    target = [Fraction(v) for v in y.tolist()]
    chosen = basis.tolist()
    theta = _exact_solve([rows[i] for i in chosen], [target[i] for i in chosen])
    if theta is None:
        return None
    r = [sum((a * t for a, t in zip(row, theta)), Fraction(0)) - v for row, v in zip(rows, target)]
    in_basis = set(chosen)
    u = [0 if i in in_basis else (r[i] > 0) - (r[i] < 0) if r[i] else int(tie_signs[i])
         for i in range(len(r))]
    g = [sum((u[i] * rows[i][j] for i in range(len(r)) if u[i]), Fraction(0)) for j in range(len(theta))]
    u_basis = _exact_solve([[rows[i][j] for i in chosen] for j in range(len(theta))], [-v for v in g])
    if u_basis is None or max(abs(v) for v in u_basis) > 1:
        return None
    return np.array([float(t) for t in theta]), float(sum((abs(v) for v in r), Fraction(0)))


def _alone(h: _Host, i: int) -> tuple[_Host, np.ndarray]:
    """Dataset i of ``h`` alone, its real samples in one tile, and their flat slots in ``h``."""
    tiles = np.flatnonzero(h.owner == i)
    mask = h.mask[tiles]
    slots = (tiles[:, None] * mask.shape[1] + np.arange(mask.shape[1]))[mask]
    one = _Host(h.xd[tiles][mask][None], h.y[tiles][mask][None], np.ones((1, len(slots)), bool),
                np.zeros(1, np.int64), *(v[i:i + 1] for v in (h.shift, h.scale, h.y_shift)))
    return one, slots


def finish(data: Packed, n_datasets: int, basis: jax.Array | np.ndarray,
           theta: jax.Array | np.ndarray) -> LadFit:
    """Stage 2 of every dataset (module docstring): float64 fits [D, p], L* [D] and certificates
    [D] from stage 1's bases and fits (``lad_vertex``); uncertified datasets are repaired one at
    a time (milliseconds each; stage 1 leaves few on continuous data, all on tied data)."""
    h = _host(data, n_datasets)
    basis = np.asarray(basis).astype(np.int64)
    xb, regular, vertex = _basis_solve(h, basis)
    theta = np.where(regular[:, None], vertex, _theta_standard(np.asarray(theta, np.float64), h))
    total, certified = _certify(h, theta, basis, regular, xb)
    raw_x = np.asarray(data.x).reshape(h.xd.shape[-1] - 1, -1)  # [d, slots], as the data holds it
    raw_y = np.asarray(data.y).reshape(-1)
    for i in np.flatnonzero(~certified):
        one, slots = _alone(h, i)
        start = np.searchsorted(slots, basis[i]) if np.isin(basis[i], slots).all() else None
        rows = np.column_stack([raw_x[:, slots].T.astype(np.float64), np.ones(len(slots))])
        fixed = _refit(one, start, (rows, raw_y[slots].astype(np.float64)))
        if fixed is not None:
            theta[i], total[i], certified[i] = fixed
    return LadFit(_theta_raw(theta, h), total / _dsum(h.mask.astype(np.float64), h.owner, n_datasets),
                  certified)


def solve(data: Packed, n_datasets: int) -> LadFit:
    """Both stages: certified exact L1 fits of every dataset of a packed group."""
    basis, theta, _ = lad_vertex(data, n_datasets)
    return finish(data, n_datasets, basis, theta)


def lad(x: np.ndarray | jax.Array, y: np.ndarray | jax.Array) -> LadFit:
    """The exact L1 (least-absolute-deviations) fit of y [n] on X [n, d] with a bias, checked:
    theta [d + 1] (weights, then bias), the minimal mean |X w + b - y| (``loss``), and whether a
    float64 duality certificate proves that loss within 1e-9 of the minimum (``certified``).
    A constant, duplicated or dependent column is fine (the minimum is over the column span;
    theta is then one of many exact fits); a near-collinear design is solved on its full span
    and certified in exact arithmetic (theta may then be huge, and rounding it to float64
    moves x.theta by ~1e-16 |theta|).  Bad input raises a one-line ``ConfigError`` (a ValueError)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise ConfigError(f"lad: X must be 2-D [n, d], got shape {x.shape}")
    n, d = x.shape
    if y.shape != (n,):
        raise ConfigError(f"lad: y must be 1-D with one value per row of X ({n}), got shape {y.shape}")
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise ConfigError(f"lad: X and y must be real numbers, got dtypes {x.dtype} and {y.dtype}")
    if n < d + 1:
        raise ConfigError(f"lad: {d} features and a bias need at least {d + 1} rows, got {n}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("lad: X and y must be finite (found NaN or inf)")
    # stage 2 alone: one dataset gains nothing from stage 1's batching, which would compile per shape
    h = _host(Packed(x.T[:, None], y[None], np.array([n]), np.zeros(1, np.int64)), 1)
    fixed = _refit(h, None, (np.column_stack([x, np.ones(n)]), y))
    if fixed is None:  # no p rows of the column basis are independent: rounding, never seen
        raise ConfigError("lad: found no basis of rows for the design [X, 1]: drop the columns "
                          "that are constant or combinations of others")
    theta, total, certified = fixed
    return LadFit(_theta_raw(theta[None], h)[0], total / n, certified)
