"""Compare XLA CPU compile options on the programs that call a fused kernel: for each group of
the benchmark workloads and of some built-in sweeps, compile + first run and the best of six warm
runs (the variants alternated in one process) under the engine's options
(`sweep.CPU_REDUCTION_OPTIONS`) and under -O3 with XLA's default emitters (the options fused
programs used before), and which outputs come out identical to the bit.  The README's numbers on
the fused programs' compile options come from here (`python scripts/compile_options.py`)."""

import argparse
import dataclasses
import time

import numpy as np

from l1jax.engine.devices import use_cpu_cores

use_cpu_cores()  # one CPU device per core, as `l1jax run` has, before anything starts JAX

import jax  # noqa: E402

from l1jax.bench import WORKLOADS, workload_config  # noqa: E402
from l1jax.engine.config import Config, load_config  # noqa: E402
from l1jax.engine.kernels import fused_path  # noqa: E402
from l1jax.engine.plan import plan  # noqa: E402
from l1jax.engine.sweep import (CPU_REDUCTION_OPTIONS, _sharded, device_major_inputs, device_share,  # noqa: E402
                                host_description, n_features)
from l1jax.engine.train import make_train  # noqa: E402
from l1jax.study.study import SWEEPS  # noqa: E402

VARIANTS = {"engine": CPU_REDUCTION_OPTIONS, "-O3, default emitters": {"xla_backend_optimization_level": 3}}
ROUNDS = 6


def configs() -> dict[str, Config]:
    out = {name: workload_config(WORKLOADS[name]) for name in ("bench-sgd", "bench-cpu", "bench-lr-cpu")}
    out["bench-sgd, 1 epoch"] = workload_config(dataclasses.replace(WORKLOADS["bench-sgd"], epochs=1))
    return out | {name: load_config(SWEEPS[name]) for name in ("main", "article_minibatch", "noise_student_t")}


def compare(name: str, cfg: Config) -> None:
    """Print each fused group's compile + first run, best warm run and identical outputs per variant."""
    for g in plan(cfg):
        if not fused_path(jax.default_backend(), g.optimizer, cfg.train.schedule, g.full_batch, cfg.train.kernels):
            continue
        local, n_dev = device_share(g, len(jax.local_devices()))
        inputs = device_major_inputs(cfg, local, n_dev, None)
        lowered = jax.jit(_sharded(make_train(cfg, local, n_features(cfg, None)), inputs,
                                   jax.local_devices()[:n_dev])).lower(inputs)
        programs, cold, outs = {}, {}, {}
        for v, opts in VARIANTS.items():
            t = time.perf_counter()
            programs[v] = lowered.compile(compiler_options=opts)
            outs[v] = jax.block_until_ready(programs[v](inputs))
            cold[v] = time.perf_counter() - t
        warm = {v: [] for v in VARIANTS}
        for _ in range(ROUNDS):
            for v, fn in programs.items():
                t = time.perf_counter()
                jax.block_until_ready(fn(inputs))
                warm[v].append(time.perf_counter() - t)
        a, b = outs.values()
        same = [f for f, x, y in zip(a._fields, a, b) if np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)]
        print(f"{name}, {g.optimizer}, batch {g.batch or 'full'}: "
              + "; ".join(f"{v}: compile + first run {cold[v]:.2f} s, warm {min(warm[v]) * 1e3:.0f} ms" for v in VARIANTS)
              + f"; identical: {', '.join(same) or 'none'}", flush=True)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help; no options
    print(f"{host_description()}, jax {jax.__version__}, {len(jax.local_devices())} CPU devices")
    for name, cfg in configs().items():
        compare(name, cfg)
