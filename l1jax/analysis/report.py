"""``l1jax report DIR``: the report of any finished sweep, read from its results directory and
never rerun: ``report.md``, ``figures/*.png``, ``metrics.csv`` and ``claims.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from l1jax.analysis import claims as C
from l1jax.analysis import plots, stats
from l1jax.analysis import twin as TW
from l1jax.analysis.analyze import Analysis, analyze, has_test_set
from l1jax.analysis.theory import expected_train_l1
from l1jax.analysis.optima import Optima
from l1jax.analysis.tables import metric_summary, write_metrics_csv, write_theory_csv
from l1jax.engine.config import Config, ConfigError
from l1jax.engine.files import atomic_file, data_digest
from l1jax.engine.results import Results
from l1jax.engine.sweep import host_description
from l1jax.engine.table import load_csv

NOISE = {"gaussian": "gaussian N(0, s²)", "laplace": "Laplace(0, s)",
         "student_t": "Student t with {df:g} degrees of freedom, times s",
         "contaminated": "N(0, s²), and N(0, (10 s)²) with probability {of:g}"}


class Report(NamedTuple):
    """What ``report`` wrote, and the analysis it came from."""

    report: Path
    metrics: Path
    claims: Path
    figures: list[Path]
    analysis: Analysis
    claim_list: list[C.Claim]
    twin: TW.SweepTwin | None = None  # every run's infinite-data twin (None: see ``twin.applies``)
    theory: Path | None = None  # theory.csv, where the sweep has a twin


def describe_data(cfg: Config) -> str:
    """The data of a sweep in a sentence, from its config."""
    d = cfg.data
    if d.source == "synthetic":
        w = ", ".join(f"{v:g}" for v in d.true_weights)
        noise = NOISE[d.noise].format(df=d.noise_df, of=d.outlier_fraction)
        test = f"a fresh test set of {d.test_size} samples per run" if d.test_size else "no test set"
        return (f"synthetic: y = x·[{w}] + {d.true_bias:g} + noise, x ~ U(0,1)^{d.n_features}, "
                f"noise {noise} with s = {d.noise_scale:g}; {test}")
    table = load_csv(d, cfg.sweep.base_seed)
    units = "z-scored by the training pool's mean and sd" if d.standardize else "in the file's own units"
    test = (f"{len(table.y_test)} held-out test rows" if len(table.y_test) else "no test rows")
    return (f"csv file `{Path(d.path).name}`, target `{d.target}`, {table.x_train.shape[1]} features "
            f"({units}); a training pool of {table.n_train} rows and {test} (test_fraction "
            f"{d.test_fraction:g}, split by base_seed). Real data has no known noise law, so no Bayes "
            "floor, true parameters or theory apply")


def size_list(cfg: Config) -> str:
    """The sweep's sizes; for csv data each with its share n/N of the training pool."""
    if cfg.data.source != "csv":
        return ", ".join(map(str, cfg.sweep.sizes))
    pool = load_csv(cfg.data, cfg.sweep.base_seed).n_train
    return ", ".join(f"{n} (n/N = {n / pool:.2g})" for n in cfg.sweep.sizes)


def describe_training(cfg: Config, k: int) -> str:
    t, s = cfg.train, cfg.sweep
    grad = "the true L1 subgradient" if t.gradient == "l1" else "the article's update -(2/n)Xᵀ(ŷ - y)"
    return (f"{t.epochs} epochs of {grad}; optimizers {', '.join(t.optimizer)}; learning rates "
            f"{', '.join(f'{v:g}' for v in t.learning_rate)} ({t.schedule} schedule); batch "
            f"{', '.join(plots.batch_label(b) for b in t.batch_size)}; init {t.init}; sizes "
            f"{size_list(cfg)} ({cfg.data.coupling} coupling); {s.seeds} seeds "
            f"(base seed {s.base_seed}); metrics recorded every {t.record_every} epoch(s); initial "
            f"rate window k = {k} epochs")


