"""The article's claims, each turned into a verdict by a rule applied to measured numbers.

A rule compares the smallest and the largest size of a sweep in every setting (optimizer x
batch mode x learning rate), with 95% confidence intervals over seeds: Student t for mean
differences (paired per seed when the coupling is ``nested``, Welch otherwise), percentile
bootstrap for spread ratios.  A difference counts only when its interval excludes zero *and* it is material
(at least ``MATERIAL`` of the reference value); an interval inside +-MATERIAL is "equal".
Settings that agree give supported / contradicted; settings that disagree give "depends on
the setting" and name which.  A claim that cannot be judged on a sweep (one size, one learning
rate, no test set) is "not applicable", with the reason.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from l1jax.analysis import stats
from l1jax.analysis.analyze import Analysis

SUPPORTED, CONTRADICTED = "supported", "contradicted"
DEPENDS, INCONCLUSIVE = "depends on the setting", "inconclusive"
NOT_APPLICABLE = "not applicable"
# the interval each kind of evidence carries, by the first word of its quantity
INTERVALS = {"log": "percentile bootstrap 95% (2000 resamples)",
             "share": "percentile bootstrap 95% (2000 resamples)"}
MATERIAL = 0.05  # a difference must exceed 5% of the reference value to count


class Estimate(NamedTuple):
    """One measured quantity with its 95% confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if not np.isfinite(self.value):
            return "undefined (no finite runs to compare)"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.value:.4g} [interval undefined: too few seeds or no spread]"
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


class Evidence(NamedTuple):
    setting: str
    quantity: str
    estimate: Estimate
    outcome: str  # SUPPORTED | CONTRADICTED | INCONCLUSIVE


class Claim(NamedTuple):
    key: str
    text: str  # the article's claim
    verdict: str
    detail: str  # which settings gave which outcome
    counts: str  # how many settings gave each outcome, e.g. "contradicted 2/8, inconclusive 6/8"
    rule: str
    figure: str
    evidence: list[Evidence]


# ------------------------------------------------------------------ rule primitives

def direction(e: Estimate, scale: float, tol: float = MATERIAL) -> str:
    """"greater" / "less" than 0 (interval excludes 0 and |value| > tol*scale), "equal" (interval
    within +-tol*scale) or "unclear"."""
    band = tol * abs(scale)
    if e.low > 0 and e.value > band:
        return "greater"
    if e.high < 0 and e.value < -band:
        return "less"
    if -band <= e.low and e.high <= band:
        return "equal"
    return "unclear"


def outcome(dir_: str, expected: str) -> str:
    """A claim predicting ``expected`` ("greater"/"less") is supported by it, contradicted by
    the opposite or by "equal", undecided by "unclear"."""
    if dir_ == "unclear":
        return INCONCLUSIVE
    return SUPPORTED if dir_ == expected else CONTRADICTED


def settle(evidence: list[Evidence]) -> tuple[str, str, str]:
    """Verdict of a claim from its per-setting outcomes, which settings gave which, and how many."""
    by: dict[str, list[str]] = {}
    for e in evidence:
        by.setdefault(e.outcome, []).append(f"{e.setting} ({e.quantity})")
    decided = [o for o in (SUPPORTED, CONTRADICTED) if o in by]
    if len(decided) == 2:
        verdict = DEPENDS
    elif decided:
        verdict = decided[0]
    else:
        verdict = INCONCLUSIVE
    detail = "; ".join(f"{o} in {len(by[o])}/{len(evidence)}: {', '.join(by[o])}"
                       for o in (SUPPORTED, CONTRADICTED, INCONCLUSIVE) if o in by)
    counts = ", ".join(f"{o} {len(by[o])}/{len(evidence)}" for o in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
                       if o in by) or "no setting could be judged"
    return verdict, detail, counts


