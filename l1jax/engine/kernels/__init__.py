"""Fused kernels for the engine's two hot loops, called from the same jitted ``lax.scan`` over
epochs as the XLA path they replace, and the one place that says which applies.

``fused_path`` names the kernel that trains a group, or None for the XLA path.  On the CPU
(Numba, as typed XLA FFI handlers): ``"cpu_sgd_epoch"`` runs whole minibatch epochs of plain
SGD at a constant learning rate (``kernels.cpu.sgd_epochs``), ``"cpu_full_batch"`` the
full-batch data pass of any optimizer (``kernels.cpu.full_batch_sums``).  On GPUs (Pallas):
``"pallas_sgd_epoch"`` a whole plain-SGD minibatch epoch under any schedule
(``kernels.pallas_sgd``), ``"pallas_full_batch"`` the full-batch pass (``kernels.pallas_pass``).
optax still makes every update, or (fused SGD epochs) is the definition the kernels are tested
against.  Each was measured faster than XLA where it is on (README, "Speed").
"""

from __future__ import annotations

import functools
import sys


def fused_path(backend: str, optimizer: str, schedule: str, full_batch: bool, kernels: str) -> str | None:
    """The fused kernel that trains a group of (optimizer, schedule, batch mode) on ``backend``,
    or None for the XLA path (``kernels = "xla"`` forces it)."""
    if kernels != "fused":
        return None
    if backend == "gpu":
        return "pallas_full_batch" if full_batch else "pallas_sgd_epoch" if optimizer == "sgd" else None
    if backend != "cpu":
        return None
    if full_batch:
        kind = "cpu_full_batch"
    elif optimizer == "sgd" and schedule == "constant":
        kind = "cpu_sgd_epoch"
    else:
        return None
    return kind if cpu_unavailable() is None else None


@functools.cache
def cpu_unavailable() -> str | None:
    """Why the CPU kernels cannot run in this process (said once on stderr), or None."""
    from l1jax.engine.kernels.probe import layout_error
    why = layout_error()
    if why is not None:
        print(f"l1jax: fused CPU kernels off ({why}); training on the XLA path", file=sys.stderr)
    return why
