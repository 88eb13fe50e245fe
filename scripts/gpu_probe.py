"""GPU tuning probe behind the README's H200 notes: `python scripts/gpu_probe.py` on a GPU
machine prints the bandwidth of jitted sums by array size and shape (why `bench` measures the
roofline over 2 GiB on accelerators), bench-gpu's warm rate by tile width, and bench-lr's warm
rate with one reduction per learning rate or one for all (`plan.shared_lr_pass`)."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp

from l1jax import bench
from l1jax.engine import plan as plan_module
from l1jax.engine.sweep import compile_program, group_inputs, n_features
from l1jax.engine.train import make_train

SHAPES = (("1d", (-1,), None), ("rows1024", (-1, 1024), 1), ("rows8192", (-1, 8192), 1),
          ("cols1024", (-1, 1024), 0), ("cols128", (-1, 128), 0))


def best_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best of ``repeats`` timed calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bandwidths() -> None:
    for n_bytes in (1 << 29, 1 << 31):
        x = jnp.ones(n_bytes // 4, jnp.float32)
        for name, shape, axis in SHAPES:
            xs = x.reshape(shape)
            f = jax.jit(lambda a, axis=axis: jnp.sum(a, axis=axis))
            s = best_seconds(lambda: f(xs).block_until_ready(), 5)
            print(f"bw {n_bytes >> 20} MiB {name}: {n_bytes / s / 1e12:.2f} TB/s", flush=True)


def warm_rate(workload: str, max_tile: int = 1024, min_efficiency: float = 0.95,
              shared: bool | None = None) -> None:
    """Compile one workload's program with the given tile cap and pass layout; print its rate."""
    plan_module.MAX_TILE, plan_module.MIN_EFFICIENCY = max_tile, min_efficiency
    w = bench.WORKLOADS[workload]
    cfg = bench.workload_config(w)
    (g,) = plan_module.plan(cfg)
    inputs = group_inputs(cfg, g, None)
    exe, compile_s = compile_program(make_train(cfg, g, n_features(cfg, None), shared_pass=shared),
                                     inputs, full_batch=g.full_batch)
    s = best_seconds(lambda: jax.block_until_ready(exe(inputs)))
    print(f"{workload} tile {g.tile} shared {shared}: {bench.useful_sample_epochs(w) / s:.3g}/s "
          f"(compile {compile_s:.1f} s, run {s:.2f} s)", flush=True)


if __name__ == "__main__":
    bandwidths()
    for tile, efficiency in ((1024, 0.95), (512, 0.95), (2048, 0.95), (4096, 0.9)):
        warm_rate("bench-gpu", tile, efficiency)
    for tile, shared in ((1024, False), (1024, True), (2048, False)):
        warm_rate("bench-lr", tile, 0.95, shared)
