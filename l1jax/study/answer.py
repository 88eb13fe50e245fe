"""The study's answer in words: sentences, and the tables they stand on, generated from the
analysed sweeps (nothing typed by hand), the article's own setting first."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l1jax.analysis import claims as C
from l1jax.analysis import rate_theory as RT
from l1jax.analysis import stats
from l1jax.analysis import twin as TW
from l1jax.analysis.analyze import Analysis
from l1jax.analysis.report import Report, sweep_seconds, twin_cost

NOISE_NAMES = {"gaussian": "gaussian", "laplace": "Laplace", "student_t": "Student t (3 df)",
               "contaminated": "contaminated (10% at 10x scale)"}


class SizeRates(NamedTuple):
    """Initial rate per epoch of one setting, size by size: mean over seeds [95% t interval],
    and the theory's first-order and saturated predictions (NaN where it does not apply)."""

    sizes: list[int]
    summary: stats.Summary
    first_order: np.ndarray
    predicted: np.ndarray


def size_rates(a: Analysis, o: int = 0, b: int = 0, l: int = 0, per_step: bool = False) -> SizeRates:
    """Rates of setting (optimizer o, batch b, lr l) of an analysed sweep."""
    co = a.results.coords
    v = (a.metrics.rate_step if per_step else a.metrics.rate_epoch)[o, b, l].astype(float)
    s = stats.t_summary(stats.moments(v), v.shape[-1])
    n = np.asarray(co["size"])
    nan = np.full(len(n), np.nan)
    terms = a.rate_terms
    if terms is None or co["optimizer"][o] != "sgd":
        return SizeRates(list(n), s, nan, nan)
    batch, lr = co["batch_size"][b], co["learning_rate"][l]
    steps = 1.0 if not per_step else RT.steps_per_epoch(n, batch)
    first = RT.first_order_rate(terms, n, batch, lr) / steps
    lstar = np.nanmean(a.optima.lstar, axis=-1)
    return SizeRates(list(n), s, first, RT.predicted_rate(terms, n, batch, lr, a.k, lstar) / steps)


def _ci(s: stats.Summary, i: int) -> str:
    return f"{s.mean[i]:.4g} [{s.ci_low[i]:.4g}, {s.ci_high[i]:.4g}]"


def _sizes_sentence(r: SizeRates) -> str:
    parts = [f"{_ci(r.summary, i)} at n = {n}" for i, n in enumerate(r.sizes)]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _evidence(claim: C.Claim) -> C.Evidence | None:
    return claim.evidence[0] if claim.evidence else None


def article_paragraph(full: Report, mini: Report | None) -> list[str]:
    """The answer in the article's own setting: rates size by size, the verdict, the mechanism."""
    a = full.analysis
    r = size_rates(a)
    c1 = _evidence(full.claim_list[0])
    terms = a.rate_terms
    seeds = a.results.config.sweep.seeds
    lines = [f"**In the article's own setting** (full-batch gradient descent on the true L1 subgradient, "
             f"lr {a.results.coords['learning_rate'][0]:g}, {a.results.config.train.epochs} epochs, "
             f"{seeds} seeds), the training L1 falls by {_sizes_sentence(r)} per epoch over the first "
             f"{a.k} epochs (means, 95% t intervals)."]
    if c1 is not None:
        lines.append(f"{FINDING[c1.outcome]}: the paired difference n = {r.sizes[0]} minus "
                     f"n = {r.sizes[-1]} is {c1.estimate}, against a margin of ±{c1.margin:.3g} "
                     f"({C.MARGIN:.0%} of the rate): claim 1 **{c1.outcome}**.")
    if terms is not None:
        n0, n1 = r.sizes[0], r.sizes[-1]
        extra = terms.trace / n0 / (terms.grad2 + terms.trace / n1)
        diff = r.first_order[0] - r.first_order[-1]
        where = ("inside" if c1 is not None and abs(diff) < c1.margin else "outside")
        lines.append(f"Why: to first order one step lowers the training L1 by lr·E‖g_n‖² = "
                     f"lr·(‖G‖² + tr Σ / n), with ‖G‖² = {terms.grad2:.3g} (the population subgradient "
                     f"at the random start) and tr Σ = {terms.trace:.3g} (its per-sample variance); with "
                     f"{a.results.config.data.n_features} features tr Σ / n adds {extra:.2%} to the rate "
                     f"at n = {n0}, a predicted difference of {diff:.3g}, {where} the margin; predicted "
                     f"rates {', '.join(f'{v:.4g}' for v in r.first_order)}.")
    if mini is not None:
        m = size_rates(mini.analysis)
        c1m = _evidence(mini.claim_list[0])
        batch = mini.analysis.results.coords["batch_size"][0]
        steps = RT.steps_per_epoch(np.asarray(m.sizes), batch)
        lines.append(f"**Its minibatch twin** (batches of {batch}, same lr and epochs, "
                     f"{mini.analysis.results.config.sweep.seeds} seeds): an epoch takes ceil(n/{batch}) = "
                     f"{', '.join(map(str, steps))} steps, so the rate per epoch is {_sizes_sentence(m)}; "
                     f"first-order theory capped at the gap to L* over the window: "
                     f"{', '.join(f'{v:.3g}' for v in m.predicted)}"
                     + (f". {FINDING[c1m.outcome]}: n = {m.sizes[0]} minus n = {m.sizes[-1]} is "
                        f"{c1m.estimate}, claim 1 **{c1m.outcome}**." if c1m else "."))
    return [" ".join(lines), ""]


