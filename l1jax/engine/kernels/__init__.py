"""Fused kernels for the engine's two hot loops, called from the same jitted ``lax.scan`` over
epochs as the XLA path they replace, and the one place that says which applies.

``fused_path`` names the kernel that trains a group, or None for the XLA path.  On the CPU
(Numba, as typed XLA FFI handlers): ``"cpu_sgd_epoch"`` runs whole minibatch epochs of plain
SGD at a constant learning rate (``kernels.cpu.sgd_epochs``), ``"cpu_full_sgd_epochs"`` whole
full-batch epochs of it (``kernels.cpu.full_sgd_epochs``), ``"cpu_full_batch"`` the full-batch
data pass of any other optimizer or schedule (``kernels.cpu.full_batch_sums``).  On GPUs (Pallas):
``"pallas_sgd_epoch"`` a whole plain-SGD minibatch epoch under any schedule
(``kernels.pallas_sgd``), ``"pallas_full_batch"`` the full-batch pass (``kernels.pallas_pass``).
optax still makes every update, or (fused plain-SGD epochs) is the definition the kernels are
tested against.  Each was measured faster than XLA where it is on (README, "Speed").
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import subprocess
import sys
import threading

# The CPU kernels' XLA FFI targets (``kernels.cpu``): a "_2" suffix names the two-feature variant.
SGD_EPOCHS = "l1jax_cpu_sgd_epochs"
FULL_BATCH = "l1jax_cpu_full_batch_sums"
FULL_SGD = "l1jax_cpu_full_sgd_epochs"
SAMPLE_BITS = "l1jax_cpu_sample_bits"


def fused_path(backend: str, optimizer: str, schedule: str, full_batch: bool, kernels: str) -> str | None:
    """The fused kernel that trains a group of (optimizer, schedule, batch mode) on ``backend``,
    or None for the XLA path (``kernels = "xla"`` forces it)."""
    if kernels != "fused":
        return None
    if backend == "gpu":
        return "pallas_full_batch" if full_batch else "pallas_sgd_epoch" if optimizer == "sgd" else None
    if backend != "cpu":
        return None
    kind = cpu_kind(optimizer, schedule, full_batch)
    return kind if kind is not None and cpu_unavailable() is None else None


def cpu_kind(optimizer: str, schedule: str, full_batch: bool) -> str | None:
    """The CPU kernel for a group, if this process can run the CPU kernels (``fused_path``
    asks ``cpu_unavailable``; this does not)."""
    plain = optimizer == "sgd" and schedule == "constant"
    if full_batch:
        return "cpu_full_sgd_epochs" if plain else "cpu_full_batch"
    return "cpu_sgd_epoch" if plain else None


def cpu_targets(kind: str, p: int, synthetic: bool) -> list[str]:
    """The FFI targets a group trained by CPU kernel ``kind`` calls, with p parameters: its
    samples' bits (synthetic data), the data sums of its records, its epochs."""
    two = "_2" if p == 3 else ""
    epochs = {"cpu_sgd_epoch": [SGD_EPOCHS + two], "cpu_full_sgd_epochs": [FULL_SGD + two]}.get(kind, [])
    return ([SAMPLE_BITS] if synthetic else []) + [FULL_BATCH + two] + epochs


class _Child:
    """The process ``prepare_cpu`` started, and the targets it has yet to report compiled."""

    lock = threading.Lock()  # held by ``kernels.cpu.target`` while it compiles or waits
    proc: subprocess.Popen | None = None
    pending: set[str] = set()


def prepare_cpu(names: list[str]) -> None:
    """Compile these targets' Numba handlers into Numba's disk cache in a child process, in
    order, so that on a fresh install they compile on another core while this process does its
    own work (the article's experiment, XLA compiling, training); ``kernels.cpu.target`` waits
    for one the child has yet to finish, then loads it from the cache.  Handlers this process has
    loaded, or the cache holds, are left out (waiting for a child to start and load them took a
    second), and so is the first of the others: it is needed first, so this process compiles it
    on first use while the child starts (1.4 s) and compiles the rest.  One child at a time:
    targets it was not given compile on first use, and so does everything if it fails (the
    error then shows where the kernel is used)."""
    with _Child.lock:
        if _Child.proc is not None and _Child.proc.poll() is not None:  # the last one is done
            _Child.proc, _Child.pending = None, set()
        if not names or _Child.proc is not None or importlib.util.find_spec("numba") is None:
            return
        from l1jax.engine.kernels import cpu  # numba: only once a sweep has kernels to run

        todo = cpu.to_compile(names)[1:]  # the first is needed first: compiled here on first use
        if not todo:  # the others loaded here already, or in Numba's disk cache (milliseconds)
            return
        code = "import sys; from l1jax.engine.kernels import cpu; cpu.compile_to_cache(sys.argv[1:])"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # this process's l1jax
        _Child.proc = subprocess.Popen([sys.executable, "-c", code, *todo], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, text=True)
        _Child.pending = set(todo)
        atexit.register(_Child.proc.kill)


def await_child(name: str) -> None:
    """Block until ``prepare_cpu``'s child has reported target ``name`` compiled, if it was
    given it, or has exited (``_Child.lock`` held)."""
    proc = _Child.proc
    while proc is not None and name in _Child.pending:
        line = proc.stdout.readline()
        if not line:  # it exited, done or failed: what is left compiles here
            proc.wait()
            _Child.proc, _Child.pending = None, set()
            return
        _Child.pending.discard(line.strip())


@functools.cache
def cpu_unavailable() -> str | None:
    """Why the CPU kernels cannot run in this process (said once on stderr), or None."""
    from l1jax.engine.kernels.probe import layout_error
    why = layout_error()
    if why is not None:
        print(f"l1jax: fused CPU kernels off ({why}); training on the XLA path", file=sys.stderr)
    return why
