"""Many hosts: one `l1jax run` process per host joined by ``jax.distributed``.  Process 0's chunk
plan is shared, each process runs every P-th chunk, and process 0 receives the chunks it did not
run (a broadcast from their owner) and writes the merged results."""

from __future__ import annotations

import jax
import numpy as np
from jax._src import distributed as jax_distributed  # the coordination-service client
from jax.experimental import multihost_utils

from l1jax.engine.config import ConfigError


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` from flags, or from the environment where they are None
    (Slurm, Open MPI and cloud TPU are detected by JAX); CPU collectives go over gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--distributed could not join the other processes: {first} (pass "
                          "--coordinator, --num-processes and --process-id, or run under Slurm)") from None


def owner(chunk: int) -> int:
    """The process that runs chunk number ``chunk`` (round robin over processes)."""
    return chunk % jax.process_count()


def owns(chunk: int) -> bool:
    """Whether this process runs chunk number ``chunk``."""
    return owner(chunk) == jax.process_index()


def share_plan(chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Process 0's chunk plan on every process (a resumed run keeps process 0's stored plan)."""
    n = int(multihost_utils.broadcast_one_to_all(np.int32(len(chunks))))
    mine = np.asarray(chunks, np.int32).reshape(-1, 2)
    plan = multihost_utils.broadcast_one_to_all(mine if len(mine) == n else np.zeros((n, 2), np.int32))
    return [(int(a), int(b)) for a, b in np.asarray(plan)]


def share_chunk(arrays: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    """The arrays of chunk number ``chunk`` as computed by the process that owns it, on every
    process (each passes arrays of the same shapes).  Floats travel as their bit patterns, so
    -0.0 and NaN payloads arrive unchanged."""
    bits = {k: v.view(np.uint32) if v.dtype == np.float32 else v for k, v in arrays.items()}
    out = multihost_utils.broadcast_one_to_all(bits, is_source=owns(chunk))
    return {k: np.asarray(v).view(arrays[k].dtype) for k, v in out.items()}


_barriers = 0
BARRIER_TIMEOUT_MS = 7 * 24 * 3600 * 1000  # processes may wait on each other's chunks for days


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op for one process).  Uses the coordination
    service rather than a device collective, whose timeout (30 min on the CPU) a long chunk
    would exceed."""
    global _barriers
    if jax.process_count() > 1:
        _barriers += 1
        jax_distributed.global_state.client.wait_at_barrier(f"l1jax-{_barriers}-{name}",
                                                            BARRIER_TIMEOUT_MS)


def agree(error: BaseException | None, stage: str) -> None:
    """Raise on every process if any process failed ``stage``: the failing one raises its own
    error, the others say which process failed.  Without this, the others would wait forever
    in the next collective."""
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    barrier(stage)
    failed = np.asarray(multihost_utils.process_allgather(np.int32(error is not None)))
    if error is not None:
        raise error
    if failed.any():
        raise ConfigError(f"process {int(np.argmax(failed))} failed while {stage}: see its output")
