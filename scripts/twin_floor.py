"""How fast could the twins' steps be on this CPU?  The README's figures on what a Numba twin
loop could save come from here: `python scripts/twin_floor.py`.

1. One plain-SGD twin step of the main grid's 40 trajectories (36 Gauss-Legendre points, gaussian
   noise of scale 1, with the response J) on one core: as XLA runs it (``twin.simulate``) and as
   a hand-written float32 Numba loop of the same arithmetic (its point loop vectorized: erf and
   exp as polynomials), the two checked against each other (L1 and tr(J Sigma) at the end).
2. That loop's moments alone at 36 and 256 points: the vectorized arithmetic's cost a point.
3. Every built-in sweep's twins as the study runs them (``twin_curves``, warm, all cores), their
   trajectory-steps (each twin to its own hand-over to the closed-form tail, or to its last
   recorded step) and records (each twin at every recorded step count), and what the steps
   alone would take at the loop's rate over all cores, scaled by each population's points (a
   proxy: the other noise laws, adam and the csv pool's 11 columns cost more or less a point).
"""

import os
import subprocess
import sys

ONE_CORE = "--one-core" in sys.argv  # the step timings, in a child pinned to one core before JAX starts
if ONE_CORE and hasattr(os, "sched_setaffinity"):  # XLA's thread pool included
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

from l1jax.engine.devices import use_cpu_cores  # noqa: E402

use_cpu_cores()  # one CPU device per core, as `l1jax study` has, before anything starts JAX

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from l1jax.analysis import twin as TW  # noqa: E402
from l1jax.engine.config import load_config  # noqa: E402
from l1jax.engine.kernels.cpu import FASTMATH  # noqa: E402  (the engine kernels' float flags)
from l1jax.engine.sweep import host_description  # noqa: E402
from l1jax.study.study import SWEEPS  # noqa: E402
from twin_cost import best_seconds  # noqa: E402  (this folder's timing helper)

STEPS, LR = 3000, 0.003


