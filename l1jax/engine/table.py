"""csv tables: parsed and checked cell by cell, split once into a training pool and test rows.

Depends on nothing but numpy and the error type, so the config can check a csv source on load.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple, TYPE_CHECKING

import numpy as np

from l1jax.engine.errors import ConfigError

if TYPE_CHECKING:
    from l1jax.engine.config import DataConfig


class Table(NamedTuple):
    """A csv dataset split once (by base seed) into a training pool and held-out test rows."""

    x_train: np.ndarray  # [n_train, d] float32
    y_train: np.ndarray  # [n_train]
    x_test: np.ndarray  # [n_test, d]
    y_test: np.ndarray  # [n_test]

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def read_csv(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
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
    return np.delete(values, t, axis=1), values[:, t]


def load_csv(cfg: DataConfig, base_seed: int = 0) -> Table:
    """Read and split the csv: the last round(test_fraction * rows) of a base-seed shuffle are
    test; with ``standardize``, z-score every column by the training pool's mean and sd."""
    x, y = read_csv(cfg)
    n = len(y)
    n_test = int(round(cfg.test_fraction * n))
    if n - n_test < 1:
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected at least one "
                          f"training row (it has {n} rows, test_fraction {cfg.test_fraction})")
    order = np.random.default_rng(base_seed).permutation(n)
    tr, te = order[: n - n_test], order[n - n_test:]
    if cfg.standardize:
        both = np.column_stack([x, y])
        mu, sd = both[tr].mean(0), both[tr].std(0)
        both = (both - mu) / np.where(sd > 0, sd, 1.0)
        x, y = both[:, :-1], both[:, -1]
    f32 = np.float32
    return Table(x[tr].astype(f32), y[tr].astype(f32), x[te].astype(f32), y[te].astype(f32))
