"""Whether this process may use the fused CPU kernels: Numba present, a jax whose FFI call
frame this package was run against, and a probe handler that reads it as expected."""

from __future__ import annotations

import jax
import numpy as np

TESTED_JAX = ((0, 10),)  # jax (major, minor) versions the kernels were tested on (0.10.2)
PROBE = "l1jax_cpu_probe"


def _jax_version() -> tuple[int, int]:
    major, minor = jax.__version__.split(".")[:2]
    return int(major), int(minor)


def layout_error() -> str | None:
    """None if the fused CPU kernels run here, else why not (one line)."""
    try:
        from l1jax.engine.kernels import cpu_ffi
    except ImportError as e:
        return f"numba is not importable: {e}"
    if _jax_version() not in TESTED_JAX:
        tested = ", ".join(f"{a}.{b}" for a, b in TESTED_JAX)
        return f"jax {jax.__version__} is not among the versions whose FFI call frame was tested ({tested})"
    try:
        jax.ffi.register_ffi_target(PROBE, jax.ffi.pycapsule(cpu_ffi.probe.address),
                                    platform="cpu", api_version=1)
        nonce = np.random.default_rng().integers(0, 2**32, 17, dtype=np.uint32)
        call = jax.ffi.ffi_call(PROBE, jax.ShapeDtypeStruct(nonce.shape, np.uint32), vmap_method="sequential")
        with jax.ensure_compile_time_eval():  # also when asked while a program is traced
            got = np.asarray(jax.jit(call)(nonce))
    except Exception as e:  # any failure of the probe means: do not use the kernels
        return f"the FFI probe failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not np.array_equal(got, nonce ^ np.uint32(0xA5A5A5A5)):
        return "the FFI probe read XLA's call frame wrongly"
    return None
