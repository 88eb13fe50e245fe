"""Sweep planning: which runs share one compiled program, and how their data is laid out.

A *dataset* is one (replicate, size) pair; a *run* is a dataset trained with one learning
rate, batch size and optimizer.  Runs that share an optimizer and a batch size form groups;
each group is one XLA program whose datasets are packed into tiles of T slots.

* Full batch: one group holds every size.  Each dataset takes ceil(n / T) tiles and an
  epoch is one pass over all tiles, so the program does not depend on the number of sizes
  and only the last tile of each dataset carries padding.  T is the largest power of two
  that keeps at least ``MIN_EFFICIENCY`` of the slots useful.
* Minibatch B: one group for every size too, its data stored like the full-batch layout.  A
  dataset takes S = ceil(n / B) steps an epoch; datasets are laid end to end in W *lanes*
  (longest first, each to the least loaded lane), and an epoch is a scan over the rows of that
  schedule, each row one step of every lane's current dataset.  So small datasets fill the
  steps that large ones leave idle, and the program does not depend on the number of sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from l1jax.engine.config import INT32_MAX, Config
from l1jax.engine.data import FEISTEL_ROUNDS, grid_sides
from l1jax.engine.errors import ConfigError
from l1jax.engine.table import Table

MIN_EFFICIENCY = 0.95  # full batch: useful fraction of padded slots when choosing the tile
MAX_TILE = 1024
INDEX_LIMIT = INT32_MAX  # slots a device's share may hold: JAX indexes them with int32


class GroupArrays(NamedTuple):
    """Static integer coordinates of a group's datasets and tiles (host numpy)."""

    size: np.ndarray  # [D] dataset size n
    rep: np.ndarray  # [D] replicate index
    owner: np.ndarray  # [tiles] dataset of each tile
    rank: np.ndarray  # [tiles] position of the tile within its dataset


