"""Time the twins (``twin_curves``, warm, all CPU devices) with the closed-form tail and stepped
to the end: every built-in sweep of the study, then the main grid at 200 and 1000 epochs with the
hand-off steps and how far the tail moves the twins.  The README's numbers on the tail's cost
come from here (`python scripts/twin_cost.py`)."""

import dataclasses
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from l1jax.engine.devices import use_cpu_cores

use_cpu_cores()  # one CPU device per core, as `l1jax study` has, before anything starts JAX

from l1jax.analysis import twin as TW  # noqa: E402
from l1jax.engine.config import Config, load_config  # noqa: E402
from l1jax.engine.sweep import host_description  # noqa: E402
from l1jax.study.study import SWEEPS  # noqa: E402

ROUNDS = 3  # best of, after a first call that compiles
T = TypeVar("T")


def best_seconds(fn: Callable[[], T]) -> tuple[float, T]:
    """Best warm seconds of fn over ROUNDS calls (the first call, compiling, not counted), and its result."""
    out, times = fn(), []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def both(cfg: Config) -> tuple[float, float, TW.TwinCurves, TW.TwinCurves]:
    """Warm seconds and curves of a sweep's twins with the tail and stepped to the end."""
    noise, pop = TW.population_of(cfg)
    t_tail, tail = best_seconds(lambda: TW.twin_curves(cfg, noise, pop))
    t_step, stepped = best_seconds(lambda: TW.twin_curves(cfg, noise, pop, closed_tail=False))
    return t_tail, t_step, tail, stepped


def main() -> None:
    print(host_description())
    total = np.zeros(2)
    for name, path in SWEEPS.items():
        cfg = load_config(path)
        if TW.applies(cfg) is not None:
            continue
        t_tail, t_step = both(cfg)[:2]
        total += t_tail, t_step
        print(f"{name}: tail {t_tail:.3f} s, stepped to the end {t_step:.3f} s")
    print(f"every sweep: tail {total[0]:.2f} s, stepped to the end {total[1]:.2f} s")
    base = load_config(SWEEPS["main"])
    for epochs in (200, 1000):
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=epochs,
                                                                    record_every=max(1, epochs // 200)))
        t_tail, t_step, tail, stepped = both(cfg)
        hand = ", ".join(f"lr {r:g}: {int(tail.tail_from[0, i].max())}" for i, r in enumerate(cfg.train.learning_rate))
        moved = [float(np.nanmax(np.abs(a - b))) for a, b in zip(tail[:3], stepped[:3])]
        print(f"main, {epochs} epochs ({tail.stepped} steps): tail {t_tail:.2f} s, stepped to the end "
              f"{t_step:.2f} s; every twin handed over by step {hand}; largest change of the twin's L1 "
              f"{moved[0]:.2g}, of tr(J Sigma) {moved[1]:.2g}, of tr(J^T H J Sigma) {moved[2]:.2g}")


if __name__ == "__main__":
    main()
