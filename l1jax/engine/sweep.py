"""Sweep execution: compile each planned group once, run it, and place its runs in Results."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from tqdm import tqdm

from l1jax import __version__
from l1jax.engine import distributed
from l1jax.engine.config import Config
from l1jax.engine.errors import ConfigError
from l1jax.engine.table import Table, load_csv
from l1jax.engine.plan import (Group, block_group, bytes_per_seed, check_fits, counted, device_share,
                               padding_efficiency, plan, program_count, replicates_per_device, seed_chunks,
                               work_summary)
from l1jax.engine.results import Results
from l1jax.engine.store import ChunkStore, open_out
from l1jax.engine.kernels import cpu_kind, cpu_targets, fused_path, prepare_cpu
from l1jax.engine.train import TrainInputs, TrainOutputs, make_train


def group_inputs(cfg: Config, group: Group, table: Table | None, first_seed: int = 0) -> TrainInputs:
    """The traced inputs of a group's program; its replicates start at ``first_seed``."""
    a = group.arrays()
    csv_part = {}
    if table is not None:
        csv_part = dict(pool_x=jnp.asarray(table.x_train), pool_y=jnp.asarray(table.y_train),
                        test_x=jnp.asarray(table.x_test), test_y=jnp.asarray(table.y_test))
    return TrainInputs(jnp.uint32(cfg.sweep.base_seed), jnp.asarray(a.size), jnp.asarray(a.rep + first_seed),
                       jnp.asarray(cfg.train.learning_rate, jnp.float32), **csv_part)


def n_features(cfg: Config, table: Table | None) -> int:
    return cfg.data.n_features if table is None else table.x_train.shape[1]


def kernel_targets(cfg: Config, table: Table | None = None) -> list[str]:
    """The fused CPU kernels (FFI targets) a sweep's groups call on this backend, in plan order
    (``table``: a csv sweep's, loaded here if not given)."""
    if jax.default_backend() != "cpu" or cfg.train.kernels != "fused":
        return []
    kinds = [k for g in plan(cfg) if (k := cpu_kind(g.optimizer, cfg.train.schedule, g.full_batch)) is not None]
    if kinds and cfg.data.source == "csv" and table is None:
        table = load_csv(cfg.data, cfg.sweep.base_seed)
    p = n_features(cfg, table) + 1
    return [name for k in kinds for name in cpu_targets(k, p, cfg.data.source == "synthetic")]


# On the CPU, compile at LLVM -O1 to cut compile time, which dominates small CPU sweeps
# (scripts/bench.py measures compile and run times at this level).  Full-batch programs and
# programs whose hot loop is a fused kernel (engine/kernels) also turn off XLA's new CPU fusion
# emitters: the legacy emitters compile the variadic reduction of a pass (step.tile_sums) and the
# held-out L1 of a record into faster code (scripts/compile_options.py: a fused program of the
# study's main sweep ran 3.6x faster warm so than at -O3 with the new emitters and compiled in
# half the time; the bench workloads' fused programs ran 3-10% slower warm, their data generation,
# and compiled 0.2-0.3 s sooner).  Minibatch programs of the XLA path (gathers, short batches)
# ran slower that way on bench-sgd, so they keep the default emitters.
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
CPU_REDUCTION_OPTIONS = {**CPU_COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False}


