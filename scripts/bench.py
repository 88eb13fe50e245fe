"""Benchmark a named workload and record it in this repository: `python scripts/bench.py
--workload bench-cpu` writes docs/bench/WORKLOAD-PLATFORM.json and rebuilds docs/benchmarks.md
(--json FILE and --docs FILE override either). `l1jax bench` is the same without these defaults;
see l1jax/bench.py for what is measured."""

import argparse
import sys
from pathlib import Path

import jax

from l1jax.cli import main
from l1jax.engine.devices import use_cpu_cores

use_cpu_cores()  # before jax.devices() below starts the backends, as `l1jax bench` does

DOCS = Path(__file__).resolve().parent.parent / "docs"

args = sys.argv[1:]
known = argparse.ArgumentParser(add_help=False)
for flag in ("--workload", "--json", "--docs"):
    known.add_argument(flag)
given, _ = known.parse_known_args(args)
if given.workload and not given.json:
    args += ["--json", str(DOCS / "bench" / f"{given.workload}-{jax.devices()[0].platform}.json")]
if not given.docs:
    args += ["--docs", str(DOCS / "benchmarks.md")]
sys.exit(main(["bench", *args]))