def _machine(meta: dict) -> str:
    v = meta.get("versions", {})
    return (f"{meta.get('backend', '?')} backend, {meta.get('device', '?')} x{meta.get('device_count', '?')}, "
            f"host {meta.get('host', '?')}, jax {v.get('jax', '?')}, l1jax {v.get('l1jax', '?')}")


def _ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "no finite run"
    if not np.isfinite(low):
        return f"{mean:.4g} (one run)"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _grid_table(a: Analysis) -> list[str]:
    """Final losses and initial rate per grid point: mean [95% t interval] over seeds."""
    co = a.results.coords
    names = ["final_train_l1"] + (["final_test_l1"] if has_test_set(a.results.config) else []) + [
        "initial_rate_per_epoch", "suboptimality"]
    sums = {m: metric_summary(a, m) for m in names}
    heads = {"final_train_l1": "final train L1", "final_test_l1": "final test L1",
             "initial_rate_per_epoch": f"initial rate per epoch (k = {a.k})",
             "suboptimality": "final train L1 - L*"}
    lines = ["| optimizer | batch | lr | n | " + " | ".join(heads[m] for m in names) + " | diverged |",
             "|---|---|---|---|" + "---|" * len(names) + "---|"]
    div = a.results.diverged.sum(axis=-1)
    for (o, b, l, s), nd in np.ndenumerate(div):
        cells = [_ci(sums[m].mean[o, b, l, s], sums[m].ci_low[o, b, l, s], sums[m].ci_high[o, b, l, s])
                 for m in names]
        lines.append(f"| {co['optimizer'][o]} | {plots.batch_label(co['batch_size'][b])} | "
                     f"{co['learning_rate'][l]:g} | {co['size'][s]} | " + " | ".join(cells)
                     + f" | {nd}/{len(co['seed'])} |")
    return lines


def certified_line(opt: Optima) -> str:
    """How many datasets' exact optimum L* passed its float64 optimality certificate."""
    ok, total = int(opt.certified.sum()), opt.certified.size
    unverified = "" if ok == total else (f"; L* and the metrics built on it (suboptimality, epochs "
                                         f"to close the gap) of the other {total - ok} are unverified")
    return f"Exact optimum L* certified (float64 duality gap) for {ok} of {total} datasets{unverified}."


def theory_section(a: Analysis) -> list[str]:
    """The Bayes floor and the exact fit's expected test and training L1 (large-n formulas)
    against their measured means, with the measured excess over the formula's as a factor."""
    co = a.results.coords
    if a.floor is None:
        return ["No Bayes floor or theory for csv data: its noise law is unknown. The exact L1 fit "
                "of each training subsample (L*, and its held-out L1 where there are test rows) is "
                "in `metrics.csv` as `exact_optimum` and `exact_fit_test_l1`.", ""]
    cfg = a.results.config.data
    n = np.asarray(co["size"], float)
    lines = [f"Bayes L1 floor (E|noise|, the least expected test L1 of any predictor): {a.floor:.4f}.",
             "", "Large-n formulas for the exact L1 fit on n samples: held-out L1 = floor + p/(4 f(0) n), "
             "training L1 L*_n = floor - p/(4 f(0) n) (the fit uses its own noise, so small sets fit "
             "below the floor); against their means over seeds [95% t interval], and the measured "
             "distance from the floor as a multiple of the formula's (1 where the formula holds):", "",
             "| n | test theory | test measured | factor | train theory | train L* measured | factor |",
             "|---|---|---|---|---|---|---|"]
    train_theory = np.asarray(expected_train_l1(cfg, n))
    sums = [stats.t_summary(stats.moments(v), v.shape[-1]) for v in (a.optima.test_l1, a.optima.lstar)]
    test_ok = has_test_set(a.results.config)
    for i, size in enumerate(co["size"]):
        test = (f"{a.theory[i]:.4f} | {_ci(sums[0].mean[i], sums[0].ci_low[i], sums[0].ci_high[i])} | "
                f"{(sums[0].mean[i] - a.floor) / (a.theory[i] - a.floor):.2f}") if test_ok else "- | no test set | -"
        lines.append(f"| {size} | {test} | {train_theory[i]:.4f} | "
                     f"{_ci(sums[1].mean[i], sums[1].ci_low[i], sums[1].ci_high[i])} | "
                     f"{(a.floor - sums[1].mean[i]) / (a.floor - train_theory[i]):.2f} |")
    return lines + [""]


