"""Exports of Results: the tidy CSV read by pandas, to_pandas, Parquet, xarray, the summary
repr, optional-dependency errors and the CLI's `export` command."""

import json
import sys
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from l1jax.cli import main
from l1jax.engine.config import ConfigError, config_from_dict
from l1jax.engine.results import ARRAY_DIMS, CSV_COLUMNS, Results, batch_columns
from l1jax.engine.sweep import run
from tests.helpers import small_config

METRICS = ("train_l1", "test_l1", "param_error")
LRS, SIZES, SEEDS, BATCHES = [0.1, 0.2], [20, 50], 2, ["full", 8]


@pytest.fixture(scope="module")
def res() -> Results:
    """A real sweep with one run marked diverged at epoch 3 (its train L1 NaN from there), so
    the diverged flag and empty cells are exercised."""
    cfg = small_config(train={"epochs": 4, "record_every": 3, "learning_rate": LRS,
                              "batch_size": BATCHES}, sweep={"sizes": SIZES, "seeds": SEEDS})
    r = run(cfg)
    arrays = {k: np.array(v) for k, v in r.arrays.items()}
    arrays["diverged_epoch"][0, 1, 0, 1, 1] = 3
    arrays["train_l1"][0, 1, 0, 1, 1, 1:] = np.nan  # recorded epochs are 0, 3, 4
    return Results(r.config, arrays, r.meta)


@pytest.fixture(scope="module")
def saved(res, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    res.save(out)
    return out


def _read_csv(path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pd.read_csv(path)


def _reference(res: Results, b: int) -> dict[str, np.ndarray]:
    """Per (lr, size, seed, epoch), in C order: the grid coordinates, the arrays and the
    diverged flag, computed from the arrays with plain NumPy."""
    shape = res.train_l1.shape[2:]
    lr, size, seed, epoch = np.meshgrid(LRS, SIZES, np.arange(SEEDS), res.config.recorded_epochs,
                                        indexing="ij")
    div = np.asarray(res.diverged_epoch[0, b])[..., None]
    flag = (div >= 0) & (epoch >= div)
    assert lr.shape == shape
    return {"learning_rate": lr.ravel(), "size": size.ravel(), "seed": seed.ravel(),
            "epoch": epoch.ravel(), "diverged": flag.ravel(),
            **{k: np.asarray(res.arrays[k][0, b]).ravel() for k in METRICS}}


def test_batch_columns():
    assert batch_columns("full") == (True, 0)
    assert batch_columns(32) == (False, 32)


def test_csv_has_one_type_per_column_and_groups_by_batch_mode(res, tmp_path):
    res.export_csv(tmp_path / "t.csv")
    frame = _read_csv(tmp_path / "t.csv")
    assert tuple(frame.columns) == CSV_COLUMNS
    want = {"seed": "int64", "size": "int64", "learning_rate": "float64", "full_batch": "bool",
            "batch_size": "int64", "epoch": "int64", "train_l1": "float64", "test_l1": "float64",
            "param_error": "float64", "diverged": "bool"}
    assert {k: str(frame[k].dtype) for k in want} == want
    groups = dict(list(frame.groupby(["full_batch", "batch_size"])))
    assert set(groups) == {(True, 0), (False, 8)}
    for b, key in enumerate([(True, 0), (False, 8)]):
        g = groups[key].sort_values(["learning_rate", "size", "seed", "epoch"])
        assert (g["optimizer"] == "sgd").all()
        for k, v in _reference(res, b).items():
            got = g[k].to_numpy()
            np.testing.assert_array_equal(got.astype(np.float32) if k in METRICS else got, v, err_msg=k)
    assert frame["diverged"].sum() == 2 and frame["train_l1"].isna().sum() == 2


def test_to_pandas_and_parquet_equal_the_csv(res, tmp_path):
    res.export_csv(tmp_path / "t.csv")
    from_csv = _read_csv(tmp_path / "t.csv").astype({k: np.float32 for k in METRICS})
    frame = res.to_pandas()
    pd.testing.assert_frame_equal(frame, from_csv, check_exact=True)
    res.export_parquet(tmp_path / "t.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.parquet"]  # no temp file left
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), from_csv, check_exact=True)
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == len(BATCHES)  # one per block