def mean_contrast(small: np.ndarray, large: np.ndarray, paired: bool) -> Estimate:
    """mean(small) - mean(large) over seeds with a Student t 95% interval: paired per seed (pairs
    with a non-finite side left out), or Welch's with Satterthwaite's degrees of freedom."""
    small, large = np.asarray(small, float), np.asarray(large, float)
    if paired:
        s = stats.paired_difference(small, large)
        return Estimate(float(s.mean), float(s.ci_low), float(s.ci_high))
    a, b = (stats.t_summary(stats.moments(v), v.size) for v in (small, large))
    d = float(a.mean - b.mean)
    if min(a.n, b.n) < 2:  # no spread to measure on one side
        return Estimate(d, np.nan, np.nan)
    va, vb = float(a.sem) ** 2, float(b.sem) ** 2
    if va + vb == 0.0:  # both sides constant: the difference is exact
        return Estimate(d, d, d)
    df = (va + vb) ** 2 / (va ** 2 / (float(a.n) - 1) + vb ** 2 / (float(b.n) - 1))
    half = float(stats.t_quantile(0.05, df)) * np.sqrt(va + vb)
    return Estimate(d, d - half, d + half)


def spread_ratio(small: np.ndarray, large: np.ndarray, paired: bool) -> Estimate:
    """sd(small) / sd(large) over seeds, with a bootstrap interval."""
    r = stats.sd_ratio(small, large, paired=paired)
    return Estimate(*map(float, r))


# ------------------------------------------------------------------ settings

def setting_label(optimizer: str, batch: int | str, lr: float | None = None) -> str:
    """The label evidence carries for a setting, e.g. "sgd, batch 32, lr 0.01" (the report
    picks evidence by it)."""
    mode = "full batch" if batch == "full" else f"batch {batch}"
    return f"{optimizer}, {mode}" + ("" if lr is None else f", lr {lr:g}")


def settings(a: Analysis) -> list[tuple[str, tuple[int, int, int]]]:
    """(label, (optimizer, batch, lr) index) of every setting of a sweep."""
    co = a.results.coords
    return [(setting_label(opt, bs, lr), (o, b, l)) for o, opt in enumerate(co["optimizer"])
            for b, bs in enumerate(co["batch_size"]) for l, lr in enumerate(co["learning_rate"])]


def _size_rule(a: Analysis, quantities: dict[str, np.ndarray],
               measure: Callable[[np.ndarray, np.ndarray, bool], Estimate],
               expected: str, scale_of: Callable[[np.ndarray], float]) -> list[Evidence]:
    """Evidence from smallest vs largest size of each quantity in every setting (a quantity
    with no finite value, such as test L1 without a test set, is left out)."""
    paired = a.results.config.data.coupling == "nested"
    ev = []
    for label, idx in settings(a):
        for qname, q in quantities.items():
            if not np.isfinite(q).any():
                continue
            small, large = q[idx][0], q[idx][-1]
            est = measure(small, large, paired)
            ev.append(Evidence(label, qname, est, outcome(direction(est, scale_of(large)), expected)))
    return ev


def _log_ratio_measure(small: np.ndarray, large: np.ndarray, paired: bool) -> Estimate:
    r = spread_ratio(small, large, paired)
    return Estimate(np.log(r.value), np.log(r.low), np.log(r.high))


def _scale_mean(v: np.ndarray) -> float:
    return float(np.nanmean(np.abs(v)))


def not_applicable(key: str, text: str, why: str, rule: str, figure: str) -> Claim:
    """A claim this sweep cannot judge, and why."""
    return Claim(key, text, NOT_APPLICABLE, why, why, rule, figure, [])


def _one_size(a: Analysis) -> str | None:
    n = a.results.coords["size"]
    return f"one size (n = {n[0]}): nothing to compare across sizes" if len(n) < 2 else None


# ------------------------------------------------------------------ the claims

