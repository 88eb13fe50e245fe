"""Sweep results: named arrays over (optimizer, batch_size, learning_rate, size, seed[, epoch]),
saved as ``results.npz`` plus a ``manifest.json`` that holds the config, coordinates and
provenance, and exported as a tidy table (CSV, pandas, Parquet) or an xarray Dataset.
"""

from __future__ import annotations

import csv
import importlib
import json
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from l1jax.engine import files
from l1jax.engine.config import NOISE_KEYS, Config, ConfigError, config_from_dict
from l1jax.engine.files import atomic_file

if TYPE_CHECKING:
    import pandas
    import xarray

RUN_DIMS = ("optimizer", "batch_size", "learning_rate", "size", "seed")
ARRAY_DIMS = {
    "train_l1": RUN_DIMS + ("epoch",),
    "test_l1": RUN_DIMS + ("epoch",),
    "param_error": RUN_DIMS + ("epoch",),
    "theta": RUN_DIMS + ("param",),
    "diverged_epoch": RUN_DIMS,
}
CSV_COLUMNS = ("seed", "size", "learning_rate", "full_batch", "batch_size", "optimizer", "epoch",
               "train_l1", "test_l1", "param_error", "diverged")


def batch_columns(batch: int | str) -> tuple[bool, int]:
    """A config batch size as table columns (full_batch, batch_size), batch_size 0 for full
    batch, so that each column of a table has one type."""
    return (True, 0) if batch == "full" else (False, int(batch))


def check_export_path(results_dir: str | Path, target: str | Path) -> None:
    """Refuse an export target inside the results directory (whose files it could replace),
    or one that names a directory."""
    own, path = Path(results_dir).resolve(), Path(target).resolve()
    if path.is_relative_to(own):
        raise ConfigError(f"{target} is inside the results directory {results_dir}: export to a "
                          "file outside it")
    run = next((d for d in path.parents if _is_results_dir(d)), None)
    if run is not None:
        raise ConfigError(f"{target} is inside {run}, the results directory of another run: export "
                          "to a file outside it")
    if path.is_dir():
        raise ConfigError(f"{target} is a directory: name a file to export to")


CSV_ROW_BYTES = 40  # fewest bytes of a tidy CSV row: 11 cells, 3 of them float32 metrics


