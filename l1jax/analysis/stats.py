"""Statistics over seeds: means, spreads and percentile-bootstrap intervals of many groups at once.

Non-finite values (divergent runs) are excluded from every statistic and counted.  All groups
share one bootstrap resampling index matrix, so nothing loops over groups; the only loop is
over the distinct counts of finite values (usually one or two) and over memory-bounded blocks.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, NamedTuple

import numpy as np

_BOOT_BLOCK = 1 << 22  # bootstrap means held at once (groups x n_boot), bounds memory


class Summary(NamedTuple):
    """Per-group statistics, each of the reduced shape."""

    mean: np.ndarray
    std: np.ndarray  # sample standard deviation (ddof = 1)
    sem: np.ndarray  # standard error of the mean, std / sqrt(n)
    ci_low: np.ndarray  # percentile bootstrap interval of the mean
    ci_high: np.ndarray
    n: np.ndarray  # finite values used
    excluded: np.ndarray  # non-finite values left out


def _compact(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite values of each row moved to its front (order kept), zeros after; and their count."""
    finite = np.isfinite(v)
    order = np.argsort(~finite, axis=-1, kind="stable")
    packed = np.where(np.take_along_axis(finite, order, -1), np.take_along_axis(v, order, -1), 0.0)
    return packed, finite.sum(axis=-1)


def _bootstrap_ci(packed: np.ndarray, n: np.ndarray, n_boot: int, level: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of rows holding n[g] leading finite values.

    One uniform matrix U [n_boot, S] drives every group: a group of count c resamples indices
    floor(U[:, :c] * c), turned into a count matrix, so a block of groups is one matrix product.
    Groups with fewer than 2 values get NaN.
    """
    u = np.random.default_rng(seed).random((n_boot, packed.shape[-1]))
    alpha = (1.0 - level) / 2.0
    ci = np.full((2, packed.shape[0]), np.nan)
    block = max(1, _BOOT_BLOCK // n_boot)
    for c in np.unique(n[n >= 2]):
        idx = np.floor(u[:, :c] * c).astype(np.int64) + c * np.arange(n_boot)[:, None]
        counts = np.bincount(idx.ravel(), minlength=n_boot * c).reshape(n_boot, c)
        rows = np.flatnonzero(n == c)
        for start in range(0, len(rows), block):
            r = rows[start:start + block]
            means = packed[r, :c] @ counts.T / c
            ci[:, r] = np.quantile(means, [alpha, 1.0 - alpha], axis=-1)
    return ci[0], ci[1]


def summarize(values: np.ndarray, axis: int = -1, n_boot: int = 2000, level: float = 0.95,
              seed: int = 0) -> Summary:
    """Mean, std, sem and bootstrap CI of the mean over ``axis``, excluding non-finite values."""
    v = np.moveaxis(np.asarray(values, float), axis, -1)
    shape = v.shape[:-1]
    packed, n = _compact(v.reshape(-1, v.shape[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = packed.sum(axis=-1) / n
        dev = np.where(np.arange(packed.shape[-1]) < n[:, None], packed - mean[:, None], 0.0)
        std = np.sqrt((dev ** 2).sum(axis=-1) / (n - 1))
        std = np.where(n >= 2, std, np.nan)
        sem = std / np.sqrt(n)
    low, high = _bootstrap_ci(packed, n, n_boot, level, seed)
    excluded = v.shape[-1] - n
    return Summary(*(a.reshape(shape) for a in (mean, std, sem, low, high, n, excluded)))


def paired_difference(a: np.ndarray, b: np.ndarray, axis: int = -1, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> Summary:
    """Summary of a - b per seed (common random numbers); pairs with a non-finite side excluded."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(np.isfinite(a) & np.isfinite(b), a - b, np.nan)
    return summarize(diff, axis, n_boot, level, seed)


def _resample(v: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resamples along the last axis: [..., n_boot, S] (one index matrix for all)."""
    idx = np.random.default_rng(seed).integers(0, v.shape[-1], (n_boot, v.shape[-1]))
    return v[..., idx]


def sd_interval(values: np.ndarray, axis: int = -1, n_boot: int = 2000, level: float = 0.95,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviation over ``axis`` (non-finite values excluded) and its percentile
    bootstrap interval."""
    v = np.moveaxis(np.asarray(values, float), axis, -1)
    v = np.where(np.isfinite(v), v, np.nan)
    alpha = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        sd = np.nanstd(v, axis=-1, ddof=1)
        boot = np.nanstd(_resample(v, n_boot, seed), axis=-1, ddof=1)
        lo, hi = np.nanquantile(boot, [alpha, 1.0 - alpha], axis=-1)
    return sd, lo, hi


def sd_ratio(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int = 2000, level: float = 0.95,
             seed: int = 0) -> tuple[float, float, float]:
    """sd(a) / sd(b) over seeds with a percentile bootstrap interval; ``paired`` resamples the
    seeds of a and b together (common random numbers), else independently."""
    a, b = (np.where(np.isfinite(x), x, np.nan) for x in (np.asarray(a, float), np.asarray(b, float)))
    alpha = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        ra = _resample(a, n_boot, seed)
        rb = _resample(b, n_boot, seed if paired else seed + 1)
        boot = np.nanstd(ra, axis=-1, ddof=1) / np.nanstd(rb, axis=-1, ddof=1)
        lo, hi = np.nanquantile(boot, [alpha, 1.0 - alpha])
        return float(np.nanstd(a, ddof=1) / np.nanstd(b, ddof=1)), float(lo), float(hi)



@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN-slice warnings: such groups simply get NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
