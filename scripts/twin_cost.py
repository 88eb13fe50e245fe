"""Time the main grid's twins (``twin_curves``, warm, all CPU devices) with the closed-form tail
and stepped to the end, at a few epoch counts, and how far the tail moves them: the README's
numbers on the tail's cost come from here (`python scripts/twin_cost.py`)."""

import dataclasses
import time

import numpy as np

from l1jax.engine.devices import use_cpu_cores

use_cpu_cores()  # one CPU device per core, as `l1jax study` has, before anything starts JAX

from l1jax.analysis import twin as TW  # noqa: E402
from l1jax.engine.config import load_config  # noqa: E402
from l1jax.engine.sweep import host_description  # noqa: E402
from l1jax.study.study import SWEEPS  # noqa: E402


def warm_seconds(fn) -> tuple[float, object]:
    """Seconds of the second call of fn (the first compiles), and its result."""
    fn()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    base = load_config(SWEEPS["main"])
    print(host_description())
    for epochs in (200, 1000):
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=epochs,
                                                                    record_every=max(1, epochs // 200)))
        noise, pop = TW.population_of(cfg)
        t_tail, tail = warm_seconds(lambda: TW.twin_curves(cfg, noise, pop))
        t_step, stepped = warm_seconds(lambda: TW.twin_curves(cfg, noise, pop, closed_tail=False))
        lr = cfg.train.learning_rate
        hand = ", ".join(f"lr {r:g}: {int(tail.tail_from[0, i].max())}" for i, r in enumerate(lr))
        moved = [float(np.nanmax(np.abs(a - b))) for a, b in zip(tail[:3], stepped[:3])]
        print(f"{epochs} epochs ({tail.stepped} steps): tail {t_tail:.2f} s, stepped to the end {t_step:.2f} s; "
              f"hand-off steps {hand}; largest change of the twin's L1 {moved[0]:.2g}, "
              f"of tr(J Sigma) {moved[1]:.2g}, of tr(J^T H J Sigma) {moved[2]:.2g}")


if __name__ == "__main__":
    main()
