"""The infinite-data twin of every run: the same optimizer, schedule, learning rate and start,
stepping on the population L1 instead of the run's n samples.

To first order a run's expected training L1 after k optimizer steps is the population loss after
k steps of the same optimizer on the population loss, whatever n is: a full-batch epoch is one
step, a batch-B epoch ceil(n / B) steps.  Finite n adds the linear response of the run to its
sample's gradient noise (``simulate``, ``finite_n_terms``).

Population loss and subgradient, residual a = (x, 1).(theta - theta*) (noise eps, CDF F):

    L(theta) = E_x E_eps |a - eps| = E_x [a (2 F(a) - 1) + 2 psi(a)],   psi(a) = E[eps; eps > a]
    G(theta) = E_x [(2 F(a) - 1) (x, 1)]

with psi in closed form for every noise law (gaussian s phi(a/s); Laplace (|a| + s) e^(-|a|/s) / 2;
Student t s (df + z^2) / (df - 1) f_t(z), z = a / s, its CDF by the 1-D quadrature table of
``rate_theory.noise_cdf``; contaminated: the gaussian mixture).  Over x ~ U(0, 1)^d: tensor
Gauss-Legendre for d <= 3, a shifted Halton set above.  For csv data the population is the
training pool: L and G are its mean |r| and mean sign(r) (x, 1) (sign(0) = 0, as the engine).
Near theta* plain constant-rate SGD on a noise law smooth at 0 moves in closed form (``Tail``):
its twins stop stepping there, so a long sweep's twins cost no more than a short one's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from l1jax.analysis import claims as C
from l1jax.analysis import stats
from l1jax.analysis.analyze import Analysis
from l1jax.analysis.rate_theory import noise_cdf, steps_per_epoch
from l1jax.analysis.optimum import lad
from l1jax.analysis.theory import bayes_l1_floor, noise_density_at_zero
from l1jax.engine import data as D
from l1jax.engine.config import Config, DataConfig
from l1jax.engine.data import CONTAMINATION_SCALE
from l1jax.engine.plan import shares
from l1jax.engine.step import init_states, sign, update_all
from l1jax.engine.sweep import compile_program
from l1jax.engine.table import Table, load_csv
from l1jax.engine.train import initial_theta

GL_POINTS = {1: 32, 2: 6, 3: 6}  # Gauss-Legendre nodes per axis for d <= 3 (smooth noise densities: error ~1e-5)
GL_POINTS_KINKED = {1: 64, 2: 16, 3: 12}  # Laplace: its density's kink at 0 slows the rule
QMC_POINTS = 2 ** 14  # points of the shifted Halton set for d > 3
FUSED_COLUMNS = 4  # populations with at most this many columns (synthetic d <= 3) get fused residuals
POINT_LANES = 8  # synthetic twins pad their points to whole 8-wide f32 vectors: no scalar tail in XLA's CPU erf (1.2x)
STARTS_CHUNK = 1024  # runs whose starts one call draws (padded): one program for every sweep
ERROR_STARTS = 256  # runs' starts at which the integration error is measured (padded: one program)
TAIL_TOL = 1e-2  # where the closed-form tail takes over, its Hessian 2 f(0) E[(x,1)(x,1)^T] is within this (relative)
COMPILE_EVENTS = tuple(f"/jax/core/compile/{e}_duration"  # JAX's records of tracing, lowering, compiling
                       for e in ("jaxpr_trace", "jaxpr_to_mlir_module", "backend_compile"))
_COMPILING = [0.0]  # seconds of those events since the first stopwatch (see ``_count_compiling``)


class Population(NamedTuple):
    """Quadrature of the population: design rows (x, 1) [M, p], targets [M] (x.theta* for
    synthetic data, the pool's y for csv) and weights [M] summing to 1, host float32 arrays
    (jax takes them at a program's boundary: built op by op on the device, each new shape cost
    a small compile)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray


def upper_mean(cfg: DataConfig, a: jax.Array) -> jax.Array:
    """psi(a) = E[eps; eps > a] of the configured (symmetric) noise law, in closed form."""
    s = cfg.noise_scale
    phi = lambda z: jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if cfg.noise == "gaussian":
        return s * phi(a / s)
    if cfg.noise == "laplace":
        return (jnp.abs(a) + s) * jnp.exp(-jnp.abs(a) / s) / 2
    if cfg.noise == "student_t":
        nu, z = cfg.noise_df, a / s
        return s * s * (nu + z * z) / (nu - 1) * _t_density(cfg, a)
    if cfg.noise == "contaminated":
        q, wide = cfg.outlier_fraction, CONTAMINATION_SCALE * s
        return (1 - q) * s * phi(a / s) + q * wide * phi(a / wide)
    raise ValueError(f"unknown noise family {cfg.noise!r}")


def centred_cdf(cfg: DataConfig, a: jax.Array) -> jax.Array:
    """2 F(a) - 1 = E sign(a - eps): erf for the gaussian laws (3x faster than ``ndtr`` on the
    CPU, exact to float32 in absolute terms), Laplace in closed form, Student t by the quadrature
    table of ``rate_theory.noise_cdf``."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return jax.lax.erf(a / (s * math.sqrt(2)))
    if cfg.noise == "contaminated":
        q, wide = cfg.outlier_fraction, CONTAMINATION_SCALE * s
        return (1 - q) * jax.lax.erf(a / (s * math.sqrt(2))) + q * jax.lax.erf(a / (wide * math.sqrt(2)))
    if cfg.noise == "laplace":
        return jnp.sign(a) * -jnp.expm1(-jnp.abs(a) / s)
    return _t_centred_cdf(cfg, a)


def _t_density(cfg: DataConfig, a: jax.Array) -> jax.Array:
    """The density of s t(df) at a, in closed form."""
    nu, s = cfg.noise_df, cfg.noise_scale
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(s)
    return jnp.exp(log_c - (nu + 1) / 2 * jnp.log1p((a / s) ** 2 / nu))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _t_centred_cdf(cfg: DataConfig, a: jax.Array) -> jax.Array:
    """2 F(a) - 1 of Student t noise by the CDF table, with the exact density 2 f(a) as its
    derivative (the table's float32 differences are 1e-3 off it, cell to cell, near 0)."""
    return 2 * noise_cdf(cfg, a) - 1


@_t_centred_cdf.defjvp
def _t_centred_cdf_jvp(cfg: DataConfig, primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (a,), (da,) = primals, tangents
    return _t_centred_cdf(cfg, a), 2 * _t_density(cfg, a) * da


def x_nodes(d: int, kinked: bool = False, refine: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes [M, d] and weights [M] for E over x ~ U(0, 1)^d: tensor Gauss-Legendre for d <= 3
    (``refine`` times the nodes per axis; more where the noise density has a kink), a randomly
    shifted Halton set (equal weights, ``refine`` times the points) above."""
    if d <= 3:
        t, w = np.polynomial.legendre.leggauss((GL_POINTS_KINKED if kinked else GL_POINTS)[d] * refine)
        t, w = (t + 1) / 2, w / 2
        grid = np.stack(np.meshgrid(*[t] * d, indexing="ij"), -1).reshape(-1, d)
        weights = np.prod(np.stack(np.meshgrid(*[w] * d, indexing="ij"), -1).reshape(-1, d), -1)
        return grid, weights
    pts = halton(d, QMC_POINTS * refine, seed)
    return pts, np.full(len(pts), 1.0 / len(pts))


def halton(d: int, m: int, seed: int = 0) -> np.ndarray:
    """m points of the Halton sequence in [0, 1)^d (radical inverses in the first d primes),
    shifted modulo 1 by a seeded random vector (a Cranley-Patterson rotation)."""
    primes = [q for q in range(2, 10 * d + 10) if all(q % k for k in range(2, int(q ** 0.5) + 1))][:d]
    out = np.empty((m, d))
    for j, base in enumerate(primes):
        i, scale, v = np.arange(1, m + 1), 1.0, np.zeros(m)
        while i.any():
            scale /= base
            v += scale * (i % base)
            i //= base
        out[:, j] = v
    return (out + np.random.default_rng(seed).random(d)) % 1.0


def synthetic_population(cfg: DataConfig, refine: int = 1, seed: int = 0) -> Population:
    """The population of a synthetic sweep: quadrature over x, targets x.w* + b*."""
    x, w = x_nodes(cfg.n_features, cfg.noise == "laplace", refine, seed)
    xd = np.c_[x, np.ones(len(x))]
    star = np.asarray(cfg.true_weights + (cfg.true_bias,))
    return Population(xd.astype(np.float32), (xd @ star).astype(np.float32), w.astype(np.float32))


def pool_population(table: Table) -> Population:
    """The population of a csv sweep: the training pool, each row weight 1 / N."""
    n = table.n_train
    xd = np.c_[table.x_train, np.ones(n, np.float32)]
    return Population(xd.astype(np.float32), np.asarray(table.y_train, np.float32),
                      np.full(n, 1.0 / n, np.float32))


class Tail(NamedTuple):
    """The population L1 near theta* as its quadratic model L* + (theta - theta*)^T H* (theta -
    theta*) / 2 (eigenvectors ``vecs`` [p, p], eigenvalues ``vals`` [p] of H*), held within
    ``radius`` of theta* [p]: there plain constant-rate SGD, and its response J, move in closed
    form (``tail_state``)."""

    star: np.ndarray
    vecs: np.ndarray
    vals: np.ndarray
    radius: float


def density_curvature(cfg: DataConfig) -> float | None:
    """|f''(0)| / f(0) of the noise density, the largest |f''| / f(0) anywhere (each law here is
    a symmetric mixture of unimodal densities whose |f''| peaks at 0); None for Laplace, whose
    density has a kink at 0 (no quadratic model)."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return 1 / s ** 2
    if cfg.noise == "student_t":
        return (cfg.noise_df + 1) / (cfg.noise_df * s ** 2)
    if cfg.noise == "contaminated":
        q, wide = cfg.outlier_fraction, CONTAMINATION_SCALE * s
        return ((1 - q) / s ** 3 + q / wide ** 3) / ((1 - q) / s + q / wide)
    return None


def tail_of(cfg: Config, noise: DataConfig | None, pop: Population) -> Tail | None:
    """The closed-form tail of a sweep's SGD twins, where one exists: a constant rate on synthetic
    data whose noise density is smooth at 0, H* = E[2 f(0) (x,1)(x,1)^T] by the quadrature.
    Inside the radius every residual |a| <= sqrt(p) ||theta - theta*|| keeps |2 f(a) - 2 f(0)|
    <= |f''(0)| a^2 <= TAIL_TOL 2 f(0): the model's Hessian is within TAIL_TOL of the exact
    one, its gradient within TAIL_TOL / 3."""
    kappa = None if noise is None else density_curvature(noise)
    if kappa is None or cfg.train.schedule != "constant" or "sgd" not in cfg.train.optimizer:
        return None
    x, w = np.asarray(pop.x, np.float64), np.asarray(pop.w, np.float64)
    vals, vecs = np.linalg.eigh(2 * noise_density_at_zero(noise) * (x.T * w) @ x)
    p = x.shape[1]
    star = np.asarray(noise.true_weights + (noise.true_bias,), np.float32)
    return Tail(star, vecs.astype(np.float32), vals.astype(np.float32), math.sqrt(2 * TAIL_TOL / (kappa * p)))


def population_of(cfg: Config) -> tuple[DataConfig | None, Population]:
    """(noise law or None, population) of a sweep's data."""
    if cfg.data.source == "csv":
        return None, pool_population(load_csv(cfg.data, cfg.sweep.base_seed))
    return cfg.data, synthetic_population(cfg.data)


@functools.cache
def _starts_program(nested: bool, init: str, p: int) -> Callable[..., jax.Array]:
    """The compiled draw of STARTS_CHUNK runs' starts [STARTS_CHUNK, p] from (base seed, rep,
    size), as ``train.initial_theta`` draws them: one program for every sweep (drawn op by op,
    each new shape cost ~1 s of compiling), with the engine's compiler options (on the CPU LLVM
    -O1: half the compile time, the same bits: tested)."""
    chunk = jax.ShapeDtypeStruct((STARTS_CHUNK,), jnp.int32)
    return compile_program(lambda seed, rep, size: initial_theta(init, D.streams(seed, rep, size, nested), 1, p)[:, 0],
                           jax.ShapeDtypeStruct((), jnp.uint32), chunk, chunk)[0]


def run_starts(cfg: Config, p: int) -> np.ndarray:
    """Every run's own start [size, seed, p], drawn in padded chunks of STARTS_CHUNK runs."""
    sizes, seeds = cfg.sweep.sizes, cfg.sweep.seeds
    m = len(sizes) * seeds
    pad = -m % STARTS_CHUNK
    size = np.pad(np.repeat(np.asarray(sizes, np.int32), seeds), (0, pad)).reshape(-1, STARTS_CHUNK)
    rep = np.pad(np.tile(np.arange(seeds, dtype=np.int32), len(sizes)), (0, pad)).reshape(-1, STARTS_CHUNK)
    draw = _starts_program(cfg.data.coupling == "nested", cfg.train.init, p)
    out = [draw(jnp.uint32(cfg.sweep.base_seed), jnp.asarray(r), jnp.asarray(n)) for r, n in zip(rep, size)]
    return np.concatenate(out)[:m].reshape(len(sizes), seeds, p)


def moments(noise: DataConfig | None, pop: Population, theta: jax.Array) -> tuple[jax.Array, ...]:
    """At theta [..., p]: the population L1 [...], subgradient G [..., p], its Jacobian
    H = E[2 f(a) (x,1)(x,1)^T] [..., p, p] (0 for a pool: its loss is piecewise linear) and the
    covariance of one sample's subgradient Sigma = E[sign(r)^2 (x,1)(x,1)^T] - G G^T [..., p, p].
    Every sum over the quadrature is one matrix product over all thetas at once."""
    p = theta.shape[-1]
    r = residuals(pop, theta)  # [..., M]
    if noise is None:
        a, s, ds = jnp.abs(r), sign(r), None
        s2 = s * s  # sign(r)^2: 0 where a row is fitted exactly
    else:
        s, ds = jax.jvp(lambda v: centred_cdf(noise, v), (r,), (jnp.ones_like(r),))
        a = r * s + 2 * upper_mean(noise, r)
        s2 = jnp.ones_like(r)  # sign(r - eps)^2 = 1 almost surely: the noise has a density
    outer = (pop.x[:, :, None] * pop.x[:, None, :]).reshape(-1, p * p)  # [M, p * p]
    g = (pop.w * s) @ pop.x
    shape = r.shape[:-1] + (p, p)
    hess = jnp.zeros(shape) if noise is None else ((pop.w * ds) @ outer).reshape(shape)
    sigma = ((pop.w * s2) @ outer).reshape(shape) - g[..., :, None] * g[..., None, :]
    return a @ pop.w, g, hess, sigma


def residuals(pop: Population, theta: jax.Array) -> jax.Array:
    """theta [..., p] against every point: x.theta - y [..., M].  With at most FUSED_COLUMNS
    columns (synthetic d <= 3, or a pool of few features) as p products fused with what follows (a
    twin step of the main grid 10% faster than with XLA's dot thunk); more columns by one matrix
    product (the products ran 2.7x slower on the diabetes pool's 11)."""
    p = theta.shape[-1]
    if p > FUSED_COLUMNS:
        return theta @ pop.x.T - pop.y
    return sum(theta[..., k:k + 1] * pop.x[:, k] for k in range(p)) - pop.y


def loss_and_grad(noise: DataConfig | None, pop: Population, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Population L1 and subgradient at theta [..., p]; ``noise`` None: the pool itself (csv)."""
    return moments(noise, pop, theta)[:2]


def _hess_times(hess: jax.Array, j: jax.Array) -> jax.Array:
    """H J [direction, T, H, p] of H [T, H, p, p] and J [direction, T, H, p], as p fusible
    products: with them and ``moments``' matrix products a twin step of the synthetic grid (240
    trajectories, 36 points) took 24 us on one CPU core, against 31 us with batched einsums of tiny
    matrices (20 us now, its points padded to 40: ``lanes``)."""
    return sum(hess[..., k] * j[..., k:k + 1] for k in range(j.shape[-1]))


def _response_terms(j: jax.Array, hess: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """tr(J Sigma) and tr(J^T H J Sigma) [T, H] of the response J [direction, T, H, p]."""
    hj = jnp.einsum("thik,jthk->thij", hess, j)
    jhj = jnp.einsum("athi,thib->thab", j, hj)
    return jnp.einsum("jthi,thji->th", j, sigma), jnp.einsum("thab,thba->th", jhj, sigma)


def in_tail(tail: Tail, lr: jax.Array, theta: jax.Array) -> jax.Array:
    """Which trajectories theta [T, H, p] are inside the tail's radius at a rate lr [H] that is a
    stable step in every mode (|1 - lr h| < 1): from there on their closed form holds [T, H]."""
    near = jnp.sum((theta - tail.star) ** 2, -1) <= tail.radius ** 2
    return near & jnp.all(lr[:, None] * tail.vals < 2, -1)


def tail_state(tail: Tail, lr: jax.Array, theta: jax.Array, j: jax.Array,
               m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """theta [T, H, p] and the response j [direction, T, H, p] m [T, H] plain SGD steps on in the
    quadratic model: each eigen-coordinate of theta - theta* and of j - J* (J* = -H*^-1, the
    response's fixed point) times (1 - lr h)^m."""
    z = lr[:, None] * tail.vals  # [H, p]
    mu, m = 1 - z, m[..., None]
    log_mu = jnp.where(z < 1, jnp.log1p(-z), jnp.log(jnp.abs(mu)))
    sign = jnp.where((mu < 0) & (m % 2 == 1), -1.0, 1.0)
    power = jnp.where(m == 0, 1.0, sign * jnp.exp(m.astype(z.dtype) * log_mu))

    def move(v: jax.Array, fixed: jax.Array) -> jax.Array:
        return fixed + (((v - fixed) @ tail.vecs) * power) @ tail.vecs.T

    j_star = -(tail.vecs / tail.vals) @ tail.vecs.T  # [direction, p] (symmetric)
    return move(theta, tail.star), move(j, j_star[:, None, None, :])


@functools.partial(jax.jit, static_argnames=("optimizer", "schedule", "noise"))
def simulate(pop: Population, theta0: jax.Array, lr: jax.Array, total: jax.Array, record_at: jax.Array,
             optimizer: str, schedule: str, noise: DataConfig | None,
             tail: Tail | None = None) -> tuple[jax.Array, ...]:
    """Optimizer steps on the population from starts theta0 [T, p] at rates lr [H] (schedule over
    ``total`` [T] steps), with the linear response J_k = d theta_k / d xi of each trajectory to a
    fixed perturbation xi of every step's gradient (a finite sample's gradient noise), propagated
    through the optimizer's own update by forward-mode differentiation.  Returns, after each step
    count of ``record_at`` [K] (sorted, from 0), [K, T, H] each: the population L1, tr(J Sigma)
    and tr(J^T H J Sigma) at the current point; and [T, H] the step from which ``tail`` (plain
    SGD only) gave each trajectory's points in closed form (``in_tail``; -1: never).  A handed-over
    trajectory rests where it entered the tail (its steps are still computed, then dropped, until
    every trajectory has handed over or the steps end), so its numbers do not depend on the others."""
    mom = functools.partial(moments, noise, pop)
    theta = jnp.broadcast_to(theta0[:, None, :], (theta0.shape[0], lr.shape[0], theta0.shape[1]))
    state = init_states(optimizer, schedule, theta, lr, total)
    leaves, tree = jax.tree.flatten(state)
    floating = [jnp.issubdtype(v.dtype, jnp.floating) for v in leaves]
    p = theta.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(p)[:, None, None, :], (p,) + theta.shape)

    def floats(st) -> list:
        return [v for v, f in zip(jax.tree.leaves(st), floating) if f]

    def advance(g, fl, th, st):  # the optimizer step, differentiable in the state's float leaves
        it = iter(fl)
        full = jax.tree.unflatten(tree, [next(it) if f else v for v, f in zip(jax.tree.leaves(st), floating)])
        th2, st2 = update_all(optimizer, schedule, g, full, th, lr, total)
        return (th2, floats(st2)), st2

    def step(c: tuple) -> tuple:
        k, since, theta, state, j, dfl = c
        _, g, hess, _ = mom(theta)
        (theta2, _), lin, state2 = jax.linearize(lambda g_, f_, t_: advance(g_, f_, t_, state), g,
                                                 floats(state), theta, has_aux=True)
        dg = eye if noise is None else _hess_times(hess, j) + eye  # d g / d xi = H J + I (H = 0 on a pool)
        j2, dfl = jax.vmap(lin)(dg, dfl, j)
        if tail is None:
            return k + 1, since, theta2, state2, j2, dfl
        rest = since >= 0  # handed over: rest where they entered the tail
        theta2, j2 = jnp.where(rest[..., None], theta, theta2), jnp.where(rest[..., None], j, j2)
        since = jnp.where(~rest & in_tail(tail, lr, theta2), k + 1, since)
        return k + 1, since, theta2, state2, j2, dfl

    def record(c: tuple, at: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The L1 and response terms after ``at`` steps (handed-over trajectories in closed form)."""
        since, theta, j = c[1], c[2], c[4]
        if tail is not None:
            moved = tail_state(tail, lr, theta, j, jnp.maximum(at - since, 0))
            rest = (since >= 0)[..., None]
            theta, j = jnp.where(rest, moved[0], theta), jnp.where(rest, moved[1], j)
        loss, _, hess, sigma = mom(theta)
        return (loss, *_response_terms(j, hess, sigma))

    def segment(c: tuple, bounds: jax.Array) -> tuple[tuple, tuple[jax.Array, jax.Array, jax.Array]]:
        out = record(c, bounds[0])  # record, then step on (no steps once every trajectory has handed over)
        if tail is None:
            return jax.lax.fori_loop(bounds[0], bounds[1], lambda _, c: step(c), c), out
        return jax.lax.while_loop(lambda c: (c[0] < bounds[1]) & jnp.any(c[1] < 0), step, c), out

    dfl0 = [jnp.zeros((p,) + v.shape, v.dtype) for v in floats(state)]
    c0 = (record_at[0], jnp.full(theta.shape[:2], -1, jnp.int32), theta, state, jnp.zeros_like(eye), dfl0)
    bounds = jnp.stack([record_at, jnp.append(record_at[1:], record_at[-1])], axis=-1)  # the last: no steps
    last, out = jax.lax.scan(segment, c0, bounds)
    return (*out, last[1])


def lanes(pop: Population, m: int = POINT_LANES) -> Population:
    """``pop`` padded to a multiple of m points with weight 0 (copies of its first point, so
    every residual stays finite and adds exactly 0 to every weighted sum)."""
    k = -pop.x.shape[0] % m
    return Population(np.concatenate([pop.x, np.tile(pop.x[:1], (k, 1))]),
                      np.concatenate([pop.y, np.tile(pop.y[:1], k)]),
                      np.concatenate([pop.w, np.zeros(k, pop.w.dtype)]))


@functools.cache
def _split(devices: tuple[Any, ...], optimizer: str, schedule: str, noise: DataConfig | None) -> Callable[..., Any]:
    """``simulate`` over ``devices``, each stepping its own contiguous share of the trajectories
    (``jax.shard_map`` over a 1-D mesh; the population, rates, record points and tail are
    replicated).  A trajectory's numbers may change with the device count by float32 rounding, as
    with the sweep's seed count: XLA's CPU matrix products may round a row differently beside
    other rows."""
    def one(pop: Population, theta0: jax.Array, lr: jax.Array, total: jax.Array, record_at: jax.Array,
            tail: Tail | None) -> tuple[jax.Array, ...]:
        return simulate(pop, theta0, lr, total, record_at, optimizer, schedule, noise, tail)

    rep, tracks = P(), P("tracks")
    return jax.jit(jax.shard_map(one, mesh=Mesh(np.asarray(devices), ("tracks",)), check_vma=False,
                                 in_specs=(rep, tracks, rep, tracks, rep, rep),
                                 out_specs=(P(None, "tracks"),) * 3 + (tracks,)))


def simulate_split(pop: Population, theta0: np.ndarray, lr: jax.Array, total: np.ndarray, record_at: jax.Array,
                   optimizer: str, schedule: str, noise: DataConfig | None, tail: Tail | None = None,
                   devices: list[Any] | None = None) -> tuple[jax.Array, ...]:
    """``simulate`` of trajectories theta0 [T, p] split evenly over ``devices`` (default: all local
    devices, none left with padding only), the last share padded with copies of the last, whose
    results are kept: [.., T + padding, ..] (no slicing here, which would compile per shape).
    Returns without waiting for the result (JAX's asynchronous dispatch)."""
    devices, n = list(devices or jax.local_devices()), len(theta0)
    share, n_dev = shares(n, len(devices))
    theta0, total = (np.concatenate([v, np.repeat(v[-1:], share * n_dev - n, 0)]) for v in (theta0, total))
    fn = _split(tuple(devices[:n_dev]), optimizer, schedule, noise)
    *bufs, since = fn(pop, np.asarray(theta0, np.float32), lr, np.asarray(total), record_at, tail)
    return (*bufs, since)


class TwinCurves(NamedTuple):
    """Each run's twin per recorded epoch [opt, batch, lr, size, seed, epoch]: its population L1
    and the response terms tr(J Sigma), tr(J^T H J Sigma) (see ``simulate``); steps [batch, size,
    epoch] the run's optimizer steps; tail_from [opt, lr, track] the step from which a twin
    trajectory was given in closed form (-1: stepped to the end), ``stepped`` the steps a
    trajectory would take without the tail and ``tail_radius`` the tail's (None: no tail)."""

    loss: np.ndarray
    response: np.ndarray  # tr(J Sigma): the first-order extra decrease of a size-n run is -this / n
    curvature: np.ndarray  # tr(J^T H J Sigma): twice the rise of its population L1, times n
    steps: np.ndarray
    tail_from: np.ndarray
    stepped: int
    tail_radius: float | None


def may_hand_off(tail: Tail | None, theta0: np.ndarray, lr: float, steps: int) -> bool:
    """Whether the tail could take over trajectories theta0 [T, p] at rate lr within ``steps``:
    a stable rate, and the farthest start within reach (no step moves theta by more than
    lr sqrt(p), as |G| <= E|(x,1)| <= sqrt(p))."""
    if tail is None:
        return False
    far = float(np.sqrt(((theta0 - tail.star) ** 2).sum(-1)).max())
    return bool(lr * tail.vals.max() < 2) and far - float(tail.radius) <= steps * lr * math.sqrt(len(tail.star))


def expected_steps(tail: Tail | None, theta0: np.ndarray, lr: float, steps: int) -> float:
    """About how many steps a job of trajectories theta0 [T, p] at rate lr takes: until the
    farthest reaches the tail's radius along H*'s slowest mode, or all ``steps`` (no tail).
    Only balances jobs over devices (``place``): no number depends on it."""
    if tail is None:
        return float(steps)
    far = float(np.sqrt(((theta0 - tail.star) ** 2).sum(-1)).max())
    shrink = -math.log1p(-min(lr * float(tail.vals.min()), 0.5))
    return min(float(steps), math.log(max(far / float(tail.radius), 1.0)) / shrink + 1)


def place(costs: list[float], devices: int) -> list[int]:
    """The device of each job: the longest first, each to the least loaded device, so that jobs
    run side by side instead of each split over every device (a twin step costs about the same
    for 20 trajectories as for 40: XLA's per-op overhead, not arithmetic)."""
    load, where = [0.0] * devices, [0] * len(costs)
    for j in sorted(range(len(costs)), key=lambda j: -costs[j]):
        where[j] = load.index(min(load))
        load[where[j]] += costs[j]
    return where


def device_groups(costs: list[float], devices: list[Any]) -> list[list[Any]]:
    """The devices of each job (expected steps ``costs``): with fewer jobs than devices,
    contiguous groups of them (one job: all of them, its trajectories split); otherwise one device
    each, by ``place``."""
    if len(costs) < len(devices):
        return [list(g) for g in np.array_split(np.asarray(devices, dtype=object), len(costs))]
    return [[devices[d]] for d in place(costs, len(devices))]


def recorded_steps(cfg: Config) -> np.ndarray:
    """Optimizer steps a run has taken at each recorded epoch [batch, size, epoch]."""
    e = np.asarray(cfg.recorded_epochs)
    n = np.asarray(cfg.sweep.sizes)
    return np.stack([steps_per_epoch(n, b)[:, None] * e[None, :] for b in cfg.train.batch_size])


def twin_curves(cfg: Config, noise: DataConfig | None, pop: Population,
                devices: list[Any] | None = None, closed_tail: bool = True) -> TwinCurves:
    """The twin of every run of a sweep.  Runs that share a start and (where the schedule uses
    it) a total step count share one trajectory, read at each run's own step counts, on
    ``devices`` (default: all local devices).  Where the closed-form tail may take over
    (``may_hand_off``), each learning rate runs on its own, so that a fast rate hands over without
    waiting for a slow one (``closed_tail`` False: every twin steps to the end, the reference the
    tail is measured against).  The jobs run side by side (``device_groups``)."""
    t = cfg.train
    steps = recorded_steps(cfg)  # [B, S, E]
    starts = run_starts(cfg, int(pop.x.shape[1]))  # [S, R, p]
    n_b, n_s, n_e = steps.shape
    n_r = starts.shape[1]
    totals = steps[..., -1]  # [B, S]: a run's total steps is its last recorded count
    uses_total = t.schedule in ("cosine", "exponential")
    # one track per distinct (start, total): every (batch, size, seed) maps to one
    keyed = np.concatenate([np.broadcast_to(starts[None], (n_b, n_s, n_r, starts.shape[-1])),
                            np.broadcast_to((totals if uses_total else 0 * totals)[..., None, None],
                                            (n_b, n_s, n_r, 1)).astype(np.float32)], -1)
    tracks, which = np.unique(keyed.reshape(-1, keyed.shape[-1]), axis=0, return_inverse=True)
    record_at = np.unique(steps)
    lr = np.asarray(t.learning_rate, np.float32)
    total = (np.maximum(tracks[:, -1], 1) if uses_total else np.full(len(tracks), max(int(totals.max()), 1))).astype(np.int32)
    pos = np.searchsorted(record_at, steps)  # [B, S, E]
    which = which.reshape(n_b, n_s, n_r)
    out = np.empty((3, len(t.optimizer), n_b, len(t.learning_rate), n_s, n_r, n_e), np.float32)
    tail_from = np.empty((len(t.optimizer), len(t.learning_rate), len(tracks)), np.int32)
    tail = tail_of(cfg, noise, pop) if closed_tail else None
    quadrature, rec = pop if noise is None else lanes(pop), jnp.asarray(record_at, jnp.int32)
    devices = list(devices or jax.local_devices())
    jobs = []  # (optimizer index, learning rate indices, tail or None)
    for o, opt in enumerate(t.optimizer):
        fast = [h for h in range(len(lr)) if opt == "sgd" and may_hand_off(tail, tracks[:, :-1], lr[h], record_at[-1])]
        rest = [h for h in range(len(lr)) if h not in fast]
        jobs += [(o, [h], tail) for h in fast] + ([(o, rest, None)] if rest else [])
    costs = [expected_steps(use, tracks[:, :-1], float(lr[h].min()), int(record_at[-1])) for _, h, use in jobs]
    pending = [simulate_split(quadrature, tracks[:, :-1], lr[np.asarray(h)], total, rec, t.optimizer[o],
                              t.schedule, noise, use, group)
               for (o, h, use), group in zip(jobs, device_groups(costs, devices))]
    for (o, h, _), (*bufs, since) in zip(jobs, pending):
        for i, buf in enumerate(bufs):  # [K, T (+ padding, never read), H] -> [B, S, R, E, H] -> [B, H, S, R, E]
            out[i, o][:, h] = np.moveaxis(np.asarray(buf)[pos[:, :, None, :], which[..., None], :], -1, 1)
        tail_from[o, h] = np.asarray(since)[:len(tracks)].T
    return TwinCurves(*out, steps, tail_from, int(record_at[-1]), None if tail is None else tail.radius)


class Prediction(NamedTuple):
    """Predicted training and held-out L1 of every run [opt, batch, lr, size, seed, epoch], the
    overfitting term O [size] it used, and per run and epoch whether the linear response left the
    bounds a stable step keeps it in (its terms were clipped there: see ``finite_n_terms``)."""

    train: np.ndarray
    test: np.ndarray
    overfit: np.ndarray
    clipped: np.ndarray


def population_minimum(noise: DataConfig | None, pop: Population) -> float:
    """The least population L1: the Bayes floor E|eps| (synthetic), or the pool's exact L1 fit."""
    if noise is not None:
        return bayes_l1_floor(noise)
    x, y = np.asarray(pop.x, np.float64), np.asarray(pop.y, np.float64)
    return float(lad(x[:, :-1], y).loss)


def overfitting_term(cfg: Config, lstar: np.ndarray, minimum: float) -> np.ndarray:
    """O_n [size], how far a size-n run's training L1 ends below the population minimum: the exact
    fit's p / (4 f(0) n) for synthetic data (claim 3's theory); for csv data, whose noise law is
    unknown, the pool's least L1 minus the mean exact optimum ``lstar`` [size] of the subsamples."""
    n = np.asarray(cfg.sweep.sizes, float)
    if cfg.data.source == "csv":
        return np.maximum(minimum - np.asarray(lstar, float), 0.0)
    return (cfg.data.n_features + 1) / (4 * noise_density_at_zero(cfg.data) * n)


def finite_n_terms(cfg: Config, curves: TwinCurves, overfit: np.ndarray) -> Prediction:
    """The twin with its finite-n terms: the linear response of a run to its sample's gradient
    noise xi (covariance Sigma / n, times (N - n) / (N - 1) for a pool of N rows), to second order.
    A run's training L1 is its twin's plus E[xi.e] + E[e^T H e] / 2 with e = J xi, i.e.
    (tr(J Sigma) + tr(J^T H J Sigma) / 2) / n; its held-out L1 rises by tr(J^T H J Sigma) / (2 n).
    For plain sgd J starts at -k lr I (the initial-rate theory's extra decrease lr tr Sigma / n per
    step) and ends at -H^-1, where the terms are claim 3's -p / (4 f(0) n) and +p / (4 f(0) n).
    A pool's loss is piecewise linear (H = 0), so for csv data the first term, V = -tr(J Sigma) / n,
    saturates at the overfitting term O (``overfit`` [size]): train = twin - O u, u = 1 - exp(-V/O),
    held-out = twin + O (1 - sqrt(1 - u))^2 (one mode of the quadratic model).

    In the quadratic model a stable step (|1 - lr h| < 1 in every mode) keeps the training term in
    [-O, 0] and the held-out one in [0, 4 O]; where the response leaves these bounds (adam's long
    oscillations around the optimum amplify it without limit), the terms are clipped to them and
    the run's epoch counted in ``clipped``."""
    n = np.asarray(cfg.sweep.sizes, float)[:, None, None]  # against [size, seed, epoch]
    over = np.asarray(overfit, float)[:, None, None]
    if cfg.data.source == "synthetic":
        with np.errstate(invalid="ignore", over="ignore"):
            down = (curves.response.astype(np.float64) + curves.curvature / 2) / n
            up = curves.curvature.astype(np.float64) / (2 * n)
        slack = 0.01 * over  # float32 rounding at the bounds themselves (J = -H^-1 at convergence)
        clipped = ~((down >= -over - slack) & (down <= slack) & (up >= -slack) & (up <= 4 * over + slack))
        # as np.clip(np.nan_to_num(v), lo, hi) (NaN to 0), 2.4x faster: fmin and fmax skip NaN
        train = curves.loss + np.fmax(np.fmin(down, 0.0), -over)
        test = curves.loss + np.fmin(np.fmax(up, 0.0), 4 * over)
        return Prediction(train.astype(np.float32), test.astype(np.float32), over[:, 0, 0], clipped)
    pool = load_csv(cfg.data, cfg.sweep.base_seed).n_train
    v = -curves.response.astype(np.float64) * (pool - n) / max(pool - 1, 1) / n
    clipped = ~(v >= 0)  # also where the response is not finite
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = np.where(over > 0, -np.expm1(-np.clip(np.nan_to_num(v), 0, None) / np.where(over > 0, over, 1.0)), 0.0)
    train = curves.loss - over * u
    test = curves.loss + over * (1 - np.sqrt(1 - u)) ** 2
    return Prediction(train.astype(np.float32), test.astype(np.float32), over[:, 0, 0], clipped)


# ------------------------------------------------------------------ one sweep against its twin

class SweepTwin(NamedTuple):
    """A sweep's twin and how its prediction fares against the measured curves."""

    curves: TwinCurves
    predicted: Prediction
    gap: stats.Summary  # measured - predicted train L1, paired per seed [opt, batch, lr, size, epoch]
    integration_error: float  # max |L| change when the quadrature is refined, over the runs' starts
    ok: np.ndarray  # [opt, batch, lr, size, seed] runs that did not diverge (the ones compared)
    compile_s: float  # tracing and compiling its programs (the XLA step skipped when a cache has them)
    run_s: float  # the rest of its wall time: running them, drawing starts, predicting


def applies(cfg: Config) -> str | None:
    """Why a sweep has no twin (None if it has one)."""
    if cfg.train.gradient != "l1":
        return "the article's update is not the L1 subgradient: no population loss it descends"
    return None


@functools.partial(jax.jit, static_argnames="noise")
def _refinement_change(noise: DataConfig, pop: Population, fine: Population, theta: jax.Array) -> jax.Array:
    """Largest |L| change at thetas [m, p] between two quadratures, as one compiled program."""
    return jnp.max(jnp.abs(loss_and_grad(noise, pop, theta)[0] - loss_and_grad(noise, fine, theta)[0]))


def integration_error(cfg: Config, noise: DataConfig | None, pop: Population) -> float:
    """Largest change of the population L1 at the runs' first ERROR_STARTS starts (and theta*)
    when the quadrature is refined (twice the Gauss-Legendre nodes per axis, or a 2x larger
    quasi-random set); 0 for csv."""
    if noise is None:
        return 0.0
    star = np.asarray(noise.true_weights + (noise.true_bias,), np.float32)[None]
    starts = run_starts(cfg, star.shape[1]).reshape(-1, star.shape[1])[:ERROR_STARTS]
    th = np.concatenate([star, starts, np.repeat(star, ERROR_STARTS - len(starts), 0)])  # padded with theta*
    return float(_refinement_change(noise, pop, synthetic_population(noise, refine=2), jnp.asarray(th, jnp.float32)))


@functools.cache
def _count_compiling() -> None:
    """Add, once per process, a listener summing JAX's compile events into ``_COMPILING`` (left in
    place: stopwatches read differences of it, so they may nest)."""
    def listen(event: str, seconds: float, **_) -> None:
        if event in COMPILE_EVENTS:
            _COMPILING[0] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """[compile, run] seconds of the block: the tracing, lowering and XLA compiling JAX records
    inside it (top-level programs only, so nothing is counted twice), and the rest of its wall
    time (filled in when the block ends)."""
    _count_compiling()
    spent, before, t0 = [0.0, 0.0], _COMPILING[0], time.perf_counter()
    try:
        yield spent
    finally:
        spent[0] = _COMPILING[0] - before
        spent[1] = time.perf_counter() - t0 - spent[0]


def sweep_twin(a: Analysis) -> SweepTwin | None:
    """The twin of every run of an analysed sweep, its prediction and the paired gaps."""
    cfg = a.results.config
    if applies(cfg) is not None:
        return None
    with stopwatch() as spent:
        noise, pop = population_of(cfg)
        curves = twin_curves(cfg, noise, pop)
        minimum = population_minimum(noise, pop)
        with stats.quiet(), np.errstate(invalid="ignore"):
            lstar = np.nanmean(a.optima.lstar, axis=-1)
        pred = finite_n_terms(cfg, curves, overfitting_term(cfg, lstar, minimum))
        ok = np.asarray(a.results.diverged_epoch) < 0
        measured = np.where(ok[..., None], np.asarray(a.results.train_l1, np.float64), np.nan)
        with stats.quiet():
            gap = stats.t_summary(stats.moments(measured - pred.train, axis=4), cfg.sweep.seeds)
        error = integration_error(cfg, noise, pop)
    return SweepTwin(curves, pred, gap, error, ok, *spent)


def seed_mean(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mean over the non-diverged seeds: [opt, batch, lr, size, seed, epoch] -> [..., epoch]."""
    with np.errstate(invalid="ignore"), stats.quiet():
        return np.nanmean(np.where(ok[..., None], v, np.nan), axis=4)


class Worst(NamedTuple):
    """The largest paired gap of one setting's curve, in standard errors, and where it is."""

    z: float  # (measured - predicted) / se at that epoch
    epoch: int
    gap: float  # measured - predicted mean train L1 there
    relative: float  # gap / predicted
    max_relative: float  # largest |gap| / predicted over all epochs


def worst_gap(tw: SweepTwin, epochs: list[int], idx: tuple[int, int, int, int]) -> Worst:
    """The epoch with the largest |gap| / se of setting ``idx`` = (opt, batch, lr, size)."""
    g = tw.gap
    mean, se = g.mean[idx], g.sem[idx]
    pred = seed_mean(tw.predicted.train, tw.ok)[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.inf * np.sign(mean)))
        rel = np.abs(mean) / pred
    if not np.isfinite(mean).any():
        return Worst(np.nan, -1, np.nan, np.nan, np.nan)
    i = int(np.nanargmax(np.abs(np.where(np.isfinite(mean), z, np.nan))))
    return Worst(float(z[i]), int(epochs[i]), float(mean[i]), float(mean[i] / pred[i]), float(np.nanmax(rel)))


def predicted_contrasts(a: Analysis, tw: SweepTwin, key: str) -> list[tuple[float, float]] | None:
    """Per setting (claims.settings order) the contrast claim ``key`` compares, small size minus
    large (``claims.compared_sizes``), as the prediction gives it, and the measured margin; None
    for claims the twin does not predict (spreads, learning rates)."""
    co = a.results.coords
    if key == "faster_small":
        ki = co["epoch"].index(a.k)
        v = (tw.predicted.train[..., 0] - tw.predicted.train[..., ki]) / a.k
        measured = a.metrics.rate_epoch
    elif key in ("lowest_final_test", "lowest_final_train"):
        v = (tw.predicted.test if key == "lowest_final_test" else tw.predicted.train)[..., -1]
        measured = a.metrics.final_test if key == "lowest_final_test" else a.metrics.final_train
    else:
        return None
    v = np.where(tw.ok, v, np.nan)
    small, large = C.compared_sizes(a)  # the sizes the claims compare (on csv data, n/N <= 0.5)
    out = []
    with stats.quiet(), np.errstate(invalid="ignore"):
        for _, (o, b, l) in C.settings(a):
            out.append((float(np.nanmean(v[o, b, l, small]) - np.nanmean(v[o, b, l, large])),
                        C.MARGIN * float(np.nanmean(np.abs(measured[o, b, l, large])))))
    return out


def predicted_outcomes(a: Analysis, tw: SweepTwin, key: str) -> list[str] | None:
    """The outcome claim ``key`` would have in each setting if the runs followed the prediction
    exactly: the decision rule applied to the predicted contrast with the measured margin."""
    contrasts = predicted_contrasts(a, tw, key)
    return None if contrasts is None else [C.decide(C.Estimate(d, d, d), m, "greater") for d, m in contrasts]


def explains(a: Analysis, tw: SweepTwin | None, claim_list: list) -> dict[str, dict]:
    """Per claim, whether the twin's prediction gives the measured outcome in every setting the
    runs decided (inconclusive settings aside): for ``claims.json``."""
    out = {}
    for c in claim_list:
        pred = None if tw is None or not c.evidence else predicted_outcomes(a, tw, c.key)
        if pred is None:
            why = ("no twin for this sweep" if tw is None else "not applicable on this sweep" if not c.evidence
                   else "the twin predicts mean curves, not spreads over datasets or the best learning rate")
            out[c.key] = {"explains": None, "why": why}
            continue
        pairs = [(e.outcome, p) for e, p in zip(c.evidence, pred) if e.outcome != "inconclusive"]
        agree = sum(m == p for m, p in pairs)
        out[c.key] = {"explains": bool(pairs) and agree == len(pairs), "settings_agreeing": agree,
                      "settings_decided": len(pairs), "predicted_outcomes": pred}
    return out
