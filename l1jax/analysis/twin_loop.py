"""The twins of plain SGD and adam at a constant rate on synthetic data with two features,
as one Numba loop per trajectory: the same steps, response J, records and closed-form tail as
``twin.simulate``, which stays the general path and the reference this loop is tested against.

Why a loop: a twin step is ~20 small XLA ops on [trajectories, 40 points], so XLA's dispatch set
its cost, a job's twins all stepped until the last had handed over to the tail, and every sweep
compiled its own programs.  Here each trajectory steps on its own and stops at its own hand-over;
the point loop vectorizes (erf and exp as float32 polynomials, no libm calls, no division checks);
the trajectories run on every core (the loop releases the GIL); and the loop compiles once per
install into Numba's disk cache.  A twin's numbers do not depend on the twins beside it or on
the thread that ran it.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from l1jax.engine.config import DataConfig
from l1jax.engine.data import CONTAMINATION_SCALE

P = 3  # parameters: two features and the intercept (every built-in synthetic sweep; constant loop bounds)
FASTMATH = {"reassoc", "contract"}  # as the engine's kernels: no NaN or Inf assumptions
GAUSSIAN, CONTAMINATED, LAPLACE = range(3)
# Student t is left to ``twin.simulate``: its CDF table and libm calls keep the loop scalar (slower than XLA)
LAWS = {"gaussian": GAUSSIAN, "contaminated": CONTAMINATED, "laplace": LAPLACE}
OPTIMIZERS = {"sgd": 0, "adam": 1}
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults (eps_root 0)
LANES_PER_TASK = 8  # trajectories a thread takes at a time (their costs differ by rate: many small tasks)
COMPILE_SECONDS = [0.0]  # Numba compiling or cache loading, for ``twin.stopwatch``


class Law(NamedTuple):
    """A noise law as the loop reads it: its code and parameters [5] (scale s, outlier fraction,
    wide scale, 1 / s, 1 / the wide scale)."""

    code: int
    params: np.ndarray


def covers(noise: DataConfig | None) -> bool:
    """Whether the loop integrates this population: synthetic, two features, its law in LAWS."""
    return noise is not None and noise.n_features == P - 1 and noise.noise in LAWS


def applies(optimizer: str, schedule: str, noise: DataConfig | None) -> bool:
    """Whether this loop steps a sweep's twins of ``optimizer`` (else ``twin.simulate`` does)."""
    return covers(noise) and optimizer in OPTIMIZERS and schedule == "constant"


def law_of(noise: DataConfig) -> Law:
    """The loop's view of a synthetic sweep's noise law."""
    s = noise.noise_scale
    wide = CONTAMINATION_SCALE * s
    return Law(LAWS[noise.noise], np.asarray([s, noise.outlier_fraction, wide, 1 / s, 1 / wide], np.float32))


