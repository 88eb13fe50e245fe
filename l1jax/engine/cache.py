"""The persistent XLA compilation cache: a second `l1jax run` of the same shapes skips compiling.

On by default for the command line, in the user's cache directory; off with ``--no-cache`` or
``L1JAX_COMPILATION_CACHE=0``; ``L1JAX_COMPILATION_CACHE=/some/dir`` moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_dir() -> Path | None:
    """Where compiled programs are kept, or None when the cache is switched off."""
    setting = os.environ.get("L1JAX_COMPILATION_CACHE", "")
    if setting in ("0", "off", "false"):
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "l1jax" / "xla"


def enable_compilation_cache(path: Path | None = None) -> Path | None:
    """Turn the persistent cache on (for programs that took over 0.5 s to compile)."""
    path = path or cache_dir()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
