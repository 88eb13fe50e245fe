"""A plain single-run NumPy trainer (float64): the independent reference the engine is tested
against (the benchmarks time an article-style float32 loop instead, ``bench.numpy_loop``).  It shares no code with the engine; optimizer and schedule formulas
are written out from their definitions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ReferenceRun(NamedTuple):
    train_l1: np.ndarray  # [epochs + 1], loss at the parameters after e epochs
    test_l1: np.ndarray  # [epochs + 1] (NaN without a test set)
    param_error: np.ndarray  # [epochs + 1] (NaN without true parameters)
    theta: np.ndarray  # final (w, b)


def l1(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    return float(np.mean(np.abs(x @ theta[:-1] + theta[-1] - y)))


def gradient(x: np.ndarray, y: np.ndarray, theta: np.ndarray, mode: str) -> np.ndarray:
    """Mean L1 subgradient (sign(0) = 0), or the article's -(2/n) X^T (pred - y)."""
    r = x @ theta[:-1] + theta[-1] - y
    xa = np.hstack([x, np.ones((len(y), 1))])
    if mode == "l1":
        return xa.T @ np.sign(r) / len(y)
    return -(2.0 / len(y)) * (xa.T @ r)


def schedule_lr(schedule: str, lr0: float, step: int, total: int) -> float:
    frac = min(step / max(total, 1), 1.0)
    return {"constant": lr0, "cosine": lr0 * 0.5 * (1 + np.cos(np.pi * frac)),
            "inverse_sqrt": lr0 / np.sqrt(1.0 + step), "exponential": lr0 * 0.01 ** frac}[schedule]


class _Optimizer:
    """SGD / heavy-ball momentum / Nesterov / Adam, as optax defines them."""

    def __init__(self, name: str, p: int):
        self.name, self.t = name, 0
        self.m, self.v = np.zeros(p), np.zeros(p)

    def step(self, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        self.t += 1
        if self.name == "sgd":
            return theta - lr * g
        if self.name in ("momentum", "nesterov"):
            self.m = g + 0.9 * self.m
            return theta - lr * (g + 0.9 * self.m if self.name == "nesterov" else self.m)
        if self.name == "adam":
            self.m = 0.9 * self.m + 0.1 * g
            self.v = 0.999 * self.v + 0.001 * g * g
            mh, vh = self.m / (1 - 0.9 ** self.t), self.v / (1 - 0.999 ** self.t)
            return theta - lr * mh / (np.sqrt(vh) + 1e-8)
        raise ValueError(f"reference trainer has no optimizer {self.name!r}")


def train_reference(x: np.ndarray, y: np.ndarray, theta0: np.ndarray, lr: float, epochs: int, *,
                    mode: str = "l1", optimizer: str = "sgd", schedule: str = "constant",
                    batch: int | None = None, perms: list[np.ndarray] | None = None,
                    x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                    theta_star: np.ndarray | None = None) -> ReferenceRun:
    """Train one run.  Full batch if ``batch`` is None; else epoch e visits samples in the
    order ``perms[e]`` in batches of ``batch`` (the last one ragged)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    theta = np.asarray(theta0, np.float64).copy()
    n = len(y)
    steps = 1 if batch is None else -(-n // batch)
    opt = _Optimizer(optimizer, len(theta))
    hist: dict[str, list[float]] = {"train": [], "test": [], "err": []}

    def record() -> None:
        hist["train"].append(l1(x, y, theta))
        hist["test"].append(np.nan if x_test is None else l1(x_test, y_test, theta))
        hist["err"].append(np.nan if theta_star is None else float(np.linalg.norm(theta - theta_star)))

    record()
    for e in range(epochs):
        for s in range(steps):
            idx = np.arange(n) if batch is None else perms[e][s * batch:(s + 1) * batch]
            lr_t = schedule_lr(schedule, lr, opt.t, epochs * steps)
            theta = opt.step(theta, gradient(x[idx], y[idx], theta, mode), lr_t)
        record()
    return ReferenceRun(np.array(hist["train"]), np.array(hist["test"]), np.array(hist["err"]), theta)