@intrinsic
def _bits_to_float(typingctx, i):
    """int32 -> float32 of the same bits (a bit cast LLVM vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def exp32(v):
    """e^v for v <= 0 in float32: Cephes' expf (2e-7 relative), a polynomial that vectorizes."""
    v = max(v, np.float32(-87.0))
    n = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
    r = v - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return (p * r * r + r + np.float32(1.0)) * _bits_to_float((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def erf32(z):
    """erf(z) in float32 by XLA's CPU rational approximation (clamped to [-4, 4])."""
    z = min(max(z, np.float32(-4.0)), np.float32(4.0))
    z2 = z * z
    p = np.float32(-2.72614225801306e-10)
    p = p * z2 + np.float32(2.77068142495902e-08)
    p = p * z2 + np.float32(-2.10102402082508e-06)
    p = p * z2 + np.float32(-5.69250639462346e-05)
    p = p * z2 + np.float32(-7.34990630326855e-04)
    p = p * z2 + np.float32(-2.95459980854025e-03)
    p = p * z2 + np.float32(-1.60960333262415e-02)
    q = np.float32(-1.45660718464996e-05)
    q = q * z2 + np.float32(-2.13374055278905e-04)
    q = q * z2 + np.float32(-1.68282697438203e-03)
    q = q * z2 + np.float32(-7.37332916720468e-03)
    q = q * z2 + np.float32(-1.42647390514189e-02)
    return p * z / q


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _gaussian(r, s, inv):
    """erf(r / (s sqrt 2)), its derivative and s phi(r / s) (``twin.centred_cdf``, ``upper_mean``),
    inv = 1 / s (a product: the loop vectorizes with one division, the erf's, not three)."""
    z = r * inv
    e = exp32(np.float32(-0.5) * z * z) * np.float32(0.3989422804014327)  # phi(z)
    return erf32(z * np.float32(0.7071067811865476)), np.float32(2) * e * inv, s * e


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _gaussian_law(prm, r):
    return _gaussian(r, prm[0], prm[3])


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _contaminated_law(prm, r):
    """The gaussian mixture: 1 - q of scale s, q of the wide scale."""
    q = prm[1]
    c1, d1, u1 = _gaussian(r, prm[0], prm[3])
    c2, d2, u2 = _gaussian(r, prm[2], prm[4])
    k = np.float32(1) - q
    return k * c1 + q * c2, k * d1 + q * d2, k * u1 + q * u2


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _laplace_law(prm, r):
    s, inv, a = prm[0], prm[3], abs(r)
    e = exp32(-a * inv)
    sg = np.float32(1) if r > 0 else np.float32(-1) if r < 0 else np.float32(0)
    return sg * (np.float32(1) - e), sg * sg * e * inv, (a + s) * e * np.float32(0.5)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _sum_points(law, xt, y, w, prm, th, g, h):
    """The subgradient at th [P] under ``law`` (r -> 2 F(r) - 1, 2 f(r), psi(r)) into g
    [P], its Jacobian into h [P, P].  Every sum is a scalar, the parameters are
    read before the loop and the law is fixed: LLVM vectorizes the loop."""
    t0, t1, t2 = th[0], th[1], th[2]
    prm = (prm[0], prm[1], prm[2], prm[3], prm[4])
    g0 = g1 = g2 = h00 = h01 = h02 = h11 = h12 = h22 = np.float32(0)
    for m in range(y.size):
        a0, a1, a2 = xt[0, m], xt[1, m], xt[2, m]
        c, d, _ = law(prm, t0 * a0 + t1 * a1 + t2 * a2 - y[m])
        c *= w[m]
        d *= w[m]
        g0 += c * a0
        g1 += c * a1
        g2 += c * a2
        h00 += d * a0 * a0
        h01 += d * a0 * a1
        h02 += d * a0 * a2
        h11 += d * a1 * a1
        h12 += d * a1 * a2
        h22 += d * a2 * a2
    g[0], g[1], g[2] = g0, g1, g2
    h[0, 0], h[0, 1], h[0, 2], h[1, 1], h[1, 2], h[2, 2] = h00, h01, h02, h11, h12, h22
    h[1, 0], h[2, 0], h[2, 1] = h01, h02, h12


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _loss_points(law, xt, y, w, prm, th):
    """The population L1 at th: E[r (2 F(r) - 1) + 2 psi(r)] (``twin.moments``)."""
    t0, t1, t2 = th[0], th[1], th[2]
    prm = (prm[0], prm[1], prm[2], prm[3], prm[4])
    loss = np.float32(0)
    for m in range(y.size):
        r = t0 * xt[0, m] + t1 * xt[1, m] + t2 * xt[2, m] - y[m]
        c, _, u = law(prm, r)
        loss += w[m] * (r * c + np.float32(2) * u)
    return loss


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _moments(xt, y, w, code, prm, th, g, h):
    """``_sum_points`` under noise law ``code``: one loop per law (a branch per point inside
    one loop kept LLVM from vectorizing it: 3.6x slower)."""
    if code == GAUSSIAN:
        _sum_points(_gaussian_law, xt, y, w, prm, th, g, h)
    elif code == CONTAMINATED:
        _sum_points(_contaminated_law, xt, y, w, prm, th, g, h)
    else:
        _sum_points(_laplace_law, xt, y, w, prm, th, g, h)


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True, cache=True)
def _loss(xt, y, w, code, prm, th):
    """``_loss_points`` under noise law ``code``."""
    if code == GAUSSIAN:
        return _loss_points(_gaussian_law, xt, y, w, prm, th)
    if code == CONTAMINATED:
        return _loss_points(_contaminated_law, xt, y, w, prm, th)
    return _loss_points(_laplace_law, xt, y, w, prm, th)


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True, cache=True)
def _tail_move(th, jac, steps, lr, star, vecs, vals, th_out, j_out):
    """theta and J moved ``steps`` plain SGD steps in the tail's quadratic model, in float64
    (``twin.tail_state``: each eigen-coordinate of theta - theta* and of J - J*, J* = -H*^-1,
    times (1 - lr h)^steps)."""
    p = P
    power = np.empty(p)
    for k in range(p):
        power[k] = 1.0 if steps == 0 else (1.0 - float(lr) * float(vals[k])) ** steps
    dev, fixed = np.empty(p), np.empty(p)
    for a in range(p + 1):  # a < p: direction a of J; a = p: theta
        for i in range(p):
            f = float(star[i])
            if a < p:
                f = 0.0
                for k in range(p):
                    f -= float(vecs[a, k]) * float(vecs[i, k]) / float(vals[k])
            fixed[i] = f
            dev[i] = (float(jac[a, i]) if a < p else float(th[i])) - f
        for i in range(p):
            v = fixed[i]
            for k in range(p):
                e = 0.0
                for q in range(p):
                    e += dev[q] * float(vecs[q, k])
                v += e * power[k] * float(vecs[i, k])
            if a < p:
                j_out[a, i] = np.float32(v)
            else:
                th_out[i] = np.float32(v)


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True, cache=True)
def _record(xt, y, w, code, prm, th, jac, xx, g, h, out, rec, lane):
    """The population L1, tr(J Sigma) and tr(J^T H J Sigma) at th, J into out[lane, :, rec]
    (Sigma = E[(x,1)(x,1)^T] - G G^T: sign(r - eps)^2 = 1 almost surely; g, h: scratch)."""
    _moments(xt, y, w, code, prm, th, g, h)
    loss = _loss(xt, y, w, code, prm, th)
    resp = curv = np.float32(0)
    for a in range(P):
        for b in range(P):
            sab = xx[a, b] - g[a] * g[b]
            resp += jac[a, b] * sab
            jhj = np.float32(0)  # (J H J^T)[b, a] = sum_ik J[b, i] H[i, k] J[a, k]
            for i in range(P):
                hj = np.float32(0)
                for k in range(P):
                    hj += h[i, k] * jac[a, k]
                jhj += jac[b, i] * hj
            curv += jhj * sab
    out[lane, 0, rec], out[lane, 1, rec], out[lane, 2, rec] = loss, resp, curv