@dataclass(frozen=True)
class Group:
    """Runs compiled together: all sizes x seeds x learning rates of one optimizer and batch."""

    optimizer: str
    batch: int | None  # None for full batch
    sizes: tuple[int, ...]
    seeds: int
    tile: int
    tiles_per_dataset: tuple[int, ...]  # per size

    @property
    def full_batch(self) -> bool:
        return self.batch is None

    @property
    def width(self) -> int:
        """Slots of one minibatch step: the batch, or the largest size if that is smaller."""
        return min(self.batch, max(self.sizes))

    @property
    def steps(self) -> int:
        """Scan steps per epoch (minibatch: rows of the lane schedule)."""
        return 1 if self.full_batch else self.schedule[0].shape[0]

    @cached_property
    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """Minibatch lane schedule: dataset [rows, lanes] (``n_datasets`` where a lane is idle)
        and its step within the epoch [rows, lanes]; each dataset's steps 0..S-1 in
        consecutive rows of one lane."""
        size = self.arrays().size
        steps = -(-size // self.width)
        total, longest = int(steps.sum()), int(steps.max())
        best = None  # (useful fraction, rows, lanes' datasets)
        # start with as many lanes as fit the longest dataset's steps; fewer lanes may balance
        # better, so try a few and keep the fullest schedule
        for lanes in range(max(1, -(-total // longest)), 0, -1):
            loads = [(0, w) for w in range(lanes)]
            queue: list[list[int]] = [[] for _ in range(lanes)]
            for d in np.argsort(-steps, kind="stable"):
                load, w = heapq.heappop(loads)
                queue[w].append(int(d))
                heapq.heappush(loads, (load + int(steps[d]), w))
            rows = max(load for load, _ in loads)
            if best is None or total / (rows * lanes) > best[0] + 1e-9:
                best = (total / (rows * lanes), rows, queue)
            if best[0] >= MIN_EFFICIENCY or lanes <= -(-total // longest) - 8:
                break
        _, rows, queue = best
        dataset = np.full((rows, len(queue)), self.n_datasets, np.int32)
        step = np.zeros((rows, len(queue)), np.int32)
        for w, ds in enumerate(queue):
            r = 0
            for d in ds:
                dataset[r:r + steps[d], w] = d
                step[r:r + steps[d], w] = np.arange(steps[d])
                r += steps[d]
        return dataset, step

    @property
    def n_datasets(self) -> int:
        return len(self.sizes) * self.seeds

    @property
    def n_tiles(self) -> int:
        return sum(self.tiles_per_dataset) * self.seeds

    @property
    def replicate_slots(self) -> int:
        """Slots one replicate's datasets take in the packed layout (every size, padded to tiles)."""
        return sum(self.tiles_per_dataset) * self.tile

    @property
    def useful_slots(self) -> int:
        return sum(self.sizes) * self.seeds

    @property
    def padded_slots(self) -> int:
        """Slots an epoch computes on: tiles, or minibatch rows x lanes x batch slots."""
        if self.full_batch:
            return self.n_tiles * self.tile
        rows, lanes = self.schedule[0].shape
        return rows * lanes * self.width

    def arrays(self) -> GroupArrays:
        """Dataset i = size_index * seeds + replicate; tiles follow their datasets in order."""
        size = np.repeat(np.asarray(self.sizes, np.int32), self.seeds)
        rep = np.tile(np.arange(self.seeds, dtype=np.int32), len(self.sizes))
        per = np.repeat(np.asarray(self.tiles_per_dataset, np.int32), self.seeds)
        owner = np.repeat(np.arange(len(size), dtype=np.int32), per)
        start = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int32)
        rank = np.arange(len(owner), dtype=np.int32) - start[owner]
        return GroupArrays(size, rep, owner, rank)


def _efficiency(sizes: tuple[int, ...], tiles: list[int], tile: int) -> float:
    return sum(sizes) / (sum(tiles) * tile)


def _tile(sizes: tuple[int, ...]) -> int:
    """The largest power-of-two tile that keeps ``MIN_EFFICIENCY`` of the slots useful."""
    for t in (2 ** k for k in range(int(math.log2(MAX_TILE)), -1, -1)):
        if _efficiency(sizes, [math.ceil(n / t) for n in sizes], t) >= MIN_EFFICIENCY:
            return t
    return 1


def full_batch_group(optimizer: str, sizes: tuple[int, ...], seeds: int) -> Group:
    """One group for every size, with the largest tile that keeps padding small."""
    tile = _tile(sizes)
    return Group(optimizer, None, sizes, seeds, tile, tuple(math.ceil(n / tile) for n in sizes))


def minibatch_group(optimizer: str, batch: int, sizes: tuple[int, ...], seeds: int) -> Group:
    """One group for every size: data stored as for full batch, steps in a lane schedule."""
    return dataclasses.replace(full_batch_group(optimizer, sizes, seeds), batch=batch)


def plan(cfg: Config) -> list[Group]:
    """All groups of a sweep, one program each."""
    sizes, seeds = cfg.sweep.sizes, cfg.sweep.seeds
    groups: list[Group] = []
    for opt in cfg.train.optimizer:
        for b in cfg.train.batch_size:
            if b == "full":
                groups.append(full_batch_group(opt, sizes, seeds))
            else:
                groups.append(minibatch_group(opt, int(b), sizes, seeds))
    return groups


def sample_bytes(n_features: int) -> int:
    """Peak bytes of generating one sample (a training slot or a test row): 4 (d + 2) + 6 floats of
    bits, uniforms, x, y and copies (measured on the CPU: 85 bytes at 2 features, 177 at 8)."""
    return 4 * (4 * (n_features + 2) + 6)


RECORD_COPIES = 4  # a record lives in the scan's output, its concatenation and two host copies


def recorded_count(cfg: Config) -> int:
    """How many epochs are recorded (``len(cfg.recorded_epochs)``, without building the list)."""
    e, r = cfg.train.epochs, cfg.train.record_every
    return e // r + 1 + (e % r != 0)


def bytes_per_seed(cfg: Config, group: Group, n_features: int, table: Table | None = None) -> int:
    """Estimated peak memory of one replicate of a group: generating its training and test sets,
    a csv table's subsample orders, the minibatch lane schedule, and its runs' records and state.
    Conservative: sizes planned with it never run out of memory (``table`` for a csv source)."""
    n_sizes, lrs, p = len(group.sizes), len(cfg.train.learning_rate), n_features + 1
    test_rows = cfg.data.test_size if table is None else len(table.y_test)
    samples = group.replicate_slots + n_sizes * test_rows
    orders = 0 if table is None else n_sizes * table.n_train * 4 * 4
    schedule = 0 if group.full_batch else minibatch_bytes(group, n_features)
    runs = n_sizes * lrs * 4 * (RECORD_COPIES * 3 * recorded_count(cfg) + 4 * p + 8)
    return samples * sample_bytes(n_features) + orders + schedule + runs


def minibatch_bytes(group: Group, n_features: int) -> int:
    """Bytes per replicate of a minibatch program's own arrays: per batch slot its shuffle grid
    coordinates and the epoch's sample slots with temporaries (6 words), per step its dataset,
    batch size, steps, round keys and cycle walks, and a copy of the data as flat slots."""
    walks = max(a * b - n for n, (a, b) in ((n, grid_sides(n)) for n in group.sizes))
    steps = sum(-(-n // group.width) for n in group.sizes)
    slots = group.replicate_slots
    return steps * (24 * group.width + 4 * (3 + FEISTEL_ROUNDS + walks)) + 4 * (n_features + 1) * slots


def check_fits(cfg: Config, per_seed: int, budget: int, device_bytes: int | None = None) -> None:
    """Refuse, before any compute, a sweep whose one replicate needs more than ``budget`` bytes or
    the ``device_bytes`` its device has: one ConfigError line with the estimate and the limit."""
    by_device = device_bytes is not None and device_bytes < budget
    limit = device_bytes if by_device else budget
    if per_seed <= limit:
        return
    where = (f"the {memory_text(limit)} this device offers" if by_device
             else f"the memory budget of {memory_text(limit)}")
    advice = "" if by_device else ", or pass a larger --memory-budget"
    runs = f"{counted(recorded_count(cfg), 'recorded epoch')} x {counted(len(cfg.train.learning_rate), 'learning rate')}"
    raise ConfigError(f"one replicate needs about {memory_text(per_seed)} (sizes up to {max(cfg.sweep.sizes)}, "
                      f"{runs}), more than {where}: use smaller sizes or fewer recorded epochs{advice}")


def counted(n: int, noun: str) -> str:
    """``n`` (with thousands separators) and ``noun``, plural unless n is 1."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def memory_text(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1, for messages."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return counted(n, "byte")


def l2_cache_bytes(cpu: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """One core's L2 cache in bytes, as Linux reports it, or 1 MiB where it cannot be read."""
    units = {"K": 1 << 10, "M": 1 << 20}
    try:
        for index in sorted(cpu.glob("index*")):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()  # e.g. "2048K"
                return int(size.rstrip("KM")) * units.get(size[-1], 1)
    except (OSError, ValueError):
        pass
    return 1 << 20


# Bytes of packed data (x and y) a full-batch block of replicates may hold on the CPU: a block
# trains all its epochs before the next block starts, so its data should stay in the core's L2
# cache (half of it: the rest for the passes' temporaries).  On a 2-core Intel Xeon (2 MiB L2)
# blocks of 1 MiB against the former fixed 3 MiB took bench-cpu from 5.66e9 to 6.90e9
# sample-epochs/s on the fused kernels and from 3.09e9 to 3.81e9 on the XLA path (README, Speed).
CPU_BLOCK_BYTES = l2_cache_bytes() // 2
# The same for minibatch blocks, whose rows read scattered batches from all of a block's data: a
# wider block has more lanes per row (fewer rows to run) but misses cache more (bench-sgd on the
# 2-core EPYC, 32 MB L3: blocks of 8 replicates, 8.5 MB, ran faster than blocks of 4, 16 or 64).
CPU_MINIBATCH_BLOCK_BYTES = 12 << 20


def block_seeds(group: Group, n_features: int, backend: str) -> int:
    """Replicates per block: on the CPU the largest divisor of ``group.seeds`` whose packed data
    fits ``CPU_BLOCK_BYTES`` (``CPU_MINIBATCH_BLOCK_BYTES`` for minibatch groups; at least 1); on
    accelerators all of them (one block, full width)."""
    if backend != "cpu":
        return group.seeds
    per_seed = group.replicate_slots * 4 * (n_features + 1)
    limit = CPU_BLOCK_BYTES if group.full_batch else CPU_MINIBATCH_BLOCK_BYTES
    fits = [k for k in range(1, group.seeds + 1) if group.seeds % k == 0 and k * per_seed <= limit]
    return max(fits, default=1)


@functools.cache
def block_group(group: Group, n_features: int, backend: str) -> Group:
    """One block of ``group``'s replicates (``block_seeds``) as its program trains them: the lane
    schedule, steps and padding that execute.  Cached, so a schedule is built once."""
    return dataclasses.replace(group, seeds=block_seeds(group, n_features, backend))


def shares(count: int, devices: int) -> tuple[int, int]:
    """Items per device (an equal share of ``count``, rounded up: the last share is padded) and
    how many of ``devices`` get one (none holds padding only)."""
    share = -(-count // min(devices, count))
    return share, -(-count // share)


def device_share(group: Group, devices: int) -> tuple[Group, int]:
    """The group each device runs (``shares`` of the replicates; the last share is padded with
    extra replicates) and how many devices get one."""
    share, n_dev = shares(group.seeds, devices)
    return dataclasses.replace(group, seeds=share), n_dev


def padding_efficiency(groups: list[Group], n_features: int, backend: str, devices: int = 1) -> float:
    """Useful over computed sample-slots per epoch of ``groups`` as they run: split over
    ``devices`` (``device_share``), in blocks (``block_group``) with their own lane schedules."""
    useful = computed = 0
    for g in groups:
        local, n_dev = device_share(g, devices)
        block = block_group(local, n_features, backend)
        useful += g.useful_slots
        computed += block.padded_slots * (local.seeds // block.seeds) * n_dev
    return useful / computed


def shared_lr_pass(backend: str) -> bool:
    """Whether an epoch reads the data once for all learning rates (one variadic reduction) or
    once per learning rate.  Measured per learning rate faster on the CPU (a block's data is in
    cache) and on an H200 (bench-lr: 2.2e11 against 1.9e11 sample-epochs/s, 3.4e11 against
    1.6e11 on a tenth of its seeds); JAX names every GPU (ROCm too) "gpu", so all GPUs follow
    the H200, and the other backends (TPUs), unmeasured, keep the single read."""
    return backend not in ("cpu", "gpu")


def replicates_per_device(groups: list[Group]) -> int:
    """The most replicates a device may hold so that every sample slot of its share has an int32
    index (a minibatch epoch addresses samples by flat slot); at least 1, since a config's sizes
    sum to at most ``config.MAX_SAMPLES``."""
    return INDEX_LIMIT // max(g.replicate_slots for g in groups)


def seed_chunks(seeds: int, per_seed: int, budget: int, devices: int = 1,
                cap: int | None = None) -> list[tuple[int, int]]:
    """Split replicates 0..seeds-1 into equal chunks (the last may be smaller) whose share on
    each of ``devices`` fits ``budget`` bytes and at most ``cap`` replicates; equal chunks share
    compiled programs."""
    fit = devices * max(1, min(budget // max(per_seed, 1), cap or seeds))
    count = math.ceil(seeds / fit)
    size = math.ceil(seeds / count)
    return [(s, min(s + size, seeds)) for s in range(0, seeds, size)]


def work_summary(cfg: Config, groups: list[Group], chunks: list[tuple[int, int]], per_seed: int,
                 budget: int) -> str:
    """One line on the work of ``chunks``: runs, sample-epochs, programs to compile, chunks and
    the memory estimate of the largest chunk."""
    seeds = sum(b - a for a, b in chunks)
    widest = max((b - a for a, b in chunks), default=0)
    lrs = len(cfg.train.learning_rate)
    runs = seeds * lrs * sum(len(g.sizes) for g in groups)
    sample_epochs = seeds * lrs * cfg.train.epochs * sum(sum(g.sizes) for g in groups)
    return (f"{counted(runs, 'run')}, {counted(sample_epochs, 'sample-epoch')}, "
            f"{counted(program_count(groups, chunks), 'program')} to compile, {counted(len(chunks), 'chunk')} "
            f"of up to {counted(widest, 'replicate')} (about {memory_text(widest * per_seed)} each, "
            f"memory budget {memory_text(budget)})")


def program_count(groups: list[Group], chunks: list[tuple[int, int]]) -> int:
    """Programs that running ``chunks`` compiles: one per group and chunk length."""
    return len(groups) * len({b - a for a, b in chunks})
