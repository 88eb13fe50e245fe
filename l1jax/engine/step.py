"""The math of one training step: residuals, L1 sums, gradients and the optimizer update.

Parameters of a run are one vector theta = (w_1..w_d, b).  Shapes carry a leading batch of
tiles or datasets and an ``H`` axis of runs that share the data (learning rates).

L1 subgradient convention: d|r|/dr = sign(r) with sign(0) = 0, the minimum-norm element of
the subdifferential [-1, 1] (JAX's own ``grad(abs)`` would give +1 at 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from l1jax.engine.data import Packed, inside
from l1jax.engine.optim import make_optimizer


def residuals(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """r = x.w + b - y of one run per row: x [d, R, T] (feature-major), y [R or 1, T],
    w [R, p] -> [R, T], the sample axis innermost so every pass streams contiguous memory."""
    r = w[:, -1:] - y
    for k in range(x.shape[0]):
        r = r + x[k] * w[:, k:k + 1]
    return r


def sign(r: jax.Array) -> jax.Array:
    """sign(r) with sign(0) = 0, as selects (XLA's CPU ``sign`` measured ~5x slower)."""
    return jnp.where(r > 0, 1.0, jnp.where(r < 0, -1.0, 0.0)).astype(r.dtype)


def tile_sums(x: jax.Array, y: jax.Array, count: jax.Array | None, theta: jax.Array,
              gradient: str, shared_pass: bool = False) -> tuple[jax.Array, jax.Array]:
    """Sums over the T axis of |r| [R, H] and of the per-sample gradient terms [R, H, p],
    over each row's first ``count`` slots (all slots if None).

    ``gradient="l1"`` sums sign(r) * (x, 1); ``"seed"`` sums r * (x, 1), the article's term.
    The H learning rates (an unrolled loop: a leading H axis on [H, R, T] arrays compiled to
    code ~5x slower on the CPU) each make p + 1 sums.  With ``shared_pass`` all H (p + 1) sums
    are one variadic reduction, a single read of the data for every learning rate; without it
    each learning rate's sums are one reduction, which ran faster on the CPU and on an H200
    (``plan.shared_lr_pass``).
    """
    keep = None if count is None else inside(count, y.shape[-1])
    terms = []
    for h in range(theta.shape[1]):
        r = residuals(x, y, theta[:, h])
        a = jnp.abs(r)
        s = sign(r) if gradient == "l1" else r
        if keep is not None:
            a, s = jnp.where(keep, a, 0.0), jnp.where(keep, s, 0.0)
        terms.append((a, *(s * x[k] for k in range(x.shape[0])), s))
    passes = [sum(terms, ())] if shared_pass else terms
    sums = [v for t in passes for v in jax.lax.reduce(
        t, (jnp.zeros((), x.dtype),) * len(t), _add_all, (y.ndim - 1,))]
    out = jnp.stack(sums).reshape(theta.shape[1], len(terms[0]), -1)  # [H, p + 1, R]
    return out[:, 0].T, jnp.moveaxis(out[:, 1:], (0, 1), (1, 2))


def _add_all(p: tuple[jax.Array, ...], q: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    return tuple(u + v for u, v in zip(p, q))


def gradient_from_sums(grad_sum: jax.Array, count: jax.Array, gradient: str) -> jax.Array:
    """Mean gradient over ``count`` samples; the seed mode is the article's -(2/n) X^T (pred - y)."""
    g = grad_sum / count
    return g if gradient == "l1" else -2.0 * g


def packed_sums(data: Packed, theta: jax.Array, n_datasets: int, gradient: str,
                shared_pass: bool = False) -> tuple[jax.Array, jax.Array]:
    """Per-dataset sums over all tiles: theta [D, H, p] -> |r| sums [D, H], gradient sums [D, H, p]."""
    a, g = tile_sums(data.x, data.y, data.count, theta[data.owner], gradient, shared_pass)
    seg = lambda v: jax.ops.segment_sum(v, data.owner, n_datasets, indices_are_sorted=True)
    return seg(a), seg(g)


def mean_l1(x: jax.Array, y: jax.Array, theta: jax.Array, shared_pass: bool = False) -> jax.Array:
    """Mean |r| over an unpadded set: x [d, D or 1, M], y [D or 1, M], theta [D, H, p] -> [D, H].
    Summed by ``tile_sums``, whose reduction XLA compiles the same way whatever D is, so a
    dataset's number does not depend on how many datasets a device holds."""
    y = jnp.broadcast_to(y, (theta.shape[0], y.shape[-1]))
    x = jnp.broadcast_to(x, (x.shape[0], *y.shape))
    return tile_sums(x, y, None, theta, "l1", shared_pass)[0] / y.shape[-1]


# optax's bias corrections raise a float to an int32 step count, which strict dtype promotion
# (on in our tests, to keep our own code explicit) refuses; optax calls run with standard rules.
def _optax_promotion():
    return jax.numpy_dtype_promotion("standard")


def init_states(optimizer: str, schedule: str, theta: jax.Array, lr: jax.Array,
                total: jax.Array) -> optax.OptState:
    """Optimizer states of all runs: theta [D, H, p], lr [H], total steps [D]."""
    def one(th, lr0, tot):
        return make_optimizer(optimizer, schedule, lr0, tot).init(th)
    with _optax_promotion():
        return jax.vmap(jax.vmap(one, (0, 0, None)), (0, None, 0))(theta, lr, total)


def update_all(optimizer: str, schedule: str, grad: jax.Array, state: optax.OptState,
               theta: jax.Array, lr: jax.Array, total: jax.Array) -> tuple[jax.Array, optax.OptState]:
    """One optimizer step for every run; returns new theta [D, H, p] and states."""
    def one(g, s, th, lr0, tot):
        updates, s = make_optimizer(optimizer, schedule, lr0, tot).update(g, s, th)
        return optax.apply_updates(th, updates), s
    with _optax_promotion():
        return jax.vmap(jax.vmap(one, (0, 0, 0, 0, None)), (0, 0, 0, None, 0))(grad, state, theta, lr, total)
