"""The csv source: per-seed subsamples of the training rows, shared held-out rows."""

import numpy as np
import pytest

from l1jax.analysis import claims as C
from l1jax.analysis import stats
from l1jax.analysis import twin as TW
from l1jax.analysis.report import report
from l1jax.engine.config import ConfigError, config_from_dict
from l1jax.engine.table import load_csv
from l1jax.engine.plan import plan
from l1jax.engine.sweep import group_inputs, run, run_to_dir
from l1jax.engine.train import one_dataset
from tests.helpers import reference_for


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = x @ [1.0, -2.0, 0.5] + 4.0 + rng.laplace(size=60)
    path = tmp_path_factory.mktemp("csv") / "table.csv"
    rows = ["f1,target,f2,f3"] + [f"{a},{t},{b},{c}" for (a, b, c), t in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _cfg(path, **data):
    return config_from_dict({"data": {"source": "csv", "path": str(path), "target": "target", **data},
                             "train": {"epochs": 8, "learning_rate": [0.1], "batch_size": ["full", 8]},
                             "sweep": {"sizes": [12, 45], "seeds": 3, "base_seed": 5}})


def test_csv_engine_matches_reference_on_its_subsamples(csv_path):
    cfg = _cfg(csv_path, test_fraction=0.25)
    table = load_csv(cfg.data, cfg.sweep.base_seed)
    assert table.x_train.shape == (45, 3) and table.x_test.shape == (15, 3)
    res = run(cfg)
    inputs = group_inputs(cfg, plan(cfg)[0], table)
    pool = {tuple(r) for r in table.x_train.tolist()}
    for s, n in enumerate(cfg.sweep.sizes):
        for b, bs in enumerate(cfg.train.batch_size):
            ref = reference_for(cfg, "sgd", bs, 0.1, n, 2, inputs)
            np.testing.assert_allclose(res.train_l1[0, b, 0, s, 2], ref.train_l1, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(res.test_l1[0, b, 0, s, 2], ref.test_l1, rtol=1e-5, atol=1e-5)
        ds = one_dataset(cfg, 2, n, inputs)
        rows = [tuple(r) for r in ds.x.tolist()]
        assert len(set(rows)) == n and set(rows) <= pool  # a subsample without replacement
        np.testing.assert_array_equal(ds.x_test, table.x_test)  # the held-out rows, for every run
    assert np.isnan(res.param_error).all()  # no true parameters for real data


def test_csv_without_test_rows_uses_every_row_at_full_size(csv_path):
    cfg = config_from_dict({"data": {"source": "csv", "path": str(csv_path), "target": "target",
                                     "test_fraction": 0.0},
                            "train": {"epochs": 3}, "sweep": {"sizes": [60], "seeds": 3}})
    res = run(cfg)
    assert np.isnan(res.test_l1).all()
    assert (res.diverged_epoch == -1).all() and np.isfinite(res.train_l1).all()  # no test rows: not a divergence
    # every replicate trains on the same 60 rows from its own start: same data, different init
    inputs = group_inputs(cfg, plan(cfg)[0], load_csv(cfg.data))
    sets = [sorted(map(tuple, one_dataset(cfg, r, 60, inputs).x.tolist())) for r in range(3)]
    assert sets[0] == sets[1] == sets[2]


def test_csv_header_may_start_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftarget,f1\n".encode() + b"".join(b"%d,%d\n" % (2 * i, i) for i in range(50)))
    table = load_csv(_cfg(path, test_fraction=0.0).data)
    np.testing.assert_array_equal(table.y_train, 2 * table.x_train[:, 0])
    with pytest.raises(ConfigError) as e:
        config_from_dict({"data": {"source": "csv", "path": str(path), "target": "y"}})
    assert str(e.value).endswith(f"columns of {path}: target, f1")


def test_csv_values_up_to_the_float32_range_are_kept(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("f1,target\n3e38,1\n" + "1,2\n" * 49)
    table = load_csv(_cfg(path, test_fraction=0.0).data)
    assert np.isfinite(table.x_train).all() and table.x_train.max() == np.float32(3e38)


def test_csv_config_round_trips_without_synthetic_keys(csv_path):
    cfg = _cfg(csv_path)
    data = cfg.to_dict()["data"]
    assert "test_size" not in data and "n_features" not in data and "noise" not in data
    assert config_from_dict(cfg.to_dict()) == cfg


def test_csv_results_written_before_the_noise_keys_were_refused_still_load(csv_path, tmp_path):
    """Manifests of csv runs from before csv configs refused the synthetic noise keys carry them
    (at their defaults); such results still load, with the same config."""
    import json

    from l1jax.engine.results import Results
    from l1jax.engine.sweep import run_to_dir

    cfg = _cfg(csv_path)
    run_to_dir(cfg, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["config"]["data"].update(noise="gaussian", noise_scale=1.0, noise_df=3.0, outlier_fraction=0.1)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert Results.load(tmp_path).config == cfg


def test_csv_claims_compare_sizes_within_half_the_pool(csv_path, tmp_path):
    """Pool of 45 rows, sizes 6, 12, 20, 40: the claims compare 6 with 20 (n/N 0.44), spread
    intervals widened by exactly the finite population correction's range; judged without the
    pool, claim 4 compares 6 with 40 unwidened; the report states n/N per size (tests/test_study.py
    has a csv sweep with no two sizes inside half the pool)."""
    cfg = config_from_dict({"data": {"source": "csv", "path": str(csv_path), "target": "target",
                                     "test_fraction": 0.25, "coupling": "nested"},
                            "train": {"epochs": 8, "learning_rate": [0.1, 0.3]},
                            "sweep": {"sizes": [6, 12, 20, 40], "seeds": 6}})
    run_to_dir(cfg, tmp_path / "run", quiet=True)
    rep = report(tmp_path / "run", tmp_path / "rep")
    a = rep.analysis
    assert C.pool_rows(a) == 45 and C.compared_sizes(a) == (0, 2) and C.compared_sizes(a, False) == (0, 3)
    f6, f20 = stats.pool_sd_factor(np.array([6, 20]), 45)
    claims = {c.key: c for c in rep.claim_list}
    for safe, sizes in ((True, (0, 2)), (False, (0, 3))):
        c4 = claims["variable_small"] if safe else C.claim_variable_small(a, pool_safe=False)
        level = C.family_level(len(c4.evidence))
        for e in c4.evidence:
            lr = [0.1, 0.3].index(float(e.setting.split("lr ")[1]))
            v = a.metrics.final_test if "test" in e.quantity else a.metrics.final_train
            small, large = v[0, 0, lr, sizes[0]], v[0, 0, lr, sizes[1]]
            value, lo, hi = stats.log_spread_ratio(small, large, True, False, level)
            if safe:
                lo, hi = lo + np.log(f20), hi - np.log(f6)
            np.testing.assert_allclose(list(e.estimate), [value, lo, hi], rtol=1e-12)
            assert ("finite pool" in e.interval) == safe
    e3 = claims["lowest_final_train"].evidence[0]
    level = C.family_level(len(claims["lowest_final_train"].evidence))
    want = C.mean_contrast(a.metrics.final_train[0, 0, 0, 0], a.metrics.final_train[0, 0, 0, 2], True, level)
    assert e3.estimate == want and "finite pool" not in e3.interval  # levels: sizes limited, not widened
    text = rep.report.read_text()
    assert "40 (n/N = 0.89)" in text and "20 (n/N = 0.44)" in text and "## The finite pool" in text
    assert "compare n = 6 with n = 20" in text and "leaving out 40" in text
    # the twin's predicted outcomes are judged on the same sizes as the claims (6 against 20)
    tw, v = rep.twin, rep.twin.predicted.train[..., -1]
    v = np.where(tw.ok, v, np.nan)
    for (_, (o, b, lr)), got in zip(C.settings(a), TW.predicted_contrasts(a, tw, "lowest_final_train")):
        want = (np.nanmean(v[o, b, lr, 0]) - np.nanmean(v[o, b, lr, 2]),
                C.MARGIN * np.nanmean(np.abs(a.metrics.final_train[o, b, lr, 2])))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_csv_manifest_without_a_recorded_digest_is_checked_against_the_file(csv_path, tmp_path):
    """Manifests written before they recorded the data file's digest are checked against the
    file as it is now: they load while it is unchanged, and are refused once it changed."""
    import json
    import shutil

    from l1jax.engine.results import Results
    from l1jax.engine.sweep import run_to_dir

    data = tmp_path / "t.csv"
    shutil.copy(csv_path, data)
    run_to_dir(_cfg(data), tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest.pop("data_sha256")
    (tmp_path / "r" / "manifest.json").write_text(json.dumps(manifest))
    Results.load(tmp_path / "r")
    data.write_text(data.read_text().replace("\n", "\n", 1) + "1,2,3,4\n")
    with pytest.raises(ConfigError, match="its config and data file do not match its fingerprint"):
        Results.load(tmp_path / "r")
