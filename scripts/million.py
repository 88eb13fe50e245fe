"""A sweep of a million L1 regression runs (small sizes) on one machine, through the same
chunked, resumable path as `l1jax run`: `python scripts/million.py --out out/million`.
`--seeds` scales it down (tests run it small)."""

from __future__ import annotations

import argparse
import sys
import time

from l1jax.engine.config import config_from_dict
from l1jax.engine.devices import use_cpu_cores
from l1jax.engine.store import ChunkStore
from l1jax.engine.sweep import run

SIZES = [8, 16, 32, 64]
LEARNING_RATES = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, default=25000, help="replicates per grid point")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--memory-budget", type=int, default=None, help="bytes per chunk")
    args = p.parse_args(argv)
    use_cpu_cores()  # as `l1jax run` does
    cfg = config_from_dict({
        "data": {"test_size": 0},
        "train": {"epochs": args.epochs, "record_every": args.epochs, "learning_rate": LEARNING_RATES},
        "sweep": {"sizes": SIZES, "seeds": args.seeds}})
    t = time.perf_counter()
    res = run(cfg, quiet=False, memory_budget=args.memory_budget, store=ChunkStore(args.out, cfg))
    res.save(args.out)
    wall = time.perf_counter() - t
    runs = res.train_l1[..., -1].size
    print(f"{runs} runs ({args.seeds} seeds x {len(SIZES)} sizes x {len(LEARNING_RATES)} learning rates, "
          f"{args.epochs} epochs) in {wall:.1f} s on {res.meta['backend']} ({res.meta['device']}): "
          f"{len(res.meta['seed_chunks'])} chunks, {res.meta['compiled_programs']} compiled programs, "
          f"{int(res.diverged.sum())} diverged; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
