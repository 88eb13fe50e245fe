"""``l1jax.lad`` and the certified sweep path on data that defeats a float32 simplex: badly scaled
columns, integer data, heavy ties, repeated rows, 20,000 rows; each against HiGHS."""

import jax.numpy as jnp
import numpy as np
import pytest

from l1jax import ConfigError, lad
from l1jax.analysis import optimum as O
from tests.test_optimum import loss64, lp_optimum, pack


def badly_scaled(rng: np.random.Generator, n: int, cond: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw columns of scales 1/c and c (c = sqrt(cond)), the small one off-centre."""
    c = np.sqrt(cond)
    z = rng.normal(size=(n, 2))
    x = z * [1 / c, c] + [3 / c, 0.0]
    return x, z @ [1.0, -2.0] + rng.standard_t(3, n)


def integers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 10, (n, 2))
    return x, x @ [2, -1] + rng.integers(-3, 4, n)


def mostly_zero(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """67% of y exactly 0, the rest small counts; x on a 4 x 4 grid: ties everywhere."""
    x = rng.integers(0, 4, (n, 2))
    return x, np.where(rng.uniform(size=n) < 0.67, 0, rng.poisson(2 + x[:, 0]))


def repeated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n / 4 distinct rows, each 4 times."""
    x = rng.uniform(size=(n // 4, 2))
    return np.repeat(x, 4, axis=0), np.repeat(x @ [1.0, 2.0] + rng.laplace(size=n // 4), 4)


def counts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts on three integer features (two small codes and an age)."""
    x = np.column_stack([rng.integers(0, 10, (n, 2)), rng.integers(18, 90, n)])
    return x, rng.poisson(np.exp(x @ [0.1, -0.1, 0.01]))


def float32(case: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return case[0].astype(np.float32), case[1].astype(np.float32)


CASES = {"cond 1e6": lambda rng: badly_scaled(rng, 300, 1e6),
         "cond 1e9": lambda rng: badly_scaled(rng, 300, 1e9),
         "integer x and y": lambda rng: integers(rng, 300),
         "67% of y = 0": lambda rng: mostly_zero(rng, 300),
         "repeated rows": lambda rng: repeated(rng, 400),
         "20000 rows of counts": lambda rng: counts(rng, 20000)}


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Every case in float32 (as the study's data), with its HiGHS optimum (on those values;
    interior point with crossover: HiGHS's dual simplex takes 15 s on the 20000 tied counts)."""
    rng = np.random.default_rng(12)
    out = {}
    for name, make in CASES.items():
        x, y = float32(make(rng))
        out[name] = x, y, lp_optimum(x, y, method="highs-ipm")
    return out


@pytest.mark.parametrize("name", CASES)
def test_lad_matches_linprog_and_is_certified(cases, name):
    x, y, best = cases[name]
    fit = lad(x, y)
    assert fit.certified and fit.theta.shape == (x.shape[1] + 1,)
    assert abs(fit.loss - best) / best <= 1e-6
    np.testing.assert_allclose(loss64(x, y, fit.theta), fit.loss, rtol=1e-9)


def test_badly_scaled_cases_have_their_condition_numbers(cases):
    for name, cond in (("cond 1e6", 1e6), ("cond 1e9", 1e9)):
        x = cases[name][0].astype(np.float64)
        assert cond / 10 < np.linalg.cond(np.column_stack([x, np.ones(len(x))])) < 10 * cond


def test_numpy_and_jax_inputs_agree(cases):
    x, y, _ = cases["cond 1e6"]
    a, b = lad(x, y), lad(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.loss == b.loss and a.certified == b.certified


@pytest.mark.parametrize("x, y, message", [
    (np.ones(3), np.ones(3), "X must be 2-D"),
    (np.ones((3, 1)), np.ones(4), "one value per row"),
    (np.ones((3, 1)), np.ones((3, 1)), "one value per row"),
    (np.array([[0.0], [np.nan], [1.0]]), np.ones(3), "finite"),
    (np.arange(3.0)[:, None], np.array([0.0, np.inf, 1.0]), "finite"),
    (np.ones((2, 2)), np.ones(2), "at least 3 rows"),
    (np.column_stack([np.arange(5.0), np.ones(5)]), np.arange(5.0), "rank < 3"),
    (np.array([["a"], ["b"]]), np.ones(2), "real numbers")])
def test_bad_input_is_a_one_line_error(x, y, message):
    with pytest.raises(ConfigError, match=message) as err:
        lad(x, y)
    assert "\n" not in str(err.value)


def _host_and_basis(x: np.ndarray, y: np.ndarray) -> tuple[O._Host, np.ndarray]:
    """One dataset in stage 2's float64 layout and the basis [1, p] of its exact optimum."""
    h = O._host(O.Packed(x.T[:, None], y[None], np.array([len(y)]), np.zeros(1, np.int64)), 1)
    basis, _ = O._repair(h.xd[0], h.y[0], None)
    return h, basis[None]


def test_certificate_rejects_a_fit_just_off_the_optimum(cases):
    x, y, best = cases["cond 1e6"]
    h, basis = _host_and_basis(x.astype(np.float64), y.astype(np.float64))
    xb, regular, theta = O._basis_solve(h, basis)
    total, certified = O._certify(h, theta, basis, regular, xb)
    assert certified.all() and abs(total[0] / len(y) - best) / best < 1e-9
    off = theta + np.array([[0.0, 1e-6, 0.0]])  # one weight moved by 1e-6 of its (unit) scale
    total_off, certified_off = O._certify(h, off, basis, regular, xb)
    assert total_off[0] > total[0] and not certified_off.any()


def test_uncertified_is_reported_not_hidden():
    """A dataset whose design is rank deficient (a constant column, as a csv subsample can
    have) has no vertex: stage 2 flags it, with a finite fit, and certifies its neighbour."""
    rng = np.random.default_rng(3)
    good = float32(integers(rng, 40))
    bad = good[0].copy(), good[1]
    bad[0][:, 1] = 5.0
    data = pack([good, bad], 16)
    p = 3
    basis = np.array([[0, 1, 2], [48, 49, 50]])  # slots of rows 0-2 of each (the second starts at tile 3)
    fit = O.finish(data, 2, basis, np.zeros((2, p), np.float32))
    assert fit.certified.tolist() == [True, False]
    assert np.isfinite(fit.theta).all() and np.isfinite(fit.loss).all()
    np.testing.assert_allclose(fit.loss[0], lad(*good).loss, rtol=1e-12)


def test_sweep_path_on_hard_data():
    """Stage 1 (JAX, float32) and stage 2 on several hard datasets packed together, as a sweep
    solves them: certified and equal to HiGHS (stage 2 repairs the tied ones)."""
    rng = np.random.default_rng(5)
    datasets = [float32(make(rng)) for make in (lambda r: badly_scaled(r, 150, 1e9),
                                                lambda r: integers(r, 200),
                                                lambda r: mostly_zero(r, 250),
                                                lambda r: repeated(r, 120))]
    fit = O.solve(pack(datasets, 64), len(datasets))
    best = np.array([lp_optimum(x, y) for x, y in datasets])
    assert fit.certified.all()
    assert (np.abs(fit.loss - best) / best).max() <= 1e-6