@njit(fastmath=FASTMATH, error_model="numpy", nogil=True, cache=True)
def run_lanes(xt, y, w, code, prm, adam, theta0, lr, record_at, star, vecs, vals, radius, xx,
              lo, hi, out, since_out):
    """Trajectories lo .. hi of theta0 [L, P] at rates lr [L], stepped from record_at[0] to
    record_at[-1] and recorded after each step count of record_at [K] into out [L, 3, K]; with
    ``radius`` >= 0 (plain SGD) a trajectory whose step ends within it of star, at a rate stable
    in every mode, hands over to the tail there (the step into since_out [L]; -1: never)."""
    th, g = np.empty(P, np.float32), np.empty(P, np.float32)
    h, jac, dg = np.empty((P, P), np.float32), np.empty((P, P), np.float32), np.empty((P, P), np.float32)
    mo, ve, dmo, dve = np.empty(P, np.float32), np.empty(P, np.float32), np.empty((P, P), np.float32), np.empty((P, P), np.float32)
    th_rec, j_rec = np.empty(P, np.float32), np.empty((P, P), np.float32)
    for lane in range(lo, hi):
        rate = lr[lane]
        th[:] = theta0[lane]
        jac[:] = 0
        mo[:] = 0
        ve[:] = 0
        dmo[:] = 0
        dve[:] = 0
        stable = radius >= 0 and rate * vals.max() < 2
        since, k, count = -1, record_at[0], 0
        for rec in range(record_at.size):
            while k < record_at[rec] and since < 0:
                _moments(xt, y, w, code, prm, th, g, h)
                for a in range(P):  # d g / d xi_a = H J_a + e_a
                    for i in range(P):
                        acc = np.float32(1) if a == i else np.float32(0)
                        for q in range(P):
                            acc += h[i, q] * jac[a, q]
                        dg[a, i] = acc
                count += 1
                if adam:
                    c1 = np.float32(1) - np.float32(ADAM_B1) ** np.float32(count)
                    c2 = np.float32(1) - np.float32(ADAM_B2) ** np.float32(count)
                    for i in range(P):
                        mo[i] = np.float32(ADAM_B1) * mo[i] + np.float32(1 - ADAM_B1) * g[i]
                        ve[i] = np.float32(ADAM_B2) * ve[i] + np.float32(1 - ADAM_B2) * g[i] * g[i]
                        mh, vh = mo[i] / c1, ve[i] / c2
                        root = np.float32(math.sqrt(vh))
                        den = root + np.float32(ADAM_EPS)
                        th[i] -= rate * (mh / den)
                        for a in range(P):
                            dmo[a, i] = np.float32(ADAM_B1) * dmo[a, i] + np.float32(1 - ADAM_B1) * dg[a, i]
                            dve[a, i] = np.float32(ADAM_B2) * dve[a, i] + np.float32(2 * (1 - ADAM_B2)) * g[i] * dg[a, i]
                            jac[a, i] -= rate * (dmo[a, i] / c1 / den - mh * (dve[a, i] / c2) / (np.float32(2) * root * den * den))
                else:
                    for i in range(P):
                        th[i] -= rate * g[i]
                        for a in range(P):
                            jac[a, i] -= rate * dg[a, i]
                k += 1
                if stable:
                    dist = np.float32(0)
                    for i in range(P):
                        dist += (th[i] - star[i]) * (th[i] - star[i])
                    if dist <= np.float32(radius) * np.float32(radius):
                        since = k
            if since >= 0:
                _tail_move(th, jac, record_at[rec] - since, rate, star, vecs, vals, th_rec, j_rec)
                _record(xt, y, w, code, prm, th_rec, j_rec, xx, g, h, out, rec, lane)
            else:
                _record(xt, y, w, code, prm, th, jac, xx, g, h, out, rec, lane)
        since_out[lane] = since


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _warm() -> None:
    """Compile the loop, or load it from Numba's cache, once per process, timing it into
    COMPILE_SECONDS (so a sweep's report counts it as compiling, not running)."""
    if COMPILE_SECONDS[0] > 0:
        return
    t0 = time.perf_counter()
    x = np.ones((2, P), np.float32)
    run(x, np.zeros(2, np.float32), np.full(2, 0.5, np.float32), law_of(DataConfig()), "sgd",
        np.zeros((1, P), np.float32), np.ones(1, np.float32), np.asarray([0, 1]), threads=1, warm=False)
    COMPILE_SECONDS[0] += time.perf_counter() - t0


