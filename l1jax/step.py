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

from l1jax.data import Packed
from l1jax.optim import make_optimizer


def residuals(x: jax.Array, y: jax.Array, theta: jax.Array) -> jax.Array:
    """r = x.w + b - y for every run: x [d, R, T] (feature-major), y [R, T], theta [R, H, p]
    -> [H, R, T], with the sample axis innermost so every pass streams contiguous memory."""
    w = jnp.moveaxis(theta, 1, 0)[..., None]  # [H, R, p, 1]
    pred = w[:, :, -1]
    for k in range(x.shape[0]):
        pred = pred + x[k] * w[:, :, k]
    return pred - y


def tile_sums(x: jax.Array, y: jax.Array, mask: jax.Array | None, theta: jax.Array,
              gradient: str) -> tuple[jax.Array, jax.Array]:
    """Masked sums over the T axis of |r| [R, H] and of the per-sample gradient terms [R, H, p].

    ``gradient="l1"`` sums sign(r) * (x, 1); ``"seed"`` sums r * (x, 1), the article's term.
    """
    r = residuals(x, y, theta)
    a = jnp.abs(r)
    s = jnp.sign(r) if gradient == "l1" else r
    if mask is not None:
        a, s = a * mask, s * mask
    g = [jnp.sum(s * x[k], axis=-1) for k in range(x.shape[0])] + [jnp.sum(s, axis=-1)]
    return jnp.sum(a, axis=-1).T, jnp.moveaxis(jnp.stack(g, axis=-1), 0, 1)


def gradient_from_sums(grad_sum: jax.Array, count: jax.Array, gradient: str) -> jax.Array:
    """Mean gradient over ``count`` samples; the seed mode is the article's -(2/n) X^T (pred - y)."""
    g = grad_sum / count
    return g if gradient == "l1" else -2.0 * g


def packed_sums(data: Packed, theta: jax.Array, n_datasets: int,
                gradient: str) -> tuple[jax.Array, jax.Array]:
    """Per-dataset sums over all tiles: theta [D, H, p] -> |r| sums [D, H], gradient sums [D, H, p]."""
    a, g = tile_sums(data.x, data.y, data.mask, theta[data.owner], gradient)
    seg = lambda v: jax.ops.segment_sum(v, data.owner, n_datasets, indices_are_sorted=True)
    return seg(a), seg(g)


def mean_l1(x: jax.Array, y: jax.Array, theta: jax.Array) -> jax.Array:
    """Mean |r| over an unpadded set: x [d, D or 1, M], y [D or 1, M], theta [D, H, p] -> [D, H]."""
    return jnp.mean(jnp.abs(residuals(x, y, theta)), axis=-1).T


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
