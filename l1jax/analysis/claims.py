"""The article's claims, each turned into a verdict by a rule applied to measured numbers.

A rule compares the smallest and the largest size of a sweep in every setting (optimizer x
batch mode x learning rate).  Each comparison is an estimate with a confidence interval over
seeds (Student t for mean differences, paired per seed when the coupling is ``nested``, Welch's
standard error with Hsu's df otherwise; jackknife Student t for log ratios of spreads), and the
intervals of one claim are simultaneous: each is drawn at level 1 - 0.05 / m over the claim's m
comparisons (Bonferroni), so the claim's whole table holds with 95% confidence.  Each comparison
has one of four outcomes against a stated margin of practical equivalence:

* *no difference*: the whole interval lies within +-margin (an equivalence test);
* *supported*: the interval excludes 0 on the side the claim predicts (and is not within the margin);
* *contradicted*: the interval excludes 0 on the opposite side;
* *inconclusive*: the interval straddles the margin and 0.

On csv data every seed subsamples one training pool of N rows without replacement, so two seeds'
subsamples share rows: claims compare the smallest size with the largest of at most half the
pool (n/N <= 0.5, ``POOL_LIMIT``), and intervals of spread ratios are widened by the finite
population correction's range (``stats.pool_log_ratio_range``).

A claim's verdict is the one decisive outcome its settings share; settings that disagree give
"depends on the setting", counted per batch mode.  A claim that cannot be judged on a sweep
(one size, one learning rate, no test set) is "not applicable", with the reason.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from l1jax.analysis import stats
from l1jax.analysis.analyze import Analysis, has_test_set
from l1jax.engine.table import load_csv

SUPPORTED, CONTRADICTED = "supported", "contradicted"
NO_DIFFERENCE, INCONCLUSIVE = "no difference", "inconclusive"
DEPENDS, NOT_APPLICABLE = "depends on the setting", "not applicable"
OUTCOMES = (SUPPORTED, CONTRADICTED, NO_DIFFERENCE, INCONCLUSIVE)
FAMILY_LEVEL = 0.95  # each claim's comparisons hold together at this level (Bonferroni)
MARGIN = 0.05  # mean differences within +-5% of the large-size mean are "no difference"
LOG_MARGIN = math.log(1.25)  # spread ratios within 0.8x to 1.25x are "no difference"
POOL_LIMIT = 0.5  # csv data: sizes above this share n/N of the training pool are not compared
NUMBERS = {"faster_small": "1", "slower_steadier_large": "2", "lowest_final_test": "3a",
           "lowest_final_train": "3b", "variable_small": "4", "lr_interacts": "5", "article_code": "6"}
T_MEAN = "Student t"
JACKKNIFE = "jackknife t"


class Estimate(NamedTuple):
    """One measured quantity with its confidence interval."""

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
    setting: str  # e.g. "sgd, batch 32, lr 0.01"
    quantity: str
    estimate: Estimate
    outcome: str  # one of OUTCOMES
    margin: float  # +-margin of practical equivalence, in the estimate's units
    interval: str  # how the interval was made, e.g. "Student t, 99.8% (Bonferroni over 24)"


class Claim(NamedTuple):
    key: str  # its number in the article's list is NUMBERS[key] (claim 3 is two findings)
    text: str  # the article's claim
    verdict: str
    detail: str  # which settings gave which outcome
    counts: str  # outcome counts per batch mode, e.g. "sgd, full batch: no difference 6/6; ..."
    rule: str
    figure: str
    evidence: list[Evidence]

    @property
    def number(self) -> str:
        return NUMBERS[self.key]


# ------------------------------------------------------------------ rule primitives

def decide(e: Estimate, margin: float, expected: str) -> str:
    """The outcome of one comparison whose claim predicts ``expected`` ("greater" or "less"
    than 0), against +-``margin``."""
    if not (np.isfinite(e.low) and np.isfinite(e.high)):
        return INCONCLUSIVE
    if -margin <= e.low and e.high <= margin:
        return NO_DIFFERENCE
    if e.low > 0 or e.high < 0:
        return SUPPORTED if (e.low > 0) == (expected == "greater") else CONTRADICTED
    return INCONCLUSIVE


def mode_of(setting: str) -> str:
    """The optimizer and batch mode of a setting label ("sgd, batch 32, lr 0.01" -> "sgd, batch 32")."""
    return setting.split(", lr ")[0]


def settle(evidence: list[Evidence]) -> tuple[str, str, str]:
    """Verdict of a claim from its per-setting outcomes: the one decisive outcome they share
    (inconclusive settings aside), else "depends on the setting"; which settings gave which;
    and the counts per batch mode."""
    found = {e.outcome for e in evidence}
    decisive = [o for o in (SUPPORTED, CONTRADICTED, NO_DIFFERENCE) if o in found]
    verdict = decisive[0] if len(decisive) == 1 else DEPENDS if decisive else INCONCLUSIVE
    by: dict[str, list[str]] = {}
    for e in evidence:
        by.setdefault(e.outcome, []).append(f"{e.setting} ({e.quantity})")
    detail = "; ".join(f"{o} in {len(by[o])}/{len(evidence)}: {', '.join(by[o])}" for o in OUTCOMES if o in by)
    modes: dict[str, list[str]] = {}
    for e in evidence:
        modes.setdefault(mode_of(e.setting), []).append(e.outcome)
    counts = "; ".join(f"{m}: " + ", ".join(f"{o} {got.count(o)}/{len(got)}" for o in OUTCOMES if o in got)
                       for m, got in modes.items()) or "no setting could be judged"
    return verdict, detail, counts


def family_level(m: int) -> float:
    """Per-comparison confidence level for m simultaneous comparisons (Bonferroni)."""
    return 1.0 - (1.0 - FAMILY_LEVEL) / max(m, 1)


def interval_name(kind: str, level: float, m: int) -> str:
    return f"{kind}, {level:.4g} each (simultaneous 95% over {m})" if m > 1 else f"{kind}, 95%"


def mean_contrast(small: np.ndarray, large: np.ndarray, paired: bool, level: float = 0.95) -> Estimate:
    """mean(small) - mean(large) over seeds with a Student t interval: paired per seed (pairs
    with a non-finite side left out), or unpaired with Welch's standard error and Hsu's df
    min(n_small, n_large) - 1, which covers at least the level for normal data at any variances
    (Satterthwaite's df covered 0.88 at 2 seeds against 40; tests/test_intervals.py)."""
    small, large = np.asarray(small, float), np.asarray(large, float)
    if paired:
        s = stats.paired_difference(small, large, level=level)
        return Estimate(float(s.mean), float(s.ci_low), float(s.ci_high))
    a, b = (stats.t_summary(stats.moments(v), v.size) for v in (small, large))
    d = float(a.mean - b.mean)
    if min(a.n, b.n) < 2:  # no spread to measure on one side
        return Estimate(d, np.nan, np.nan)
    va, vb = float(a.sem) ** 2, float(b.sem) ** 2
    if va + vb == 0.0:  # both sides constant: the difference is exact
        return Estimate(d, d, d)
    half = float(stats.t_quantile(1.0 - level, min(a.n, b.n) - 1)) * np.sqrt(va + vb)
    return Estimate(d, d - half, d + half)


def log_spread(relative: bool) -> Callable[[np.ndarray, np.ndarray, bool, float], Estimate]:
    """log(spread(small) / spread(large)): sd, or (``relative``) coefficient of variation."""
    def measure(small: np.ndarray, large: np.ndarray, paired: bool, level: float) -> Estimate:
        return Estimate(*stats.log_spread_ratio(small, large, paired, relative, level))
    return measure


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


class Rule(NamedTuple):
    """One compared quantity: its name, per-run values, measure, predicted sign, margin and kind."""

    name: str
    values: np.ndarray  # [opt, batch, lr, size, seed]
    measure: Callable[[np.ndarray, np.ndarray, bool, float], Estimate]
    expected: str  # "greater" or "less": the sign of small - large the claim predicts
    margin: Callable[[np.ndarray], float]  # from the large-size values
    kind: str
    spread: bool = False  # a ratio of spreads: its interval is widened for a finite pool


def mean_rule(name: str, values: np.ndarray, expected: str = "greater") -> Rule:
    return Rule(name, values, mean_contrast, expected,
                lambda large: MARGIN * float(np.nanmean(np.abs(large))), T_MEAN)


def spread_rule(name: str, values: np.ndarray, relative: bool) -> Rule:
    return Rule(name, values, log_spread(relative), "greater", lambda large: LOG_MARGIN, JACKKNIFE, True)


def pool_rows(a: Analysis) -> int | None:
    """Rows N of a csv sweep's training pool, which every seed subsamples without replacement;
    None for synthetic data (fresh samples from the population)."""
    cfg = a.results.config
    return load_csv(cfg.data, cfg.sweep.base_seed).n_train if cfg.data.source == "csv" else None


def compared_sizes(a: Analysis, pool_safe: bool = True) -> tuple[int, int]:
    """Indices of the two sizes a claim compares: the smallest and the largest, on csv data
    (``pool_safe``) the largest with n/N <= POOL_LIMIT (the same index twice if there is none)."""
    n = np.asarray(a.results.coords["size"])
    pool = pool_rows(a) if pool_safe else None
    ok = np.flatnonzero(n <= POOL_LIMIT * pool) if pool else np.arange(len(n))
    return 0, int(ok[-1]) if ok.size else 0


def size_evidence(a: Analysis, rules: list[Rule], pool_safe: bool = True) -> list[Evidence]:
    """The two compared sizes (``compared_sizes``) of each rule's quantity in every setting, the
    intervals simultaneous over all of them (a quantity with no finite value, such as test L1
    without a test set, is left out); on csv data (``pool_safe``) spread intervals are widened
    for the finite pool."""
    paired = a.results.config.data.coupling == "nested"
    jobs = [(label, idx, r) for label, idx in settings(a) for r in rules if np.isfinite(r.values).any()]
    level = family_level(len(jobs))
    s, l = compared_sizes(a, pool_safe)
    n, pool = a.results.coords["size"], pool_rows(a) if pool_safe else None
    ev = []
    for label, idx, r in jobs:
        small, large = r.values[idx][s], r.values[idx][l]
        est, how = r.measure(small, large, paired, level), interval_name(r.kind, level, len(jobs))
        if r.spread and pool:
            est = est._replace(**dict(zip(("low", "high"), stats.pool_log_ratio_range(
                est.low, est.high, n[s], n[l], pool))))
            how += f", widened for the finite pool (n/N = {n[s] / pool:.2g}, {n[l] / pool:.2g})"
        margin = r.margin(large)
        ev.append(Evidence(label, r.name, est, decide(est, margin, r.expected), margin, how))
    return ev


def not_applicable(key: str, text: str, why: str, rule: str, figure: str) -> Claim:
    """A claim this sweep cannot judge, and why."""
    return Claim(key, text, NOT_APPLICABLE, why, why, rule, figure, [])


def _one_size(a: Analysis) -> str | None:
    """Why a sweep cannot compare sizes (one size, or on csv data one size within the pool
    limit), or None."""
    n = a.results.coords["size"]
    if len(n) < 2:
        return f"one size (n = {n[0]}): nothing to compare across sizes"
    if compared_sizes(a)[1] == 0:
        return (f"fewer than two sizes with n/N <= {POOL_LIMIT:g} of the training pool of N = "
                f"{pool_rows(a)} rows: nothing to compare across sizes free of the finite pool")
    return None


_FOUR = ("the interval within +-margin: no difference; excluding 0 on the claimed side: supported; "
         "on the other side: contradicted; else inconclusive")


# ------------------------------------------------------------------ the claims

def claim_faster_small(a: Analysis) -> Claim:
    ev = size_evidence(a, [mean_rule("initial rate per epoch", a.metrics.rate_epoch)])
    return Claim("faster_small", "Smaller datasets show a faster initial decrease of L1 loss per epoch.",
                 *settle(ev),
                 f"rate = (L(0) - L(k))/k per epoch; small - large (smallest vs largest size), margin "
                 f"{MARGIN:.0%} of the large-size rate; {_FOUR}", "rate.png", ev)


def claim_slower_steadier_large(a: Analysis) -> Claim:
    ev = size_evidence(a, [mean_rule("initial rate per epoch", a.metrics.rate_epoch),
                           spread_rule("log CV of the initial rate", a.metrics.rate_epoch, relative=True)])
    both = [s._replace(quantity="slower and steadier", outcome=_conjunction(s.outcome, t.outcome))
            for s, t in zip(ev[::2], ev[1::2])]
    return Claim("slower_steadier_large",
                 "Larger datasets give a slower, yet more consistent, decrease of L1 loss per epoch.",
                 *settle(both),
                 f"slower: rate(small) - rate(large) as in claim 1; steadier: log(CV small / CV large), "
                 f"CV = sd / mean over seeds (relative spread, so a rate that barely moves is not "
                 f"'steady'), margin log(1.25); supported only if both are; {_FOUR}",
                 "rate.png", ev)


def _conjunction(slower: str, steadier: str) -> str:
    """Outcome of "slower and steadier": supported only if both are, contradicted if either
    is, no difference if either part shows none, else inconclusive."""
    pair = (slower, steadier)
    if pair == (SUPPORTED, SUPPORTED):
        return SUPPORTED
    for o in (CONTRADICTED, NO_DIFFERENCE):
        if o in pair:
            return o
    return INCONCLUSIVE


def claim_lowest_final_test(a: Analysis) -> Claim:
    text = "Larger datasets reach the lowest final losses (held-out L1)."
    rule = (f"final test L1 small - large, margin {MARGIN:.0%} of the large-size loss; {_FOUR}")
    if not np.isfinite(a.metrics.final_test).any():
        why = ("every run diverged: no finite final held-out L1" if has_test_set(a.results.config)
               else "no test set: held-out L1 not recorded")
        return not_applicable("lowest_final_test", text, why, rule, "final.png")
    ev = size_evidence(a, [mean_rule("final test L1", a.metrics.final_test)])
    return Claim("lowest_final_test", text, *settle(ev), rule, "final.png", ev)


def claim_lowest_final_train(a: Analysis) -> Claim:
    ev = size_evidence(a, [mean_rule("final train L1", a.metrics.final_train)])
    return Claim("lowest_final_train", "Larger datasets reach the lowest final losses (training L1).",
                 *settle(ev),
                 f"final train L1 small - large, margin {MARGIN:.0%}; {_FOUR}. Small training sets "
                 "can be fitted below the noise floor (E L*_n < floor), so this side may well be "
                 "contradicted", "final.png", ev)


def claim_variable_small(a: Analysis, pool_safe: bool = True) -> Claim:
    """Claim 4; without ``pool_safe``, csv data judged as if the pool were unlimited (smallest vs
    largest size, no widening): how much the pool moved the verdict."""
    m = a.metrics
    rules = [spread_rule("log sd of final test L1", m.final_test, relative=False),
             spread_rule("log sd of final train L1", m.final_train, relative=False)]
    ev = size_evidence(a, rules, pool_safe)
    return Claim("variable_small", "Smaller datasets give more variable final losses.",
                 *settle(ev),
                 f"log(sd over seeds of the final loss, small / large), margin log(1.25); {_FOUR}",
                 "spread.png", ev)


def split_halves(seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeds for selection (even) and for testing (odd): never the same seeds for both."""
    idx = np.arange(seeds)
    return idx[0::2], idx[1::2]


def best_lr_contrast(final: np.ndarray, level: float = 0.95) -> tuple[int, int, Estimate] | None:
    """Best learning rate (lowest mean final loss) at the smallest and at the largest size of
    ``final`` [lr, size, seed], chosen on the even seeds; on the odd seeds, at the largest size:
    loss(small's best) - loss(own best), paired (the learning rates share data).  None unless
    two learning rates have finite runs at both sizes and there are 4 seeds or more."""
    select, test = split_halves(final.shape[-1])
    if len(test) < 2:
        return None
    with np.errstate(invalid="ignore"), stats.quiet():
        means = np.nanmean(final[..., select], axis=-1)
    if min(np.isfinite(means[:, 0]).sum(), np.isfinite(means[:, -1]).sum()) < 2:
        return None  # fewer than two learning rates with a finite run: nothing to choose from
    best_small, best_large = int(np.nanargmin(means[:, 0])), int(np.nanargmin(means[:, -1]))
    est = mean_contrast(final[best_small, -1, test], final[best_large, -1, test], True, level)
    return best_small, best_large, est


def claim_lr_interacts(a: Analysis) -> Claim:
    co = a.results.coords
    lrs = co["learning_rate"]
    test = np.isfinite(a.metrics.final_test).any()
    final, name = (a.metrics.final_test, "test") if test else (a.metrics.final_train, "train")
    text = ("The learning rate interacts with size: a rate suited to a small dataset can be too "
            "high for a large one (instability), one suited to a large dataset too slow for a small one.")
    rule = (f"per optimizer and batch mode, best lr (lowest mean final {name} L1) chosen on the even "
            "seeds at the smallest and at the largest size, tested on the odd seeds: the largest "
            "size's best lr below the smallest's, and the small-size best lr worse at the largest "
            f"size (margin {MARGIN:.0%} of the loss): supported; the same or a larger best lr, or a "
            "difference within the margin: contradicted; a best lr at the grid's edge is flagged")
    if len(lrs) < 2:
        return not_applicable("lr_interacts", text, f"one learning rate ({lrs[0]:g}): nothing to "
                              "compare across learning rates", rule, "heatmaps.png")
    modes = [(o, b) for o in range(len(co["optimizer"])) for b in range(len(co["batch_size"]))]
    level = family_level(len(modes))
    sizes = list(compared_sizes(a))
    ev = []
    for o, b in modes:
        found = best_lr_contrast(final[o, b][:, sizes], level)
        if found is None:
            continue
        bsm, blg, est = found
        margin = MARGIN * float(np.nanmean(np.abs(final[o, b, blg, sizes[1]])))
        res_ = decide(est, margin, "greater") if lrs[blg] < lrs[bsm] else CONTRADICTED
        if res_ == NO_DIFFERENCE:
            res_ = CONTRADICTED  # the claim needs a cost; none is shown
        edge = [f"{lrs[i]:g}" for i in {bsm, blg} if lrs[i] in (min(lrs), max(lrs))]
        flag = f" (best lr {', '.join(edge)} at the grid's edge: the optimum may lie outside)" if edge else ""
        ev.append(Evidence(setting_label(co["optimizer"][o], co["batch_size"][b]),
                           f"best lr small {lrs[bsm]:g}, large {lrs[blg]:g}{flag}; large-size final "
                           f"{name} L1 at small's best - at own best (test seeds)", est, res_, margin,
                           interval_name(T_MEAN, level, len(modes))))
    return Claim("lr_interacts", text, *settle(ev), rule, "heatmaps.png", ev)


def sweep_claims(a: Analysis) -> list[Claim]:
    """Claims 1-5 (claim 3 as two findings, test and train L1) on one sweep; with one size,
    none applies."""
    found = [claim_faster_small(a), claim_slower_steadier_large(a), claim_lowest_final_test(a),
             claim_lowest_final_train(a), claim_variable_small(a), claim_lr_interacts(a)]
    why = _one_size(a)
    pool = pool_rows(a)
    if pool and why is None:
        n = a.results.coords["size"][compared_sizes(a)[1]]
        found = [c._replace(rule=f"{c.rule}. Csv data: the largest size compared is n = {n} (n/N = "
                            f"{n / pool:.2g} of the training pool's {pool} rows, at most {POOL_LIMIT:g})"
                            + ("; spread intervals widened by the finite population correction's "
                               "range" if any("finite pool" in e.interval for e in c.evidence) else ""))
                 for c in found]
    return found if why is None else [c._replace(verdict=NOT_APPLICABLE, detail=why, counts=why, evidence=[])
                                      for c in found]


def claims_json(claims: list[Claim], twin: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """The claims as plain JSON types: per claim its verdict, rule and per-setting evidence, and
    (``twin``, from ``twin.explains``) whether the infinite-data twin's prediction explains it."""
    num = lambda v: float(v) if np.isfinite(v) else None
    return [{"key": c.key, **({"twin_explains": twin[c.key]} if twin and c.key in twin else {}),
             "number": c.number, "claim": c.text, "verdict": c.verdict, "detail": c.detail,
             "counts": c.counts, "rule": c.rule, "figure": c.figure,
             "evidence": [{"setting": e.setting, "quantity": e.quantity,
                           "estimate": num(e.estimate.value), "ci_low": num(e.estimate.low),
                           "ci_high": num(e.estimate.high), "margin": num(e.margin),
                           "interval": e.interval, "outcome": e.outcome}
                          for e in c.evidence]} for c in claims]


def optima_json(certified: np.ndarray, sizes: list[int]) -> list[dict[str, int]]:
    """Per size, how many datasets' exact optimum L* is certified (``Optima.certified``
    [size, seed]): the metrics built on L* are exact only where all are."""
    return [{"size": int(n), "certified": int(c.sum()), "datasets": int(c.size)}
            for n, c in zip(sizes, certified)]


class Proportion(NamedTuple):
    """k of n with its exact (Clopper-Pearson) 95% interval."""

    k: int
    n: int
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.k} of {self.n} = {self.k / self.n:.3g} [{self.low:.3g}, {self.high:.3g}]"


def claim_article_code(grew_runs: np.ndarray, grew_replicates: np.ndarray) -> Claim:
    """The article's printed losses: ``grew_runs`` [3] from its own script, ``grew_replicates``
    [seeds, 3] from the engine in its update mode; each True where the final loss exceeds the start."""
    k, n = int(np.sum(grew_replicates)), int(np.size(grew_replicates))
    share = Proportion(k, n, *stats.clopper_pearson(k, n))
    grew = bool(np.all(grew_runs)) and share.low > 0.95
    fell = not np.any(grew_runs) and share.high < 0.05
    out = CONTRADICTED if grew else SUPPORTED if fell else INCONCLUSIVE
    est = Estimate(k / n, share.low, share.high)
    ev = [Evidence("article code, sizes 100/1000/10000",
                   f"runs whose loss grew: {share} (its own 3 runs: {int(np.sum(grew_runs))} of 3)",
                   est, out, 0.05, "Clopper-Pearson exact, 95%")]
    return Claim("article_code",
                 "The article's code shows the loss dropping (fastest for the small dataset) to the "
                 "lowest final loss for the large one.", *settle(ev),
                 "the final loss above the initial one in all 3 of the article's runs and in > 95% of "
                 "the engine's replicates of its update (exact interval's lower bound): contradicted; "
                 "below in all: supported", "article.png", ev)