def compile_program(fn: Callable[..., Any], *args: Any, full_batch: bool = False,
                    fused: bool = False) -> tuple[Any, float]:
    """jit, lower and compile ``fn`` for ``args`` (on the CPU with the options above, the
    reduction ones if ``full_batch`` or ``fused``); returns the executable and the seconds spent."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    opts = None
    if jax.default_backend() == "cpu":
        opts = CPU_REDUCTION_OPTIONS if fused or full_batch else CPU_COMPILER_OPTIONS
    return lowered.compile(compiler_options=opts), time.perf_counter() - t0


def _sharded(fn: Callable[[TrainInputs], TrainOutputs], inputs: TrainInputs,
             devices: list[Any]) -> Callable[[TrainInputs], TrainOutputs]:
    """``fn`` over ``devices``, each running it on its own contiguous share of the datasets
    (``jax.shard_map`` over a 1-D mesh; the data, learning rates and csv tables are replicated)."""
    mesh = Mesh(np.asarray(devices), ("runs",))
    runs, rep = P("runs"), P()
    in_specs = TrainInputs(*(runs if f in ("size", "rep") else (None if v is None else rep)
                             for f, v in zip(TrainInputs._fields, inputs)))
    out_specs = TrainOutputs(P(None, "runs"), P(None, "runs"), P(None, "runs"), runs, runs)
    # check_vma=False: each device runs the unchanged single-device program on its own share
    return jax.shard_map(fn, mesh=mesh, in_specs=(in_specs,), out_specs=out_specs, check_vma=False)


def device_major_inputs(cfg: Config, local: Group, n_dev: int, table: Table | None,
                        first_seed: int = 0) -> TrainInputs:
    """The inputs of ``n_dev`` devices' shares ``local`` of a group, device-major: device j's
    replicates are j * local.seeds on from ``first_seed``."""
    inputs = group_inputs(cfg, local, table, first_seed)
    return inputs._replace(size=jnp.tile(inputs.size, n_dev), rep=jnp.concatenate(
        [inputs.rep + j * local.seeds for j in range(n_dev)]))


def run_group(cfg: Config, group: Group, table: Table | None, first_seed: int = 0,
              programs: dict[Any, Any] | None = None,
              devices: list[Any] | None = None) -> tuple[TrainOutputs, dict[str, Any]]:
    """Run one group (replicates from ``first_seed``), compiling it unless ``programs`` already
    holds its executable; returns its outputs (host numpy) and timings.

    The replicates are split evenly over ``devices`` (default: all local devices, but none left
    with padding only); the last device's share may be padded with extra replicates that are
    computed and dropped.  A run's numbers do not depend on the device count."""
    devices = list(devices or jax.local_devices())
    local, n_dev = device_share(group, len(devices))
    devices = devices[:n_dev]
    inputs = device_major_inputs(cfg, local, n_dev, table, first_seed)
    if n_dev == 1:
        inputs = jax.device_put(inputs, devices[0])
    programs = {} if programs is None else programs
    key = (group, tuple(d.id for d in devices))
    compile_s = 0.0
    if key not in programs:
        fn = make_train(cfg, local, n_features(cfg, table))
        if n_dev > 1:
            fn = _sharded(fn, inputs, devices)
        fused = fused_path(jax.default_backend(), group.optimizer, cfg.train.schedule, group.full_batch,
                           cfg.train.kernels) is not None
        programs[key], compile_s = compile_program(fn, inputs, full_batch=group.full_batch, fused=fused)
    t1 = time.perf_counter()
    out = jax.block_until_ready(programs[key](inputs))
    t2 = time.perf_counter()
    nf, backend = n_features(cfg, table), jax.default_backend()
    block = block_group(local, nf, backend)
    info = {"optimizer": group.optimizer, "batch_size": group.batch or "full",
            "sizes": list(group.sizes), "seeds": [first_seed, first_seed + group.seeds],
            "tile": group.tile, "steps_per_epoch": block.steps, "devices": n_dev,
            "block_seeds": block.seeds, "runs": group.n_datasets * len(cfg.train.learning_rate),
            "padding_efficiency": padding_efficiency([group], nf, backend, n_dev),
            "compile_s": compile_s, "run_s": t2 - t1}
    return TrainOutputs(*(_device_major_to_group(np.asarray(v), axis, n_dev, local, group.seeds)
                          for v, axis in zip(out, (1, 1, 1, 0, 0)))), info


