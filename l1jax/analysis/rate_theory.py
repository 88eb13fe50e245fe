"""Theory of the initial rate: why the first epochs fall as fast as they do, size by size.

To first order a gradient step theta -= lr g_B on a batch B lowers the training L1 L_n by
lr g_n . g_B, and a uniformly drawn batch has E[g_B] = g_n, so each step lowers L_n by lr ||g_n||^2
on average.  For n iid samples E||g_n(theta)||^2 = ||G(theta)||^2 + tr Sigma(theta) / n, with G the
population subgradient and Sigma the covariance of one sample's subgradient sign(r) (x, 1), whose
trace is E||(x, 1)||^2 - ||G||^2 because sign(r)^2 = 1.  An epoch takes ceil(n / B) steps (one for
full batch), so the expected initial decrease per epoch is

    rate(n) = steps(n) * lr * (||G||^2 + tr Sigma / n),

averaged over the random start, until a window's decrease reaches the gap between the start's
loss and the minimal training loss L*_n (saturation): rate <= (L(theta_0) - E L*_n) / k.
Smaller sets fall faster per *step* by lr tr Sigma / n; per *epoch*, minibatch SGD takes more
steps on larger sets.  For csv data the population is the training pool and a size-n subsample
is drawn without replacement, so tr Sigma / n carries the factor (N - n) / (N - 1).

The population terms are expectations over the start and the data: computed in closed form given
x (E[sign(r) | x] = 2 F(a) - 1 for noise CDF F and a = x.(w - w*) + b - b*) and averaged over a
large sample of x and starts; the loss at the start, E|a - eps| = E|eps| + int_0^a (2F(t) - 1) dt,
by Gauss-Legendre quadrature.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from l1jax.analysis.theory import bayes_l1_floor
from l1jax.engine.config import Config, DataConfig
from l1jax.engine.data import CONTAMINATION_SCALE
from l1jax.engine.table import Table


class StartTerms(NamedTuple):
    """Population terms at the random start, each a mean over starts with its standard error."""

    grad2: float  # E ||G(theta_0)||^2
    trace: float  # E tr Sigma(theta_0)
    loss0: float  # E L(theta_0): the population (or pool) L1 at the start
    grad2_se: float  # also the standard error of trace, which is E||(x, 1)||^2 - grad2
    pool: int | None  # N for csv data (finite-population factor), None for synthetic


def noise_cdf(cfg: DataConfig, t: jax.Array) -> jax.Array:
    """The CDF of the configured noise family (as ``l1jax.engine.data.noise`` draws it)."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return jax.scipy.special.ndtr(t / s)
    if cfg.noise == "laplace":
        z = t / s
        return jnp.where(z < 0, 0.5 * jnp.exp(jnp.minimum(z, 0.0)), 1.0 - 0.5 * jnp.exp(-jnp.maximum(z, 0.0)))
    if cfg.noise == "student_t":
        cdf = jnp.asarray(_t_cdf_table(cfg.noise_df))  # on a uniform grid: direct lookup
        pos = (jnp.arctan(t / s) / jnp.pi + 0.5) * (cdf.size - 1)
        low = jnp.clip(jnp.floor(pos), 0, cdf.size - 2)
        i = low.astype(jnp.int32)
        return cdf[i] + (pos - low) * (cdf[i + 1] - cdf[i])
    if cfg.noise == "contaminated":
        q = cfg.outlier_fraction
        return (1 - q) * jax.scipy.special.ndtr(t / s) + q * jax.scipy.special.ndtr(t / (CONTAMINATION_SCALE * s))
    raise ValueError(f"unknown noise family {cfg.noise!r}")


@functools.cache
def _t_cdf_table(df: float, points: int = 16385) -> np.ndarray:
    """The Student t(df) CDF (scipy's) on a uniform grid of u = arctan(t) in [-pi/2, pi/2], for
    lookup inside jitted code (jax's incomplete beta was 100x slower)."""
    u = np.linspace(-np.pi / 2, np.pi / 2, points)
    cdf = scipy.stats.t.cdf(np.tan(u[1:-1]), df)
    return np.concatenate([[0.0], cdf, [1.0]]).astype(np.float32)


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(12)
LOSS_STARTS = 1024


def _expected_abs(cfg: DataConfig, a: jax.Array, floor: float) -> jax.Array:
    """E|a - eps| = E|eps| + int_0^a (2 F(t) - 1) dt, by 12-point Gauss-Legendre on [0, a]."""
    t = a[..., None] * (1 + jnp.asarray(_NODES, jnp.float32)) / 2
    inner = (2 * noise_cdf(cfg, t) - 1) @ jnp.asarray(_WEIGHTS, jnp.float32)
    return floor + a / 2 * inner


