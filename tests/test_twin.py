"""The infinite-data twin against independent references: the population L1 and subgradient
against brute-force Monte Carlo (10^7 samples, NumPy's own generators), the twin against the
engine's large-n full-batch and minibatch runs (first order holds within Monte Carlo error), and
the csv twin against the engine's full-batch runs on the whole pool (the same numbers up to
float32 rounding, for sgd and adam under a cosine schedule)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l1jax.analysis import twin as TW
from l1jax.engine.config import config_from_dict, load_config
from l1jax.engine.sweep import run
from l1jax.engine.table import load_csv
from l1jax.study.study import SWEEPS

MC_SAMPLES, MC_CHUNK = 10_000_000, 1_000_000


def _noise(rng, cfg, m):
    """m draws of the configured noise law, from NumPy (not the engine's generator)."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return s * rng.standard_normal(m)
    if cfg.noise == "laplace":
        return rng.laplace(0.0, s, m)
    if cfg.noise == "student_t":
        return s * rng.standard_t(cfg.noise_df, m)
    wide = rng.random(m) < cfg.outlier_fraction
    return np.where(wide, 10 * s, s) * rng.standard_normal(m)


def _monte_carlo(cfg, theta, seed=0):
    """Brute-force E|r| and E sign(r) (x, 1) over MC_SAMPLES fresh samples, with standard errors."""
    rng = np.random.default_rng(seed)
    star = np.array(cfg.true_weights + (cfg.true_bias,))
    sums = np.zeros((2, 1 + len(theta)))
    for _ in range(MC_SAMPLES // MC_CHUNK):
        xd = np.c_[rng.random((MC_CHUNK, cfg.n_features)), np.ones(MC_CHUNK)]
        r = xd @ (theta - star) - _noise(rng, cfg, MC_CHUNK)
        v = np.c_[np.abs(r), np.sign(r)[:, None] * xd]
        sums += [v.sum(0), (v * v).sum(0)]
    mean = sums[0] / MC_SAMPLES
    return mean, np.sqrt((sums[1] / MC_SAMPLES - mean ** 2) / MC_SAMPLES)


@pytest.mark.parametrize("noise, d", [("gaussian", 2), ("laplace", 2), ("student_t", 2),
                                      ("contaminated", 2), ("laplace", 3), ("gaussian", 5)])
def test_population_loss_and_gradient_match_monte_carlo(noise, d):
    w = [2.0, 3.0, -1.0, 0.5, 1.0][:d]
    cfg = config_from_dict({"data": {"noise": noise, "n_features": d, "true_weights": w,
                                     "true_bias": 0.5}}).data
    pop = TW.synthetic_population(cfg)
    rng = np.random.default_rng(d)
    for theta in (np.r_[w, 0.5] + 0.05 * rng.standard_normal(d + 1), rng.standard_normal(d + 1)):
        loss, grad = TW.loss_and_grad(cfg, pop, jnp.asarray(theta, jnp.float32))
        mean, se = _monte_carlo(cfg, theta)
        got = np.r_[float(loss), np.asarray(grad)]
        assert np.all(np.abs(got - mean) < 4 * se + 2e-6), (noise, d, theta, got, mean, se)


def test_gradient_is_the_derivative_of_the_loss():
    """G = dL/dtheta exactly (the closed forms are consistent with each other)."""
    for noise in ("gaussian", "laplace", "student_t", "contaminated"):
        cfg = config_from_dict({"data": {"noise": noise}}).data
        pop = TW.synthetic_population(cfg)
        th = jnp.asarray([0.3, -1.2, 0.7], jnp.float32)
        auto = jax.grad(lambda t: TW.loss_and_grad(cfg, pop, t)[0])(th)
        np.testing.assert_allclose(np.asarray(auto), np.asarray(TW.loss_and_grad(cfg, pop, th)[1]), atol=2e-5)


def test_twin_matches_the_engine_at_large_n():
    """n = 10^5: each run's train L1 stays on its twin within sampling error (full batch), and a
    batch-10^4 run, 10 steps an epoch, matches the twin at its own step counts (adam's optax
    updates are checked exactly by the csv test)."""
    n = 100_000
    cfg = config_from_dict({"data": {"test_size": 0, "coupling": "nested"},
                            "train": {"epochs": 12, "learning_rate": [0.05],
                                      "batch_size": ["full", 10_000]},
                            "sweep": {"sizes": [n], "seeds": 8}})
    res = run(cfg)
    noise, pop = TW.population_of(cfg)
    curves = TW.twin_curves(cfg, noise, pop)
    assert list(curves.steps[:, 0, -1]) == [12, 120]
    diff = res.train_l1.astype(np.float64) - curves.loss  # [opt, batch, lr, size, seed, epoch]
    assert np.all(np.abs(diff) < 0.01), np.abs(diff).max()  # a wrong start or step count is off by > 0.05
    mean, se = diff.mean(axis=4), diff.std(axis=4, ddof=1) / np.sqrt(8)
    assert np.all(np.abs(mean) < 5 * se + 2e-4), (mean, se)
    moved = res.train_l1[..., 0] - res.train_l1[..., -1]
    assert np.all(moved.mean(axis=-1) > 0.3)  # the runs did move far along their curves


def test_csv_twin_is_full_batch_training_on_the_whole_pool():
    cfg = load_config(SWEEPS["real"])
    pool = load_csv(cfg.data, cfg.sweep.base_seed).n_train
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=15, optimizer=("sgd", "adam"),
                                       learning_rate=(0.05, 0.3), schedule="cosine"),
        sweep=dataclasses.replace(cfg.sweep, sizes=(pool,), seeds=3))
    res = run(cfg)
    noise, pop = TW.population_of(cfg)
    assert noise is None
    curves = TW.twin_curves(cfg, noise, pop)
    np.testing.assert_allclose(curves.loss, res.train_l1, rtol=2e-5, atol=2e-6)
    assert np.all(res.train_l1[..., -1] < res.train_l1[..., 0] - 0.1)  # far along the curve


