"""Statistics over seeds: moments, Student t summaries, non-finite exclusion and paired differences."""

import warnings

import numpy as np
import pytest

from l1jax.analysis.stats import moments, paired_difference, t_summary


def test_moments_match_numpy():
    v = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 30, 5))
    s = t_summary(moments(v, axis=1), 30)
    assert s.mean.shape == (4, 5)
    np.testing.assert_allclose(s.mean, v.mean(axis=1))
    np.testing.assert_allclose(s.std, v.std(axis=1, ddof=1))
    np.testing.assert_allclose(s.sem, v.std(axis=1, ddof=1) / np.sqrt(30))
    assert np.all(s.n == 30) and np.all(s.excluded == 0)
    assert np.all((s.ci_low < s.mean) & (s.mean < s.ci_high))


def test_non_finite_values_are_excluded_and_counted():
    v = np.random.default_rng(1).normal(size=(5, 8))
    v[0, :] = np.nan  # every run diverged
    v[1, 1:] = np.inf  # one finite value
    v[2, [0, 3]] = [np.nan, -np.inf]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = t_summary(moments(v), 8)
    np.testing.assert_array_equal(s.n, [0, 1, 6, 8, 8])
    np.testing.assert_array_equal(s.excluded, [8, 7, 2, 0, 0])
    kept = np.delete(v[2], [0, 3])
    assert s.mean[2] == pytest.approx(kept.mean())
    assert s.std[2] == pytest.approx(kept.std(ddof=1))
    assert s.mean[1] == v[1, 0]
    for stat in (s.mean[0], s.std[0], s.sem[0], s.ci_low[0], s.std[1], s.sem[1], s.ci_low[1],
                 s.ci_high[1]):
        assert np.isnan(stat)


def test_ci_of_constant_is_degenerate():
    s = t_summary(moments(np.full((3, 20), 4.25)), 20)
    np.testing.assert_array_equal(s.ci_low, 4.25)
    np.testing.assert_array_equal(s.ci_high, 4.25)
    np.testing.assert_array_equal(s.std, 0.0)


def test_paired_difference_is_summary_of_difference():
    rng = np.random.default_rng(5)
    common = rng.normal(size=(3, 40))
    a = common + rng.normal(0.1, 0.05, size=(3, 40))
    b = common.copy()
    a[0, 2], b[1, 5], a[2, 7], b[2, 7] = np.nan, np.inf, np.inf, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = paired_difference(a, b)
    np.testing.assert_array_equal(d.excluded, [1, 1, 1])
    ok = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore"):  # inf - inf
        ref = t_summary(moments(np.where(ok, a - b, np.nan)), 40)
    for got, want in zip(d, ref):
        np.testing.assert_array_equal(got, want)
    for i in range(a.shape[0]):  # plain NumPy over the pairs with both sides finite
        diff = a[i][ok[i]] - b[i][ok[i]]
        np.testing.assert_allclose([d.mean[i], d.std[i]], [diff.mean(), diff.std(ddof=1)], rtol=1e-12)
    # common random numbers: the paired interval is far narrower than either side's spread
    assert np.all(d.ci_high - d.ci_low < 0.1 * np.nanstd(np.where(np.isfinite(a), a, np.nan), axis=1, ddof=1))
