"""Benchmark a named workload: `python scripts/bench.py --workload bench-cpu --json FILE`.
The same as `l1jax bench`; see l1jax/bench.py for what is measured."""

import sys

from l1jax.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
