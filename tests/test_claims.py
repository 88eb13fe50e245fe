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
    return Analysis(Results(cfg, arrays), Optima(*[nan] * len(Optima._fields)), m, None, 5, None, None, None)


rng = np.random.default_rng(0)


def by_size(small, large, noise=0.05, shape=(1, 1, 1)):
    """Metric whose smallest size has mean ``small`` and largest ``large`` (per seed noise)."""
    v = np.empty(shape + (2, SEEDS))
    v[..., 0, :] = small + noise * rng.standard_normal(shape + (SEEDS,))
    v[..., 1, :] = large + noise * rng.standard_normal(shape + (SEEDS,))
    return v


def test_decide_four_outcomes_and_settle():
    d = lambda lo, hi: C.decide(C.Estimate((lo + hi) / 2, lo, hi), 0.1, "greater")
    assert d(0.5, 1.5) == C.SUPPORTED
    assert d(-1.5, -0.5) == C.CONTRADICTED  # the opposite holds
    assert d(-0.05, 0.08) == C.NO_DIFFERENCE  # the whole interval within the margin
    assert d(0.02, 0.09) == C.NO_DIFFERENCE  # real but immaterial
    assert d(-0.05, 0.3) == C.INCONCLUSIVE  # straddles the margin
    assert C.decide(C.Estimate(-1.0, -1.5, -0.5), 0.1, "less") == C.SUPPORTED
    assert C.decide(C.Estimate(1.0, np.nan, np.nan), 0.1, "greater") == C.INCONCLUSIVE
    ev = lambda *o: [C.Evidence(f"sgd, full batch, lr {i}", "q", C.Estimate(0, 0, 0), x, 0.1, "t")
                     for i, x in enumerate(o)]
    assert C.settle(ev(C.SUPPORTED, C.SUPPORTED))[0] == C.SUPPORTED
    assert C.settle(ev(C.CONTRADICTED, C.INCONCLUSIVE))[0] == C.CONTRADICTED
    assert C.settle(ev(C.NO_DIFFERENCE, C.NO_DIFFERENCE))[0] == C.NO_DIFFERENCE
    verdict, detail, counts = C.settle(ev(C.SUPPORTED, C.NO_DIFFERENCE))
    assert counts == "sgd, full batch: supported 1/2, no difference 1/2"
    assert verdict == C.DEPENDS and "lr 0" in detail and "lr 1" in detail
    assert C.settle(ev(C.INCONCLUSIVE))[0] == C.INCONCLUSIVE


def test_intervals_are_simultaneous_over_a_claims_settings():
    rate = np.concatenate([by_size(2.0, 1.0, shape=(1, 1, 1))] * 4, axis=2)
    c = C.claim_faster_small(fake(lrs=(0.1, 0.2, 0.3, 0.4), rate_epoch=rate))
    assert {e.interval for e in c.evidence} == {"Student t, 0.9875 each (simultaneous 95% over 4)"}
    one = C.claim_faster_small(fake(rate_epoch=rate[:, :, :1]))
    e4, e1 = c.evidence[0].estimate, one.evidence[0].estimate
    assert e4.value == e1.value and e4.high - e4.low > e1.high - e1.low  # wider: Bonferroni


