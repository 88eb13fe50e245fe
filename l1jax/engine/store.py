"""Finished chunks of a sweep on disk, so a killed `l1jax run` continues where it stopped.

``OUT/chunks/`` holds ``index.json`` (the config and the chunk plan) and, per finished chunk of
replicates, ``seeds-S0-S1.npz`` and its SHA-256 in ``seeds-S0-S1.sha256``, each written to a
temporary file and renamed (the old checksum removed first and the new one written last, so a
checksum only ever names a complete chunk).  A rerun with the same config reuses the stored plan
and every chunk whose checksum matches, so its results are bit-identical to an uninterrupted
run; a chunk whose checksum does not match is an error that names the file.  No file is written
by two processes, so the processes of a multi-host run share one directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from l1jax.engine.config import Config, ConfigError


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_out(out: Path, cfg: Config, overwrite: bool) -> None:
    """Refuse to replace the results of a different config in ``out`` unless asked to."""
    man = out / "manifest.json"
    if man.is_file() and not overwrite:
        try:
            old = json.loads(man.read_text()).get("config")
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != cfg.to_dict():
            raise ConfigError(f"{out} holds results of a different config: choose another --out "
                              "or pass --overwrite")


class ChunkStore:
    """The chunks of one sweep's output directory."""

    def __init__(self, out: str | Path, cfg: Config, overwrite: bool = False, writes_index: bool = True):
        """``writes_index=False`` (processes other than 0 of a multi-host run) leaves the index
        and ``overwrite`` to process 0, and requires the index it wrote: the directory must be
        shared."""
        self.dir = Path(out) / "chunks"
        self.index_path = self.dir / "index.json"
        self.config = cfg.to_dict()
        self.writes_index = writes_index
        if overwrite and writes_index and self.dir.exists():
            shutil.rmtree(self.dir)
        self.index: dict[str, Any] = {"config": self.config, "chunks": None}
        if self.index_path.is_file():
            try:
                index = json.loads(self.index_path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{self.index_path} is truncated or corrupt: {e}") from None
            if index.get("config") != self.config:
                raise ConfigError(f"{Path(out)} holds chunks of a different config: choose another "
                                  "--out or pass --overwrite")
            self.index = index
        elif writes_index:
            self._write_index()
        else:
            raise ConfigError(f"{self.index_path} is not there: with --distributed, --out must be a "
                              "directory that every process shares with process 0")

    def plan(self, chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The stored chunk plan if there is one (a resumed run keeps its boundaries), else ``chunks``."""
        if self.index["chunks"] is None:
            self.index["chunks"] = [list(c) for c in chunks]
            if self.writes_index:
                self._write_index()
        return [tuple(c) for c in self.index["chunks"]]

    def _file(self, s0: int, s1: int) -> Path:
        return self.dir / f"seeds-{s0}-{s1}.npz"

    def scratch(self, name: str, shape: tuple[int, ...], fill: float, dtype: Any) -> np.ndarray:
        """A memory-mapped array filled with ``fill``, for assembling results larger than RAM
        (one file per process, so the processes of a multi-host run do not collide)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"assembly-p{jax.process_index()}-{name}.npy"
        a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        a[...] = fill
        return a

    def discard_scratch(self) -> None:
        """Delete this process's assembly files once the results are saved."""
        for p in self.dir.glob(f"assembly-p{jax.process_index()}-*.npy"):
            p.unlink()

    def load(self, s0: int, s1: int) -> dict[str, np.ndarray] | None:
        """A finished chunk's arrays, or None if it is not (validly) on disk."""
        path = self._file(s0, s1)
        check = path.with_suffix(".sha256")
        if not check.is_file() or not path.is_file():
            return None
        if _sha256(path) != check.read_text().strip():
            raise ConfigError(f"{path} is truncated or corrupt (its checksum does not match "
                              f"{check.name}): delete it to recompute that chunk")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def save(self, s0: int, s1: int, arrays: dict[str, np.ndarray]) -> None:
        """Write a finished chunk, then its checksum (both atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._file(s0, s1)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        digest = _sha256(tmp)
        path.with_suffix(".sha256").unlink(missing_ok=True)
        os.replace(tmp, path)
        _atomic_write(path.with_suffix(".sha256"), (digest + "\n").encode())

    def _write_index(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.index_path, (json.dumps(self.index, indent=1) + "\n").encode())