@jax.jit
def _design(x: jax.Array) -> jax.Array:
    return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def _starts(cfg: Config, n_starts: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """Starting parameters [S, p] as ``train.initial_theta`` draws them: N(0, 1) or zeros."""
    if cfg.train.init == "zeros":
        return np.zeros((1, p), np.float32)
    return rng.standard_normal((n_starts, p)).astype(np.float32)


def synthetic_terms(cfg: Config, n_starts: int = 4096, n_x: int = 4096, seed: int = 0) -> StartTerms:
    """Population terms of a synthetic sweep: x ~ U(0, 1)^d, the configured noise and start."""
    d = cfg.data
    rng = np.random.default_rng(seed)
    star = np.asarray(d.true_weights + (d.true_bias,), np.float32)
    xd = _design(jnp.asarray(rng.random((n_x, d.n_features), dtype=np.float32)))  # [M, p]
    theta = jnp.asarray(_starts(cfg, n_starts, d.n_features + 1, rng))
    floor = bayes_l1_floor(d)

    def grad2(th: jax.Array) -> jax.Array:
        g = (2 * noise_cdf(d, xd @ (th - star)) - 1) @ xd / n_x  # population subgradient G [p]
        return g @ g

    def loss(th: jax.Array) -> jax.Array:
        return jnp.mean(_expected_abs(d, xd @ (th - star), floor))

    g2 = np.asarray(jax.jit(lambda t: jax.lax.map(grad2, t))(theta), np.float64)
    # the loss at the start only caps the rate (saturation): fewer starts keep the quadrature cheap
    loss0 = np.asarray(jax.jit(lambda t: jax.lax.map(loss, t))(theta[:LOSS_STARTS]), np.float64)
    second = float(jnp.mean(jnp.sum(xd * xd, axis=-1)))  # E||(x, 1)||^2
    return _terms(g2, second - g2, loss0, None)


def pool_terms(cfg: Config, table: Table, n_starts: int = 4096, seed: int = 0) -> StartTerms:
    """Population terms of a csv sweep: the training pool is the population."""
    rng = np.random.default_rng(seed)
    xd = _design(jnp.asarray(table.x_train))
    y = jnp.asarray(table.y_train)
    theta = jnp.asarray(_starts(cfg, n_starts, xd.shape[1], rng))

    @jax.jit
    def per_start(th: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        r = xd @ th - y
        s = jnp.sign(r)
        g = s @ xd / len(y)
        second = jnp.mean(jnp.sum((s[:, None] * xd) ** 2, axis=-1))
        return g @ g, second - g @ g, jnp.mean(jnp.abs(r))

    g2, tr, loss0 = (np.asarray(v, np.float64) for v in jax.lax.map(per_start, theta))
    return _terms(g2, tr, loss0, len(table.y_train))


def _terms(g2: np.ndarray, tr: np.ndarray, loss0: np.ndarray, pool: int | None) -> StartTerms:
    se = lambda v: float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return StartTerms(float(g2.mean()), float(tr.mean()), float(loss0.mean()), se(g2), pool)


def steps_per_epoch(n: np.ndarray, batch: int | str) -> np.ndarray:
    """Optimizer steps an epoch takes on n samples: 1 for full batch, else ceil(n / B)."""
    n = np.asarray(n)
    return np.ones_like(n) if batch == "full" else -(-n // int(batch))


def grad2_at(terms: StartTerms, n: np.ndarray) -> np.ndarray:
    """E||g_n(theta_0)||^2 over the start and the data: ||G||^2 + tr Sigma / n (times the finite
    population factor (N - n) / (N - 1) for a pool of N rows)."""
    n = np.asarray(n, float)
    fpc = 1.0 if terms.pool is None else (terms.pool - n) / max(terms.pool - 1, 1)
    return terms.grad2 + terms.trace * fpc / n


def first_order_rate(terms: StartTerms, n: np.ndarray, batch: int | str, lr: float) -> np.ndarray:
    """Expected initial decrease of the training L1 per epoch, to first order in lr."""
    return steps_per_epoch(n, batch) * lr * grad2_at(terms, n)


def predicted_rate(terms: StartTerms, n: np.ndarray, batch: int | str, lr: float, k: int,
                   lstar: np.ndarray) -> np.ndarray:
    """First-order rate per epoch, capped where a k-epoch window's decrease would pass the gap
    L(theta_0) - E L*_n (``lstar``: the mean minimal training L1 at each size)."""
    cap = (terms.loss0 - np.asarray(lstar, float)) / k
    return np.minimum(first_order_rate(terms, n, batch, lr), cap)


def applies(cfg: Config) -> str | None:
    """Why the first-order theory does not apply to a sweep's training (None if it does)."""
    t = cfg.train
    if t.gradient != "l1":
        return "the article's update is not the L1 subgradient"
    if t.schedule != "constant":
        return "the learning rate is not constant"
    return None
