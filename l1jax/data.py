"""Datasets: PRNG key streams, synthetic samples, csv tables and the packed tile layout.

Randomness comes only from a run's coordinates: the key of sample ``j`` of replicate ``rep``
at size ``n`` is ``fold_in(fold_in(fold_in(fold_in(key(base), rep), n), TRAIN), j)``
(``nested`` coupling drops the size), so a sample never depends on which runs share a call.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l1jax.config import ConfigError, DataConfig

# Stream tags folded into a run's key.
TRAIN, TEST, INIT, SHUFFLE = 0, 1, 2, 3
CONTAMINATION_SCALE = 10.0  # outliers of "contaminated" noise have this many times noise_scale


class Streams(NamedTuple):
    """Per-dataset PRNG keys: one typed key per stream, each of shape [D]."""

    train: jax.Array
    test: jax.Array
    init: jax.Array
    shuffle: jax.Array


def streams(base_seed: jax.Array, rep: jax.Array, size: jax.Array, nested: bool) -> Streams:
    """Keys of datasets (rep[i], size[i]); with ``nested`` the data keys ignore the size."""
    rep_key = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(base_seed), rep)
    run_key = jax.vmap(jax.random.fold_in)(rep_key, size)
    data_key = rep_key if nested else run_key
    fold = jax.vmap(jax.random.fold_in, (0, None))
    return Streams(fold(data_key, TRAIN), fold(data_key, TEST), fold(run_key, INIT),
                   fold(run_key, SHUFFLE))


class Packed(NamedTuple):
    """Datasets packed into tiles of T slots; a tile holds samples of one dataset (its owner).

    Padding slots have x = 0, y = 0 and mask = 0, so they add exactly nothing to any sum.
    """

    x: jax.Array  # [d, tiles, T], feature-major
    y: jax.Array  # [tiles, T]
    mask: jax.Array  # [tiles, T] float32, 1 for a real sample
    owner: jax.Array  # [tiles] int32 dataset index


def slot_index(rank: jax.Array, tile: int) -> jax.Array:
    """Sample index j of each slot: tile ``rank`` within its dataset times T plus the slot."""
    return rank[:, None] * tile + jnp.arange(tile, dtype=rank.dtype)[None, :]


# ---------------------------------------------------------------- synthetic

def noise(key: jax.Array, cfg: DataConfig) -> jax.Array:
    """One draw of the configured noise family (scalar)."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return s * jax.random.normal(key)
    if cfg.noise == "laplace":
        return s * jax.random.laplace(key)
    if cfg.noise == "student_t":
        return s * jax.random.t(key, cfg.noise_df)
    ku, kz = jax.random.split(key)
    wide = jax.random.uniform(ku) < cfg.outlier_fraction
    return jnp.where(wide, CONTAMINATION_SCALE * s, s) * jax.random.normal(kz)


def synthetic_sample(key: jax.Array, j: jax.Array, cfg: DataConfig) -> tuple[jax.Array, jax.Array]:
    """Sample j of a dataset: x ~ U(0,1)^d, y = x.w* + b* + noise."""
    k = jax.random.fold_in(key, j)
    x = jax.random.uniform(jax.random.fold_in(k, 0), (cfg.n_features,))
    w = jnp.asarray(cfg.true_weights, jnp.float32)
    y = x @ w + cfg.true_bias + noise(jax.random.fold_in(k, 1), cfg)
    return x, y


def synthetic_rows(keys: jax.Array, j: jax.Array, cfg: DataConfig) -> tuple[jax.Array, jax.Array]:
    """Samples j[r, :] of datasets keys[r]; returns x [R, T, d] and y [R, T]."""
    per_row = jax.vmap(synthetic_sample, (None, 0, None))
    return jax.vmap(per_row, (0, 0, None))(keys, j, cfg)


# ---------------------------------------------------------------- csv

class Table(NamedTuple):
    """A csv dataset split once (by base seed) into a training pool and held-out test rows."""

    x_train: np.ndarray  # [n_train, d] float32
    y_train: np.ndarray  # [n_train]
    x_test: np.ndarray  # [n_test, d]
    y_test: np.ndarray  # [n_test]
    features: tuple[str, ...]

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def read_csv(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Parse the csv into features and target, refusing missing, non-numeric or NaN cells."""
    path = Path(cfg.path)
    if not path.is_file():
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected an existing csv file")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected a csv with a header row")
    header = [h.strip() for h in rows[0]]
    if cfg.target not in header:
        raise ConfigError(f"data.target = {cfg.target!r} is not allowed: expected one of the "
                          f"columns of {cfg.path}: {', '.join(header)}")
    if len(header) < 2:
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected at least one "
                          "feature column besides the target")
    values = np.empty((len(rows) - 1, len(header)), np.float64)
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(f"{cfg.path} line {i} has {len(row)} cells: expected {len(header)}")
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise ConfigError(f"{cfg.path} line {i}, column {header[c]!r} holds {cell!r}: "
                                  "expected a finite number")
            values[i - 2, c] = v
    t = header.index(cfg.target)
    feats = tuple(h for k, h in enumerate(header) if k != t)
    return np.delete(values, t, axis=1), values[:, t], feats


def load_csv(cfg: DataConfig, base_seed: int = 0) -> Table:
    """Read and split the csv: the last round(test_fraction * rows) of a base-seed shuffle are test."""
    x, y, feats = read_csv(cfg)
    n = len(y)
    n_test = int(round(cfg.test_fraction * n))
    if n - n_test < 1:
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected at least one "
                          f"training row (it has {n} rows, test_fraction {cfg.test_fraction})")
    order = np.random.default_rng(base_seed).permutation(n)
    tr, te = order[: n - n_test], order[n - n_test:]
    f32 = np.float32
    return Table(x[tr].astype(f32), y[tr].astype(f32), x[te].astype(f32), y[te].astype(f32), feats)


def subsample_order(key: jax.Array, n_pool: int) -> jax.Array:
    """Order in which a dataset draws pool rows: its first n entries are its size-n subsample."""
    return jax.random.permutation(key, n_pool)


# ---------------------------------------------------------------- shuffles

def shuffle_bits(key: jax.Array, epoch: jax.Array, j: jax.Array) -> jax.Array:
    """Random sort keys of samples j in one epoch's shuffle."""
    k = jax.random.fold_in(key, epoch)
    return jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(k, i), dtype=jnp.uint32))(j)


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The order of a size-n dataset's samples in one epoch (stable argsort of random bits)."""
    return jnp.argsort(shuffle_bits(key, epoch, jnp.arange(n)), stable=True)


def padded_permutation(key: jax.Array, epoch: jax.Array, count: jax.Array, width: int) -> jax.Array:
    """``epoch_permutation`` of a dataset padded to ``width`` slots: real samples first, in the
    same order as the unpadded permutation, then the padding slots."""
    j = jnp.arange(width)
    bits = jnp.where(j < count, shuffle_bits(key, epoch, j), jnp.uint32(0xFFFFFFFF))
    return jnp.argsort(bits, stable=True)