def sweep_seconds(meta: dict) -> tuple[float, float]:
    """Compile and run time of a sweep, from its manifest."""
    programs = meta.get("programs", [])
    return (float(sum(p.get("compile_s", 0) for p in programs)), float(sum(p.get("run_s", 0) for p in programs)))


def twin_cost(twin_s: tuple[float, float], sweep_s: tuple[float, float], whose: str = "the sweep's") -> str:
    """What the twins cost against the sweep, compile and run apart, in words."""
    (tc, tr), (sc, sr) = twin_s, sweep_s
    share = f" ({tr / sr:.0%} of {whose} {sr:.1f} s)" if sr > 0 else ""
    return (f"The twins ran in {tr:.2f} s{share} after {tc:.1f} s of compiling ({whose}: {sc:.1f} s; "
            "both are kept in the on-disk compilation cache).")


def twin_rule(cfg: Config) -> str:
    """How the prediction is made, in words."""
    csv = cfg.data.source == "csv"
    pop = ("the training pool (full-batch training on all of it: exact for n = pool)" if csv
           else "x ~ U(0,1)^d and the noise law (closed form over the noise, "
           + ("tensor Gauss-Legendre" if cfg.data.n_features <= 3 else "a shifted Halton set") + " over x)")
    response = ("The finite-n terms follow the run's linear response J = ∂θ_k/∂ξ to its sample's "
                "gradient noise ξ (covariance Σ/n), propagated through the optimizer's own update "
                "along the twin. ")
    if csv:
        finite = ("A pool's loss is piecewise linear, so V = −tr(JΣ)·(N − n)/((N − 1) n) (for sgd "
                  "the initial-rate theory's lr·tr Σ/n per step, summed) saturates at the overfitting "
                  "term O, the pool's least L1 minus the mean exact optimum L* of the size-n "
                  "subsamples: predicted training L1 = twin − O·u, u = 1 − exp(−V/O); held-out = "
                  "twin + O (1 − √(1 − u))². ")
    else:
        finite = ("Predicted training L1 = twin + (tr(JΣ) + ½ tr(JᵀHJΣ))/n, held-out = twin + "
                  "½ tr(JᵀHJΣ)/n (H the population loss's curvature): for sgd the first term starts "
                  "as the initial-rate theory's −lr·tr Σ/n per step, and both end at claim 3's "
                  "∓p/(4 f(0) n); where the response leaves the bounds a stable step keeps ([−O, 0] "
                  "and [0, 4 O], O = p/(4 f(0) n)) the terms are clipped to them. ")
    return ("Each run's *twin* takes the run's own optimizer, schedule, learning rate and start and "
            f"steps on the population L1 over {pop}; a run at epoch e has taken e·ceil(n/B) steps (e "
            "for full batch) and is compared with its twin after as many steps. " + response + finite
            + "Gap = measured − predicted train L1, paired per seed, with its standard error (se) "
            "over seeds. First order: expected to fail at large lr in minibatches (the twin has no "
            "minibatch noise), for small n with many features and for heavy-tailed noise.")


