#!/usr/bin/env bash
# Issue 4's GPU measurements as one run on a GPU machine (jax with CUDA, no network, l1jax not
# installed): every workload on the same card, each under a time limit, the records written to
# docs/bench/WORKLOAD-gpu.json and docs/benchmarks.md, and copied to $OUT when it is set.
# At most 530 s of limits in all (one device call may run 600 s): the NumPy and jit-per-size
# peers take about --peer-budget seconds each, l1jax runs each workload four times, and
# bench-lr times both passes over the data on a tenth of its seeds.
# The progress bar's tqdm is the one dependency such an image may lack: put its wheel in .whl/
# (`pip download --no-deps -d .whl tqdm`) and carry .whl; it is installed to /tmp/site.
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/tqdm-*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
for spec in bench-gpu:120 bench-lr:200 bench-sgd:120 bench-cpu:90; do
  w=${spec%:*} limit=${spec#*:}
  timeout "$limit" python3 scripts/bench.py --workload "$w" --peer-budget 10 --json "docs/bench/$w-gpu.json" \
    || echo "$w: failed or over $limit s (exit $?)"
done
if [ -n "${OUT:-}" ]; then cp docs/benchmarks.md docs/bench/*-gpu.json "$OUT"/ 2>/dev/null || true; fi