def claim_faster_small(a: Analysis) -> Claim:
    ev = _size_rule(a, {"initial rate per epoch": a.metrics.rate_epoch}, mean_contrast,
                    "greater", _scale_mean)
    return Claim("faster_small", "Smaller datasets show a faster initial decrease of L1 loss per epoch.",
                 *settle(ev),
                 f"rate = (L(0) - L(k))/k per epoch; small - large (smallest vs largest size) > 0 "
                 f"with its 95% CI above 0 and > {MATERIAL:.0%} of the large-size rate: supported; "
                 f"below 0 or within +-{MATERIAL:.0%}: contradicted", "rate.png", ev)


def claim_slower_steadier_large(a: Analysis) -> Claim:
    slower = _size_rule(a, {"initial rate per epoch": a.metrics.rate_epoch}, mean_contrast,
                        "greater", _scale_mean)
    steadier = _size_rule(a, {"log sd of the initial rate": a.metrics.rate_epoch},
                          _log_ratio_measure, "greater", lambda v: 1.0)
    both = [s._replace(quantity="slower and steadier", outcome=(
        SUPPORTED if s.outcome == t.outcome == SUPPORTED else
        CONTRADICTED if CONTRADICTED in (s.outcome, t.outcome) else INCONCLUSIVE))
        for s, t in zip(slower, steadier)]  # a conjunction: both parts must hold
    ev = [e for pair in zip(slower, steadier) for e in pair]
    return Claim("slower_steadier_large",
                 "Larger datasets give a slower, yet more consistent, decrease of L1 loss per epoch.",
                 *settle(both),
                 "slower: rate(small) - rate(large) > 0 as above; steadier: log(sd over seeds of the "
                 f"rate, small / large) > {MATERIAL:g} with its CI above 0; supported only if both",
                 "rate.png", ev)


def claim_lowest_final_large(a: Analysis) -> Claim:
    m = a.metrics
    ev = _size_rule(a, {"final test L1": m.final_test, "final train L1": m.final_train},
                    mean_contrast, "greater", _scale_mean)
    return Claim("lowest_final_large", "Larger datasets reach the lowest final losses.",
                 *settle(ev),
                 f"final L1 small - large > 0 with its CI above 0 and > {MATERIAL:.0%} of the large-size "
                 "loss: supported; below 0 or equal: contradicted; test and train L1 judged separately",
                 "final.png", ev)


def claim_variable_small(a: Analysis) -> Claim:
    m = a.metrics
    ev = _size_rule(a, {"log sd of final test L1": m.final_test,
                        "log sd of final train L1": m.final_train},
                    _log_ratio_measure, "greater", lambda v: 1.0)
    return Claim("variable_small", "Smaller datasets give more variable final losses.",
                 *settle(ev),
                 "log(sd over seeds of the final loss, small / large) > 0 with its bootstrap CI above 0 "
                 f"and the log ratio > {MATERIAL:g}: supported; below, or the CI within +-{MATERIAL:g}: "
                 "contradicted",
                 "spread.png", ev)


def best_lr_contrast(final: np.ndarray) -> tuple[int, int, Estimate] | None:
    """Best learning rate (lowest mean final loss) at the smallest and the largest size of
    ``final`` [lr, size, seed], and at the largest size: loss(small's best) - loss(own best);
    None unless two learning rates have finite runs at both sizes."""
    with np.errstate(invalid="ignore"), stats.quiet():
        means = np.nanmean(final, axis=-1)
    if min(np.isfinite(means[:, 0]).sum(), np.isfinite(means[:, -1]).sum()) < 2:
        return None  # fewer than two learning rates with a finite run: nothing to choose from
    best_small, best_large = int(np.nanargmin(means[:, 0])), int(np.nanargmin(means[:, -1]))
    est = mean_contrast(final[best_small, -1], final[best_large, -1], paired=True)  # same data per lr
    return best_small, best_large, est