def tail_words(a: Analysis, tw: TW.SweepTwin) -> str:
    """Where the closed-form tail took over from stepping, and the share of steps it spared."""
    cfg, c = a.results.config, tw.curves
    if cfg.data.source == "csv":
        return ""  # a pool's loss is piecewise linear: no quadratic model
    if c.tail_radius is None:
        return ("No closed-form tail (it needs plain SGD at a constant rate and a noise density smooth "
                "at 0): every twin stepped to the end. ")
    if (c.tail_from < 0).all():
        return (f"The closed-form tail never took over: no twin came within {c.tail_radius:.2g} of θ* "
                f"in the {c.stepped} steps taken, so every twin stepped to the end. ")
    lrs, opts = a.results.coords["learning_rate"], a.results.coords["optimizer"]
    done = []
    for o, l in np.ndindex(c.tail_from.shape[:2]):
        since = c.tail_from[o, l]
        if opts[o] == "sgd":
            done.append(f"lr {lrs[l]:g}: " + (f"step {int(since.max())}" if (since >= 0).all() else
                                              f"{int((since >= 0).sum())} of {since.size} twins"))
    ended = np.where((c.tail_from >= 0).all(-1), c.stepped - c.tail_from.max(-1), 0)  # a rate's steps spared
    spared = ended.sum() / max(ended.size * c.stepped, 1)
    return (f"Closed-form tail: once a twin is within {c.tail_radius:.2g} of θ* (there the quadratic "
            f"model's Hessian 2 f(0) E[(x,1)(x,1)ᵀ] is within {TW.TAIL_TOL:g} of the exact one) at a "
            "rate stable in every mode, it and its response move in closed form. Of "
            f"{c.stepped} steps, every twin had handed over by {', '.join(done)}: {spared:.0%} of all "
            "rates' steps were spared (a rate's steps end once all its twins have handed over). ")


def _clipped_worst(a: Analysis, tw: TW.SweepTwin) -> str:
    """The setting and size whose runs' finite-n terms were clipped most often, in words."""
    share = tw.predicted.clipped.mean(axis=(4, 5))
    o, b, l, s = np.unravel_index(int(np.argmax(share)), share.shape)
    co = a.results.coords
    return (f"{co['optimizer'][o]}, {plots.batch_label(co['batch_size'][b])}, lr {co['learning_rate'][l]:g}, "
            f"n = {co['size'][s]}: {share[o, b, l, s]:.0%}")