def test_to_xarray_round_trips_arrays_coords_and_config(res):
    ds = res.to_xarray()
    for k, dims in ARRAY_DIMS.items():
        assert ds[k].dims == dims
        np.testing.assert_array_equal(ds[k].values, res.arrays[k])
    for dim in ("optimizer", "learning_rate", "size", "seed", "epoch", "param"):
        assert ds[dim].values.tolist() == res.coords[dim]
    batches = ["full" if f else int(b) for f, b in zip(ds["full_batch"].values, ds["batch_size"].values)]
    assert batches == BATCHES
    assert config_from_dict(json.loads(ds.attrs["config"])) == res.config
    assert np.isnan(ds["train_l1"].sel(batch_size=8, learning_rate=0.1, size=50, seed=1, epoch=4))


@pytest.mark.parametrize("module, call, extra", [
    ("pandas", lambda r, p: r.to_pandas(), "pandas"),
    ("xarray", lambda r, p: r.to_xarray(), "xarray"),
    ("pyarrow", lambda r, p: r.export_parquet(p), "parquet"),
])
def test_a_missing_optional_package_names_its_extra(res, tmp_path, monkeypatch, module, call, extra):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "pyarrow.parquet", raising=False)
    with pytest.raises(ConfigError) as e:
        call(res, tmp_path / "t.parquet")
    caller = {"pandas": "to_pandas", "xarray": "to_xarray", "pyarrow": "export_parquet"}[module]
    assert str(e.value) == f"{caller} needs {module}: pip install 'l1jax[{extra}]'"
    assert list(tmp_path.iterdir()) == []


def test_repr_is_a_short_summary(res):
    text = repr(res)
    assert len(text.splitlines()) <= 4 and len(text) < 600
    assert "optimizer=1, batch_size=2, learning_rate=2, size=2, seed=2, epoch=3, param=3" in text
    assert "batch full, 8" in text and "diverged: 1 of 16 runs" in text
    many = replace(res.config, sweep=replace(res.config.sweep, sizes=tuple(range(10, 1000, 10)), seeds=500))
    shape = (1, 2, 2, len(many.sweep.sizes), 500)
    big = Results(many, {"train_l1": np.zeros(shape + (3,), np.float32), "theta": np.zeros(shape + (3,)),
                         "diverged_epoch": np.full(shape, -1)})
    text = repr(big)
    assert len(text) < 600 and "sizes 10, 20, ..., 990 (99 values)" in text and "0 of 198000 runs" in text


def test_cli_exports_csv_and_parquet(saved, res, tmp_path, capsys):
    csv_path, pq_path = tmp_path / "t.csv", tmp_path / "t.parquet"
    assert main(["export", str(saved), "--csv", str(csv_path), "--parquet", str(pq_path)]) == 0
    frame = res.to_pandas()
    pd.testing.assert_frame_equal(pd.read_parquet(pq_path), frame, check_exact=True)
    pd.testing.assert_frame_equal(_read_csv(csv_path).astype({k: np.float32 for k in METRICS}), frame,
                                  check_exact=True)


@pytest.mark.parametrize("args", [
    [],
    ["--csv", "{dir}/results.npz"],
    ["--parquet", "{dir}/manifest.json"],
    ["--csv", "{dir}/chunks/../results.npz"],
    ["--csv", "{dir}/chunks/t.csv"],
    ["--csv", "{tmp}/t.csv", "--parquet", "{tmp}/t.csv"],
])
def test_cli_export_refuses_with_one_line(saved, tmp_path, capsys, args):
    before = {p: p.read_bytes() for p in saved.iterdir()}
    argv = ["export", str(saved), *(a.format(dir=saved, tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("l1jax: error: ")
    assert {p: p.read_bytes() for p in saved.iterdir()} == before
    assert list(tmp_path.iterdir()) == []
