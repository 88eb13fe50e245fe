"""Test set-up: several CPU devices (multi-device code is tested on the CPU) and strict
dtype promotion, so no silent float64/int mixing hides in the engine."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["L1JAX_COMPILATION_CACHE"] = "0"  # tests write nothing to the user's cache

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
