"""Verdict rules on synthetic cases whose answer is known."""

import numpy as np
import pytest

from l1jax.analysis import claims as C
from l1jax.analysis.analyze import Analysis
from l1jax.analysis.optima import Optima
from l1jax.analysis.metrics import RunMetrics
from l1jax.engine.results import Results
from tests.helpers import small_config

SEEDS = 60


def fake(batch=("full",), lrs=(0.1,), sizes=(10, 1000), coupling="nested", **metric):
    """An Analysis whose metrics are the given arrays [optimizer=1, batch, lr, size, seed]."""
    cfg = small_config(train={"batch_size": list(batch), "learning_rate": list(lrs)},
                       sweep={"sizes": list(sizes), "seeds": SEEDS}, data={"coupling": coupling})
    shape = (1, len(batch), len(lrs), len(sizes), SEEDS)
    nan = np.full(shape, np.nan)
    arrays = {"train_l1": nan[..., None], "test_l1": nan[..., None], "param_error": nan[..., None],
              "theta": nan[..., None], "diverged_epoch": np.full(shape, -1)}
    m = RunMetrics(**{f: np.broadcast_to(metric.get(f, nan), shape) for f in RunMetrics._fields})
    return Analysis(Results(cfg, arrays), Optima(nan, nan, nan), m, None, 5, None, None)


rng = np.random.default_rng(0)


def by_size(small, large, noise=0.05, shape=(1, 1, 1)):
    """Metric whose smallest size has mean ``small`` and largest ``large`` (per seed noise)."""
    v = np.empty(shape + (2, SEEDS))
    v[..., 0, :] = small + noise * rng.standard_normal(shape + (SEEDS,))
    v[..., 1, :] = large + noise * rng.standard_normal(shape + (SEEDS,))
    return v


def test_direction_and_settle():
    assert C.direction(C.Estimate(1.0, 0.5, 1.5), 1.0) == "greater"
    assert C.direction(C.Estimate(-1.0, -1.5, -0.5), 1.0) == "less"
    assert C.direction(C.Estimate(0.001, -0.01, 0.02), 1.0) == "equal"
    assert C.direction(C.Estimate(0.3, -0.5, 1.1), 1.0) == "unclear"
    assert C.direction(C.Estimate(0.01, 0.005, 0.015), 1.0) == "equal"  # real but immaterial
    ev = lambda *o: [C.Evidence(f"s{i}", "q", C.Estimate(0, 0, 0), x) for i, x in enumerate(o)]
    assert C.settle(ev(C.SUPPORTED, C.SUPPORTED))[0] == C.SUPPORTED
    assert C.settle(ev(C.CONTRADICTED, C.INCONCLUSIVE))[0] == C.CONTRADICTED
    verdict, detail, counts = C.settle(ev(C.SUPPORTED, C.CONTRADICTED))
    assert counts == "supported 1/2, contradicted 1/2"
    assert verdict == C.DEPENDS and "s0" in detail and "s1" in detail
    assert C.settle(ev(C.INCONCLUSIVE))[0] == C.INCONCLUSIVE


@pytest.mark.parametrize("coupling", ["nested", "independent"])
@pytest.mark.parametrize("small,large,verdict", [
    (2.0, 1.0, C.SUPPORTED),  # smaller is faster
    (1.0, 1.0, C.CONTRADICTED),  # no difference
    (1.0, 2.0, C.CONTRADICTED),  # larger is faster
])
def test_faster_small(coupling, small, large, verdict):
    a = fake(coupling=coupling, rate_epoch=by_size(small, large))
    assert C.claim_faster_small(a).verdict == verdict


def test_faster_small_depends_on_the_batch_mode():
    rate = np.concatenate([by_size(2.0, 1.0), by_size(1.0, 2.0)], axis=1)
    c = C.claim_faster_small(fake(batch=("full", 8), rate_epoch=rate))
    assert c.verdict == C.DEPENDS
    assert "full batch" in c.detail and "batch 8" in c.detail


def test_too_noisy_is_inconclusive():
    a = fake(rate_epoch=by_size(1.1, 1.0, noise=5.0))
    assert C.claim_faster_small(a).verdict == C.INCONCLUSIVE


def test_slower_steadier_needs_both_parts():
    steady_slow = by_size(2.0, 1.0, noise=0.0)
    steady_slow[..., 0, :] += 0.5 * rng.standard_normal(SEEDS)  # small: spread 0.5
    steady_slow[..., 1, :] += 0.05 * rng.standard_normal(SEEDS)  # large: spread 0.05
    assert C.claim_slower_steadier_large(fake(rate_epoch=steady_slow)).verdict == C.SUPPORTED
    slow_not_steadier = by_size(2.0, 1.0, noise=0.0)
    slow_not_steadier[..., 0, :] += 0.05 * rng.standard_normal(SEEDS)
    slow_not_steadier[..., 1, :] += 0.5 * rng.standard_normal(SEEDS)  # the large size varies more
    assert C.claim_slower_steadier_large(fake(rate_epoch=slow_not_steadier)).verdict == C.CONTRADICTED


