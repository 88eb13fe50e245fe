"""Metrics per run, vectorized over all runs of a block of seeds (no loop over runs).

Every metric has the run shape (optimizer, batch_size, learning_rate, size, seed); a run that
diverged gets NaN in every metric, so statistics exclude (and count) it.  The functions take
plain arrays, so a sweep larger than memory is measured one chunk of seeds at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l1jax.engine.config import Config, ConfigError

RATE_WINDOW = 5  # epochs over which the initial rate is measured, when recorded


class RunMetrics(NamedTuple):
    rate_epoch: np.ndarray  # (L(0) - L(k)) / k: initial decrease of train L1 per epoch
    rate_step: np.ndarray  # the same per optimizer step
    epochs_50: np.ndarray  # first recorded epoch closing 50% of the gap L(0) - L*, NaN if never
    epochs_90: np.ndarray
    steps_50: np.ndarray  # the same in optimizer steps
    steps_90: np.ndarray
    closed_90: np.ndarray  # 1 if the run closed 90% of the gap within its epochs, else 0
    final_train: np.ndarray
    final_test: np.ndarray  # NaN without a test set
    gap: np.ndarray  # final test - final train: the generalization gap
    suboptimality: np.ndarray  # final train L1 - L*


def rate_window(epochs: list[int] | tuple[int, ...], k: int = RATE_WINDOW) -> int:
    """The rate window: ``k`` epochs, or the first recorded epoch after it when ``k`` is not
    recorded, or the last epoch of a shorter run."""
    later = [e for e in epochs if e >= k]
    return later[0] if later else epochs[-1]


def steps_per_epoch(cfg: Config) -> np.ndarray:
    """Optimizer steps per epoch, shaped to broadcast over runs: [1, batch, 1, size, 1]."""
    sizes = np.asarray(cfg.sweep.sizes)
    per = [np.ones_like(sizes) if b == "full" else -(-sizes // int(b))
           for b in cfg.train.batch_size]
    return np.asarray(per, float)[None, :, None, :, None]


def epochs_to_close(curve: np.ndarray, epochs: np.ndarray, lstar: np.ndarray,
                    frac: float) -> np.ndarray:
    """First recorded epoch with L(0) - L(e) >= frac * (L(0) - L*); NaN if never reached."""
    target = curve[..., :1] - frac * (curve[..., :1] - lstar[..., None])
    hit = curve <= target
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), epochs[first], np.nan)


def run_metrics(cfg: Config, train_l1: np.ndarray, test_l1: np.ndarray, diverged_epoch: np.ndarray,
                lstar: np.ndarray, k: int) -> RunMetrics:
    """All metrics of a block of runs: ``train_l1``/``test_l1`` [opt, batch, lr, size, seed, epoch]
    as recorded, ``diverged_epoch`` [run], ``lstar`` [size, seed] each dataset's exact minimal
    train L1, ``k`` a recorded epoch > 0 (the rate window)."""
    epochs = np.asarray(cfg.recorded_epochs)
    if k not in epochs or k == 0:
        raise ConfigError(f"rate window k = {k} is not allowed: expected a recorded epoch > 0 "
                          f"(recorded: {epochs[0]}, {epochs[1] if len(epochs) > 1 else ''}, ... "
                          f"{epochs[-1]})")
    ki = int(np.flatnonzero(epochs == k)[0])
    ok = np.asarray(diverged_epoch) < 0
    train = np.where(ok[..., None], np.asarray(train_l1, np.float64), np.nan)
    final_test = np.where(ok, np.asarray(test_l1[..., -1], np.float64), np.nan)
    ls = np.asarray(lstar, np.float64)[None, None, None]  # broadcast over optimizer, batch, lr
    steps = steps_per_epoch(cfg)
    rate = (train[..., 0] - train[..., ki]) / k
    e50, e90 = (epochs_to_close(train, epochs, ls, f) for f in (0.5, 0.9))
    closed = np.where(ok, np.isfinite(e90).astype(float), np.nan)
    final_train = train[..., -1]
    return RunMetrics(rate, rate / steps, e50, e90, e50 * steps, e90 * steps, closed, final_train,
                      final_test, final_test - final_train, final_train - ls)
