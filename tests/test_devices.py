"""The CLI's CPU device count: one per core unless the user set one."""

import os
import subprocess
import sys

import pytest

PROBE = ("from l1jax.engine.devices import use_cpu_cores; use_cpu_cores(); import jax; "
         "print(len(jax.local_devices()))")


@pytest.mark.parametrize("flags, want", [("", len(os.sched_getaffinity(0))),  # Linux, as CI
                                         ("--xla_force_host_platform_device_count=3", 3)])
def test_one_cpu_device_per_core_unless_chosen(flags, want):
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == want


def test_started_backends_are_left_as_they_are():
    """Once JAX has run something, the count cannot change: nothing is raised, one device stays."""
    probe = ("import jax; jax.numpy.zeros(1).block_until_ready(); "
             "from l1jax.engine.devices import use_cpu_cores; use_cpu_cores(); print(len(jax.local_devices()))")
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == 1
