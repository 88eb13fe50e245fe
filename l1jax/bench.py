"""Benchmarks: l1jax against its peers on the same runs, and against the memory roofline.

A full-batch epoch of a linear L1 run must read each sample's features and target once
(4 (d + 1) bytes in float32), so *useful sample-epochs per second* is the figure and the
roofline is the measured streaming bandwidth divided by those bytes.  Each workload reports
l1jax cold (compilation included, no persistent cache) and warm (compiled), the article-style
NumPy loop (true subgradient), one-jit-per-exact-size JAX and a Numba loop parallel over runs
(``l1jax.peers``; Numba is a core dependency), measured on a subset of seeds where
slow and extrapolated linearly in seeds (each seed is the same work), and says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from l1jax.engine.config import Config, DataConfig, SweepConfig, TrainConfig
from l1jax.engine.kernels import fused_path
from l1jax.engine.plan import padding_efficiency, plan, shared_lr_pass
from l1jax.engine.sweep import compile_program, group_inputs, host_description, n_features, run_group
from l1jax.engine.train import make_train

CPU_SIZES = tuple(int(v) for v in np.geomspace(32, 32768, 16).round())
GPU_SIZES = (100, 1000, 10000, 100000)


@dataclass(frozen=True)
class Workload:
    sizes: tuple[int, ...]
    seeds: int
    epochs: int
    learning_rates: tuple[float, ...] = (0.01,)
    batch: int | str = "full"


WORKLOADS = {
    "bench-cpu": Workload(CPU_SIZES, 64, 300),
    "bench-gpu": Workload(GPU_SIZES, 1000, 1000),
    "bench-lr": Workload(GPU_SIZES, 1000, 1000, tuple(np.geomspace(1e-3, 1.0, 16).round(6).tolist())),
    "bench-sgd": Workload(CPU_SIZES, 64, 20, batch=32),
    # bench-lr's 16 learning rates at bench-cpu's sizes (a quarter of its seeds)
    "bench-lr-cpu": Workload(CPU_SIZES, 16, 300, tuple(np.geomspace(1e-3, 1.0, 16).round(6).tolist())),
    # a GPU pair on the same sizes and seeds, so minibatch over full batch is one division
    "gpu-full": Workload(GPU_SIZES, 4096, 100),
    "gpu-sgd": Workload(GPU_SIZES, 4096, 20, batch=32),
}
GPU_ONLY = ("bench-gpu", "bench-lr", "gpu-full", "gpu-sgd")
PAIRED_ROUNDS = 7  # alternated warm runs of l1jax and the Numba peer (``paired_warm``)


def workload_config(w: Workload) -> Config:
    """Training only: no test set, metrics at the first and last epoch."""
    return Config(DataConfig(test_size=0),
                  TrainConfig(epochs=w.epochs, learning_rate=w.learning_rates, batch_size=(w.batch,),
                              record_every=w.epochs),
                  SweepConfig(sizes=w.sizes, seeds=w.seeds))


def useful_sample_epochs(w: Workload) -> float:
    return float(sum(w.sizes)) * w.seeds * w.epochs * len(w.learning_rates)


def streaming_bandwidth(n_bytes: int | None = None) -> float:
    """Bytes/s of a jitted sum over a float32 array (best of 5): the memory roofline.  512 MiB
    on the CPU; 2 GiB on accelerators, where 512 MiB under-measured an H200 (1.8 TB/s against
    3.0 TB/s for the same sum over 2 GiB)."""
    if n_bytes is None:
        n_bytes = 1 << (29 if jax.default_backend() == "cpu" else 31)
    x = jnp.ones(n_bytes // 4, jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    best = min(_timed(lambda: f(x).block_until_ready()) for _ in range(5))
    return n_bytes / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def l1jax_timings(cfg: Config, programs: dict | None = None) -> dict[str, Any]:
    """Compile and run every planned program by ``sweep.run_group``, the path ``l1jax run``
    takes: cold = compile + first run, warm = the best of three further runs (this shared
    2-core machine varies by tens of percent run to run).  ``programs`` (empty) keeps the
    compiled programs for ``l1jax_warm_run``."""
    groups, programs = plan(cfg), {} if programs is None else programs
    compile_s = first = warm = 0.0
    infos = []
    for g in groups:
        _, info = run_group(cfg, g, None, programs=programs)
        compile_s, first = compile_s + info["compile_s"], first + info["run_s"]
        warm += min(run_group(cfg, g, None, programs=programs)[1]["run_s"] for _ in range(3))
        infos.append(info)
    efficiency = padding_efficiency(groups, n_features(cfg, None), jax.default_backend(),
                                    len(jax.local_devices()))
    return {"compile_s": compile_s, "cold_s": compile_s + first, "warm_s": warm,
            "programs": len(programs), "padding_efficiency": efficiency,
            "block_seeds": sorted({i["block_seeds"] for i in infos})}


def l1jax_warm_run(cfg: Config, programs: dict) -> float:
    """Seconds of one warm run of every planned program (``programs`` filled by ``l1jax_timings``)."""
    return sum(run_group(cfg, g, None, programs=programs)[1]["run_s"] for g in plan(cfg))


def paired_warm(mine: Callable[[], float], peer: Callable[[], float], rounds: int = PAIRED_ROUNDS) -> dict[str, Any]:
    """l1jax's warm run and the peer's (each compiled, each returning its seconds for the whole
    workload) alternated ``rounds`` times: per round the ratio of their rates (peer seconds over
    l1jax's), and the median.  Alternating exposes both to the same stretches of a shared
    machine's load, which two best-of-three timings taken a minute apart are not."""
    ratios = []
    for _ in range(rounds):
        mine_s = mine()
        ratios.append(peer() / mine_s)
    return {"rounds": rounds, "ratios": ratios, "median": float(np.median(ratios))}


def pass_layouts(w: Workload) -> dict[str, Any] | None:
    """Warm rates (best of two) of both ways XLA's pass over the data can take with several
    learning rates: one reduction for all of them, or one per learning rate
    (``plan.shared_lr_pass`` picks per backend), on a tenth of the workload's seeds; None with
    one learning rate.  Measured on the XLA path (the fused CPU pass has its own loop)."""
    if len(w.learning_rates) < 2:
        return None
    part = dataclasses.replace(w, seeds=max(1, w.seeds // 10))
    cfg = workload_config(part)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, kernels="xla"))  # XLA's pass layouts
    (g,) = plan(cfg)
    inputs = group_inputs(cfg, g, None)
    rates = {}
    for shared in (True, False):
        exe, _ = compile_program(make_train(cfg, g, n_features(cfg, None), shared_pass=shared), inputs,
                                 full_batch=g.full_batch)
        jax.block_until_ready(exe(inputs))
        best = min(_timed(lambda: jax.block_until_ready(exe(inputs))) for _ in range(2))
        rates["shared_rate" if shared else "per_lr_rate"] = useful_sample_epochs(part) / best
    return {"seeds": part.seeds, **rates, "engine_shares": shared_lr_pass(jax.default_backend())}


def kernel_paths(w: Workload) -> dict[str, Any] | None:
    """Warm rates (best of two) of the workload with the Pallas kernels (the full-batch pass, or
    whole plain-SGD minibatch epochs) and on the XLA path (``kernels.fused_path`` picks per
    backend), on a tenth of its seeds (the XLA minibatch path would take minutes on all of them);
    None off GPUs (``benchmark`` compares the CPU kernels on every seed) or without a kernel."""
    if jax.default_backend() != "gpu":
        return None
    part = dataclasses.replace(w, seeds=max(1, w.seeds // 10))
    cfg = workload_config(part)
    (g,) = plan(cfg)
    inputs = group_inputs(cfg, g, None)
    rates = {}
    kernel = fused_path(jax.default_backend(), g.optimizer, cfg.train.schedule, g.full_batch, cfg.train.kernels)
    if kernel is None:  # no kernel for this workload here: nothing to compare
        return None
    for fused in (kernel, ""):
        exe, _ = compile_program(make_train(cfg, g, n_features(cfg, None), fused=fused), inputs,
                                 full_batch=g.full_batch)
        jax.block_until_ready(exe(inputs))
        best = min(_timed(lambda: jax.block_until_ready(exe(inputs))) for _ in range(2))
        rates["kernel_rate" if fused else "xla_rate"] = useful_sample_epochs(part) / best
    return {"seeds": part.seeds, **rates, "engine_uses_kernels": True}


def _numpy_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((n, 2), dtype=np.float32)
    return x, (x @ np.float32([2.0, 3.0]) + rng.standard_normal(n, dtype=np.float32))


def numpy_loop(w: Workload, budget_s: float) -> dict[str, Any]:
    """The article-style loop with the true subgradient, seed by seed until ``budget_s``."""
    rng = np.random.default_rng(0)
    data = [_numpy_data(rng, n) for n in w.sizes]
    batch = None if w.batch == "full" else int(w.batch)
    seeds, spent = 0, 0.0
    while seeds < w.seeds and spent < budget_s:
        t = time.perf_counter()
        for x, y in data:
            for lr in w.learning_rates:
                wts, b = rng.standard_normal(2).astype(np.float32), np.float32(rng.standard_normal())
                for _ in range(w.epochs):
                    if batch is None:  # full batch: the article's loop, true subgradient
                        g = np.sign(x @ wts + b - y)
                        wts = wts - lr * (x.T @ g) / len(y)
                        b = b - lr * g.mean()
                        continue
                    order = rng.permutation(len(y))
                    for s in range(0, len(y), batch):
                        i = order[s:s + batch]
                        g = np.sign(x[i] @ wts + b - y[i])
                        wts = wts - lr * (x[i].T @ g) / len(i)
                        b = b - lr * g.mean()
        spent += time.perf_counter() - t
        seeds += 1
    return {"seconds": spent * w.seeds / seeds, "measured_seeds": seeds}


def jit_per_size(w: Workload, budget_s: float) -> dict[str, Any]:
    """One jitted lax.scan program per exact size (full batch), run seed by seed."""
    if w.batch != "full":
        return {"seconds": None, "note": "full batch only"}

    def train(x, y, theta, lr):
        def epoch(th, _):
            g = jnp.sign(x @ th[:2] + th[2] - y)
            return th - lr * jnp.concatenate([x.T @ g, g.sum()[None]]) / y.shape[0], None
        return jax.lax.scan(epoch, theta, None, length=w.epochs)[0]

    rng = np.random.default_rng(0)
    exes, compile_s = [], 0.0
    for n in w.sizes:
        x, y = _numpy_data(rng, n)
        exe, cs = compile_program(train, x, y, jnp.zeros(3), jnp.float32(0.01))
        exes.append((exe, jnp.asarray(x), jnp.asarray(y)))
        compile_s += cs
    seeds, spent = 0, 0.0
    while seeds < w.seeds and spent < budget_s:
        t = time.perf_counter()
        for exe, x, y in exes:
            for lr in w.learning_rates:
                exe(x, y, jnp.asarray(rng.standard_normal(3), jnp.float32), jnp.float32(lr)).block_until_ready()
        spent += time.perf_counter() - t
        seeds += 1
    return {"seconds": spent * w.seeds / seeds, "compile_s": compile_s, "measured_seeds": seeds,
            "programs": len(w.sizes)}


def peer_runs(w: Workload, seeds: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Numba peer's runs (seed, size, learning rate), each on its own contiguous data of the
    NumPy loop's distribution: x [2, N], y [N], slice bounds ``start`` [R + 1], starts theta0
    [R, 3] ~ N(0, 1), lr [R]."""
    n = np.array([size for _ in range(seeds) for size in w.sizes for _ in w.learning_rates])
    start = np.concatenate([[0], np.cumsum(n)])
    x, y = _numpy_data(rng, int(start[-1]))
    lr = np.tile(np.float32(w.learning_rates), seeds * len(w.sizes))
    return np.ascontiguousarray(x.T), y, start, rng.standard_normal((len(n), 3), dtype=np.float32), lr


def local_order(start: np.ndarray) -> np.ndarray:
    """uint32 [N]: each run's sample indices 0..n-1 within its slice."""
    n = np.diff(start)
    return (np.arange(start[-1]) - np.repeat(start[:-1], n)).astype(np.uint32)


def _peer_job(peers: Any, w: Workload, seeds: int, rng: np.random.Generator) -> Callable[[], None]:
    """A call that trains ``seeds`` seeds of the workload's runs from their starts with Numba."""
    x, y, start, theta0, lr = peer_runs(w, seeds, rng)
    if w.batch == "full":
        return lambda: peers.train_full(x, y, start, theta0.copy(), lr, w.epochs)
    order = local_order(start)
    return lambda: peers.train_minibatch(x, y, start, theta0.copy(), lr, w.epochs, int(w.batch), order, 0)


def _draw_job(peers: Any, w: Workload, seeds: int) -> Callable[[], None]:
    """A call that draws ``seeds`` seeds' datasets, one per size (shared by the learning rates,
    as l1jax draws them), with the Numba peer's generator."""
    start = np.concatenate([[0], np.cumsum([size for _ in range(seeds) for size in w.sizes])])
    x, y = np.empty((2, int(start[-1])), np.float32), np.empty(int(start[-1]), np.float32)
    return lambda: peers.draw_data(x, y, start, 0)


def numba_loop(w: Workload, budget_s: float) -> dict[str, Any]:
    """The Numba peer: compile (a tiny run of the same kernel), then cold = compile + first run
    and warm = best of three, on as many seeds as make one run about a quarter of ``budget_s``
    (timed on one seed); then, the same way, its generator drawing the workload's datasets
    (``draw_*``: l1jax's timings include drawing its data, the peer's training is handed its)."""
    try:
        import numba

        from l1jax import peers
    except ImportError:
        return {"note": "not installed"}
    rng = np.random.default_rng(0)
    compile_s = _timed(_peer_job(peers, dataclasses.replace(w, sizes=(2,), epochs=1), 1, rng))
    per_seed = _timed(_peer_job(peers, w, 1, rng))
    seeds = max(1, min(w.seeds, int(budget_s / (4 * per_seed))))
    job = _peer_job(peers, w, seeds, rng)
    first = _timed(job)
    warm = min(_timed(job) for _ in range(3))
    scale = w.seeds / seeds
    draw_compile_s = _timed(_draw_job(peers, dataclasses.replace(w, sizes=(2,)), 1))
    draw = _draw_job(peers, w, seeds)
    draw_first = _timed(draw)
    draw_warm = min(_timed(draw) for _ in range(3))
    return {"version": numba.__version__, "threads": numba.get_num_threads(), "compile_s": compile_s,
            "cold_s": compile_s + first * scale, "warm_s": warm * scale, "measured_seeds": seeds,
            "draw_cold_s": draw_compile_s + draw_first * scale, "draw_warm_s": draw_warm * scale}


def peak_memory_bytes() -> int:
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kernels_used(cfg: Config) -> list[str]:
    """The fused kernel of each of the config's groups on this backend ("xla" where none)."""
    return [fused_path(jax.default_backend(), g.optimizer, cfg.train.schedule, g.full_batch,
                       cfg.train.kernels) or "xla" for g in plan(cfg)]


def benchmark(name: str, peer_budget_s: float = 20.0) -> dict[str, Any]:
    """Measure one workload in this process; returns the JSON record.  l1jax runs as configured
    (fused kernels where they apply) and, where that differs, with ``train.kernels = "xla"``;
    the load average before and after says how busy the machine was."""
    w = WORKLOADS[name]
    cfg = workload_config(w)
    work = useful_sample_epochs(w)
    load_before = os.getloadavg()
    programs: dict = {}
    mine = l1jax_timings(cfg, programs)
    xla_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, kernels="xla"))
    paths = kernels_used(cfg)
    on_cpu = jax.default_backend() == "cpu"  # GPUs compare on a tenth of the seeds (kernel_paths)
    xla = l1jax_timings(xla_cfg) if on_cpu and paths != kernels_used(xla_cfg) else None
    npl = numpy_loop(w, peer_budget_s)
    per = jit_per_size(w, peer_budget_s)
    layouts = pass_layouts(w)
    gpu_paths = kernel_paths(w)
    peak = peak_memory_bytes()  # before the roofline's array and the Numba peer's data
    bw = streaming_bandwidth()
    roof = bw / (4 * (cfg.data.n_features + 1))
    nb = numba_loop(w, peer_budget_s)
    paired = None
    if on_cpu and "measured_seeds" in nb:  # the fused-kernel lines report it (``_kernel_lines``)
        from l1jax import peers

        job, scale = _peer_job(peers, w, nb["measured_seeds"], np.random.default_rng(0)), w.seeds / nb["measured_seeds"]
        job()  # its data into cache, as l1jax's after its own runs
        paired = paired_warm(lambda: l1jax_warm_run(cfg, programs), lambda: _timed(job) * scale)
    rate = lambda s: None if not s else work / s
    warm = rate(mine["warm_s"])
    dev = jax.devices()[0]
    return {
        "workload": name, "spec": w.__dict__, "useful_sample_epochs": work,
        "device": f"{dev.platform}: {dev.device_kind}", "devices": len(jax.local_devices()),
        "host": host_description(),
        "jax": jax.__version__,
        "l1jax": {**mine, "cold_rate": rate(mine["cold_s"]), "warm_rate": warm, "kernels": paths},
        "l1jax_xla": None if xla is None else {**xla, "cold_rate": rate(xla["cold_s"]),
                                                "warm_rate": rate(xla["warm_s"])},
        "load_average": [round(v, 2) for v in (*load_before, *os.getloadavg())],
        "numpy_loop": {**npl, "rate": rate(npl["seconds"])},
        "jit_per_size": {**per, "rate": rate(per.get("seconds"))},
        "numba": {**nb, "cold_rate": rate(nb.get("cold_s")), "warm_rate": rate(nb.get("warm_s")),
                  **({"cold_rate_with_data": rate(nb["cold_s"] + nb["draw_cold_s"]),
                      "warm_rate_with_data": rate(nb["warm_s"] + nb["draw_warm_s"])} if "draw_warm_s" in nb else {})},
        "paired": paired, "pass_layouts": layouts, "kernel_paths": gpu_paths,
        "bandwidth_bytes_per_s": bw, "roofline_rate": roof, "roofline_fraction": warm / roof,
        "peak_memory_bytes": peak, "peak_before_roofline": True,
    }


def _fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:.3g}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _count(r: dict[str, Any]) -> str:
    """" x N" for a record made on N devices (records before the count was kept show nothing)."""
    return f" x{r['devices']}" if "devices" in r else ""


def _numba_cells(r: dict[str, Any]) -> str:
    """Numba warm (measured seeds) and cold (compile s), and l1jax warm and cold over them."""
    nb, m = r.get("numba"), r["l1jax"]
    if nb is None or "note" in nb:
        return f"{'not measured' if nb is None else nb['note']} | | |"
    return (f"{_fmt(nb['warm_rate'])} ({nb['measured_seeds']}/{r['spec']['seeds']}) | "
            f"{_fmt(nb['cold_rate'])} ({nb['compile_s']:.1f}) | "
            f"{_fmt(_ratio(m['warm_rate'], nb['warm_rate']), 'x')} | {_fmt(_ratio(m['cold_rate'], nb['cold_rate']), 'x')}")


def markdown(records: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md from every recorded run; workloads never run on a GPU say so."""
    lines = ["# Benchmarks", "",
             "Each record is one command, `python scripts/bench.py --workload NAME`: it measures everything in one process, "
             "writes `docs/bench/NAME-DEVICE.json` and rebuilds this page from the JSON records in "
             "`docs/bench/`. Rates are useful sample-epochs per second; "
             "ratios are l1jax warm (best of three runs) or cold (compilation and first run) over the peer. Peers measured on a subset of seeds are "
             "extrapolated linearly in seeds (`measured` column).", "",
             "| workload | device (host) | l1jax warm | l1jax cold | compile s (programs) | padding eff. | "
             "NumPy loop (measured seeds) | warm/NumPy | cold/NumPy | jit per size | warm/jit | "
             "Numba warm (measured seeds) | Numba cold (compile s) | warm/Numba | cold/Numba | roofline | "
             "warm/roofline | peak memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in records:
        m, n, j = r["l1jax"], r["numpy_loop"], r["jit_per_size"]
        seen.add((r["workload"], r["device"].split(":")[0]))
        lines.append(
            f"| {r['workload']} | {r['device']}{_count(r)} ({r['host']}) | {_fmt(m['warm_rate'])} | {_fmt(m['cold_rate'])} | "
            f"{m['compile_s']:.1f} ({m['programs']}) | {m['padding_efficiency']:.1%} | "
            f"{_fmt(n['rate'])} ({n['measured_seeds']}/{r['spec']['seeds']}) | "
            f"{_fmt(_ratio(m['warm_rate'], n['rate']), 'x')} | {_fmt(_ratio(m['cold_rate'], n['rate']), 'x')} | "
            f"{_fmt(j['rate'])} | {_fmt(_ratio(m['warm_rate'], j['rate']), 'x')} | {_numba_cells(r)} | "
            f"{_fmt(r['roofline_rate'])} | {r['roofline_fraction']:.1%} | "
            f"{r['peak_memory_bytes'] / 2**20:.0f} MiB{'' if r.get('peak_before_roofline') else '*'} |")
    for name in WORKLOADS:
        if (name, "gpu") not in seen and name not in ("gpu-full", "gpu-sgd"):
            lines.append(f"| {name} | gpu | not measured |" + " |" * 15)
    compared = [r for r in records if r.get("pass_layouts")]
    if compared:
        lines += ["", "With several learning rates, the pass over the data is one reduction for all of "
                  "them (shared) or one per learning rate; both warm, best of two, on a tenth of the seeds:", ""]
    for r in compared:
        p = r["pass_layouts"]
        lines.append(f"- {r['workload']} on {r['device']} ({p['seeds']} seeds): shared "
                     f"{_fmt(p['shared_rate'])}/s, per learning rate {_fmt(p['per_lr_rate'])}/s "
                     f"({_fmt(p['shared_rate'] / p['per_lr_rate'], 'x')}); l1jax uses "
                     f"{'shared' if p['engine_shares'] else 'one per learning rate'} here (`plan.shared_lr_pass`).")
    with_kernels = [r for r in records if r.get("kernel_paths")]
    if with_kernels:
        lines += ["", "Pallas kernels (`engine/kernels/`: the full-batch pass, whole plain-SGD minibatch "
                  "epochs) against the XLA path; both warm, best of two, on a tenth of the seeds:", ""]
    for r in with_kernels:
        p = r["kernel_paths"]
        lines.append(f"- {r['workload']} on {r['device']} ({p['seeds']} seeds): kernels "
                     f"{_fmt(p['kernel_rate'])}/s, XLA {_fmt(p['xla_rate'])}/s "
                     f"({_fmt(p['kernel_rate'] / p['xla_rate'], 'x')}); l1jax uses "
                     f"{'the kernels' if p['engine_uses_kernels'] else 'XLA'} here (`kernels.fused_path`).")
    if not all(r.get("peak_before_roofline") for r in records):
        lines += ["", "\\* Peak memory read after the roofline's array was allocated (512 MiB on the CPU, "
                  "2 GiB on accelerators), so it includes that array; later records read it before."]
    lines += _kernel_lines(records)
    lines += _minibatch_fractions(records)
    lines += ["", "Targets (issue 4): CPU warm ≥ 7x and cold ≥ 3x the NumPy loop on bench-cpu; GPU ≥ 70% "
              "of the roofline on bench-gpu; bench-lr ≥ 2x the single-run roofline; padding ≥ 90%. "
              "Targets (issue 14): bench-sgd warm ≥ 3x and cold ≥ 1.5x the Numba loop, bench-cpu warm "
              "≥ 5x the Numba loop. Targets (issue 24, fused CPU kernels): bench-sgd warm and cold ≥ 1x "
              "the Numba loop, bench-cpu warm ≥ 1x, bench-lr-cpu (16 learning rates) warm ≥ 1.3x.", "",
              "The roofline is the streaming bandwidth from main memory. On the CPU l1jax trains "
              "replicates in blocks whose data stays in cache for all their epochs "
              "(`plan.block_seeds`), so it is not a bound there; on accelerators a program is one "
              "block. With several learning rates, `plan.shared_lr_pass` picks the pass layout per "
              "backend from the comparison above. `scripts/gpu_bench.sh` runs every workload on a GPU "
              "machine in one call; on GPU rows the NumPy, jit-per-size (on the GPU) and Numba peers "
              "run on that machine, Numba on its host CPU cores (the `threads` field of the record).", "",
              "The Numba peer (`l1jax/peers.py`) is the loop a performance-minded user writes instead: "
              "`@njit(parallel=True)`, `prange` over runs, each run on its own contiguous feature-major "
              "float32 data with its parameters in registers, the same L1 subgradient and SGD steps "
              "(minibatch: the run's index array reshuffled once per epoch by an inline SplitMix64 "
              "Fisher-Yates, the last batch ragged and averaged over its real count). Its only fastmath "
              "flag is `reassoc`, which lets LLVM vectorize the float32 sums; a reordered sum has the "
              "same float32 rounding bound as the sequential one (tests/test_bench.py checks the peer "
              "against the float64 reference), and without it the full-batch loop stays scalar, about "
              "ten times slower. Cold is compilation (a tiny run of the same kernel) plus the first run, "
              "warm the best of three. Its training is handed its data, while l1jax's timings include "
              "drawing its data; the fused-kernel lines above also compare l1jax with the peer timed "
              "with its own generator (`peers.draw_data`: SplitMix64 and Box-Muller in the same "
              "`prange` loop, each dataset drawn once for all its learning rates). It runs on as many seeds as "
              "make one run about a quarter of `--peer-budget`. \"not measured\": the record predates "
              "the peer; \"not installed\": numba was missing.", ""]
    return "\n".join(lines)


def _kernel_lines(records: list[dict[str, Any]]) -> list[str]:
    """Lines comparing l1jax's fused CPU kernels with its XLA path and the Numba peer, for the
    records that measured both paths."""
    lines = []
    for r in records:
        x, m, nb = r.get("l1jax_xla"), r["l1jax"], r.get("numba") or {}
        if not x:
            continue
        peer_w, peer_c = nb.get("warm_rate"), nb.get("cold_rate")
        load = r.get("load_average")
        busy = "" if not load else f"; load average {load[0]:.1f} before, {load[3]:.1f} after"
        drawn = "" if "warm_rate_with_data" not in nb else (
            f"; against the peer that also draws its data (`peers.draw_data`, {nb['draw_warm_s'] * 1e3:.0f} ms warm) "
            f"{_fmt(_ratio(m['warm_rate'], nb['warm_rate_with_data']), 'x')} warm, "
            f"{_fmt(_ratio(m['cold_rate'], nb['cold_rate_with_data']), 'x')} cold")
        paired = r.get("paired")
        alternated = "" if not paired else (
            f"; alternated with the peer ({paired['rounds']} warm runs each, `paired_warm`) {_fmt(paired['median'], 'x')} "
            f"median, {_fmt(min(paired['ratios']), 'x')} to {_fmt(max(paired['ratios']), 'x')}")
        lines.append(f"- {r['workload']} on {r['device']}{_count(r)} ({', '.join(sorted(set(m['kernels'])))}): "
                     f"fused warm {_fmt(m['warm_rate'])}/s, cold {_fmt(m['cold_rate'])}/s; XLA path warm "
                     f"{_fmt(x['warm_rate'])}/s, cold {_fmt(x['cold_rate'])}/s (fused/XLA "
                     f"{_fmt(_ratio(m['warm_rate'], x['warm_rate']), 'x')} warm); fused/Numba "
                     f"{_fmt(_ratio(m['warm_rate'], peer_w), 'x')} warm, {_fmt(_ratio(m['cold_rate'], peer_c), 'x')} "
                     f"cold{alternated}{drawn}{busy}.")
    return ["", "Fused CPU kernels (`l1jax/engine/kernels/`, the default on the CPU) against l1jax's XLA path "
            "(`train.kernels = \"xla\"`), both measured in the record's process:", "", *lines] if lines else []


def _minibatch_fractions(records: list[dict[str, Any]]) -> list[str]:
    """Lines giving each minibatch workload's warm rate over its full-batch twin's (the same sizes
    and seeds, batch 32 against full batch) on each device that ran both."""
    warm = {(r["workload"], r["device"], r["host"]): r["l1jax"]["warm_rate"] for r in records}
    lines = []
    pairs = {"bench-sgd": "bench-cpu", "gpu-sgd": "gpu-full"}
    for (name, device, host), rate in warm.items():
        full = warm.get((pairs.get(name), device, host))
        if full:
            lines.append(f"- {name} on {device} ({host}): minibatch warm is {rate / full:.1%} of full-batch warm "
                         f"({pairs[name]}, the same sizes and seeds; separate processes).")
    return ["", "Minibatch against full batch (an epoch reads the same samples; minibatch also takes "
            "one optimizer step per batch, in sequence):", "", *lines] if lines else []


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write one run's JSON record, in the format the bench/ directories hold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def records_dir(docs: Path) -> Path:
    """Where the records of the markdown table ``docs`` live: its sibling bench/ directory."""
    return docs.parent / "bench"


def write_docs(docs: Path) -> None:
    """Rebuild the markdown table ``docs`` from every record in :func:`records_dir`."""
    records = [json.loads(p.read_text()) for p in sorted(records_dir(docs).glob("*.json"))]
    docs.write_text(markdown(records))
