"""Sweep results: named arrays over (optimizer, batch_size, learning_rate, size, seed[, epoch]),
saved as ``results.npz`` plus a ``manifest.json`` that holds the config, coordinates and
provenance, and exported as a tidy CSV.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from l1jax.engine.config import Config, ConfigError, config_from_dict

RUN_DIMS = ("optimizer", "batch_size", "learning_rate", "size", "seed")
ARRAY_DIMS = {
    "train_l1": RUN_DIMS + ("epoch",),
    "test_l1": RUN_DIMS + ("epoch",),
    "param_error": RUN_DIMS + ("epoch",),
    "theta": RUN_DIMS + ("param",),
    "diverged_epoch": RUN_DIMS,
}
CSV_COLUMNS = ("seed", "size", "learning_rate", "batch_size", "optimizer", "epoch",
               "train_l1", "test_l1", "param_error", "diverged")


@dataclass
class Results:
    """Everything a sweep recorded; ``arrays`` follow ``ARRAY_DIMS``, ``coords`` label each dim."""

    config: Config
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def coords(self) -> dict[str, list[Any]]:
        c, t = self.config, self.config.train
        p = self.arrays["theta"].shape[-1]
        return {"optimizer": list(t.optimizer), "batch_size": list(t.batch_size),
                "learning_rate": list(t.learning_rate), "size": list(c.sweep.sizes),
                "seed": list(range(c.sweep.seeds)), "epoch": list(c.recorded_epochs),
                "param": [f"w{i}" for i in range(p - 1)] + ["b"]}

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def diverged(self) -> np.ndarray:
        """Per run: whether its loss became non-finite."""
        return self.arrays["diverged_epoch"] >= 0

    # ------------------------------------------------------------ persistence

    def save(self, out: str | Path) -> None:
        """Write ``results.npz`` and ``manifest.json`` into ``out``, each atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "results.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **self.arrays)
        os.replace(tmp, out / "results.npz")
        manifest = {"config": self.config.to_dict(), "coords": self.coords,
                    "dims": {k: list(v) for k, v in ARRAY_DIMS.items()}, **self.meta}
        tmp = out / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.replace(tmp, out / "manifest.json")

    @classmethod
    def load(cls, out: str | Path, mmap: bool = False) -> "Results":
        """Read a results directory written by :meth:`save`; ``mmap=True`` maps the arrays
        read-only from disk instead of reading them (results larger than RAM)."""
        out = Path(out)
        man_path, npz_path = out / "manifest.json", out / "results.npz"
        for p in (man_path, npz_path):
            if not p.is_file():
                raise ConfigError(f"{p} does not exist: expected a directory written by `l1jax run`")
        try:
            manifest = json.loads(man_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{man_path} is truncated or corrupt: {e}") from None
        try:
            if mmap:
                mapped = _npz_memmap(npz_path)
                arrays = {k: mapped[k] for k in ARRAY_DIMS}
            else:
                with np.load(npz_path) as z:
                    arrays = {k: z[k] for k in ARRAY_DIMS}
        except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
            raise ConfigError(f"{npz_path} is truncated or corrupt: {e}") from None
        config = config_from_dict(manifest.pop("config"), base_dir=out, check_files=False)
        meta = {k: v for k, v in manifest.items() if k not in ("coords", "dims")}
        return cls(config, arrays, meta)

    # ------------------------------------------------------------ tidy view

    def columns(self) -> Iterator[dict[str, np.ndarray]]:
        """Tidy columns (one entry per run and recorded epoch), one block per (optimizer, batch)."""
        co = self.coords
        o_n, b_n, l_n, s_n, r_n, e_n = self.arrays["train_l1"].shape
        grid = np.meshgrid(np.arange(l_n), np.arange(s_n), np.arange(r_n), np.arange(e_n),
                           indexing="ij")
        li, si, ri, ei = (g.reshape(-1) for g in grid)
        epochs = np.asarray(co["epoch"])[ei]
        for o in range(o_n):
            for b in range(b_n):
                div = self.arrays["diverged_epoch"][o, b][li, si, ri]
                yield {
                    "seed": np.asarray(co["seed"])[ri], "size": np.asarray(co["size"])[si],
                    "learning_rate": np.asarray(co["learning_rate"])[li],
                    "batch_size": np.full(len(li), str(co["batch_size"][b]), dtype=object),
                    "optimizer": np.full(len(li), co["optimizer"][o], dtype=object),
                    "epoch": epochs,
                    **{k: self.arrays[k][o, b].reshape(-1) for k in ("train_l1", "test_l1", "param_error")},
                    "diverged": (div >= 0) & (epochs >= div),
                }

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per run and recorded epoch (NaN where a value is not defined)."""
        rows: list[dict[str, Any]] = []
        for block in self.columns():
            rows.extend({k: _scalar(block[k][i]) for k in CSV_COLUMNS}
                        for i in range(len(block["epoch"])))
        return rows

    def export_csv(self, path: str | Path) -> None:
        """Write the tidy CSV (empty cell for an undefined value), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for block in self.columns():
                cols = [_cells(block[k]) for k in CSV_COLUMNS]
                w.writerows(zip(*cols))
        os.replace(tmp, path)


def _npz_memmap(path: Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of the arrays of an uncompressed .npz (as ``np.savez`` writes it):
    each member is a .npy file stored contiguously after its zip header."""
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} is compressed")
            f.seek(info.header_offset)
            head = f.read(30)
            if head[:4] != b"PK\x03\x04":
                raise ValueError(f"no local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            out[info.filename.removesuffix(".npy")] = np.memmap(
                path, dtype, "r", f.tell(), shape, "F" if fortran else "C")
    return out


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _cells(col: np.ndarray) -> list[str]:
    if col.dtype == bool:
        return ["1" if v else "0" for v in col]
    if col.dtype.kind == "f":
        return ["" if np.isnan(v) else f"{v:.9g}" for v in col.tolist()]
    return [str(v) for v in col.tolist()]
