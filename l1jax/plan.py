"""Sweep planning: which runs share one compiled program, and how their data is laid out.

A *dataset* is one (replicate, size) pair; a *run* is a dataset trained with one learning
rate, batch size and optimizer.  Runs that share an optimizer and a batch size form groups;
each group is one XLA program whose datasets are packed into tiles of T slots.

* Full batch: one group holds every size.  Each dataset takes ceil(n / T) tiles and an
  epoch is one pass over all tiles, so the program does not depend on the number of sizes
  and only the last tile of each dataset carries padding.  T is the largest power of two
  that keeps at least ``MIN_EFFICIENCY`` of the slots useful.
* Minibatch B: a tile is one batch (T = min(B, largest size)); every dataset of a group is
  padded to the group's largest step count S, and an epoch is a scan over S steps.  Sizes
  are bucketed, largest first, so each bucket keeps at least ``MIN_EFFICIENCY`` useful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from l1jax.config import Config

MIN_EFFICIENCY = 0.95  # full batch: useful fraction of padded slots when choosing the tile
MIN_BUCKET_EFFICIENCY = 0.9  # minibatch: useful fraction when bucketing sizes
MAX_TILE = 1024


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
    def steps(self) -> int:
        """Scan steps per epoch (minibatch: the group's largest step count)."""
        return 1 if self.full_batch else self.tiles_per_dataset[0]

    @property
    def n_datasets(self) -> int:
        return len(self.sizes) * self.seeds

    @property
    def n_tiles(self) -> int:
        return sum(self.tiles_per_dataset) * self.seeds

    @property
    def useful_slots(self) -> int:
        return sum(self.sizes) * self.seeds

    @property
    def padded_slots(self) -> int:
        return self.n_tiles * self.tile

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


def full_batch_group(optimizer: str, sizes: tuple[int, ...], seeds: int) -> Group:
    """One group for every size, with the largest tile that keeps padding small."""
    tile = 1
    for t in (2 ** k for k in range(int(math.log2(MAX_TILE)), -1, -1)):
        tiles = [math.ceil(n / t) for n in sizes]
        if _efficiency(sizes, tiles, t) >= MIN_EFFICIENCY:
            tile = t
            break
    return Group(optimizer, None, sizes, seeds, tile, tuple(math.ceil(n / tile) for n in sizes))


def minibatch_groups(optimizer: str, batch: int, sizes: tuple[int, ...], seeds: int) -> list[Group]:
    """Bucket sizes (largest first) so each bucket's padded steps stay mostly useful."""
    groups: list[Group] = []
    rest = sorted(sizes, reverse=True)
    while rest:
        bucket = [rest.pop(0)]
        while rest:
            trial = bucket + [rest[0]]
            tile = min(batch, trial[0])
            steps = math.ceil(trial[0] / tile)
            if sum(trial) / (len(trial) * steps * tile) < MIN_BUCKET_EFFICIENCY:
                break
            bucket.append(rest.pop(0))
        tile = min(batch, bucket[0])
        steps = math.ceil(bucket[0] / tile)
        bsizes = tuple(sorted(bucket))
        groups.append(Group(optimizer, batch, bsizes, seeds, tile, (steps,) * len(bsizes)))
    return groups[::-1]


def plan(cfg: Config) -> list[Group]:
    """All groups of a sweep, one program each."""
    sizes, seeds = cfg.sweep.sizes, cfg.sweep.seeds
    groups: list[Group] = []
    for opt in cfg.train.optimizer:
        for b in cfg.train.batch_size:
            if b == "full":
                groups.append(full_batch_group(opt, sizes, seeds))
            else:
                groups.extend(minibatch_groups(opt, int(b), sizes, seeds))
    return groups


def padding_efficiency(groups: list[Group]) -> float:
    """Useful over padded sample-slots per epoch, over the whole sweep."""
    return sum(g.useful_slots for g in groups) / sum(g.padded_slots for g in groups)


def bytes_per_seed(cfg: Config, group: Group, n_features: int) -> int:
    """Estimated device memory one replicate of a group needs: its packed data (x, y, mask),
    the temporaries of one learning rate's pass over it, its test sets, and per-run records
    and optimizer state.  Conservative: sizes planned with it never run out of memory."""
    slots = sum(group.tiles_per_dataset) * group.tile
    lrs, p = len(cfg.train.learning_rate), n_features + 1
    data = slots * 4 * (n_features + 2)
    temporaries = slots * 4 * 4
    test = len(group.sizes) * (cfg.data.test_size if cfg.data.source == "synthetic" else 0) * 4 * (p + 2)
    runs = len(group.sizes) * lrs * 4 * (3 * len(cfg.recorded_epochs) + 4 * p + 8)
    return data + temporaries + test + runs


# Bytes of packed data (x and y) a block of replicates may hold on the CPU: a block trains all
# its epochs before the next block starts, so its data and the temporaries of its passes should
# stay in cache (chosen by timing bench-cpu with blocks of 1 to 64 replicates).
CPU_BLOCK_BYTES = 3 << 20


def block_seeds(group: Group, n_features: int, backend: str) -> int:
    """Replicates per block: on the CPU the largest divisor of ``group.seeds`` whose packed data
    fits ``CPU_BLOCK_BYTES`` (at least 1); on accelerators all of them (one block, full width)."""
    if backend != "cpu":
        return group.seeds
    per_seed = sum(group.tiles_per_dataset) * group.tile * 4 * (n_features + 1)
    fits = [k for k in range(1, group.seeds + 1) if group.seeds % k == 0 and k * per_seed <= CPU_BLOCK_BYTES]
    return max(fits, default=1)


def seed_chunks(seeds: int, per_seed: int, budget: int, devices: int = 1) -> list[tuple[int, int]]:
    """Split replicates 0..seeds-1 into equal chunks (the last may be smaller) whose share on
    each of ``devices`` fits ``budget`` bytes; equal chunks share compiled programs."""
    fit = devices * max(1, budget // max(per_seed, 1))
    count = math.ceil(seeds / fit)
    size = math.ceil(seeds / count)
    return [(s, min(s + size, seeds)) for s in range(0, seeds, size)]