@pytest.mark.parametrize("coupling", ["nested", "independent"])
@pytest.mark.parametrize("small,large,verdict", [
    (2.0, 1.0, C.SUPPORTED),  # smaller is faster
    (1.0, 1.0, C.NO_DIFFERENCE),  # equal within the margin: a result, not a failure to decide
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
    z = np.random.default_rng(3).standard_normal((2, SEEDS))
    z -= z.mean(axis=1, keepdims=True)  # sample means exactly 1.1 and 1.0
    rate = np.array([1.1, 1.0])[:, None] + 5.0 * z
    assert C.claim_faster_small(fake(rate_epoch=rate[None, None, None])).verdict == C.INCONCLUSIVE


def test_slower_steadier_needs_both_parts_and_uses_relative_spread():
    steady_slow = by_size(2.0, 1.0, noise=0.0)
    steady_slow[..., 0, :] += 0.5 * rng.standard_normal(SEEDS)  # small: CV 0.25
    steady_slow[..., 1, :] += 0.05 * rng.standard_normal(SEEDS)  # large: CV 0.05
    assert C.claim_slower_steadier_large(fake(rate_epoch=steady_slow)).verdict == C.SUPPORTED
    slow_not_steadier = by_size(2.0, 1.0, noise=0.0)
    slow_not_steadier[..., 0, :] += 0.05 * rng.standard_normal(SEEDS)
    slow_not_steadier[..., 1, :] += 0.5 * rng.standard_normal(SEEDS)  # the large size varies more
    assert C.claim_slower_steadier_large(fake(rate_epoch=slow_not_steadier)).verdict == C.CONTRADICTED
    # the large size's sd is 10x smaller only because its rate is 10x smaller: same CV, not steadier
    scaled = by_size(1.0, 0.1, noise=0.0)
    z = rng.standard_normal(SEEDS)
    scaled[..., 0, :] += 0.3 * z
    scaled[..., 1, :] += 0.03 * z
    c = C.claim_slower_steadier_large(fake(rate_epoch=scaled))
    assert c.verdict == C.NO_DIFFERENCE and c.evidence[1].outcome == C.NO_DIFFERENCE


def test_lowest_final_judges_test_and_train_separately():
    split = fake(final_test=by_size(1.2, 0.8), final_train=by_size(0.6, 0.8))
    assert C.claim_lowest_final_test(split).verdict == C.SUPPORTED
    assert C.claim_lowest_final_train(split).verdict == C.CONTRADICTED
    no_test = fake(final_train=by_size(0.6, 0.8))
    assert C.claim_lowest_final_test(no_test).verdict == C.NOT_APPLICABLE


def test_variable_small():
    wide = by_size(1.0, 1.0, noise=0.0)
    wide[..., 0, :] += 0.3 * rng.standard_normal(SEEDS)
    wide[..., 1, :] += 0.03 * rng.standard_normal(SEEDS)
    assert C.claim_variable_small(fake(final_test=wide, final_train=wide)).verdict == C.SUPPORTED
    same = by_size(1.0, 1.0, noise=0.0)
    z = rng.standard_normal(SEEDS)
    same[..., 0, :] += 0.1 * z
    same[..., 1, :] += 0.1 * z
    assert C.claim_variable_small(fake(final_test=same, final_train=same)).verdict == C.NO_DIFFERENCE


def test_split_halves_never_share_seeds():
    select, test = C.split_halves(7)
    assert set(select).isdisjoint(test) and sorted([*select, *test]) == list(range(7))


def test_lr_interacts():
    lrs = (0.01, 0.1, 1.0)
    # best lr 1.0 at the small size, 0.01 at the large one, with a material gap
    means = np.array([[1.0, 0.5], [0.8, 0.7], [0.5, 1.0]])  # [lr, size]
    final = means[None, None, :, :, None] + 0.01 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    c = C.claim_lr_interacts(fake(lrs=lrs, final_test=final))
    assert c.verdict == C.SUPPORTED and "at the grid's edge" in c.evidence[0].quantity
    same_best = np.array([[1.0, 1.0], [0.5, 0.5], [0.8, 0.8]])
    final = same_best[None, None, :, :, None] + 0.01 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    c = C.claim_lr_interacts(fake(lrs=lrs, final_test=final))
    assert c.verdict == C.CONTRADICTED and "edge" not in c.evidence[0].quantity
    # the claimed direction, but small's best costs the large size only 1% of its loss
    small_gap = np.array([[1.0, 0.5], [0.8, 0.502], [0.5, 0.505]])
    final = small_gap[None, None, :, :, None] + 0.001 * rng.standard_normal((1, 1, 3, 2, SEEDS))
    assert C.claim_lr_interacts(fake(lrs=lrs, final_test=final)).verdict == C.CONTRADICTED


def test_lr_selection_and_test_use_different_seeds():
    """A best lr that is best only on the selection seeds by a fluke is not confirmed: the test
    seeds see no difference between the two rates."""
    final = np.ones((1, 1, 2, 2, SEEDS))
    final[0, 0, 0, 0, 0::2] = 0.5  # lr 0.01 looks best at the small size, on even seeds only
    final[0, 0, 1, 1, 0::2] = 0.5  # lr 1 looks best at the large size, on even seeds only
    final = final + 1e-3 * rng.standard_normal(final.shape)
    c = C.claim_lr_interacts(fake(lrs=(0.01, 1.0), final_test=final))
    assert c.verdict == C.CONTRADICTED  # selected on even seeds, no cost on odd ones


def test_article_code():
    grew = np.ones((100, 3), bool)
    c = C.claim_article_code(np.ones(3, bool), grew)
    assert c.verdict == C.CONTRADICTED and "300 of 300 = 1 [0.988, 1]" in c.evidence[0].quantity
    assert C.claim_article_code(np.zeros(3, bool), ~grew).verdict == C.SUPPORTED
    mixed = np.zeros((100, 3), bool)
    mixed[:50] = True
    assert C.claim_article_code(np.ones(3, bool), mixed).verdict == C.INCONCLUSIVE


def test_not_applicable_with_one_size_or_one_learning_rate():
    one_size = C.sweep_claims(fake(sizes=(50,), rate_epoch=np.ones((1, 1, 1, 1, SEEDS)),
                                   final_test=np.ones((1, 1, 1, 1, SEEDS))))
    assert [c.verdict for c in one_size] == [C.NOT_APPLICABLE] * 6
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
