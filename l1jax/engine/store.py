"""Finished chunks of a sweep on disk, so a killed `l1jax run` continues where it stopped.

``OUT/chunks/`` holds ``index.json`` (the config, its fingerprint and the chunk plan) and, per
finished chunk of replicates, ``seeds-S0-S1.npz`` and its SHA-256 in ``seeds-S0-S1.sha256``.  A
chunk records the fingerprint of the config that wrote it and its seed range, and both are
checked when it is read, so chunks are never reused for another config or other seeds.  Each
file is written under a unique temporary name and renamed (the old checksum removed first and
the new one written last, so a checksum only ever names a complete chunk).  A rerun with the
same config reuses the stored plan and every valid chunk, so its results are bit-identical to an
uninterrupted run.  One process at a time writes an output directory (:func:`open_out` takes
its lock); under ``jax.distributed`` the others only write their own chunks into it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from l1jax.engine.config import Config, ConfigError
from l1jax.engine.files import DirLock, atomic_file, check_dir_path, fingerprint, sha256_file, write_atomic

_TAGS = ("_fingerprint", "_seeds")  # what a chunk file holds besides the run's arrays
_DISCARD = "choose another --out, or pass --overwrite to discard it"


def _stored_fingerprint(manifest: Path) -> str | None:
    """The fingerprint a manifest records (None if unreadable or from before fingerprints)."""
    try:
        got = json.loads(manifest.read_text()).get("fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return got if isinstance(got, str) else None


def clear_results(out: Path, cfg: Config, overwrite: bool) -> None:
    """Refuse to replace the results of a different config in ``out`` unless ``overwrite``;
    with it, delete them, manifest first, so no results.npz is ever labelled by a stale
    manifest (until the new results are saved, ``out`` holds an unfinished, resumable run)."""
    man = out / "manifest.json"
    if not man.is_file() or _stored_fingerprint(man) == fingerprint(cfg):
        return
    if not overwrite:
        raise ConfigError(f"{out} holds results of a different config, data file or engine version: choose "
                          "another --out or pass --overwrite")
    man.unlink()
    (out / "results.npz").unlink(missing_ok=True)


def open_out(out: str | Path, cfg: Config, overwrite: bool = False) -> tuple[DirLock, "ChunkStore"]:
    """Lock ``out`` for this writer, clear what ``overwrite`` replaces, and open its chunks."""
    check_dir_path(out, "--out")
    out = Path(out)
    lock = DirLock(out)
    try:
        clear_results(out, cfg, overwrite)
        return lock, ChunkStore(out, cfg, overwrite=overwrite)
    except BaseException:
        lock.release()
        raise


# temporary files of ``files.atomic_file`` and assembly files: l1jax's own in any chunks/
_OWN_SCRATCH = re.compile(r"\.(index\.json|seeds-\d+-\d+\.(npz|sha256))\..+\.tmp|assembly-p\d+-.+\.npy")


def _cut(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _size(n: int) -> str:
    """A byte count for a message: exact bytes and the nearest unit."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` (its current length) on disk, so that writing it
    through a memory map cannot fail; a full disk raises a one-line ``ConfigError``.  Where the
    filesystem cannot reserve (no ``posix_fallocate``), the file is written out in blocks
    instead, which surfaces a full disk the same way."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        try:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except (AttributeError, OSError) as e:
                if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                block = bytes(1 << 20)
                version = np.lib.format.read_magic(f)
                (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)(f)
                start = f.tell()  # the data begins after the .npy header, which is kept
                for at in range(start, size, len(block)):
                    f.write(block[:min(len(block), size - at)])
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise ConfigError(f"no space left on the disk of {path.parent} for {_size(size)} of "
                              "assembly files: free space or choose an --out on a larger disk") from None


def _valid_plan(chunks: Any, seeds: int) -> bool:
    """Whether an index's chunk plan is contiguous [s0, s1) pairs covering seeds 0..seeds."""
    if chunks is None:
        return True
    if not isinstance(chunks, list) or not chunks:
        return False
    ends = [0]
    for c in chunks:
        if not (isinstance(c, list) and len(c) == 2 and all(type(v) is int for v in c)
                and c[0] == ends[-1] < c[1]):
            return False
        ends.append(c[1])
    return ends[-1] == seeds


