"""The theory of the initial rate against the engine, in the small-lr regime where first order
holds: the rate per epoch at each size, and the paired small - large difference, within three
combined Monte Carlo standard errors; the noise CDFs against scipy; the pool terms against a
direct computation."""

import numpy as np
import pytest
from scipy import stats as ss

import jax.numpy as jnp

from l1jax.analysis import rate_theory as RT
from l1jax.engine.config import config_from_dict
from l1jax.engine.sweep import run
from l1jax.engine.table import Table

LR, K, SIZES = 5e-4, 5, (20, 200)


@pytest.mark.parametrize("noise, ref", [
    ("gaussian", ss.norm.cdf), ("laplace", ss.laplace.cdf), ("student_t", lambda t: ss.t.cdf(t, 3)),
    ("contaminated", lambda t: 0.9 * ss.norm.cdf(t) + 0.1 * ss.norm.cdf(t / 10))])
def test_noise_cdf(noise, ref):
    t = np.linspace(-40, 40, 2001)
    got = RT.noise_cdf(config_from_dict({"data": {"noise": noise}}).data, jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), ref(t), atol=3e-7)


@pytest.mark.parametrize("features, noise", [(2, "gaussian"), (10, "laplace")])
def test_first_order_rate_matches_the_engine(features, noise):
    weights = [2.0, 3.0] if features == 2 else [1.0] * features
    cfg = config_from_dict({"data": {"n_features": features, "true_weights": weights, "noise": noise,
                                     "test_size": 0, "coupling": "nested"},
                            "train": {"epochs": K, "learning_rate": [LR], "batch_size": ["full", 8]},
                            "sweep": {"sizes": list(SIZES), "seeds": 3000}})
    terms = RT.synthetic_terms(cfg)
    train = run(cfg).train_l1.astype(np.float64)
    rate = (train[..., 0] - train[..., K]) / K  # [1, batch, 1, size, seed]
    for b, batch in enumerate(("full", 8)):
        for s, n in enumerate(SIZES):
            r, want = rate[0, b, 0, s], RT.first_order_rate(terms, np.array(n), batch, LR)
            steps = RT.steps_per_epoch(np.array(n), batch) * LR
            se = np.hypot(r.std(ddof=1) / np.sqrt(r.size), steps * terms.grad2_se)
            assert abs(r.mean() - want) < 3 * se, (batch, n, r.mean(), want, se)
        d = rate[0, b, 0, 0] - rate[0, b, 0, 1]  # paired: same data prefix and start
        want = np.subtract(*(RT.first_order_rate(terms, np.array(n), batch, LR) for n in SIZES))
        assert abs(d.mean() - want) < 3 * d.std(ddof=1) / np.sqrt(d.size) + 0.05 * abs(want), (batch, d.mean(), want)


def test_pool_terms_are_the_pool_moments():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.laplace(size=500)).astype(np.float32)
    cfg = config_from_dict({"train": {"init": "zeros"}})
    t = RT.pool_terms(cfg, Table(x, y, x[:0], y[:0]))
    xd = np.c_[x, np.ones(500)].astype(np.float64)
    s = np.sign(-y.astype(np.float64))[:, None] * xd  # theta = 0: r = -y
    g = s.mean(0)
    assert t.grad2 == pytest.approx(g @ g, rel=1e-5)
    assert t.trace == pytest.approx(np.mean(np.sum(s ** 2, 1)) - g @ g, rel=1e-5)
    assert t.loss0 == pytest.approx(np.abs(y).mean(), rel=1e-5)
    n = 100  # without replacement: E||g_n||^2 from every subsample's exact variance
    assert RT.grad2_at(t, np.array(n)) == pytest.approx(g @ g + np.var(s, 0).sum() / n * (500 - n) / 499, rel=1e-4)
