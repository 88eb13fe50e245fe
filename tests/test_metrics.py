"""Rate metrics against curves whose answers are known in closed form."""

import numpy as np

from l1jax.analysis.metrics import epochs_to_close, rate_window, run_metrics
from tests.helpers import small_config


def test_metrics_of_exponential_curves():
    epochs, k = 40, 5
    cfg = small_config(train={"epochs": epochs, "batch_size": ["full", 16], "learning_rate": [0.1]},
                       sweep={"sizes": [10, 100], "seeds": 3})
    shape = (1, 2, 1, 2, 3)
    tau = np.array([2.0, 8.0])[None, None, None, :, None] * np.ones(shape)  # per size
    lstar = np.array([[0.5, 0.6, 0.7], [0.8, 0.9, 1.0]])  # [size, seed]
    l0 = 3.0
    e = np.arange(epochs + 1)
    curve = lstar[None, None, None, ..., None] + (l0 - lstar[None, None, None, ..., None]) * np.exp(-e / tau[..., None])
    test = curve + 0.25
    div = np.full(shape, -1)
    div[0, 0, 0, 1, 2] = 7  # one diverged run
    m = run_metrics(cfg, curve, test, div, lstar, k)
    gap0 = l0 - lstar
    want_rate = gap0[None, None, None] * (1 - np.exp(-k / tau)) / k
    ok = div < 0
    np.testing.assert_allclose(m.rate_epoch[ok], want_rate[ok])
    assert np.isnan(m.rate_epoch[~ok]).all() and np.isnan(m.final_test[~ok]).all()
    # steps per epoch: full batch 1; batch 16 -> ceil(10/16) = 1 and ceil(100/16) = 7
    np.testing.assert_allclose(m.rate_step[0, 1, 0, 1][ok[0, 1, 0, 1]], (want_rate / 7)[0, 1, 0, 1][ok[0, 1, 0, 1]])
    np.testing.assert_allclose(m.rate_step[0, 1, 0, 0], want_rate[0, 1, 0, 0])
    # closing 50% / 90% of the gap takes tau ln 2 / tau ln 10 epochs, rounded up to an epoch
    np.testing.assert_array_equal(m.epochs_50[ok], np.ceil(tau * np.log(2))[ok])
    np.testing.assert_array_equal(m.epochs_90[ok], np.ceil(tau * np.log(10))[ok])
    np.testing.assert_array_equal(m.steps_50[0, 1, 0, 1, :2], 7 * np.ceil(8 * np.log(2)))
    np.testing.assert_array_equal(m.steps_90[0, 1, 0, 1, :2], 7 * np.ceil(8 * np.log(10)))
    np.testing.assert_allclose(m.gap[ok], 0.25)
    np.testing.assert_allclose(m.suboptimality[ok], (curve[..., -1] - lstar[None, None, None])[ok])
    np.testing.assert_array_equal(m.closed_90[ok], 1.0)


def test_never_closing_gives_nan():
    curve = np.array([[3.0, 2.9, 2.8, 2.8]])
    out = epochs_to_close(curve, np.arange(4), np.array([1.0]), 0.5)
    assert np.isnan(out).all()


def test_rate_window_is_the_first_recorded_epoch_from_k():
    assert rate_window((0, 1, 2, 3, 4, 5, 6)) == 5
    assert rate_window((0, 20)) == 20
    assert rate_window((0, 2, 3)) == 3