class ChunkStore:
    """The chunks of one sweep's output directory."""

    def __init__(self, out: str | Path, cfg: Config, overwrite: bool = False, writes_index: bool = True):
        """``writes_index=False`` (processes other than 0 of a multi-host run) leaves the index
        and ``overwrite`` to process 0, and requires the index it wrote: the directory must be
        shared.  With ``overwrite``, another config's run goes: only the files its index names
        (and l1jax's temporary and assembly files); chunks of this config stay, so an
        interrupted ``--overwrite`` resumes.  A ``chunks/`` that holds files l1jax did not write
        there, or whose index is unreadable (so its files cannot be told apart), is refused
        with or without ``overwrite``: nothing of the user's is deleted."""
        self.dir = Path(out) / "chunks"
        self.index_path = self.dir / "index.json"
        self.fingerprint = fingerprint(cfg)
        self.seeds = cfg.sweep.seeds
        self.writes_index, self.overwrite = writes_index, overwrite
        if self.dir.is_symlink():
            raise ConfigError(f"{self.dir} is a symlink: l1jax keeps its chunks in a directory of its "
                              "own; remove the link or choose another --out")
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"{self.dir} is not a directory: {_DISCARD}")
        found = self._read_index() if self.index_path.exists() else None
        ours = isinstance(found, dict) and found.get("fingerprint") == self.fingerprint
        if found is None and self.index_path.exists():
            raise ConfigError(f"{self.index_path} is not a valid chunk index, so which files in "
                              f"{self.dir.name}/ are l1jax's cannot be told: delete {self.dir} or "
                              "choose another --out")
        if found is None and writes_index and any(self.dir.glob("seeds-*.npz")):
            raise ConfigError(f"{self.dir} holds chunks but no index (of another run?): delete it "
                              "or choose another --out")
        foreign = self._foreign(found) if writes_index and self.dir.is_dir() else []
        if foreign:
            listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"{self.dir} holds files l1jax did not write ({_cut(listed)}): move "
                              "them elsewhere or choose another --out")
        if found is not None and not ours and overwrite and writes_index:
            self._remove_run(found)  # only the files its index names: nothing else is there
            found = None
        if found is not None and not ours:
            raise ConfigError(f"{Path(out)} holds chunks of a different config, data file or engine version: {_DISCARD}")
        self.index: dict[str, Any] = found if ours else {
            "config": cfg.to_dict(), "fingerprint": self.fingerprint, "chunks": None}
        self.fresh_index = not ours and writes_index  # this store wrote the index: abandon() may go
        self.saved = False
        if self.fresh_index:
            self._write_index()
        elif not ours:
            raise ConfigError(f"{self.index_path} is not there: with --distributed, --out must be a "
                              "directory that every process shares with process 0")

    def _read_index(self) -> dict[str, Any] | None:
        """The index if it is a readable, well-formed one (of any config: its plan is checked
        against its own seed count), else None."""
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return None
        sweep = index.get("config", {}).get("sweep") if isinstance(index, dict) else None
        seeds = sweep.get("seeds") if isinstance(sweep, dict) else None
        ok = (type(seeds) is int and isinstance(index.get("fingerprint"), str)
              and _valid_plan(index.get("chunks"), seeds))
        return index if ok else None

    def _own_names(self, index: dict[str, Any] | None) -> set[str]:
        """Names of the files in ``chunks/`` that a run with this index writes (besides its
        temporary and assembly files)."""
        if index is None:
            return set()
        ranges = index.get("chunks") or []
        return {"index.json"} | {f"seeds-{s0}-{s1}.{ext}" for s0, s1 in ranges for ext in ("npz", "sha256")}

    def _foreign(self, index: dict[str, Any] | None) -> list[str]:
        """Names in ``chunks/`` that l1jax did not write there: neither named by ``index`` nor
        one of its temporary or assembly files."""
        own = self._own_names(index)
        return sorted(p.name for p in self.dir.iterdir() if p.name not in own and not (
            _OWN_SCRATCH.fullmatch(p.name) and p.is_file() and not p.is_symlink()))

    def _remove_run(self, index: dict[str, Any]) -> None:
        """Delete another config's run (``--overwrite``): the files its index names, its
        temporary and assembly files, and the index last (a kill midway leaves an index that
        still names what is left)."""
        for p in self.dir.iterdir():
            if p.name != "index.json" and (p.name in self._own_names(index) or _OWN_SCRATCH.fullmatch(p.name)):
                p.unlink()
        self.index_path.unlink()

    def plan(self, chunks: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The stored chunk plan if there is one (a resumed run keeps its boundaries), else ``chunks``."""
        if self.index["chunks"] is None:
            self.index["chunks"] = [list(c) for c in chunks]
            if self.writes_index:
                self._write_index()
        return [tuple(c) for c in self.index["chunks"]]

    def abandon(self) -> None:
        """After a run that failed before saving any chunk: remove the index this store wrote
        (and ``chunks/`` if that leaves it empty), so a refused run leaves nothing that refuses
        the next, different config."""
        if self.fresh_index and not self.saved:
            self.index_path.unlink(missing_ok=True)
            try:
                self.dir.rmdir()
            except OSError:
                pass  # not empty, or already gone: what is in it is not this run's to delete

    def _file(self, s0: int, s1: int) -> Path:
        return self.dir / f"seeds-{s0}-{s1}.npz"

    def check_space(self, result_bytes: int, on_disk: bool) -> None:
        """Refuse in one line, before anything is written, a run whose files would not fit on
        the disk of ``out``: the chunks not yet stored, ``results.npz`` and, when results are
        assembled on disk, the assembly files (each about ``result_bytes``).  Assembly files a
        killed run left behind are deleted first (this process holds the directory's lock)."""
        self.discard_scratch()
        stored = sum(p.stat().st_size for p in self.dir.glob("seeds-*.npz")) if self.dir.is_dir() else 0
        need = max(0, result_bytes - stored) + result_bytes * (2 if on_disk else 1)
        free = shutil.disk_usage(self.dir.parent).free
        if need > free:
            raise ConfigError(f"{self.dir.parent} would need {_size(need)} for this run's chunks, "
                              f"results{' and assembly files' if on_disk else ''} but its disk has "
                              f"{_size(free)} free: free space, choose an --out on a larger disk, "
                              "or run fewer seeds or recorded epochs")

    def scratch(self, name: str, shape: tuple[int, ...], fill: float, dtype: Any) -> np.ndarray:
        """A memory-mapped array filled with ``fill``, for assembling results larger than RAM
        (a fresh file per process, so the processes of a multi-host run do not collide).  Its
        blocks are reserved before it is mapped, so a full disk is a one-line error here, never
        a SIGBUS while writing through the map; a file that cannot be reserved is removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self.dir, prefix=f"assembly-p{jax.process_index()}-{name}-",
                                    suffix=".npy")
        os.close(fd)
        try:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
            _reserve(Path(path))
            a = np.lib.format.open_memmap(path, mode="r+")
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        a[...] = fill
        return a

    def discard_scratch(self) -> None:
        """Delete this process's assembly files once the results are saved."""
        for p in self.dir.glob(f"assembly-p{jax.process_index()}-*.npy"):
            p.unlink()

    def load(self, s0: int, s1: int) -> dict[str, np.ndarray] | None:
        """A finished chunk's arrays, or None if it is not on disk; a chunk that is corrupt or
        was written for another config or other seeds is an error that names the file."""
        path = self._file(s0, s1)
        check = path.with_suffix(".sha256")
        for p in (path, check):
            if p.exists() and not p.is_file():
                raise ConfigError(f"{p} is not a file: delete it to recompute that chunk")
        if not check.is_file() or not path.is_file():
            return None
        if sha256_file(path) != check.read_text(errors="replace").strip():
            raise ConfigError(f"{path} is truncated or corrupt (its checksum does not match "
                              f"{check.name}): delete it to recompute that chunk")
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        tag, seeds = arrays.pop("_fingerprint", None), arrays.pop("_seeds", None)
        wrong = (f"was written by a different config, data file or engine version: {_DISCARD}"
                 if tag is None or str(tag) != self.fingerprint else
                 f"holds seeds other than {s0} to {s1 - 1}: delete it to recompute that chunk"
                 if seeds is None or seeds.tolist() != [s0, s1] else None)
        if wrong and self.overwrite:  # --overwrite discards what is not this run's
            check.unlink()
            return None
        if wrong:
            raise ConfigError(f"{path} {wrong}")
        return arrays

    def save(self, s0: int, s1: int, arrays: dict[str, np.ndarray]) -> None:
        """Write a finished chunk, tagged with the fingerprint and its seeds, then its checksum."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._file(s0, s1)
        tags = {"_fingerprint": np.array(self.fingerprint), "_seeds": np.array([s0, s1], np.int64)}
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **tags)
            digest = sha256_file(tmp)
            path.with_suffix(".sha256").unlink(missing_ok=True)
        write_atomic(path.with_suffix(".sha256"), (digest + "\n").encode())
        self.saved = True

    def _write_index(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.index_path, (json.dumps(self.index, indent=1) + "\n").encode())