def claim_lr_interacts(a: Analysis) -> Claim:
    co = a.results.coords
    lrs = co["learning_rate"]
    test = np.isfinite(a.metrics.final_test).any()
    final, name = (a.metrics.final_test, "test") if test else (a.metrics.final_train, "train")
    ev = []
    for o, opt in enumerate(co["optimizer"]):
        for b, bs in enumerate(co["batch_size"]):
            found = best_lr_contrast(final[o, b])
            if found is None:
                continue
            bsm, blg, est = found
            if lrs[blg] < lrs[bsm]:  # the claimed direction: a rate good for small is too high for large
                res_ = outcome(direction(est, _scale_mean(final[o, b, blg, -1])), "greater")
            else:
                res_ = CONTRADICTED
            ev.append(Evidence(setting_label(opt, bs), f"best lr small {lrs[bsm]:g}, large {lrs[blg]:g}; "
                               f"large-size final {name} L1 at small's best - at own best", est, res_))
    text = ("The learning rate interacts with size: a rate suited to a small dataset can be too "
            "high for a large one (instability), one suited to a large dataset too slow for a small one.")
    rule = (f"per optimizer and batch mode: best lr (lowest mean final {name} L1) at the largest size "
            "below the best lr at the smallest, and the small-size best lr worse at the largest size "
            f"(CI above 0 and > {MATERIAL:.0%} of the large-size loss): supported; the same or a larger "
            f"best lr at the largest size, or a difference with its CI within +-{MATERIAL:.0%}: contradicted")
    if len(lrs) < 2:
        return not_applicable("lr_interacts", text, f"one learning rate ({lrs[0]:g}): nothing to "
                              "compare across learning rates", rule, "heatmaps.png")
    return Claim("lr_interacts", text, *settle(ev), rule, "heatmaps.png", ev)


def sweep_claims(a: Analysis) -> list[Claim]:
    """Claims 1-5 on one sweep; with one size, claims 1-5 are not applicable."""
    found = [claim_faster_small(a), claim_slower_steadier_large(a), claim_lowest_final_large(a),
             claim_variable_small(a), claim_lr_interacts(a)]
    why = _one_size(a)
    return found if why is None else [c._replace(verdict=NOT_APPLICABLE, detail=why, counts=why, evidence=[])
                                      for c in found]


def claims_json(claims: list[Claim]) -> list[dict[str, Any]]:
    """The claims as plain JSON types: per claim its verdict, rule and per-setting evidence."""
    num = lambda v: float(v) if np.isfinite(v) else None
    return [{"key": c.key, "claim": c.text, "verdict": c.verdict, "detail": c.detail,
             "rule": c.rule, "figure": c.figure,
             "evidence": [{"setting": e.setting, "quantity": e.quantity,
                           "estimate": num(e.estimate.value), "ci_low": num(e.estimate.low),
                           "ci_high": num(e.estimate.high), "interval": INTERVALS.get(
                               e.quantity.split(" ")[0], "Student t 95%"), "outcome": e.outcome}
                          for e in c.evidence]} for c in claims]


def claim_article_code(grew_runs: np.ndarray, grew_replicates: np.ndarray) -> Claim:
    """The article's printed losses: ``grew_runs`` [3] from its own script, ``grew_replicates``
    [seeds, 3] from the engine in its update mode; each True where the final loss exceeds the start."""
    frac = float(np.mean(grew_replicates))
    s = stats.summarize(grew_replicates.astype(float).reshape(-1))
    est = Estimate(frac, float(s.ci_low), float(s.ci_high))
    grew = bool(np.all(grew_runs)) and est.low > 0.95
    fell = not np.any(grew_runs) and est.high < 0.05
    out = CONTRADICTED if grew else SUPPORTED if fell else INCONCLUSIVE
    ev = [Evidence("article code, sizes 100/1000/10000",
                   f"share of runs whose loss grew (its 3 runs: {int(np.sum(grew_runs))}/3 grew)", est, out)]
    return Claim("article_code",
                 "The article's code shows the loss dropping (fastest for the small dataset) to the "
                 "lowest final loss for the large one.", *settle(ev),
                 "the final loss above the initial one in all 3 of the article's runs and in > 95% of "
                 "the engine's replicates of its update (CI lower bound): contradicted; below in all: supported",
                 "fig1_article.png", ev)
