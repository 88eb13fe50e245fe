"""Where a benchmark workload's program spends its time, per XLA operation: `python
scripts/profile_program.py --workload bench-sgd --epochs 1` runs the workload's programs warm
under `jax.profiler` (a Perfetto trace) and prints each operation's time per run, summed over
the devices' threads (so core-milliseconds: on two CPU devices up to twice the wall time).  An
`ffi_call` is a fused kernel (the threefry bits, the epochs, the records' passes)."""

import argparse
import collections
import dataclasses
import gzip
import json
import tempfile
from pathlib import Path

from l1jax.engine.devices import use_cpu_cores

use_cpu_cores()  # one CPU device per core, as `l1jax bench` has, before anything starts JAX

import jax  # noqa: E402

from l1jax.bench import GPU_ONLY, WORKLOADS, workload_config  # noqa: E402
from l1jax.cli import _positive  # noqa: E402
from l1jax.engine.plan import plan  # noqa: E402
from l1jax.engine.sweep import host_description, run_group  # noqa: E402

RUNS = 3  # profiled runs, after as many unprofiled ones (compiling, warming caches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="bench-sgd", choices=sorted(WORKLOADS))
    parser.add_argument("--epochs", type=_positive, default=None, help="instead of the workload's")
    parser.add_argument("--top", type=_positive, default=20, help="operations to print")
    args = parser.parse_args()
    if args.workload in GPU_ONLY and jax.default_backend() == "cpu":
        parser.exit(2, f"profile_program.py: {args.workload} is an accelerator workload; on the CPU "
                       f"profile one of {', '.join(w for w in sorted(WORKLOADS) if w not in GPU_ONLY)}\n")
    w = WORKLOADS[args.workload]
    cfg = workload_config(dataclasses.replace(w, epochs=args.epochs) if args.epochs else w)
    groups, programs = plan(cfg), {}
    for _ in range(RUNS):
        for g in groups:
            run_group(cfg, g, None, programs=programs)
    with tempfile.TemporaryDirectory() as out:
        jax.profiler.start_trace(out, create_perfetto_trace=True)
        for _ in range(RUNS):
            for g in groups:
                run_group(cfg, g, None, programs=programs)
        jax.profiler.stop_trace()
        trace = json.load(gzip.open(next(Path(out).rglob("perfetto_trace.json.gz"))))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    micros, calls = collections.Counter(), collections.Counter()
    for e in events:
        # XLA's operations only: not the executor's spans around them nor Python frames ($...)
        if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "PjitFunction", "CommonPjRt")):
            micros[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    print(f"{args.workload}, {cfg.train.epochs} epochs: {host_description()}, jax {jax.__version__}, "
          f"{len(jax.local_devices())} {jax.default_backend()} devices; ms per run, summed over devices")
    for name, us in micros.most_common(args.top):
        print(f"{us / RUNS / 1e3:9.2f} ms  {calls[name] // RUNS:5d} calls  {name}")


if __name__ == "__main__":
    main()
