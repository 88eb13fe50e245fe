"""The engine against the NumPy reference trainer, epoch by epoch, and its invariances."""

import itertools

import numpy as np
import pytest

from l1jax.study.article import calculate_l1_loss, gradient_descent_step, linear_model
from l1jax.engine.sweep import run
from l1jax.engine.train import Record, first_bad_record, one_dataset
from tests.helpers import reference_for, small_config

# float32 engine vs float64 reference; Adam at lr 0.5 amplifies rounding to a few 1e-5.
# A wrong mask, order or update is off by orders of magnitude more.
TOL = 1e-4
PARITY = {
    "l1": dict(train={"optimizer": ["sgd", "adam"], "learning_rate": [0.05, 0.5],
                      "batch_size": ["full", 16]}),
    "seed": dict(train={"gradient": "seed", "learning_rate": [0.01, 0.03],
                        "batch_size": ["full", 16]}),
    "cosine": dict(train={"optimizer": "nesterov", "schedule": "cosine", "learning_rate": [0.1],
                          "batch_size": ["full", 16], "record_every": 5}),
}


@pytest.fixture(scope="module", params=sorted(PARITY))
def sweep(request):
    cfg = small_config(**PARITY[request.param])
    return cfg, run(cfg)


def test_engine_matches_reference_epoch_by_epoch(sweep):
    cfg, res = sweep
    t = cfg.train
    rec = list(cfg.recorded_epochs)
    for (o, opt), (b, bs), (l, lr), (s, n) in itertools.product(
            enumerate(t.optimizer), enumerate(t.batch_size), enumerate(t.learning_rate),
            enumerate(cfg.sweep.sizes)):
        rep = 1
        ref = reference_for(cfg, opt, bs, lr, n, rep)
        where = f"{opt} batch={bs} lr={lr} n={n}"
        for name, want in (("train_l1", ref.train_l1), ("test_l1", ref.test_l1),
                           ("param_error", ref.param_error)):
            np.testing.assert_allclose(res.arrays[name][o, b, l, s, rep], want[rec],
                                       rtol=TOL, atol=TOL, err_msg=f"{name} {where}")
        np.testing.assert_allclose(res.theta[o, b, l, s, rep], ref.theta, rtol=TOL, atol=TOL,
                                   err_msg=where)
        assert res.diverged_epoch[o, b, l, s, rep] == -1


def test_seed_mode_is_the_articles_arithmetic():
    """The article's own functions, run on the engine's data and start, give the engine's losses."""
    cfg = small_config(train={"gradient": "seed", "epochs": 100}, sweep={"sizes": [100], "seeds": 1},
                       data={"test_size": 0})
    res = run(cfg)
    ds = one_dataset(cfg, 0, 100)
    x, y = ds.x.astype(np.float64), ds.y.astype(np.float64)
    weights, bias = ds.theta0[:2].astype(np.float64), ds.theta0[2:].astype(np.float64)
    history = []
    for _ in range(100):
        predictions = linear_model(x, weights, bias)
        history.append(calculate_l1_loss(predictions, y))
        weights, bias = gradient_descent_step(x, y, predictions, weights, bias, 0.01)
    history.append(calculate_l1_loss(linear_model(x, weights, bias), y))
    np.testing.assert_allclose(res.train_l1[0, 0, 0, 0, 0], history, rtol=1e-5)
    assert history[-1] > 5 * history[0]  # the article's update climbs
    assert (res.diverged_epoch == -1).all()  # finite, and no test set whose NaNs could count


def _curve(res, o, b, lr_index, size_index, rep):
    return {k: res.arrays[k][o, b, lr_index, size_index, rep]
            for k in ("train_l1", "test_l1", "param_error")}


@pytest.mark.parametrize("batch", ["full", 16])
def test_run_alone_equals_run_inside_bigger_sweep(batch):
    alone = small_config(train={"learning_rate": [0.05], "batch_size": [batch]},
                         sweep={"sizes": [100], "seeds": 1})
    big = small_config(train={"learning_rate": [0.01, 0.05, 0.2], "batch_size": [batch]},
                       sweep={"sizes": [30, 100, 1000], "seeds": 4})
    a, g = run(alone), run(big)
    for k, v in _curve(a, 0, 0, 0, 0, 0).items():
        np.testing.assert_allclose(_curve(g, 0, 0, 1, 1, 0)[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_common_random_numbers_across_learning_rates():
    res = run(small_config(train={"learning_rate": [0.01, 0.3]}))
    first = res.train_l1[..., 0]  # the start is shared by all learning rates of a grid point
    np.testing.assert_array_equal(first[:, :, 0], first[:, :, 1])


def test_nested_coupling_takes_prefixes_of_the_largest_dataset():
    cfg = small_config(data={"coupling": "nested"})
    small, large = one_dataset(cfg, 1, 37), one_dataset(cfg, 1, 200)
    np.testing.assert_array_equal(small.x, large.x[:37])
    np.testing.assert_array_equal(small.y, large.y[:37])
    np.testing.assert_array_equal(small.x_test, large.x_test)
    np.testing.assert_array_equal(small.theta0, large.theta0)  # paired starts
    assert not np.array_equal(small.shuffle_key, large.shuffle_key)
    indep = small_config()
    a, b = one_dataset(indep, 1, 37), one_dataset(indep, 1, 200)
    assert not np.array_equal(a.x, b.x[:37]) and not np.array_equal(a.theta0, b.theta0)


def test_a_test_loss_that_overflows_marks_its_run_diverged():
    """Divergence is the first recorded epoch with a non-finite loss: the train L1, or the test L1
    where there are test rows (without them the test L1 is NaN, and never counts)."""
    train = np.ones((4, 2, 3), np.float32)
    test = np.ones((4, 2, 3), np.float32)
    test[2, 1, 0], test[3, 1, 0], train[3, 0, 2] = np.inf, np.nan, np.nan
    out = Record(train, test, test)
    rec = np.asarray([0, 5, 10, 12], np.int32)
    want = np.full((2, 3), 13, np.int32)
    want[0, 2] = 12
    np.testing.assert_array_equal(first_bad_record(out, rec, 12, False), want)
    want[1, 0] = 10
    np.testing.assert_array_equal(first_bad_record(out, rec, 12, True), want)


def test_one_diverging_run_does_not_touch_the_others():
    base = dict(train={"gradient": "seed", "epochs": 30, "learning_rate": [0.01]},
                sweep={"sizes": [50], "seeds": 2})
    calm = run(small_config(**base))
    base["train"] = {**base["train"], "learning_rate": [0.01, 1e4]}
    mixed = run(small_config(**base))
    div = mixed.diverged_epoch[0, 0, :, 0]
    assert (div[0] == -1).all() and (div[1] > 0).all()
    assert not np.isfinite(mixed.train_l1[0, 0, 1, 0, :, -1]).any()
    for k, v in _curve(calm, 0, 0, 0, 0, 0).items():
        np.testing.assert_allclose(_curve(mixed, 0, 0, 0, 0, 0)[k], v, rtol=1e-6, err_msg=k)
    e = div[1, 0]  # finite before the divergence epoch, not from it on
    assert np.isfinite(mixed.train_l1[0, 0, 1, 0, 0, :e]).all()
