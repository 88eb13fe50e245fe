"""Rate metrics per run, vectorized over all runs of a Results (no loop over runs).

Every metric has the run shape (optimizer, batch_size, learning_rate, size, seed); a run that
diverged gets NaN in every metric, so statistics exclude (and count) it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l1jax.engine.config import ConfigError
from l1jax.engine.results import Results


class RunMetrics(NamedTuple):
    rate_epoch: np.ndarray  # (L(0) - L(k)) / k: initial decrease of train L1 per epoch
    rate_step: np.ndarray  # the same per optimizer step
    epochs_50: np.ndarray  # first recorded epoch closing 50% of the gap L(0) - L*, NaN if never
    epochs_90: np.ndarray
    steps_50: np.ndarray  # the same in optimizer steps
    steps_90: np.ndarray
    final_train: np.ndarray
    final_test: np.ndarray
    gap: np.ndarray  # final test - final train: the generalization gap
    suboptimality: np.ndarray  # L(t) - L* per recorded epoch [..., epoch]


def steps_per_epoch(res: Results) -> np.ndarray:
    """Optimizer steps per epoch, shaped to broadcast over runs: [1, batch, 1, size, 1]."""
    sizes = np.asarray(res.coords["size"])
    per = [np.ones_like(sizes) if b == "full" else -(-sizes // int(b))
           for b in res.coords["batch_size"]]
    return np.asarray(per, float)[None, :, None, :, None]


def epochs_to_close(curve: np.ndarray, epochs: np.ndarray, lstar: np.ndarray,
                    frac: float) -> np.ndarray:
    """First recorded epoch with L(0) - L(e) >= frac * (L(0) - L*); NaN if never reached."""
    target = curve[..., :1] - frac * (curve[..., :1] - lstar[..., None])
    hit = curve <= target
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), epochs[first], np.nan)


def run_metrics(res: Results, lstar: np.ndarray, k: int = 5) -> RunMetrics:
    """All rate metrics; ``lstar`` [size, seed] is each dataset's exact minimal train L1."""
    epochs = np.asarray(res.coords["epoch"])
    if k not in epochs:
        raise ConfigError(f"rate window k = {k} is not allowed: expected a recorded epoch "
                          f"(record_every divides it, and k <= epochs = {epochs[-1]})")
    ki = int(np.flatnonzero(epochs == k)[0])
    ok = ~res.diverged
    nan_bad = lambda v: np.where(ok, v, np.nan)
    train = np.where(ok[..., None], res.train_l1, np.nan)
    ls = np.asarray(lstar, float)[None, None, None]  # broadcast over optimizer, batch, lr
    steps = steps_per_epoch(res)
    rate = (train[..., 0] - train[..., ki]) / k
    e50, e90 = (epochs_to_close(train, epochs, ls, f) for f in (0.5, 0.9))
    final_train, final_test = train[..., -1], nan_bad(res.test_l1[..., -1])
    return RunMetrics(rate, rate / steps, e50, e90, e50 * steps, e90 * steps, final_train,
                      final_test, final_test - final_train, train - ls[..., None])
