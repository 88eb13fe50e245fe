"""The engine's samplers against scipy's distributions, and its epoch shuffles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from l1jax.engine.config import DataConfig
from l1jax.engine.data import CONTAMINATION_SCALE, synthetic_rows

N = 20000


def _draw(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    keys = jax.random.split(jax.random.key(11), 4)
    j = jnp.broadcast_to(jnp.arange(N // 4, dtype=jnp.int32), (4, N // 4))
    x, y = jax.jit(lambda k, j: synthetic_rows(k, j, cfg))(keys, j)
    x, y = np.asarray(x).reshape(-1, cfg.n_features), np.asarray(y).reshape(-1)
    return x, y - x @ np.asarray(cfg.true_weights) - cfg.true_bias


def _contaminated_cdf(v, frac=0.2, s=1.5):
    return (1 - frac) * stats.norm.cdf(v, scale=s) + frac * stats.norm.cdf(v, scale=CONTAMINATION_SCALE * s)


@pytest.mark.parametrize("cfg,cdf", [
    (DataConfig(noise="gaussian", noise_scale=1.5), stats.norm(scale=1.5).cdf),
    (DataConfig(noise="laplace", noise_scale=1.5), stats.laplace(scale=1.5).cdf),
    (DataConfig(noise="student_t", noise_scale=1.5, noise_df=3.0), stats.t(3.0, scale=1.5).cdf),
    (DataConfig(noise="contaminated", noise_scale=1.5, outlier_fraction=0.2), _contaminated_cdf),
], ids=["gaussian", "laplace", "student_t", "contaminated"])
def test_noise_and_features_follow_their_distributions(cfg, cdf):
    x, eps = _draw(cfg)
    assert stats.kstest(eps, cdf).pvalue > 1e-3
    assert stats.kstest(x.ravel(), "uniform").pvalue > 1e-3
    assert 0.0 < x.min() and x.max() < 1.0



@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 33, 100, 1000, 5161])
def test_epoch_order_is_a_permutation_that_changes_each_epoch(n):
    from l1jax.engine.data import epoch_permutation

    key = jax.random.key(3)
    orders = [np.asarray(epoch_permutation(key, e, n)) for e in range(3)]
    for o in orders:
        assert sorted(o.tolist()) == list(range(n))
    if n >= 8:
        assert not (orders[0] == orders[1]).all() and not (orders[1] == orders[2]).all()
        # positions are not left in place: about 1 fixed point in expectation
        assert (orders[0] == np.arange(n)).sum() <= 6


def test_feistel_domain_is_the_fewest_bits_covering_n():
    """2^(a + b) >= n with a + b minimal (at least 2), also just above 2^24 where a float32
    log2 rounds down and the cycle walk never ends."""
    from l1jax.engine.data import _split_bits

    n = np.array([1, 2, 3, 4, 5, 31, 32, 33, 2**24, 2**24 + 3, 2**25 + 1, 2**30], np.int32)
    a, b = (np.asarray(v, np.int64) for v in _split_bits(jnp.asarray(n)))
    k = a + b
    assert (2 ** k >= n).all() and ((k == 2) | (2 ** (k - 1) < n)).all()
    assert (np.abs(a - b) <= 1).all()