FINDING = {C.SUPPORTED: "Smaller datasets fall faster", C.CONTRADICTED: "Larger datasets fall faster",
           C.NO_DIFFERENCE: "Smaller datasets do not fall faster, nor slower",
           C.INCONCLUSIVE: "These seeds cannot tell which size falls faster"}


def real_paragraph(real: Report) -> list[str]:
    """Why smaller real-data sets fall faster per step (tr Sigma / n with 10 features), and how
    large the finite pool's effect on claim 4 was."""
    a = real.analysis
    terms = a.rate_terms
    c1 = real.claim_list[0]
    lines = [f"**On real data** ({a.results.config.data.target} of the diabetes table, "
             f"{a.results.arrays['theta'].shape[-1] - 1} standardized features, full batch), claim 1 is "
             f"**{c1.verdict}** ({c1.counts})."]
    if terms is not None:
        r = size_rates(a)
        lines.append(f"The first-order law says why: here tr Σ / ‖G‖² = "
                     f"{terms.trace / terms.grad2:.3g} (‖G‖² = {terms.grad2:.3g}, tr Σ = {terms.trace:.3g} "
                     f"over the training pool of {terms.pool} rows), so at n = {r.sizes[0]} the variance "
                     f"term adds {terms.trace * (terms.pool - r.sizes[0]) / (terms.pool - 1) / r.sizes[0] / terms.grad2:.0%} "
                     f"to the rate; at lr {a.results.coords['learning_rate'][0]:g} the rate per epoch is "
                     f"{_sizes_sentence(r)}, predicted {', '.join(f'{v:.3g}' for v in r.predicted)}.")
    pool = C.pool_rows(a)
    if pool is not None:
        lines.append(pool_sentence(real, pool))
    return [" ".join(lines), ""]


def pool_sentence(real: Report, pool: int) -> str:
    """How large the finite pool's effect was: the finite population correction per size, and
    claim 4 judged with and without allowing for it."""
    a = real.analysis
    n = np.asarray(a.results.coords["size"])
    s, l = C.compared_sizes(a)
    f = stats.pool_sd_factor(n, pool)
    shares = ", ".join(f"{v / pool:.2g}" for v in n)
    head = (f"Every seed subsamples the pool of N = {pool} rows without replacement (n/N = {shares} at "
            f"n = {', '.join(map(str, n))}), which shrinks the seed-to-seed spread the data drive by "
            f"sqrt((N − n)/(N − 1)) = " + ", ".join(f"{v:.2g}" for v in f))
    if s == l:
        return f"{head}; no second size has n/N ≤ {C.POOL_LIMIT:g}, so no claim compares sizes."
    safe = next(c for c in real.claim_list if c.key == "variable_small")
    blind = C.claim_variable_small(a, pool_safe=False)
    return (f"{head}; so the claims compare n = {n[s]} with n = {n[l]} (n/N ≤ {C.POOL_LIMIT:g}) and "
            f"widen spread intervals by that factor, and claim 4 reads **{safe.verdict}** ({safe.counts}), "
            "against "
            f"**{blind.verdict}** ({blind.counts}) judged at n = {n[-1]} without allowing for the pool.")


