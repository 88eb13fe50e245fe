"""csv tables: parsed and checked cell by cell, split once into a training pool and test rows.

Depends on nothing but numpy and the error type, so the config can check a csv source on load.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple, TYPE_CHECKING

import numpy as np

from l1jax.engine.errors import ConfigError

if TYPE_CHECKING:
    from l1jax.engine.config import DataConfig

F32_MAX = float(np.finfo(np.float32).max)  # the engine computes in float32: |v| <= 3.4e38


class Table(NamedTuple):
    """A csv dataset split once (by base seed) into a training pool and held-out test rows."""

    x_train: np.ndarray  # [n_train, d] float32
    y_train: np.ndarray  # [n_train]
    x_test: np.ndarray  # [n_test, d]
    y_test: np.ndarray  # [n_test]

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def read_text(path: Path, what: str, expected: str) -> str:
    """The text of a UTF-8 file, without a leading byte-order mark.  A missing, unreadable or
    undecodable file is one ConfigError line: ``what`` (naming the path), the problem, ``expected``."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problem = "does not exist"
    except IsADirectoryError:
        problem = "is a directory"
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"
    except OSError as e:
        problem = f"cannot be read ({e.strerror or e})"
    raise ConfigError(f"{what} {problem}: expected {expected}")


def read_csv(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Parse the csv into features and target, refusing repeated column names, missing or
    non-numeric cells, values beyond float32, and columns whose float32 sums would overflow."""
    text = read_text(Path(cfg.path), f"data.path = {cfg.path!r}", "a readable UTF-8 csv file")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise ConfigError(f"{cfg.path} is not a valid csv file: {e}") from None
    if not rows:
        raise ConfigError(f"data.path = {cfg.path!r} is not allowed: expected a csv with a header row")
    header = [h.strip() for h in rows[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ConfigError(f"{cfg.path} header names {', '.join(map(repr, repeated))} "
                          "more than once: expected distinct column names")
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
            if not (math.isfinite(v) and abs(v) <= F32_MAX):
                raise ConfigError(f"{cfg.path} line {i}, column {header[c]!r} holds {cell!r}: "
                                  f"expected a finite number with |value| <= {F32_MAX:.2g} (float32)")
            values[i - 2, c] = v
    sums = np.abs(values).sum(axis=0)
    c = int(np.argmax(sums))
    if sums[c] > F32_MAX:
        raise ConfigError(f"{cfg.path} column {header[c]!r} has absolute values summing to "
                          f"{sums[c]:.3g}: expected at most {F32_MAX:.2g}, so that float32 sums "
                          "over its rows stay finite (rescale the column)")
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