def check_export_space(results: "Results", target: Path) -> None:
    """Refuse in one line, before writing, a CSV export that cannot fit on its disk: even at
    ``CSV_ROW_BYTES`` a row, its rows need more than the free space."""
    need = results.arrays["train_l1"].size * CSV_ROW_BYTES
    where = next(d for d in (target.resolve().parent, *target.resolve().parents) if d.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError(f"{target} would need at least {need:,} bytes ({results.arrays['train_l1'].size:,} "
                          f"rows) but its disk has {free:,} bytes free: free space or export elsewhere")


def _is_results_dir(d: Path) -> bool:
    """Whether ``d`` holds a run's files (results, manifest or chunk index)."""
    return any((d / name).exists() for name in ("results.npz", "manifest.json", "chunks/index.json"))


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

    def __repr__(self) -> str:
        """A few lines (dims, the config, divergences) instead of every array."""
        c, t, co = self.config, self.config.train, self.coords
        sizes = ", ".join(f"{d}={len(co[d])}" for d in (*RUN_DIMS, "epoch", "param"))
        data = (f"csv {Path(c.data.path).name} -> {c.data.target}" if c.data.source == "csv"
                else f"{c.data.source} {c.data.noise} noise (scale {c.data.noise_scale:g})")
        setup = (f"{data}; optimizer {_listing(t.optimizer)}; lr {_listing(t.learning_rate)}; "
                 f"batch {_listing(t.batch_size)}; sizes {_listing(c.sweep.sizes)}; "
                 f"{c.sweep.seeds} seeds from {c.sweep.base_seed}; {t.epochs} epochs "
                 f"(recorded every {t.record_every})")
        return (f"Results({sizes})\n  config: {setup}\n"
                f"  diverged: {int(self.diverged.sum())} of {self.diverged.size} runs")

    # ------------------------------------------------------------ persistence

    def save(self, out: str | Path, fingerprint: str | None = None) -> None:
        """Write ``results.npz`` and then ``manifest.json`` into ``out``, each atomically and both
        carrying the config's ``fingerprint`` (default: computed from the config), the old
        manifest removed first: a reader finds the new pair, or no manifest, never a mix."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tag = fingerprint or files.fingerprint(self.config)
        (out / "manifest.json").unlink(missing_ok=True)
        with atomic_file(out / "results.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **self.arrays, _fingerprint=np.array(tag))
        digest = files.data_digest(self.config)
        manifest = {"config": self.config.to_dict(), "fingerprint": tag, "coords": self.coords,
                    "dims": {k: list(v) for k, v in ARRAY_DIMS.items()}, **self.meta,
                    **({} if digest is None else {"data_sha256": digest})}
        files.write_atomic(out / "manifest.json",
                           (json.dumps(manifest, indent=2, default=str) + "\n").encode())

    @classmethod
    def load(cls, out: str | Path, mmap: bool = False) -> "Results":
        """Read a results directory written by :meth:`save`; ``mmap=True`` maps the arrays
        read-only from disk instead of reading them (results larger than RAM), after checking
        each member's CRC.  Arrays that do not match their manifest are refused."""
        out = Path(out)
        man_path, npz_path = out / "manifest.json", out / "results.npz"
        if not out.is_dir():
            raise ConfigError(f"{out} is not a directory: expected one written by `l1jax run`")
        if not man_path.is_file() and (npz_path.is_file() or (out / "chunks").is_dir()):
            raise ConfigError(f"{out} holds an unfinished run (no manifest.json): rerun "
                              "`l1jax run` with its config and this --out to finish it")
        for p in (man_path, npz_path):
            if not p.is_file():
                raise ConfigError(f"{p} does not exist: expected a directory written by `l1jax run`")
        try:
            manifest = json.loads(man_path.read_text())
            raw = manifest.pop("config")
            _check_fingerprint(man_path, raw, manifest.get("fingerprint"), manifest.get("data_sha256"))
            if raw["data"].get("source") == "csv":  # manifests written before csv refused them
                raw["data"] = {k: v for k, v in raw["data"].items() if k not in NOISE_KEYS}
            config = config_from_dict(raw, base_dir=out, check_files=False)
        except ConfigError as e:
            if str(e).startswith(str(man_path)):  # already says what is wrong with the manifest
                raise
            raise ConfigError(f"{man_path} is truncated or corrupt: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{man_path} is truncated or corrupt: {e}") from None
        try:
            if mmap:
                mapped = _npz_memmap(npz_path)
                tag, arrays = mapped.get("_fingerprint"), {k: mapped[k] for k in ARRAY_DIMS}
            else:
                with np.load(npz_path) as z:
                    tag = z["_fingerprint"] if "_fingerprint" in z.files else None
                    arrays = {k: z[k] for k in ARRAY_DIMS}
        except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
            raise ConfigError(f"{npz_path} is truncated or corrupt: {e}") from None
        if tag is None or str(tag[()]) != manifest.get("fingerprint"):
            raise ConfigError(f"{npz_path} does not belong to {man_path.name} (another run's "
                              "results, or one being rewritten): rerun `l1jax run` for this --out")
        results = cls(config, arrays, {k: v for k, v in manifest.items() if k not in ("coords", "dims")})
        results.check_shapes(npz_path)
        if _plain(manifest.get("coords")) != _plain(results.coords):
            raise ConfigError(f"{man_path}: its coordinates do not follow from its config (edited by "
                              "hand?): rerun `l1jax run` for this --out")
        return results

    def check_shapes(self, where: Path) -> None:
        """Refuse arrays whose shapes disagree with the config's coordinates."""
        co = self.coords
        for name, dims in ARRAY_DIMS.items():
            want = tuple(len(co[d]) for d in dims if d != "param")
            got = self.arrays[name].shape[:len(want)]
            if got != want:
                raise ConfigError(f"{where}: {name} has shape {got} but the manifest's config "
                                  f"gives {want} ({', '.join(dims)}): the files do not belong together")

    # ------------------------------------------------------------ tidy view

    def columns(self) -> Iterator[dict[str, np.ndarray]]:
        """Tidy columns (one entry per run and recorded epoch), one block per (optimizer, batch);
        each column has one dtype (int64, float64, bool, str; the metrics stay float32)."""
        co = self.coords
        o_n, b_n, l_n, s_n, r_n, e_n = self.arrays["train_l1"].shape
        grid = np.meshgrid(np.arange(l_n), np.arange(s_n), np.arange(r_n), np.arange(e_n),
                           indexing="ij")
        li, si, ri, ei = (g.reshape(-1) for g in grid)
        n = len(li)
        epochs = np.asarray(co["epoch"], np.int64)[ei]
        for o in range(o_n):
            for b in range(b_n):
                div = self.arrays["diverged_epoch"][o, b][li, si, ri]
                full, batch = batch_columns(co["batch_size"][b])
                yield {
                    "seed": np.asarray(co["seed"], np.int64)[ri],
                    "size": np.asarray(co["size"], np.int64)[si],
                    "learning_rate": np.asarray(co["learning_rate"], np.float64)[li],
                    "full_batch": np.full(n, full), "batch_size": np.full(n, batch, np.int64),
                    "optimizer": np.full(n, co["optimizer"][o], dtype=object),
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
        """Write the tidy CSV (empty cell for an undefined value, True/False for booleans),
        atomically."""
        with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for block in self.columns():
                cols = [_cells(block[k]) for k in CSV_COLUMNS]
                w.writerows(zip(*cols))

    def to_pandas(self) -> "pandas.DataFrame":
        """The tidy table as a DataFrame: the CSV's columns and rows, NaN where a value is not
        defined; train_l1, test_l1 and param_error keep the engine's float32."""
        pd = _optional("pandas", "pandas", "to_pandas")
        frames = [pd.DataFrame(block, columns=CSV_COLUMNS) for block in self.columns()]
        return pd.concat(frames, ignore_index=True)

    def export_parquet(self, path: str | Path) -> None:
        """Write the tidy table as Parquet (the types of :meth:`to_pandas`, null where a value is
        not defined), atomically and one (optimizer, batch) block at a time to bound memory."""
        pa = _optional("pyarrow", "parquet", "export_parquet")
        pq = _optional("pyarrow.parquet", "parquet", "export_parquet")
        with atomic_file(path) as tmp:
            writer = None
            try:
                for block in self.columns():
                    table = pa.table({k: pa.array(block[k], from_pandas=True) for k in CSV_COLUMNS})
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()

    def to_xarray(self) -> "xarray.Dataset":
        """The arrays of ARRAY_DIMS as an xarray Dataset with named dims and coords; attrs hold
        the config and the manifest's provenance as JSON. The batch_size coord is an integer,
        0 for full batch, with a boolean full_batch coord beside it (as in the tidy table):
        the config's value is "full" where full_batch, else batch_size."""
        xr = _optional("xarray", "xarray", "to_xarray")
        coords: dict[str, Any] = dict(self.coords)
        full, batch = zip(*map(batch_columns, coords["batch_size"]))
        coords["batch_size"] = np.asarray(batch, np.int64)
        coords["full_batch"] = ("batch_size", np.asarray(full))
        return xr.Dataset({k: (dims, self.arrays[k]) for k, dims in ARRAY_DIMS.items()}, coords,
                          {"config": json.dumps(self.config.to_dict()),
                           "meta": json.dumps(self.meta, default=str)})


def _check_fingerprint(man_path: Path, raw: Any, tag: Any, digest: Any) -> None:
    """Refuse a manifest whose config does not hash to its recorded fingerprint (a config
    edited after the run would relabel its results).  A csv config's data digest is the one the
    manifest records, or, for manifests from before it did, the data file's if it is there."""
    if not (isinstance(raw, dict) and isinstance(tag, str)):
        raise ValueError("no config or fingerprint")
    data = raw.get("data")
    csv = isinstance(data, dict) and data.get("source") == "csv"
    recorded = digest if isinstance(digest, str) else None
    digest = recorded if recorded is not None or not csv else _current_digest(man_path, Path(str(data.get("path"))))
    legacy = {**raw, "data": {k: v for k, v in data.items() if k not in NOISE_KEYS}} if csv else raw
    if not any(files.fingerprint_matches(c, tag, digest) for c in (raw, legacy)):  # old csv: noise keys
        what = "its config and data file do not" if csv and recorded is None else "its config does not"
        raise ConfigError(f"{man_path}: {what} match its fingerprint (edited after the run?), so "
                          "its results would be mislabelled: rerun `l1jax run` for this --out")


def _current_digest(man_path: Path, path: Path) -> str:
    """The digest of a csv run's data file as it is now (manifests from before they recorded it)."""
    if not path.is_file():
        raise ConfigError(f"{man_path} records no digest of its data file and {path} is gone: "
                          "its config cannot be checked against its fingerprint; restore the file")
    return files.sha256_file(path)


def _plain(v: Any) -> Any:
    """``v`` as JSON would give it back (tuples as lists, other types as strings)."""
    return json.loads(json.dumps(v, default=str))


def _npz_memmap(path: Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of the arrays of an uncompressed .npz (as ``np.savez`` writes it):
    each member is a .npy file stored contiguously after its zip header.  Each member's CRC is
    checked first (one streaming read), and object arrays, which would map raw pointers, are
    refused."""
    out = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} is compressed")
            with zf.open(info) as member:  # zipfile checks the CRC when a member is read through
                while member.read(1 << 24):
                    pass
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
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects, which l1jax never writes")
            out[info.filename.removesuffix(".npy")] = np.memmap(
                path, dtype, "r", f.tell(), shape, "F" if fortran else "C")
    return out


def _optional(module: str, extra: str, caller: str) -> ModuleType:
    """Import an optional dependency, or say in one line which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{caller} needs {module.split('.')[0]}: pip install 'l1jax[{extra}]'") from None


def _listing(values: tuple[Any, ...]) -> str:
    """Values for a one-line summary: all of them, or the ends of a long list."""
    if len(values) <= 6:
        return ", ".join(map(str, values))
    return f"{values[0]}, {values[1]}, ..., {values[-1]} ({len(values)} values)"


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _cells(col: np.ndarray) -> list[str]:
    """CSV cells: float32 to 9 significant digits and float64 in full (both round-trip),
    empty for NaN; booleans as True/False."""
    if col.dtype.kind == "f":
        fmt = "{:.9g}" if col.dtype == np.float32 else "{!r}"
        return ["" if np.isnan(v) else fmt.format(v) for v in col.tolist()]
    return [str(v) for v in col.tolist()]
