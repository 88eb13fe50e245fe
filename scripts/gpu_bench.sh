#!/usr/bin/env bash
# Issue 10's GPU measurements as one run on a GPU machine (jax with CUDA, no network, l1jax not
# installed): every workload on the same card, each under a time limit, the records written to
# docs/bench/WORKLOAD-gpu.json and docs/benchmarks.md, then the million-run sweep timed; the
# records, docs and a log are copied to $OUT when it is set.
# At most 340 s of limits in all (one device call may run 600 s; a session has 900 s of device
# time, start-up included, so this leaves room to rerun a part): the NumPy, jit-per-size and
# Numba peers take about --peer-budget seconds each, l1jax runs each workload four times, and
# bench-lr times both passes over the data on a tenth of its seeds. Workloads run in order of
# importance, one that fails or runs over its limit does not stop the others, and the records
# go to $OUT as each ends. On an H200 each workload took 23 to 82 s and the million-run sweep 8 s
# (the "==" lines of docs/bench/h200-2026-11-27.log).
# The progress bar's tqdm is the one dependency such an image may lack: put its wheel in .whl/
# (`pip download --no-deps -d .whl tqdm`) and carry .whl; it is installed to /tmp/site.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log=${OUT:-/tmp}/gpu_bench.log
if ! python3 -c "import tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/tqdm-*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  nvidia-smi -L
  python3 -c "import sys, jax, numpy, optax; print(sys.version.split()[0], 'jax', jax.__version__, 'numpy',
numpy.__version__, 'optax', optax.__version__); assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())" \
    || exit 1
  for spec in bench-gpu:70 bench-sgd:60 bench-lr:120 bench-cpu:60; do
    w=${spec%:*} limit=${spec#*:} t0=$SECONDS
    timeout "$limit" python3 scripts/bench.py --workload "$w" --peer-budget 10 --json "docs/bench/$w-gpu.json"
    echo "== $w: exit $? after $((SECONDS - t0)) s (limit $limit s; 124 = over the limit)"
    if [ -n "${OUT:-}" ]; then cp docs/benchmarks.md docs/bench/*-gpu.json "$OUT"/ 2>/dev/null; fi
  done
  t0=$SECONDS
  timeout 30 python3 scripts/million.py --out /tmp/million
  echo "== million: exit $? after $((SECONDS - t0)) s (limit 30 s)"
} 2>&1 | tee "$log"