def twin_section(a: Analysis, tw: TW.SweepTwin | None) -> list[str]:
    """The whole curve from theory: per setting the largest paired gap in se and where it is."""
    cfg = a.results.config
    why = TW.applies(cfg)
    if tw is None:
        return [f"No infinite-data twin: {why}.", ""]
    co = a.results.coords
    lines = [twin_rule(cfg), "",
             f"Integration error (largest change of the population L1 at the runs' starts when the "
             f"quadrature is refined): {tw.integration_error:.2g}. The linear response left its stable "
             f"bounds (finite-n terms clipped) in {tw.predicted.clipped.mean():.1%} of run-epochs"
             + (f" (largest share: {_clipped_worst(a, tw)})" if tw.predicted.clipped.any() else "")
             + ". " + tail_words(a, tw) + twin_cost((tw.compile_s, tw.run_s), sweep_seconds(a.results.meta)), "",
             "| optimizer | batch | lr | n | largest \\|gap\\| / se | at epoch (steps) | gap there | "
             "gap / predicted | largest \\|gap\\| / predicted, any epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o, b, l, s in np.ndindex(tw.gap.mean.shape[:4]):
        w = TW.worst_gap(tw, co["epoch"], (o, b, l, s))
        if w.epoch < 0:
            lines.append(f"| {co['optimizer'][o]} | {plots.batch_label(co['batch_size'][b])} | "
                         f"{co['learning_rate'][l]:g} | {co['size'][s]} | every run diverged | | | | |")
            continue
        steps = int(tw.curves.steps[b, s, co["epoch"].index(w.epoch)])
        lines.append(f"| {co['optimizer'][o]} | {plots.batch_label(co['batch_size'][b])} | "
                     f"{co['learning_rate'][l]:g} | {co['size'][s]} | {abs(w.z):.3g} | {w.epoch} ({steps}) | "
                     f"{w.gap:+.3g} | {w.relative:+.2%} | {w.max_relative:.2%} |")
    return lines + [""]


def verdict_rules() -> list[str]:
    """How a verdict is reached, in words, from the constants of ``claims``."""
    return [f"Each claim compares the smallest and the largest size in every setting (optimizer x "
            f"batch mode x learning rate). A claim's intervals are simultaneous at {C.FAMILY_LEVEL:.0%} "
            "(Bonferroni over its comparisons): Student t for mean differences (paired per seed "
            "under nested coupling, else Welch's standard error with Hsu's df min(n) − 1), "
            "jackknife t for log ratios of spreads. Each "
            f"comparison is *no difference* when its whole interval lies within the margin "
            f"(±{C.MARGIN:.0%} of the large-size mean; spread ratios 0.8x to 1.25x), *supported* or "
            "*contradicted* when it excludes 0 on the claimed or the opposite side, else "
            "*inconclusive*. On csv data, whose seeds subsample one training pool of N rows without "
            f"replacement, the largest size compared is the largest with n/N ≤ {C.POOL_LIMIT:g}, and "
            "intervals of spread ratios are widened by the finite population correction's range. "
            "Rules in `l1jax/analysis/claims.py`; every number is in `claims.json`."]


def pool_section(a: Analysis, claims: list[C.Claim]) -> list[str]:
    """For csv data: n/N and the finite population correction per size, the sizes the claims
    compare, and claim 4 judged with and without allowing for the pool."""
    pool = C.pool_rows(a)
    if pool is None:
        return []
    n = np.asarray(a.results.coords["size"])
    s, l = C.compared_sizes(a)
    lines = ["## The finite pool", "",
             f"Every seed subsamples the training pool of N = {pool} rows without replacement, so two "
             "seeds' subsamples of n rows share about n²/N of them, and the spread across seeds of "
             "anything the data drive shrinks by the finite population correction sqrt((N − n)/(N − 1)) "
             "(exact for a mean, first order for a fit's loss; tests/test_finite_pool.py); the spread "
             "the random start and shuffles drive does not shrink.", "",
             "| n | n/N | sqrt((N − n)/(N − 1)) |", "|---|---|---|",
             *[f"| {v} | {v / pool:.3g} | {f:.3g} |" for v, f in zip(n, stats.pool_sd_factor(n, pool))],
             ""]
    if l == s:
        return lines + [f"No size but n = {n[0]} is within n/N ≤ {C.POOL_LIMIT:g}: no claim compares "
                        "sizes.", ""]
    safe = next(c for c in claims if c.key == "variable_small")
    blind = C.claim_variable_small(a, pool_safe=False)
    left = f", leaving out {', '.join(map(str, n[l + 1:]))}" if l + 1 < len(n) else ""
    return lines + [f"The claims compare n = {n[s]} with n = {n[l]}, the largest size with n/N ≤ "
                    f"{C.POOL_LIMIT:g}{left}; "
                    "intervals of spread ratios are widened to hold the ratio without the pool, whatever "
                    "share of the spread the data drive. Claim 4 so judged: "
                    f"**{safe.verdict}** ({safe.counts}); "
                    f"judged at n = {n[0]} against n = {n[-1]} without allowing for the pool: "
                    f"**{blind.verdict}** ({blind.counts}).", ""]


def claims_table(claims: list[C.Claim], figure_dir: str) -> list[str]:
    lines = ["| # | the article's claim | verdict | settings (evidence) | rule | figure |",
             "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.number} | {c.text} | **{c.verdict}** | {c.counts} | {c.rule} | "
                     f"[{c.figure}]({figure_dir}/{c.figure}) |")
    return lines


def evidence_section(claims: list[C.Claim]) -> list[str]:
    lines = []
    for c in claims:
        lines += [f"**{c.number}. {c.text}** Verdict: **{c.verdict}** ({c.counts}).", ""]
        if c.evidence:
            lines += ["| setting | quantity | estimate [interval] | margin | interval | outcome |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {e.setting} | {e.quantity} | {e.estimate} | "
                      f"{f'±{e.margin:.3g}' if np.isfinite(e.margin) else 'undefined'} | {e.interval} | "
                      f"{e.outcome} |" for e in c.evidence]
            lines.append("")
    return lines


def write_text(path: Path, text: str) -> Path:
    """Write a file atomically (a temporary name beside it, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path


def report(run_dir: str | Path, out: str | Path | None = None, quiet: bool = True,
           memory_budget: int | None = None, name: str | None = None,
           draw: Callable[[Analysis, Path, TW.SweepTwin | None], list[Path]] = plots.draw_all) -> Report:
    """Analyse the sweep in ``run_dir`` (written by ``l1jax run``) and write its report into
    ``out`` (default ``run_dir/report``); ``name`` labels the sweep (default: the directory's).
    ``draw`` makes the figures (``plots.draw_all``, or a study's worker that draws them while
    the study goes on, returning ``plots.figure_paths`` at once)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    name = name or run_dir.resolve().name
    t0 = time.perf_counter()
    res = Results.load(run_dir, mmap=True)
    recorded = res.meta.get("data_sha256")  # manifests from before it was recorded were checked on load
    if res.config.data.source == "csv" and recorded is not None and recorded != data_digest(res.config):
        raise ConfigError(f"{res.config.data.path} has changed since the run in {run_dir}: the exact "
                          "optima would come from other data; rerun `l1jax run` on the current file")
    out.mkdir(parents=True, exist_ok=True)
    with stats.quiet():  # groups with no finite run or no spread are worded, not warned about
        a = analyze(res, memory_budget=memory_budget, quiet=quiet)
        t1 = time.perf_counter()
        claims = C.sweep_claims(a)
        tw = TW.sweep_twin(a)
        figures = draw(a, out / "figures", tw)
    metrics = write_metrics_csv(a, out / "metrics.csv", name)
    theory = None if tw is None else write_theory_csv(a, tw, out / "theory.csv", name)
    claims_path = write_text(out / "claims.json", json.dumps(
        {"sweep": name, "claims": C.claims_json(claims, TW.explains(a, tw, claims)),
         "optima_certified": C.optima_json(a.optima.certified, res.coords["size"])}, indent=2) + "\n")
    t2 = time.perf_counter()
    cfg = res.config
    n_div, n_runs = int(res.diverged.sum()), res.diverged.size
    lines = [f"# l1jax report: {name}", "",
             f"Data: {describe_data(cfg)}.", "",
             f"Training: {describe_training(cfg, a.k)}.", "",
             f"{n_runs} runs, {n_div} diverged (a loss or parameter became non-finite; left out of "
             "every statistic and counted). Intervals in the tables of metrics are 95% Student t "
             "intervals of means.", "",
             "## The article's claims on this sweep", "",
             *verdict_rules(), "",
             *claims_table(claims, "figures"), "",
             *pool_section(a, claims),
             "## Final losses and initial rate per grid point", "",
             "Mean over seeds [95% t interval]; all metrics, with sd and se, are in `metrics.csv`.", "",
             *_grid_table(a), "",
             "## Exact optimum and theory", "", certified_line(a.optima), "", *theory_section(a),
             "## The whole curve from theory: each run's infinite-data twin", "", *twin_section(a, tw),
             "## Figures", "",
             "Each optimizer and batch mode is drawn at its reference learning rate (the lowest mean "
             f"final {'test' if has_test_set(cfg) else 'train'} L1 at the largest size), named in each "
             "legend and title; the heatmaps show every learning rate.", ""]
    captions = {"curves.png": "L1 by epoch per size", "steps.png": "train L1 against optimizer steps, with the twin",
                "rate.png": "initial rate against size",
                "final.png": "final L1 against size", "spread.png": "seed-to-seed spread",
                "heatmaps.png": "learning rate x size"}
    for f in figures:
        lines += [f"### {captions[f.name]}", "", f"![{captions[f.name]}](figures/{f.name})", ""]
    lines += ["## Evidence per setting", "", *evidence_section(claims),
              "## Provenance", "",
              f"Runs made on: {_machine(res.meta)}. Report made on: {host_description()}; analysis "
              f"{t1 - t0:.1f} s, {'figures and tables' if draw is plots.draw_all else 'tables (the figures drawn beside the study)'} "
              f"{t2 - t1:.1f} s.", ""]
    path = write_text(out / "report.md", "\n".join(lines))
    return Report(path, metrics, claims_path, figures, a, claims, tw, theory)