@intrinsic
def _bits_to_float(typingctx, i):
    """int32 -> float32 of the same bits (a bit cast LLVM vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def exp32(v):
    """e^v (v <= 0), Cephes' expf polynomial: vectorizes, unlike a libm call."""
    v = max(v, np.float32(-87.0))
    n = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
    r = v - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + np.float32(c)
    return (p * r * r + r + np.float32(1.0)) * _bits_to_float((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def erf32(z):
    """erf(z) by a float32 rational approximation (Eigen's, clamped at +-4), a polynomial that vectorizes."""
    z = min(max(z, np.float32(-4.0)), np.float32(4.0))
    z2 = z * z
    p = np.float32(-2.72614225801306e-10)
    for c in (2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05, -7.34990630326855e-04,
              -2.95459980854025e-03, -1.60960333262415e-02):
        p = p * z2 + np.float32(c)
    q = np.float32(-1.45660718464996e-05)
    for c in (-2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02):
        q = q * z2 + np.float32(c)
    return p * z / q


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def moments(xt, y, w, th, out):
    """Subgradient and Jacobian of the gaussian population L1 at th [3] into out [9] (g, then H's
    upper triangle), the point loop vectorized."""
    g0 = g1 = g2 = h00 = h01 = h02 = h11 = h12 = h22 = np.float32(0)
    for m in range(xt.shape[1]):
        a0, a1, a2 = xt[0, m], xt[1, m], xt[2, m]
        z = th[0] * a0 + th[1] * a1 + th[2] * a2 - y[m]
        c = erf32(z * np.float32(0.7071067811865476)) * w[m]
        d = exp32(np.float32(-0.5) * z * z) * (w[m] * np.float32(0.7978845608028654))
        g0 += c * a0
        g1 += c * a1
        g2 += c * a2
        h00 += d * a0 * a0
        h01 += d * a0 * a1
        h02 += d * a0 * a2
        h11 += d * a1 * a1
        h12 += d * a1 * a2
        h22 += d * a2 * a2
    out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8] = g0, g1, g2, h00, h01, h02, h11, h12, h22


@njit(fastmath=FASTMATH, error_model="numpy")
def sgd_twins(xt, y, w, theta, jac, lr, steps):
    """``steps`` plain-SGD twin steps of every trajectory theta [T, 3] and its response jac
    [T, 3 directions, 3]: theta -= lr g, J -= lr (H J + I)."""
    out = np.empty(9, np.float32)
    hm = np.empty((3, 3), np.float32)
    for t in range(theta.shape[0]):
        th, j = theta[t], jac[t]
        for _ in range(steps):
            moments(xt, y, w, th, out)
            hm[0, 0], hm[0, 1], hm[0, 2], hm[1, 1], hm[1, 2], hm[2, 2] = out[3], out[4], out[5], out[6], out[7], out[8]
            hm[1, 0], hm[2, 0], hm[2, 1] = out[4], out[5], out[7]
            for i in range(3):
                th[i] -= lr * out[i]
            for a in range(3):
                j0, j1, j2 = j[a, 0], j[a, 1], j[a, 2]
                for i in range(3):
                    eye = np.float32(1.0 if i == a else 0.0)
                    j[a, i] -= lr * (hm[i, 0] * j0 + hm[i, 1] * j1 + hm[i, 2] * j2 + eye)


@njit(fastmath=FASTMATH, error_model="numpy")
def moments_only(xt, y, w, theta, reps):
    """The moments alone, ``reps`` times for each trajectory: the vectorized arithmetic's cost."""
    out = np.empty(9, np.float32)
    acc = np.float32(0)  # returned, so that LLVM cannot drop the work
    for _ in range(reps):
        for t in range(theta.shape[0]):
            moments(xt, y, w, theta[t], out)
            acc += out[0]
    return acc


def one_core() -> float:
    """The step timings on one core; returns the Numba loop's ns a trajectory-step."""
    cfg = load_config(SWEEPS["main"])
    noise, pop = TW.population_of(cfg)
    assert noise.noise == "gaussian" and noise.noise_scale == 1.0, "the Numba loop is written for N(0, 1) noise"
    tracks = np.unique(TW.run_starts(cfg, 3).reshape(-1, 3), axis=0).astype(np.float32)
    n_t = len(tracks)
    xla_pop = TW.lanes(pop)
    args = (xla_pop, jnp.asarray(tracks), jnp.asarray([LR], jnp.float32), jnp.full(n_t, STEPS, jnp.int32),
            jnp.asarray([0, STEPS], jnp.int32), "sgd", "constant", noise)
    t_xla, want = best_seconds(lambda: [np.asarray(v) for v in TW.simulate(*args)[:2]])
    xt, y, w = np.ascontiguousarray(pop.x.T), pop.y, pop.w
    th, jac = tracks.copy(), np.zeros((n_t, 3, 3), np.float32)

    def numba_run():
        th[:], jac[:] = tracks, 0
        sgd_twins(xt, y, w, th, jac, np.float32(LR), STEPS)

    t_nb = best_seconds(numba_run)[0]
    loss, _, _, sigma = TW.moments(noise, pop, jnp.asarray(th))
    resp = np.einsum("tji,tji->t", jac, np.asarray(sigma))  # tr(J Sigma), J [direction, parameter]
    per_xla, per_nb = t_xla / STEPS / n_t * 1e9, t_nb / STEPS / n_t * 1e9
    print(f"one twin step, {n_t} trajectories, {len(pop.w)} points, one core: XLA {per_xla:.0f} ns a "
          f"trajectory, Numba loop {per_nb:.0f} ns ({per_xla / per_nb:.2f}x); after {STEPS} steps L1 agree "
          f"to {np.abs(want[0][-1, :, 0] - np.asarray(loss)).max():.1e}, tr(J Sigma) to "
          f"{np.abs(want[1][-1, :, 0] - resp).max() / np.abs(resp).max():.1e} of its size")
    for side in (6, 16):  # the main grid's 6 x 6 Gauss-Legendre rule, and 16 x 16
        t, wt = np.polynomial.legendre.leggauss(side)
        g = np.stack(np.meshgrid((t + 1) / 2, (t + 1) / 2, indexing="ij"), -1).reshape(-1, 2)
        xd = np.c_[g, np.ones(len(g))].astype(np.float32)
        yd = (xd @ np.asarray(cfg.data.true_weights + (cfg.data.true_bias,))).astype(np.float32)
        wd = np.outer(wt / 2, wt / 2).ravel().astype(np.float32)
        reps = 20000
        t_m = best_seconds(lambda: moments_only(np.ascontiguousarray(xd.T), yd, wd, tracks, reps))[0]
        print(f"Numba moments alone, {len(wd)} points: {t_m / reps / n_t / len(wd) * 1e9:.2f} ns a point "
              "and trajectory")
    return per_nb


def main() -> None:
    print(host_description())
    child = subprocess.run([sys.executable, __file__, "--one-core"], stdout=subprocess.PIPE, text=True, check=True)
    *lines, last = child.stdout.strip().splitlines()
    print("\n".join(lines))
    per_nb = float(last.removeprefix("NUMBA_NS="))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    points0 = len(TW.population_of(load_config(SWEEPS["main"]))[1].w)
    total_steps, total_records, total_s, total_floor = 0, 0, 0.0, 0.0
    for name, path in SWEEPS.items():
        c = load_config(path)
        if TW.applies(c) is not None:
            continue
        nz, pp = TW.population_of(c)
        secs, tw = best_seconds(lambda: TW.twin_curves(c, nz, pp))
        tracks_steps = np.where(tw.tail_from >= 0, tw.tail_from, tw.stepped).sum()
        records = len(np.unique(tw.steps)) * tw.tail_from.size  # each twin at every recorded step count
        points = len(pp.w)
        floor = tracks_steps * per_nb * 1e-9 * (points / points0) / cores
        total_steps, total_s, total_floor = total_steps + tracks_steps, total_s + secs, total_floor + floor
        total_records += records
        print(f"{name}: {tracks_steps:.3g} trajectory-steps and {records:.3g} records ({points} points), "
              f"twins {secs:.3f} s warm, its steps at the Numba loop's rate {floor:.3f} s")
    print(f"every sweep: {total_steps:.3g} trajectory-steps and {total_records:.3g} records, twins {total_s:.2f} s "
          f"warm on {cores} cores, their steps at the Numba loop's rate {total_floor:.2f} s")


if __name__ == "__main__":
    if ONE_CORE:
        print(f"NUMBA_NS={one_core()}")
    else:
        main()
