"""GPU tuning probe behind the README's H200 notes: `python scripts/gpu_probe.py` on a GPU
machine prints (1) the fused SGD epoch's warm rate by runs per program and warps
(``kernels.pallas_sgd.DEFAULT_LANES``/``DEFAULT_WARPS``), (2) the full-batch pass kernel's by
tiles per program and warps, with 1 and 16 learning rates (``kernels.pallas_pass``), and (3) where
an XLA full-batch epoch's time goes on gpu-full: the whole program at two epoch counts (their
difference is the per-epoch cost, data generation and records cancel), one XLA pass over the data
per epoch without the update, and a plain read of the same bytes; each against the roofline's
bytes per epoch."""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from l1jax import bench
from l1jax.engine import data as D
from l1jax.engine.kernels import pallas_pass, pallas_sgd
from l1jax.engine.plan import plan
from l1jax.engine.step import packed_sums
from l1jax.engine.sweep import compile_program, group_inputs, n_features
from l1jax.engine.train import build_data, make_train

SGD_SHAPES = ((1, 1), (2, 1), (4, 1))
PASS_SHAPES = ((1, 4), (1, 8), (2, 4), (4, 8))


def best_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best of ``repeats`` timed calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def program_seconds(w: bench.Workload, **make: object) -> float:
    cfg = bench.workload_config(w)
    (g,) = plan(cfg)
    inputs = group_inputs(cfg, g, None)
    exe, _ = compile_program(make_train(cfg, g, n_features(cfg, None), **make), inputs, full_batch=g.full_batch)
    return best_seconds(lambda: jax.block_until_ready(exe(inputs)), 2)


def program_shapes(w: bench.Workload, kernel: object, first: str, shapes: tuple[tuple[int, int], ...]) -> None:
    """The warm rate of ``w`` with each (``first`` per program, warps) of a Pallas kernel module."""
    default = getattr(kernel, f"DEFAULT_{first.upper()}"), kernel.DEFAULT_WARPS
    for value, warps in shapes:
        setattr(kernel, f"DEFAULT_{first.upper()}", value)
        kernel.DEFAULT_WARPS = warps
        label = f"{kernel.__name__.rsplit('.', 1)[1]} {len(w.learning_rates)} lr, {first} {value} warps {warps}"
        try:
            s = program_seconds(w)
        except Exception as e:  # a shape the compiler refuses: say so and try the next
            print(f"{label}: failed: {str(e)[:300]}", flush=True)
            continue
        print(f"{label}: {bench.useful_sample_epochs(w) / s:.3g}/s ({s:.3f} s)", flush=True)
    setattr(kernel, f"DEFAULT_{first.upper()}", default[0])
    kernel.DEFAULT_WARPS = default[1]


def full_batch_breakdown(w: bench.Workload) -> None:
    bw = bench.streaming_bandwidth()
    useful = sum(w.sizes) * w.seeds * 12  # bytes of one epoch's useful read (d = 2)
    t1, t2 = (program_seconds(dataclasses.replace(w, epochs=e), fused="") for e in (w.epochs, 2 * w.epochs))
    per_epoch = (t2 - t1) / w.epochs
    cfg = bench.workload_config(w)
    (g,) = plan(cfg)
    inp = group_inputs(cfg, g, None)
    keys = D.streams(inp.base_seed, inp.rep, inp.size, True)
    data = jax.jit(lambda i: build_data(cfg, g, i, keys))(inp)
    theta = jnp.zeros((g.n_datasets, 1, 3))

    @jax.jit
    def passes(data: D.Packed, theta: jax.Array) -> jax.Array:
        def body(th, _):
            a, gr = packed_sums(data, th, g.n_datasets, "l1", False)
            return th + 1e-30 * gr, None
        return jax.lax.scan(body, theta, None, length=w.epochs)[0]

    @jax.jit
    def reads(data: D.Packed) -> jax.Array:
        def body(c, _):
            return c + jnp.sum(data.x + c[:, None], axis=(0, 2)) + jnp.sum(data.y, axis=1), None
        return jax.lax.scan(body, jnp.zeros(data.y.shape[0]), None, length=w.epochs)[0]

    t_pass = best_seconds(lambda: jax.block_until_ready(passes(data, theta)), 2) / w.epochs
    t_read = best_seconds(lambda: jax.block_until_ready(reads(data)), 2) / w.epochs
    roof = useful / bw
    print(f"full batch {w.sizes} x {w.seeds}: roofline {roof * 1e3:.3f} ms/epoch ({bw / 1e12:.2f} TB/s); "
          f"program {per_epoch * 1e3:.3f} ms/epoch ({roof / per_epoch:.1%}), pass alone "
          f"{t_pass * 1e3:.3f} ({roof / t_pass:.1%}), plain read {t_read * 1e3:.3f} ({roof / t_read:.1%}); "
          f"whole program at {w.epochs} epochs {t1:.3f} s, so {1 - per_epoch * w.epochs / t1:.1%} outside epochs",
          flush=True)


if __name__ == "__main__":
    quick = "--quick" in sys.argv  # a CPU rehearsal of the same code on small shapes
    sgd = bench.WORKLOADS["gpu-sgd"]
    full = bench.WORKLOADS["gpu-full"]
    if quick:
        sgd = dataclasses.replace(sgd, sizes=(100, 1000), seeds=8, epochs=2)
        full = dataclasses.replace(full, sizes=(100, 1000), seeds=8, epochs=3)
    if jax.default_backend() == "gpu":
        program_shapes(dataclasses.replace(sgd, seeds=sgd.seeds // 4), pallas_sgd, "lanes", SGD_SHAPES)
        program_shapes(dataclasses.replace(full, seeds=full.seeds // 4), pallas_pass, "tiles", PASS_SHAPES)
        program_shapes(dataclasses.replace(bench.WORKLOADS["bench-lr"], seeds=100, epochs=200), pallas_pass,
                       "tiles", PASS_SHAPES)
    full_batch_breakdown(full)
