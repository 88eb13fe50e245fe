"""The persistent XLA compilation cache: a second `l1jax run` of the same shapes skips compiling.

On by default for the command line, in the user's cache directory; off with ``--no-cache`` or
``L1JAX_COMPILATION_CACHE=0``; ``L1JAX_COMPILATION_CACHE=/some/dir`` moves it.
"""

from __future__ import annotations

import os
import sys
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
    """Turn the persistent cache on (for programs that took over 0.5 s to compile).  A cache
    directory that cannot be made or written (a file, under a file, a read-only mount) costs
    only the cache: one warning line on stderr, and the run goes on without it (None)."""
    path = path or cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(path))
    except OSError as e:
        print(f"l1jax: warning: the compilation cache {path} cannot be used ({e.strerror or e}): "
              "compiling without it (set L1JAX_COMPILATION_CACHE to another directory, or 0)",
              file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
