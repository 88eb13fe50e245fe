"""How many XLA devices the CPU backend offers: one per core, unless the user chose.

A CPU device runs one program at a time, and l1jax's CPU programs (blocks of replicates whose
data stays in cache, minibatch rows) keep to about one core each; ``sweep.run_group`` splits a
group's replicates over the local devices, so one device per core trains on every core.  The
numbers do not depend on the device count (tests/test_chunks.py, tests/test_distributed.py).
"""

from __future__ import annotations

import os

import jax


def use_cpu_cores() -> None:
    """Ask JAX for one CPU device per core this process may run on, unless ``XLA_FLAGS`` or
    ``jax_num_cpu_devices`` already set a count or JAX has started its backends (then nothing
    changes).  Call it before the first JAX operation."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    if jax.config.jax_num_cpu_devices != -1:
        return
    # the cores this process may use (Linux); macOS and Windows only know the machine's count
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        jax.config.update("jax_num_cpu_devices", cores or 1)
    except RuntimeError:  # backends already initialized: keep what the caller's process has
        pass
