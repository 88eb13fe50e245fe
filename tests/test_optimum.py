"""The exact LAD optimum of packed, padded datasets (stage 1 alone and certified) against the
linear program solved by HiGHS."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import linprog

from l1jax.engine.data import Packed
from l1jax.analysis.optimum import lad, lad_optimum, solve

TILE = 64
NOISES = ("gaussian", "student_t2", "contaminated")
# d = 5 starts at n = 10, not 7: with n = p + 1 = 7 samples L* is a single residual, and its
# float32 rounding of stage 1's fit alone reaches ~1e-5 relative there
SIZES = {2: (7, 50, 300, 2000), 5: (10, 50, 300, 2000)}


def make_dataset(rng: np.random.Generator, n: int, d: int,
                 noise: str) -> tuple[np.ndarray, np.ndarray]:
    """x ~ U(0,1)^d, y = x.w + 0.5 + noise, all float32."""
    x = rng.uniform(size=(n, d)).astype(np.float32)
    e = {"gaussian": lambda: rng.normal(size=n),
         "student_t2": lambda: rng.standard_t(2, size=n),
         "contaminated": lambda: np.where(rng.uniform(size=n) < 0.1, 10.0, 1.0)
         * rng.normal(size=n)}[noise]()
    return x, (x @ rng.normal(size=d) + 0.5 + e).astype(np.float32)


def pack(datasets: list[tuple[np.ndarray, np.ndarray]], tile: int) -> Packed:
    """Dataset i takes ceil(n_i / tile) tiles; the last one is zero-padded."""
    xs, ys, counts, owner = [], [], [], []
    for i, (x, y) in enumerate(datasets):
        n, d = x.shape
        tiles = -(-n // tile)
        xp = np.zeros((tiles * tile, d), np.float32)
        yp = np.zeros(tiles * tile, np.float32)
        xp[:n], yp[:n] = x, y
        xs.append(xp.reshape(tiles, tile, d))
        ys.append(yp.reshape(tiles, tile))
        counts += [min(tile, n - t * tile) for t in range(tiles)]
        owner += [i] * tiles
    return Packed(jnp.asarray(np.moveaxis(np.concatenate(xs), -1, 0)), jnp.asarray(np.concatenate(ys)),
                  jnp.asarray(np.array(counts, np.int32)), jnp.asarray(np.array(owner, np.int32)))


def lp_optimum(x: np.ndarray, y: np.ndarray, method: str = "highs") -> float:
    """min mean |Xw + b - y| as the LP min sum(u+ + u-), Xw + b + u+ - u- = y, u >= 0 (float64)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n, d = x.shape
    eye = sparse.identity(n, format="csr")
    a_eq = sparse.hstack([sparse.csr_matrix(np.hstack([x, np.ones((n, 1))])), eye, -eye])
    c = np.concatenate([np.zeros(d + 1), np.ones(2 * n)])
    bounds = [(None, None)] * (d + 1) + [(0, None)] * (2 * n)
    res = linprog(c, A_eq=a_eq, b_eq=y, bounds=bounds, method=method)
    assert res.status == 0
    return res.fun / n


def loss64(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    """Mean |x.w + b - y| evaluated in float64."""
    theta = np.asarray(theta, np.float64)
    return float(np.mean(np.abs(x.astype(np.float64) @ theta[:-1] + theta[-1] - y)))


@pytest.fixture(scope="module", params=[2, 5])
def solved(request):
    """Mixed sizes and noises of one d, packed together and solved in one call: stage 1 alone
    (float32 theta and L*) and both stages (certified float64)."""
    d = request.param
    rng = np.random.default_rng(d)
    datasets = [make_dataset(rng, n, d, noise) for n in SIZES[d] for noise in NOISES]
    data = pack(datasets, TILE)
    theta, loss = lad_optimum(data, len(datasets))
    return datasets, np.asarray(theta), np.asarray(loss), solve(data, len(datasets))


def test_loss_matches_linprog(solved):
    datasets, _, loss, fit = solved
    best = np.array([lp_optimum(x, y) for x, y in datasets])
    assert (np.abs(loss - best) / best).max() < 1e-6  # stage 1 alone, on the study's kind of data
    assert fit.certified.all()
    assert (np.abs(fit.loss - best) / best).max() < 1e-6


def test_theta_attains_loss(solved):
    datasets, theta, loss, fit = solved
    for i, (x, y) in enumerate(datasets):
        n, d = x.shape
        # stage 1's L* is the exact vertex's loss; float32 theta leaves its p interpolated
        # residuals at rounding level (~eps * (|x.w| + |b| + |y|)) instead of 0
        scale = np.abs(x) @ np.abs(theta[i, :-1]) + abs(theta[i, -1]) + np.abs(y)
        tol = 1e-6 * loss[i] + (d + 1) * 4 * np.finfo(np.float32).eps * scale.max() / n
        assert abs(loss64(x, y, theta[i]) - loss[i]) <= tol
        np.testing.assert_allclose(loss64(x, y, fit.theta[i]), fit.loss[i], rtol=1e-12)


@pytest.mark.parametrize("solved", [2], indirect=True)
def test_padding_and_packing_change_nothing(solved):
    *_, fit = solved
    x, y = solved[0][5]  # n = 50: one tile with 14 padding slots, packed among other datasets
    alone = lad(x, y)  # alone, unpadded, without stage 1
    np.testing.assert_allclose(alone.loss, fit.loss[5], rtol=1e-12)
    np.testing.assert_allclose(alone.theta, fit.theta[5], rtol=1e-9, atol=1e-12)
    assert alone.theta.shape == (x.shape[1] + 1,)


def test_exact_optima_in_chunks_equal_one_call():
    from l1jax.analysis.optima import exact_optima
    from tests.helpers import small_config

    cfg = small_config(sweep={"sizes": [20, 70], "seeds": 3})
    whole, chunked = exact_optima(cfg), exact_optima(cfg, memory_budget=1)  # one replicate a chunk
    assert whole.lstar.shape == chunked.lstar.shape == whole.certified.shape == (2, 3)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert np.isfinite(whole.test_l1).all() and whole.certified.all()


def test_datasets_stage_1_leaves_moving_are_finished_exactly():
    """128 datasets (n = 1000, three noise laws): stage 1 stops once at most 128 / HOST_FINISH = 2
    still move, here with one more than 50% above its optimum, and stage 2 finishes them, so every
    certified L* is HiGHS's."""
    from l1jax.analysis.optimum import HOST_FINISH, finish, lad_vertex
    rng = np.random.default_rng(7)
    datasets = [make_dataset(rng, 1000, 2, noise) for noise in NOISES for _ in range(43)][:128]
    assert len(datasets) // HOST_FINISH == 2
    data = pack(datasets, 256)
    basis, theta, stage1 = lad_vertex(data, len(datasets))
    fit = finish(data, len(datasets), basis, theta)
    best = np.array([lp_optimum(x, y) for x, y in datasets])
    assert fit.certified.all() and (np.abs(fit.loss - best) / best).max() < 1e-9
    assert (np.asarray(stage1, np.float64) > best * 1.1).any()  # the early stop left work