def _device_major_to_group(v: np.ndarray, axis: int, n_dev: int, local: Group, seeds: int) -> np.ndarray:
    """[.., devices x sizes x local seeds, ..] -> [.., sizes x seeds, ..] (padding replicates dropped)."""
    head, tail = v.shape[:axis], v.shape[axis + 1:]
    v = v.reshape(*head, n_dev, len(local.sizes), local.seeds, *tail)
    v = np.moveaxis(v, axis, axis + 1).reshape(*head, len(local.sizes), n_dev * local.seeds, *tail)
    return v[(slice(None),) * (axis + 1) + (slice(0, seeds),)].reshape(*head, -1, *tail)


def host_description() -> str:
    """CPU model and core count of this machine, for provenance."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def available_ram() -> int:
    """Bytes of RAM available to this process now (8 GiB if the system does not say)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def device_memory() -> int | None:
    """Bytes one device has: the accelerator's memory limit (None if it does not say), or the
    RAM available on the CPU."""
    if jax.default_backend() == "cpu":
        return available_ram()
    stats = jax.devices()[0].memory_stats()
    return stats["bytes_limit"] if stats and "bytes_limit" in stats else None


def default_memory_budget() -> int:
    """Bytes a sweep may hold at once: 60% of the accelerator's memory, or half the RAM that
    is available on the CPU."""
    if jax.default_backend() == "cpu":
        return available_ram() // 2
    memory = device_memory()
    return int(0.6 * memory) if memory else available_ram() // 2


