"""Files a run writes, written safely: atomic replacement under unique temporary names that
never follow a planted symlink, checksums, a config's fingerprint, and one writer per directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from l1jax.engine.config import Config, ConfigError


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` that replaces it on success and is removed on
    failure, so a reader never sees a half-written file.  The name is unique (two writers never
    share it) and created exclusively, so a symlink planted there is never followed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)  # rename replaces a symlink at ``path``, never its target
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# Bumped whenever a change to the engine changes any run's numbers, so that results of an older
# engine are never resumed or reported as this one's.  2: minibatch shuffles on a grid (issue 14).
# 3: GPUs sum each learning rate's terms in its own reduction (float32 rounding of the sums),
# and a non-finite test L1 marks its run diverged.  4: fused CPU kernels (engine/kernels: sums
# in another float32 order, with multiply-adds) and the mean loss as a product with 1 / n.
NUMBERS_VERSION = 4


def fingerprint(cfg: Config) -> str:
    """Hex SHA-256 naming what a run computes: its config, the engine's ``NUMBERS_VERSION`` and,
    for csv data, the file's bytes (so results of an edited data file, or of an engine that
    computed other numbers, are never passed off as this run's)."""
    return config_fingerprint(cfg.to_dict(), NUMBERS_VERSION, data_digest(cfg))


def data_digest(cfg: Config) -> str | None:
    """Hex SHA-256 of a csv config's data file (None for synthetic data)."""
    return sha256_file(cfg.data.path) if cfg.data.source == "csv" else None


def config_fingerprint(config: dict[str, Any], numbers: int, data_sha256: str | None) -> str:
    """:func:`fingerprint` of a config as plain types (``Config.to_dict``, or a manifest's),
    an engine numbers version and a csv file's digest (version 1 hashed the config alone)."""
    what: Any = config if numbers == 1 else {"config": config, "numbers": numbers}
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    if data_sha256 is not None:
        h.update(data_sha256.encode())
    return h.hexdigest()


def fingerprint_matches(config: dict[str, Any], tag: str, data_sha256: str | None) -> bool:
    """Whether ``tag`` is the fingerprint of ``config`` (plain types) under this engine's or
    an earlier numbers version: a manifest whose config was edited after the run fails."""
    return any(config_fingerprint(config, v, data_sha256) == tag for v in range(1, NUMBERS_VERSION + 1))


def check_dir_path(path: str | Path, flag: str) -> None:
    """Refuse in one line a directory path that is empty (not the current directory), a
    dangling symlink, names a file, or lies under a file (before anything is created there)."""
    if not str(path):
        raise ConfigError(f"{flag} is empty: name a directory ('.' for the current one)")
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{flag} {path} is a symlink to {os.readlink(path)}, which does not exist: "
                          f"create that directory or name another {flag}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is not a directory: name a new or existing directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path} lies under {parent}, which is not a directory")
            return


class DirLock:
    """An advisory lock on ``DIR/.lock``: one writer per output directory at a time (held until
    :meth:`release` or the process ends, so a killed writer never leaves a stale lock)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        path = out / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        self.file: IO[bytes] | None = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.file.read().decode(errors="replace").strip() or "another process"
            self.release()
            raise ConfigError(f"{out} is being written by {holder}: wait for it to finish or "
                              "choose another --out") from None
        self.file.truncate(0)
        self.file.write(f"l1jax (pid {os.getpid()})\n".encode())
        self.file.flush()

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