def test_finite_n_terms_predict_a_small_set_the_twin_alone_misses():
    """n = 30, p = 3, full batch, 1000 seeds: the run ends about p / (4 f(0) n) = 0.063 below its
    twin in training L1 and above it in held-out L1.  The held-out prediction stays within 4 paired
    standard errors at every epoch where the twin alone ends more than 10 off; the training
    prediction closes most of the twin's gap (what is left, about 0.015, is the constant step's
    bouncing on the piecewise-linear loss of 30 samples, which the smooth theory does not see)."""
    cfg = config_from_dict({"data": {"test_size": 2000, "coupling": "nested"},
                            "train": {"epochs": 100, "learning_rate": [0.3]},
                            "sweep": {"sizes": [30], "seeds": 1000}})
    res = run(cfg)
    noise, pop = TW.population_of(cfg)
    curves = TW.twin_curves(cfg, noise, pop)
    pred = TW.finite_n_terms(cfg, curves, TW.overfitting_term(cfg, None, TW.population_minimum(noise, pop)))
    gap, z = {}, {}
    for name, v, measured in (("train", pred.train, res.train_l1), ("test", pred.test, res.test_l1),
                              ("train twin", curves.loss, res.train_l1), ("test twin", curves.loss, res.test_l1)):
        d = (measured.astype(np.float64) - v)[0, 0, 0, 0]  # [seed, epoch]
        gap[name], z[name] = d.mean(0), d.mean(0) / (d.std(0, ddof=1) / np.sqrt(d.shape[0]))
    assert np.abs(z["test"]).max() < 4 and z["test twin"][-1] > 10, (z["test"], z["test twin"][-1])
    assert z["train twin"][-1] < -10 and abs(gap["train"][-1]) < 0.4 * abs(gap["train twin"][-1]), gap


def test_finite_n_terms_clip_non_finite_responses_to_their_bounds():
    """A response term that is NaN or infinite (an unstable twin's J overflows) adds what
    np.clip(np.nan_to_num(term), bounds) adds: NaN nothing, +-inf the bound on its side; finite
    terms are clipped to the bounds a stable step keeps them in and counted in ``clipped``."""
    cfg = config_from_dict({"sweep": {"sizes": [10, 40], "seeds": 3}})
    response = np.array([np.nan, np.inf, -np.inf, -0.5, -50.0, 3.0], np.float32).reshape(2, 3, 1)
    curvature = np.array([np.inf, np.nan, -np.inf, 1.0, 90.0, -4.0], np.float32).reshape(2, 3, 1)
    shape = (1, 1, 1, 2, 3, 1)
    curves = TW.TwinCurves(np.full(shape, 1.0, np.float32), response.reshape(shape), curvature.reshape(shape),
                           np.zeros((1, 2, 1)), np.zeros((1, 1, 3), np.int32), 0, None)
    over = np.array([0.2, 0.05])
    pred = TW.finite_n_terms(cfg, curves, over)
    n, o = np.array([10.0, 40.0])[:, None, None], over[:, None, None]
    with np.errstate(invalid="ignore"):
        down = (response.astype(np.float64) + curvature / 2) / n
        up = curvature.astype(np.float64) / (2 * n)
    np.testing.assert_array_equal(pred.train[0, 0, 0], (1.0 + np.clip(np.nan_to_num(down), -o, 0.0)).astype(np.float32))
    np.testing.assert_array_equal(pred.test[0, 0, 0], (1.0 + np.clip(np.nan_to_num(up), 0.0, 4 * o)).astype(np.float32))
    assert pred.clipped[0, 0, 0].ravel().tolist() == [True, True, True, False, True, True]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_shared_trajectories_equal_each_size_alone(schedule):
    """Runs share a twin trajectory where their start and (cosine) total steps agree: the sweep's
    curves equal each size's and batch mode's computed alone, to float32 rounding."""
    cfg = config_from_dict({"data": {"coupling": "nested"},
                            "train": {"epochs": 6, "learning_rate": [0.05, 0.2], "schedule": schedule,
                                      "batch_size": ["full", 32]},
                            "sweep": {"sizes": [64, 256], "seeds": 3}})
    noise, pop = TW.population_of(cfg)
    both = TW.twin_curves(cfg, noise, pop)
    for b, batch in enumerate(cfg.train.batch_size):
        for s, size in enumerate(cfg.sweep.sizes):
            one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=(batch,)),
                                      sweep=dataclasses.replace(cfg.sweep, sizes=(size,)))
            alone = TW.twin_curves(one, noise, pop)
            for got, want in zip(both[:3], alone[:3]):
                np.testing.assert_allclose(got[:, b:b + 1, :, s:s + 1], want, rtol=1e-5, atol=1e-6)


