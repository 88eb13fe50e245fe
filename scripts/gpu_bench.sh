#!/usr/bin/env bash
# The GPU measurements as one run on a GPU machine (jax with CUDA, no network, l1jax not
# installed): the Pallas kernels' tests compiled on the card, the tuning probe (the kernels'
# program shapes; where an XLA full-batch epoch's time goes), then the GPU workloads, each under a
# time limit, the records written to docs/bench/WORKLOAD-gpu.json and docs/benchmarks.md; the
# records, docs and a log are copied to $OUT when it is set.
# At most 470 s of limits in all (one device call may run 600 s; a session has 900 s of device
# time, start-up included): workloads run in order of importance, one that fails or runs over its
# limit does not stop the others, and the records go to $OUT as each ends. `scripts/gpu_bench.sh
# all` also runs the SGD kernel's tests and the CPU-sized workloads (about 280 s more).
# The progress bar's tqdm is the one dependency such an image may lack: put its wheel in .whl/
# (`pip download --no-deps -d .whl tqdm`) and carry .whl; it is installed to /tmp/site.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log=${OUT:-/tmp}/gpu_bench.log
if ! python3 -c "import tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/tqdm-*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
workloads="gpu-sgd:90 gpu-full:60 bench-gpu:60 bench-lr:110"
tests=tests/test_pallas_pass.py tests_limit=60
if [ "${1:-}" = all ]; then
  workloads="$workloads bench-sgd:60 bench-cpu:60" tests="$tests tests/test_pallas_sgd.py" tests_limit=160
fi
{
  nvidia-smi -L
  python3 -c "import sys, jax, numpy, optax; print(sys.version.split()[0], 'jax', jax.__version__, 'numpy',
numpy.__version__, 'optax', optax.__version__); assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())" \
    || exit 1
  t0=$SECONDS
  JAX_PLATFORMS=cuda timeout $tests_limit python3 -m pytest -x -q -p no:cacheprovider $tests
  echo "== kernel tests on the GPU: exit $? after $((SECONDS - t0)) s (limit $tests_limit s)"
  t0=$SECONDS
  timeout 90 python3 scripts/gpu_probe.py
  echo "== probe: exit $? after $((SECONDS - t0)) s (limit 90 s)"
  for spec in $workloads; do
    w=${spec%:*} limit=${spec#*:} t0=$SECONDS
    timeout "$limit" python3 scripts/bench.py --workload "$w" --peer-budget 5 --json "docs/bench/$w-gpu.json"
    echo "== $w: exit $? after $((SECONDS - t0)) s (limit $limit s; 124 = over the limit)"
    if [ -n "${OUT:-}" ]; then cp docs/benchmarks.md docs/bench/*-gpu.json "$OUT"/ 2>/dev/null; fi
  done
} 2>&1 | tee "$log"