def test_lowest_final_large_judges_test_and_train():
    both = fake(final_test=by_size(1.2, 0.8), final_train=by_size(1.2, 0.8))
    assert C.claim_lowest_final_large(both).verdict == C.SUPPORTED
    split = fake(final_test=by_size(1.2, 0.8), final_train=by_size(0.6, 0.8))
    c = C.claim_lowest_final_large(split)
    assert c.verdict == C.DEPENDS and "final train L1" in c.detail


def test_variable_small():
    wide = by_size(1.0, 1.0, noise=0.0)
    wide[..., 0, :] += 0.3 * rng.standard_normal(SEEDS)
    wide[..., 1, :] += 0.03 * rng.standard_normal(SEEDS)
    assert C.claim_variable_small(fake(final_test=wide, final_train=wide)).verdict == C.SUPPORTED
    same = by_size(1.0, 1.0, noise=0.1)
    assert C.claim_variable_small(fake(final_test=same, final_train=same)).verdict in (
        C.CONTRADICTED, C.INCONCLUSIVE)


def test_lr_interacts():
    lrs = (0.01, 0.1, 1.0)
    # best lr 1.0 at the small size, 0.01 at the large one, with a material gap
    means = np.array([[1.0, 0.5], [0.8, 0.7], [0.5, 1.0]])  # [lr, size]
    final = means[None, None, :, :, None] + 0.01 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    assert C.claim_lr_interacts(fake(lrs=lrs, final_test=final)).verdict == C.SUPPORTED
    same_best = np.array([[1.0, 1.0], [0.5, 0.5], [0.8, 0.8]])
    final = same_best[None, None, :, :, None] + 0.01 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    assert C.claim_lr_interacts(fake(lrs=lrs, final_test=final)).verdict == C.CONTRADICTED
    # the claimed direction, but small's best costs the large size only 1% of its loss
    small_gap = np.array([[1.0, 0.5], [0.8, 0.502], [0.5, 0.505]])
    final = small_gap[None, None, :, :, None] + 0.001 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    assert C.claim_lr_interacts(fake(lrs=lrs, final_test=final)).verdict == C.CONTRADICTED


def test_article_code():
    grew = np.ones((100, 3), bool)
    assert C.claim_article_code(np.ones(3, bool), grew).verdict == C.CONTRADICTED
    assert C.claim_article_code(np.zeros(3, bool), ~grew).verdict == C.SUPPORTED
    mixed = np.zeros((100, 3), bool)
    mixed[:50] = True
    assert C.claim_article_code(np.ones(3, bool), mixed).verdict == C.INCONCLUSIVE


def test_not_applicable_with_one_size_or_one_learning_rate():
    one_size = C.sweep_claims(fake(sizes=(50,), rate_epoch=np.ones((1, 1, 1, 1, SEEDS)),
                                   final_test=np.ones((1, 1, 1, 1, SEEDS))))
    assert [c.verdict for c in one_size] == [C.NOT_APPLICABLE] * 5
    assert all("one size (n = 50)" in c.detail and not c.evidence for c in one_size)
    one_lr = C.claim_lr_interacts(fake(final_test=by_size(1.0, 0.5)))
    assert one_lr.verdict == C.NOT_APPLICABLE and "one learning rate" in one_lr.detail


def test_degenerate_contrasts_do_not_fail():
    """One seed, or no spread at both sizes (a learning rate too small to move anything)."""
    one = C.mean_contrast(np.array([1.0]), np.array([2.0]), paired=False)
    assert one.value == -1.0 and np.isnan(one.low) and "interval undefined" in str(one)
    flat = C.mean_contrast(np.zeros(5), np.zeros(5), paired=False)
    assert tuple(flat) == (0.0, 0.0, 0.0)
    assert "undefined" in str(C.Estimate(np.nan, np.nan, np.nan))


def test_lr_interacts_needs_two_learning_rates_with_finite_runs():
    final = by_size(1.0, 0.5, shape=(1, 1, 2))
    final[0, 0, 1] = np.nan  # the second learning rate diverged everywhere
    c = C.claim_lr_interacts(fake(lrs=(0.1, 1e4), final_test=final))
    assert c.evidence == [] and c.verdict == C.INCONCLUSIVE
