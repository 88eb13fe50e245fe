"""Finished chunks of a sweep on disk, so a killed `l1jax run` continues where it stopped.

``OUT/chunks/`` holds one ``seeds-S0-S1.npz`` per finished chunk of replicates, each written to a
temporary file and renamed, and ``index.json`` (also replaced atomically) with the config, the
chunk plan and each finished chunk's SHA-256.  A rerun with the same config reuses the stored
plan and every chunk whose checksum matches, so its results are bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from l1jax.config import Config, ConfigError


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ChunkStore:
    """The chunks of one sweep's output directory."""

    def __init__(self, out: str | Path, cfg: Config, overwrite: bool = False):
        self.dir = Path(out) / "chunks"
        self.index_path = self.dir / "index.json"
        self.config = cfg.to_dict()
        if overwrite and self.dir.exists():
            shutil.rmtree(self.dir)
        self.index: dict[str, Any] = {"config": self.config, "chunks": None, "done": {}}
        if self.index_path.is_file():
            try:
                index = json.loads(self.index_path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{self.index_path} is truncated or corrupt: {e}") from None
            if index.get("config") != self.config:
                raise ConfigError(f"{Path(out)} holds chunks of a different config: choose another "
                                  "--out or pass --overwrite")
            self.index = index

    def plan(self, chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The stored chunk plan if there is one (a resumed run keeps its boundaries), else ``chunks``."""
        if self.index["chunks"] is None:
            self.index["chunks"] = [list(c) for c in chunks]
            self._write_index()
        return [tuple(c) for c in self.index["chunks"]]

    def _file(self, s0: int, s1: int) -> Path:
        return self.dir / f"seeds-{s0}-{s1}.npz"

    def load(self, s0: int, s1: int) -> dict[str, np.ndarray] | None:
        """A finished chunk's arrays, or None if it is not (validly) on disk."""
        digest = self.index["done"].get(f"{s0}-{s1}")
        path = self._file(s0, s1)
        if digest is None or not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConfigError(f"{path} is truncated or corrupt (its checksum does not match "
                              f"{self.index_path}): delete it to recompute that chunk")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def save(self, s0: int, s1: int, arrays: dict[str, np.ndarray]) -> None:
        """Write a finished chunk, then record it in the index (both atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._file(s0, s1)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        data = tmp.read_bytes()
        os.replace(tmp, path)
        self.index["done"][f"{s0}-{s1}"] = hashlib.sha256(data).hexdigest()
        self._write_index()

    def _write_index(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.index_path, (json.dumps(self.index, indent=1) + "\n").encode())
