"""The engine's samplers against scipy's distributions, and its epoch shuffles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from l1jax.engine.config import DataConfig
from l1jax.engine import data as D
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


def test_shuffle_grid_covers_n_with_a_small_excess_and_both_sides_mixing():
    """a b >= n with sides near sqrt(n) (at least 2 once n > 1, at most 2^16) and the smallest
    excess a b - n among them: 0 where n factors near its square root, a few otherwise."""
    from l1jax.engine.data import MAX_SIDE, grid_sides

    for n in [1, 2, 3, 4, 5, 22, 31, 32, 33, 37, 1000, 32768, 20643, 2**24 + 3, 2**31 - 1]:
        a, b = grid_sides(n)
        root = np.sqrt(n)
        assert a * b >= n and b == -(-n // a) and max(a, b) <= MAX_SIDE
        assert n == 1 or (a >= 2 and a >= root / 2 - 1)
        assert a * b - n < 30
    assert grid_sides(32768) == (128, 256) and grid_sides(1000) == (25, 40)


def _mix_reference(x: int) -> int:
    mask = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & mask
    x ^= x >> 15
    x = (x * 0x846CA68B) & mask
    return x ^ (x >> 16)


@pytest.mark.parametrize("n", [2, 3, 5, 37, 211, 5786])
def test_epoch_order_equals_plain_cycle_walking(n):
    """The tabulated walks give exactly the permutation of walking each position's cycle one
    network pass at a time (Python integers, written from the description, not the code)."""
    from l1jax.engine.data import FEISTEL_ROUNDS, epoch_permutation, grid_sides, round_keys

    key = jax.random.key(5)
    a, b = grid_sides(n)
    for e in range(2):
        k = [int(v) for v in np.asarray(round_keys(key, e))]

        def network(v: int) -> int:
            left, right, m, m_next = v // b, v % b, a, b
            for r in range(FEISTEL_ROUNDS):
                f = ((_mix_reference(right ^ k[r]) >> 16) * m) >> 16
                left, right, m, m_next = right, (left + f) % m, m_next, m
            return left * b + right

        want = []
        for p in range(n):
            v = network(p)
            while v >= n:
                v = network(v)
            want.append(v)
        assert np.asarray(epoch_permutation(key, e, n)).tolist() == want


@pytest.mark.parametrize("n", [37, 100])
def test_epoch_orders_look_uniform(n):
    """Over 4000 epochs: where sample 0 is visited, which sample comes first, and the difference
    between the first two samples (mod n) are each uniform (chi-square), as for a random order."""
    from l1jax.engine.data import epoch_permutation

    key = jax.random.key(11)
    perms = np.asarray(jax.vmap(lambda e: epoch_permutation(key, e, n))(jnp.arange(4000)))
    for v, support in ((perms[:, 0], n), (np.argmax(perms == 0, axis=1), n),
                       ((perms[:, 1] - perms[:, 0]) % n - 1, n - 1)):
        assert stats.chisquare(np.bincount(v, minlength=support)).pvalue > 1e-3


def test_sample_bits_are_jax_random_bits_of_the_folded_key():
    """data.sample_bits hashes whole arrays; it must give jax.random's bits and fold_in keys."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(3))
    j = jnp.asarray([[0, 1, 7, 2**31 - 1]] * 3, jnp.int32)
    bits, k = D.sample_bits(keys, j, 4)
    folded = jax.vmap(jax.vmap(jax.random.fold_in, (None, 0)), (0, 0))(keys, j)
    want = jax.vmap(jax.vmap(lambda kk: jax.random.bits(kk, (4,), jnp.uint32)))(folded)
    np.testing.assert_array_equal(bits, want)
    np.testing.assert_array_equal(k, jax.random.key_data(folded))
