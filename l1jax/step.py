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
    """r = x.w + b - y for every run: x [..., T, d], y [..., T], theta [..., H, p] -> [..., T, H]."""
    w, b = theta[..., :-1], theta[..., -1]
    pred = jnp.sum(x[..., :, None, :] * w[..., None, :, :], axis=-1) + b[..., None, :]
    return pred - y[..., None]


def tile_sums(x: jax.Array, y: jax.Array, mask: jax.Array, theta: jax.Array,
              gradient: str) -> tuple[jax.Array, jax.Array]:
    """Masked sums of |r| [..., H] and of the per-sample gradient terms [..., H, p].

    ``gradient="l1"`` sums sign(r) * (x, 1); ``"seed"`` sums r * (x, 1), the article's term.
    """
    r = residuals(x, y, theta)
    m = mask[..., None]
    abs_sum = jnp.sum(jnp.abs(r) * m, axis=-2)
    s = (jnp.sign(r) if gradient == "l1" else r) * m
    gw = jnp.sum(s[..., :, :, None] * x[..., :, None, :], axis=-3)
    gb = jnp.sum(s, axis=-2)
    return abs_sum, jnp.concatenate([gw, gb[..., None]], axis=-1)


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
    """Mean |r| over an unpadded set: x [D or 1, M, d], y [D or 1, M], theta [D, H, p] -> [D, H]."""
    return jnp.mean(jnp.abs(residuals(x, y, theta)), axis=-2)


def init_states(optimizer: str, schedule: str, theta: jax.Array, lr: jax.Array,
                total: jax.Array) -> optax.OptState:
    """Optimizer states of all runs: theta [D, H, p], lr [H], total steps [D]."""
    def one(th, lr0, tot):
        return make_optimizer(optimizer, schedule, lr0, tot).init(th)
    return jax.vmap(jax.vmap(one, (0, 0, None)), (0, None, 0))(theta, lr, total)


def update_all(optimizer: str, schedule: str, grad: jax.Array, state: optax.OptState,
               theta: jax.Array, lr: jax.Array, total: jax.Array) -> tuple[jax.Array, optax.OptState]:
    """One optimizer step for every run; returns new theta [D, H, p] and states."""
    def one(g, s, th, lr0, tot):
        updates, s = make_optimizer(optimizer, schedule, lr0, tot).update(g, s, th)
        return optax.apply_updates(th, updates), s
    return jax.vmap(jax.vmap(one, (0, 0, 0, 0, None)), (0, 0, 0, None, 0))(grad, state, theta, lr, total)