def run(x: np.ndarray, y: np.ndarray, w: np.ndarray, law: Law, optimizer: str, theta0: np.ndarray,
        lr: np.ndarray, record_at: np.ndarray, tail: tuple | None = None, threads: int | None = None,
        warm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Twins of theta0 [L, p] at rates lr [L] on the points x [M, p] (targets y, weights w):
    [3, K, L] their L1, tr(J Sigma) and tr(J^T H J Sigma) after each step count of record_at [K],
    and [L] the step from which ``tail`` = (star, vecs, vals, radius) gave each in closed form
    (-1: never; plain SGD only), on ``threads`` threads (default: every core)."""
    if warm:
        _warm()
    lanes = len(theta0)
    star, vecs, vals, radius = tail if tail is not None else (np.zeros(P), np.eye(P), np.ones(P), -1.0)
    xt = np.ascontiguousarray(np.asarray(x, np.float32).T)
    xx = ((xt * np.asarray(w, np.float32)) @ xt.T).astype(np.float32)  # E[(x,1)(x,1)^T]
    out = np.empty((lanes, 3, len(record_at)), np.float32)  # each trajectory's records together
    since = np.empty(lanes, np.int64)
    args = (xt, np.asarray(y, np.float32), np.asarray(w, np.float32), law.code, law.params,
            optimizer == "adam", np.ascontiguousarray(theta0, np.float32), np.asarray(lr, np.float32),
            np.asarray(record_at, np.int64), np.asarray(star, np.float32), np.ascontiguousarray(vecs, np.float32),
            np.asarray(vals, np.float32), float(radius), xx)
    tasks = [(lo, min(lo + LANES_PER_TASK, lanes)) for lo in range(0, lanes, LANES_PER_TASK)]
    with ThreadPoolExecutor(max(1, min(threads or cores(), len(tasks)))) as pool:
        list(pool.map(lambda t: run_lanes(*args, t[0], t[1], out, since), tasks))
    return np.moveaxis(out, 0, -1), since.astype(np.int32)


def population_l1(x: np.ndarray, y: np.ndarray, w: np.ndarray, law: Law, theta: np.ndarray) -> np.ndarray:
    """The population L1 [L] at theta [L, p] (a twin recorded before its first step)."""
    return run(x, y, w, law, "sgd", theta, np.zeros(len(theta), np.float32), np.zeros(1, np.int64))[0][0, 0]