class Progress:
    """Runs done, with runs/s and ETA: a tqdm bar on a terminal, one log line per program
    otherwise (files and CI logs stay readable), nothing when quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.mode = "off" if quiet else ("bar" if sys.stderr.isatty() else "log")
        self.bar = tqdm(total=total, unit="run", desc="sweep") if self.mode == "bar" else None

    def announce(self, line: str) -> None:
        """Print ``line`` on stderr before the work starts, unless quiet."""
        if self.mode != "off":
            tqdm.write(f"sweep: {line}", file=sys.stderr)

    def compiling(self, index: int, count: int, group: Group) -> None:
        """Say that program ``index`` of ``count`` starts compiling (its first call waits for it)."""
        what = f"compiling program {index} of {count}"
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=True)
        elif self.mode == "log":
            print(f"sweep: {what} ({group.optimizer}, batch {group.batch or 'full'}, "
                  f"{counted(group.seeds, 'replicate')}) ...", file=sys.stderr, flush=True)

    def update(self, runs: int, what: str) -> None:
        self.done += runs
        if self.bar is not None:
            self.bar.set_postfix_str(what)
            self.bar.update(runs)
        elif self.mode == "log":
            dt = time.perf_counter() - self.start
            rate = self.done / dt
            print(f"sweep: {self.done}/{self.total} runs ({what}), {rate:.1f} runs/s, "
                  f"ETA {(self.total - self.done) / rate:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class AnnouncedPrograms(dict):
    """Compiled programs by key (``run_group``'s cache): a lookup that misses, after which
    ``run_group`` compiles the program, tells ``progress`` that compiling starts."""

    def __init__(self, progress: Progress, count: int):
        super().__init__()
        self.progress, self.count = progress, count

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        if not found:
            self.progress.compiling(len(self) + 1, self.count, key[0])
        return found


def _place(arrays: dict[str, np.ndarray], out: TrainOutputs, cfg: Config, g: Group, s0: int) -> None:
    """Write a group's outputs ([rec, D, H] with D = sizes x seeds) into the sweep's arrays."""
    t = cfg.train
    o = t.optimizer.index(g.optimizer)
    b = t.batch_size.index(g.batch if g.batch is not None else "full")
    s = [cfg.sweep.sizes.index(n) for n in g.sizes]
    seeds = slice(s0, s0 + g.seeds)
    split = (len(g.sizes), g.seeds)
    p = out.theta.shape[-1]
    for name in ("train_l1", "test_l1", "param_error"):  # -> [H, sizes, seeds, rec]
        v = getattr(out, name)
        arrays[name][o, b][:, s, seeds] = v.reshape(v.shape[0], *split, -1).transpose(3, 1, 2, 0)
    arrays["theta"][o, b][:, s, seeds] = out.theta.reshape(*split, -1, p).transpose(2, 0, 1, 3)
    arrays["diverged_epoch"][o, b][:, s, seeds] = out.diverged_epoch.reshape(*split, -1).transpose(2, 0, 1)


def run(cfg: Config, quiet: bool = True, memory_budget: int | None = None,
        store: ChunkStore | None = None, devices: list[Any] | None = None,
        on_disk: bool | None = None) -> Results | None:
    """Run a whole sweep: one compiled program per planned group, executed over chunks of
    replicates that fit ``memory_budget`` bytes (default: ``default_memory_budget()``);
    ``quiet=False`` shows progress.  Each chunk's replicates are split over ``devices`` (default:
    all local devices; the budget is per device, except on the CPU where devices share the RAM).
    A run's numbers depend on neither the chunking nor the devices.  With a ``store``, each
    finished chunk goes to disk and chunks already there are reused, and results larger than a
    quarter of the available RAM (or any, with ``on_disk=True``) are assembled in memory-mapped
    files beside the chunks instead of in RAM.  Under ``jax.distributed`` each process runs its
    share of the chunks and process 0 returns the merged results; the others return None."""
    devices = list(devices or jax.local_devices())
    table = load_csv(cfg.data, cfg.sweep.base_seed) if cfg.data.source == "csv" else None
    groups = plan(cfg)
    prepare_cpu(kernel_targets(cfg, table))  # on a fresh install Numba compiles while XLA does
    p = n_features(cfg, table) + 1
    budget = memory_budget or default_memory_budget()
    per_seed = max(bytes_per_seed(cfg, g, p - 1, table) for g in groups)
    check_fits(cfg, per_seed, budget, device_memory())
    cap = replicates_per_device(groups)
    t = cfg.train
    shape = (len(t.optimizer), len(t.batch_size), len(t.learning_rate), len(cfg.sweep.sizes),
             cfg.sweep.seeds)
    n_rec = len(cfg.recorded_epochs)
    specs = {k: (shape + (n_rec,), np.nan, np.float32) for k in ("train_l1", "test_l1", "param_error")}
    specs["theta"] = (shape + (p,), np.nan, np.float32)  # (shape, fill, dtype) as np.full takes them
    specs["diverged_epoch"] = (shape, -1, np.int32)
    chunk_specs = lambda n: {k: (shp[:4] + (n,) + shp[5:], fill, dt) for k, (shp, fill, dt) in specs.items()}
    writer = jax.process_index() == 0  # only process 0 assembles the results
    total = sum(math.prod(shp) * np.dtype(dt).itemsize for shp, _, dt in specs.values())
    if on_disk is None:
        on_disk = store is not None and total > available_ram() // 4
    if on_disk and store is None:
        raise ValueError("results can be assembled on disk only with a store")
    if store is not None and writer:
        store.check_space(total, on_disk)
    arrays = {k: store.scratch(k, *spec) if on_disk else np.full(*spec)
              for k, spec in specs.items()} if writer else {}
    per_device = 1 if jax.default_backend() == "cpu" else len(devices)
    chunks = seed_chunks(cfg.sweep.seeds, per_seed, budget, per_device, cap)
    if store is not None:
        chunks = store.plan(chunks)
    n_proc = jax.process_count()
    if n_proc > 1:
        chunks = distributed.share_plan(chunks)
    mine = [i for i in range(len(chunks)) if distributed.owns(i)]
    runs_per_seed = sum(g.n_datasets for g in groups) * len(t.learning_rate) // cfg.sweep.seeds
    resumed = 0
    infos: list[dict[str, Any]] = []
    kept: dict[int, dict[str, np.ndarray]] = {}  # off process 0: chunks run here, until sent
    start = time.perf_counter()
    progress = Progress(runs_per_seed * sum(chunks[i][1] - chunks[i][0] for i in mine), quiet)
    progress.announce(work_summary(cfg, groups, [chunks[i] for i in mine], per_seed, budget))
    programs = AnnouncedPrograms(progress, program_count(groups, [chunks[i] for i in mine]))
    error = None
    try:
        for i in mine:
            s0, s1 = chunks[i]
            part = store.load(s0, s1) if store is not None else None
            if part is not None:
                resumed += 1
                progress.update(runs_per_seed * (s1 - s0), f"seeds {s0}-{s1 - 1} from disk")
            else:
                if math.ceil((s1 - s0) / per_device) > cap:  # only a stored plan (a larger budget) can
                    raise ConfigError(f"the stored chunk of seeds {s0}-{s1 - 1} puts more than {cap:,} "
                                      f"replicates on a device, beyond int32 indices: run into another "
                                      f"--out, or delete {getattr(store, 'dir', 'the stored chunks')} to replan")
                part = {k: np.full(*spec) for k, spec in chunk_specs(s1 - s0).items()}
                for full in groups:
                    g = dataclasses.replace(full, seeds=s1 - s0)
                    out, info = run_group(cfg, g, table, s0, programs, devices)
                    infos.append(info)
                    progress.update(info["runs"], f"{g.optimizer}, batch {info['batch_size']}, "
                                                  f"sizes {list(g.sizes)}, seeds {s0}-{s1 - 1}")
                    _place(part, out, cfg, g, 0)
                if store is not None:
                    store.save(s0, s1, part)
            if writer:
                for k, v in part.items():
                    arrays[k][:, :, :, :, s0:s1] = v
            else:
                kept[i] = part
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other processes
        error = e
    finally:
        progress.close()
    distributed.agree(error, "running its chunks")
    for i, (s0, s1) in enumerate(chunks):  # process 0 gets each chunk from the process that ran it
        if n_proc > 1 and distributed.owner(i) != 0:
            zeros = {k: np.zeros(shp, dt) for k, (shp, _, dt) in chunk_specs(s1 - s0).items()}
            got = distributed.share_chunk(kept.pop(i, zeros), i)
            if writer:
                for k, v in got.items():
                    arrays[k][:, :, :, :, s0:s1] = v
    if not writer:
        return None
    dev = jax.local_devices()[0]
    meta = {
        "versions": {"l1jax": __version__, **{m: version(m) for m in
                                              ("jax", "jaxlib", "optax", "numpy")}},
        "python": platform.python_version(),
        "backend": jax.default_backend(), "device": dev.device_kind,
        "device_count": len(devices), "processes": n_proc, "host": host_description(),
        "padding_efficiency": padding_efficiency(
            [dataclasses.replace(g, seeds=s1 - s0) for s0, s1 in chunks for g in groups],
            p - 1, jax.default_backend(), len(devices)),
        "memory_budget_bytes": budget, "assembled_on_disk": bool(on_disk), "seed_chunks": chunks, "resumed_chunks": resumed,
        "compiled_programs": len(programs),
        "programs": infos, "wall_s": time.perf_counter() - start,
    }
    return Results(cfg, arrays, meta)


def run_to_dir(cfg: Config, out: str | Path, overwrite: bool = False, quiet: bool = True,
               memory_budget: int | None = None) -> Results:
    """``l1jax run`` on one process: run the sweep into ``out`` (``results.npz`` and
    ``manifest.json``) through the chunk store, so an interrupted call resumes; a different
    config already in ``out`` is refused unless ``overwrite``, and so is a directory that
    another run is writing."""
    lock, store = open_out(out, cfg, overwrite)
    try:
        results = run(cfg, quiet=quiet, memory_budget=memory_budget, store=store)
        results.save(out, store.fingerprint)
    except BaseException:
        store.abandon()  # a run refused before its first chunk leaves no index behind
        raise
    finally:
        store.discard_scratch()  # after the results are saved, or on any failure
        lock.release()
    return results