def test_split_over_devices_or_side_by_side_change_only_rounding():
    """The twins on the test's four CPU devices equal one device's to float32 rounding: one job's
    five trajectories split over them (shares of 2, 2 and 1 plus a copy), and two learning rates'
    jobs run side by side, on a device each of two or on two each of four, equal to each rate's
    twins alone."""
    def cfg(rates):
        return config_from_dict({"data": {"coupling": "nested"},
                                 "train": {"epochs": 20, "learning_rate": rates, "batch_size": ["full", 16]},
                                 "sweep": {"sizes": [64], "seeds": 5}})
    noise, pop = TW.population_of(cfg([0.05]))
    assert len(jax.local_devices()) == 4
    alone = [TW.twin_curves(cfg([r]), noise, pop, devices=jax.local_devices()[:1]) for r in (0.05, 0.5)]
    split = TW.twin_curves(cfg([0.05]), noise, pop)
    for got, want in zip(split[:3], alone[0][:3]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for devices in (2, 4):  # one device a job (``place``), or two (``device_groups``)
        both = TW.twin_curves(cfg([0.05, 0.5]), noise, pop, devices=jax.local_devices()[:devices])
        for h, one in enumerate(alone):
            for got, want in zip(both[:3], one[:3]):
                np.testing.assert_allclose(got[:, :, h:h + 1], want, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(both.tail_from[:, h:h + 1], one.tail_from)
        assert float(np.abs(both.loss[..., -1] - both.loss[..., 0]).min()) > 0.05  # the twins moved


def test_place_runs_the_longest_jobs_first_on_the_least_loaded_device():
    assert TW.place([1.0, 5.0, 4.0, 3.0, 3.0], 2) == [1, 0, 1, 1, 0]  # loads 8 and 8 (5 + 3, 4 + 3 + 1)
    assert TW.place([2.0, 1.0], 4) == [0, 1]
    assert TW.device_groups([2.0, 1.0], list("abcde")) == [["a", "b", "c"], ["d", "e"]]
    assert TW.device_groups([1.0, 5.0, 4.0], list("ab")) == [["b"], ["a"], ["b"]]


def test_padded_points_change_only_rounding():
    """The 36 quadrature points and the 40, padded with weight 0, that the twin steps on give the
    same twins to float32 rounding."""
    cfg = config_from_dict({"data": {"coupling": "nested"}, "sweep": {"sizes": [64], "seeds": 5}})
    noise, pop = TW.population_of(cfg)
    assert pop.x.shape[0] == 36 and TW.lanes(pop).x.shape[0] == 40
    theta0 = TW.run_starts(cfg, 3)[0]
    args = (jnp.asarray(theta0), jnp.asarray([0.05, 0.5]), jnp.full(5, 80, jnp.int32), jnp.arange(0, 81, 10, dtype=jnp.int32))
    padded = TW.simulate(TW.lanes(pop), *args, optimizer="sgd", schedule="constant", noise=noise)
    plain = TW.simulate(pop, *args, optimizer="sgd", schedule="constant", noise=noise)
    for got, want in zip(padded, plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(np.abs(np.asarray(plain[0])[-1] - np.asarray(plain[0])[0]).min()) > 0.05  # the twins moved


@pytest.mark.parametrize("noise", ["gaussian", "student_t"])
def test_closed_form_tail_matches_stepping_to_the_end(noise):
    """Past its hand-off the closed-form tail gives every record within float32 rounding of the
    loss and 0.1 TAIL_TOL (relative) of the response terms that stepping on to the end gives; at an
    unstable rate (lr h > 2 in H*'s largest mode) it never takes over."""
    cfg = config_from_dict({"data": {"noise": noise}, "sweep": {"sizes": [100], "seeds": 6}})
    noise_cfg, pop = TW.population_of(cfg)
    pop, tail = TW.lanes(pop), TW.tail_of(cfg, noise_cfg, pop)
    assert 1.0 * tail.vals.max() < 2 < 2.0 * tail.vals.max()
    theta0, at = jnp.asarray(TW.run_starts(cfg, 3)[0]), jnp.arange(0, 3001, 50, dtype=jnp.int32)
    for lr in (0.3, 1.0, 2.0):
        args = (pop, theta0, jnp.asarray([lr]), jnp.full(6, 3000, jnp.int32), at, "sgd", "constant", noise_cfg)
        closed, stepped = TW.simulate(*args, tail), TW.simulate(*args)
        since = np.asarray(closed[3])
        assert ((0 < since) & (since < 1000)).all() if lr < 2 else (since == -1).all(), (lr, since)
        np.testing.assert_allclose(closed[0], stepped[0], rtol=0, atol=3e-7)
        for got, want in zip(closed[1:3], stepped[1:3]):
            # the bound is 2 TAIL_TOL of their size; measured 1.4e-4 (TAIL_TOL 1e-2) and 3.5e-6 (1e-4)
            np.testing.assert_allclose(got, want, rtol=0, atol=0.1 * TW.TAIL_TOL * float(np.abs(want).max()))
    laplace = config_from_dict({"data": {"noise": "laplace"}})
    assert TW.tail_of(laplace, *TW.population_of(laplace)) is None  # a kink at 0: no quadratic model


def test_each_twin_hands_over_on_its_own():
    """A twin's hand-off, and so its numbers, do not depend on the twins beside it: five split over
    the test's four CPU devices equal one device's to float32 rounding, each handed over."""
    cfg = config_from_dict({"data": {"coupling": "nested"},
                            "train": {"epochs": 100, "learning_rate": [1.0], "batch_size": [16]},
                            "sweep": {"sizes": [64], "seeds": 5}})
    noise, pop = TW.population_of(cfg)
    split = TW.twin_curves(cfg, noise, pop)
    one = TW.twin_curves(cfg, noise, pop, devices=jax.local_devices()[:1])
    assert (split.tail_from > 0).all() and (split.tail_from < split.stepped).all()
    np.testing.assert_array_equal(split.tail_from, one.tail_from)
    for got, want in zip(split[:3], one[:3]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("p", [3, 11])
def test_starts_are_the_engines_draws(p):
    """Starts drawn in padded compiled chunks equal ``initial_theta``'s draws op by op, bit for bit."""
    from l1jax.engine import data as D
    from l1jax.engine.train import initial_theta
    for coupling in ("nested", "independent"):
        cfg = config_from_dict({"data": {"coupling": coupling}, "sweep": {"sizes": [30, 100, 1000], "seeds": 700}})
        size = jnp.asarray(np.repeat(cfg.sweep.sizes, 700), jnp.int32)
        rep = jnp.asarray(np.tile(np.arange(700), 3), jnp.int32)
        keys = D.streams(jnp.uint32(cfg.sweep.base_seed), rep, size, coupling == "nested")
        want = np.asarray(initial_theta(cfg.train.init, keys, 1, p)[:, 0]).reshape(3, 700, p)
        np.testing.assert_array_equal(TW.run_starts(cfg, p), want)


def test_integration_error_is_the_largest_change_at_the_starts():
    """The padded program's error equals the largest |L| change at the first 256 starts and theta*."""
    cfg = config_from_dict({"sweep": {"sizes": [100, 1000], "seeds": 200}})
    noise, pop = TW.population_of(cfg)
    th = np.r_[TW.run_starts(cfg, 3).reshape(-1, 3)[:256], [[2.0, 3.0, 0.0]]]
    fine = TW.synthetic_population(noise, refine=2)
    want = max(abs(float(TW.loss_and_grad(noise, pop, jnp.asarray(t, jnp.float32))[0])
                   - float(TW.loss_and_grad(noise, fine, jnp.asarray(t, jnp.float32))[0])) for t in th)
    assert want > 0 and abs(TW.integration_error(cfg, noise, pop) - want) < 2.5e-7, want


def test_stopwatch_counts_compiling_once_and_the_rest_as_running():
    f = jax.jit(lambda v: jnp.cumsum(jnp.sin(v) * 3.0) ** 2)
    with TW.stopwatch() as spent:
        f(jnp.ones(1234)).block_until_ready()  # a shape not compiled before: traced and compiled here
    with TW.stopwatch() as again:
        f(jnp.ones(1234)).block_until_ready()
    assert spent[0] > 0 and spent[1] >= 0 and again[0] == 0 and again[1] > 0, (spent, again)