def claims_overview(reports: dict[str, Report], titles: dict[str, str]) -> list[str]:
    """Where each claim holds and where it fails: verdict per sweep, with counts per batch mode."""
    names = list(reports)
    first = reports[names[0]].claim_list
    lines = ["| # | the article's claim | " + " | ".join(titles.get(n, n) for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for i, c in enumerate(first):  # every sweep judges the same claims, in the same order
        cells = []
        for n in names:
            got = reports[n].claim_list[i]
            cells.append(f"**{got.verdict}**" + (f" ({got.counts})" if got.evidence and
                                                 got.verdict == C.DEPENDS else ""))
        lines.append(f"| {c.number} | {c.text} | " + " | ".join(cells) + " |")
    return lines


def rate_table(rows: list[tuple[str, SizeRates]]) -> list[str]:
    """Measured against predicted initial rate per epoch, size by size."""
    lines = ["| sweep and setting | n | measured rate per epoch [95% t] | first-order theory | "
             "theory, saturated at the gap |", "|---|---|---|---|---|"]
    for label, r in rows:
        for i, n in enumerate(r.sizes):
            lines.append(f"| {label} | {n} | {_ci(r.summary, i)} | {r.first_order[i]:.4g} | "
                         f"{r.predicted[i]:.4g} |")
    return lines


def noise_table(reports: dict[str, Report]) -> list[str]:
    """The article's question under each noise law: rates at the smallest and largest size and
    the verdict of every claim, one row per noise family."""
    lines = ["| noise | L1 floor | rate per epoch, smallest n | rate per epoch, largest n | "
             "claim 1 | claim 2 | claim 3 (test) | claim 3 (train) | claim 4 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rep in reports.values():
        a = rep.analysis
        r = size_rates(a)
        verdicts = " | ".join(c.verdict for c in rep.claim_list[:5])
        lines.append(f"| {NOISE_NAMES.get(a.results.config.data.noise, a.results.config.data.noise)} | "
                     f"{a.floor:.4g} | {_ci(r.summary, 0)} | {_ci(r.summary, -1)} | {verdicts} |")
    return lines


HOLDS_SE = 4.0  # a setting's prediction holds when no recorded epoch's paired gap exceeds 4 se: the
# largest of ~100 correlated |t| values stays near 3 when the prediction is right


class SettingGap(NamedTuple):
    """The largest paired gap, in se, between a setting's measured mean train L1 curve and the
    twin's prediction, over its sizes and recorded epochs."""

    setting: str
    size: int
    worst: TW.Worst
    steps: int  # optimizer steps at that epoch


def setting_gaps(rep: Report) -> list[SettingGap]:
    """The worst gap of every setting (optimizer x batch x lr) of a sweep with a twin."""
    a, tw = rep.analysis, rep.twin
    co = a.results.coords
    out = []
    for label, (o, b, l) in C.settings(a):
        ws = [(TW.worst_gap(tw, co["epoch"], (o, b, l, s)), s) for s in range(len(co["size"]))]
        ws = [(w, s) for w, s in ws if np.isfinite(w.z)]
        if ws:
            w, s = max(ws, key=lambda ws_: abs(ws_[0].z))
            out.append(SettingGap(label, co["size"][s], w, int(tw.curves.steps[b, s, co["epoch"].index(w.epoch)])))
    return out


def _gap_words(g: SettingGap) -> str:
    return (f"{abs(g.worst.z):.2g} se at n = {g.size}, epoch {g.worst.epoch} ({g.steps} steps; "
            f"gap {g.worst.gap:+.2g}, {g.worst.relative:+.1%} of the predicted L1)")


def twin_paragraph(reports: dict[str, Report], titles: dict[str, str]) -> list[str]:
    """The whole curve from theory, sweep by sweep: where the twin's prediction holds, and where
    it fails, with the largest gaps in standard errors and the epoch."""
    with_twin = {n: r for n, r in reports.items() if r.twin is not None}
    if not with_twin:
        return []
    parts = []
    for n, r in with_twin.items():
        gaps = setting_gaps(r)
        if not gaps:
            continue
        bad = [g for g in gaps if abs(g.worst.z) > HOLDS_SE]
        if len(gaps) <= 2:
            parts.append(f"{titles.get(n, n)}: " + "; ".join(
                (f"{g.setting}, " if len(gaps) > 1 else "") + _gap_words(g) for g in gaps))
            continue
        good = [g for g in gaps if abs(g.worst.z) <= HOLDS_SE]
        text = f"{titles.get(n, n)}: within {HOLDS_SE:g} se in {len(good)} of {len(gaps)} settings"
        if good:
            top = max(good, key=lambda g: abs(g.worst.z))
            text += f" (largest {_gap_words(top)}, {top.setting})"
        if bad:
            text += "; beyond it in " + "; ".join(f"{g.setting}: {_gap_words(g)}" for g in bad)
        parts.append(text)
    twin_s = tuple(sum(v) for v in zip(*((r.twin.compile_s, r.twin.run_s) for r in with_twin.values())))
    sweep_s = tuple(sum(v) for v in zip(*(sweep_seconds(r.analysis.results.meta) for r in with_twin.values())))
    lines = ["**The whole curve from theory.** To first order a run's expected training L1 after k "
             "optimizer steps is the population L1 after k steps of the same optimizer on the "
             "population loss, whatever n is (its *infinite-data twin*: same optimizer, schedule, "
             "learning rate and start); a full-batch epoch is one step, a batch-B epoch ceil(n/B). "
             "Finite n adds the run's linear response to its sample's gradient noise: it starts as the "
             "initial-rate theory's lr·tr Σ/n per step and ends at claim 3's overfitting term "
             "p/(4 f(0) n) (for real data, the pool's least L1 minus the subsamples' mean L*). The "
             "largest gap between each setting's "
             "measured mean curve and this prediction, in standard errors of the paired difference "
             "(per seed, against its own twin), and where it occurs: " + "; ".join(parts) + "."]
    mini = with_twin.get("article_minibatch")
    if mini is not None and all(abs(g.worst.z) <= HOLDS_SE for g in setting_gaps(mini)):
        lines.append("Where the prediction holds, the curves of every size and batch mode collapse onto "
                     "the twin when drawn against optimizer steps (the steps figures): per step, size "
                     "sets almost nothing; per epoch, the number of steps decides.")
    lines.append("Where it fails, it misses what first order leaves out: the minibatch noise of large "
                 "steps (the twin has none, so the runs stay above it) and, for a few samples with many "
                 "features, constant steps bouncing on a piecewise-linear loss above its minimum.")
    lines.append("All sweeps together: t" + twin_cost(twin_s, sweep_s, "the sweeps'")[1:])
    return [" ".join(lines), ""]


def twin_table(reports: dict[str, Report], titles: dict[str, str]) -> list[str]:
    """Every setting's largest gap against the twin's prediction, sweep by sweep."""
    lines = ["| sweep | setting | largest \\|gap\\| / se | at n, epoch (steps) | gap | gap / predicted | "
             f"within {HOLDS_SE:g} se |", "|---|---|---|---|---|---|---|"]
    for n, r in reports.items():
        if r.twin is None:
            lines.append(f"| {titles.get(n, n)} | all | no twin: {TW.applies(r.analysis.results.config)} | | | | |")
            continue
        for g in setting_gaps(r):
            lines.append(f"| {titles.get(n, n)} | {g.setting} | {abs(g.worst.z):.3g} | n = {g.size}, "
                         f"{g.worst.epoch} ({g.steps}) | {g.worst.gap:+.3g} | {g.worst.relative:+.2%} | "
                         f"{'yes' if abs(g.worst.z) <= HOLDS_SE else '**no**'} |")
    return lines
