"""``l1jax study``: the main job.  Runs the article's experiment, the synthetic size sweep and the
real-data sweep, analyses them, draws the figures and writes ``report.md`` with the claims table.
Every number and verdict in the report comes from these runs.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from l1jax.analysis import claims as C
from l1jax.analysis import plots
from l1jax.analysis.optima import Analysis, analyze
from l1jax.engine.config import Config, load_config
from l1jax.study.reproduce import Reproduction, report as seed_report, reproduce
from l1jax.engine.sweep import host_description, run

STUDIES = Path(__file__).with_name("data")
DEFAULT_MAIN = STUDIES / "main.toml"
DEFAULT_REAL = STUDIES / "diabetes.toml"
RATE_WINDOW = 5  # k: the initial rate is measured over the first k epochs


def evaluate_claims(a: Analysis) -> list[C.Claim]:
    """Claims 1-5 on one sweep."""
    return [C.claim_faster_small(a), C.claim_slower_steadier_large(a), C.claim_lowest_final_large(a),
            C.claim_variable_small(a), C.claim_lr_interacts(a)]


def article_claim(r: Reproduction) -> C.Claim:
    return C.claim_article_code(r.article[:, -1] > r.article[:, 0], r.seed_curves[..., -1].T > r.seed_curves[..., 0].T)


def _reference_settings(a: Analysis) -> set[str]:
    co = a.results.coords
    return {C.setting_label(co["optimizer"][0], bs, co["learning_rate"][plots.reference_lr(a, 0, b)])
            for b, bs in enumerate(co["batch_size"])}


def _numbers(claim: C.Claim, a: Analysis | None) -> str:
    """The deciding numbers shown in the table: the reference setting of each batch mode."""
    ref = _reference_settings(a) if a is not None else None
    picked = [e for e in claim.evidence if ref is None or e.setting in ref or "lr" not in e.setting]
    return "<br>".join(f"{e.setting}: {e.quantity} = {e.estimate}" for e in picked)


def _machine() -> str:
    d = jax.devices()[0]
    return (f"{jax.default_backend()} backend, device {d.device_kind} x{jax.device_count()}, "
            f"host {host_description()}, "
            f"python {platform.python_version()}, jax {jax.__version__}")


def write_report(out: Path, figdir: Path, repro: Reproduction, main: Analysis, real: Analysis,
                 real_name: str, timings: dict[str, float]) -> Path:
    main_claims, real_claims = evaluate_claims(main), evaluate_claims(real)
    art = article_claim(repro)
    rel = lambda f: Path(os.path.relpath(figdir / f, out)).as_posix()
    mc = main.results.config
    lines = [
        "# Does the rate of L1 loss decrease depend on dataset size? The article's claims, tested",
        "",
        f"Measured on: {_machine()}. Wall time per stage: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".",
        "",
        f"Main sweep: synthetic y = x·{list(mc.data.true_weights)} + {mc.data.true_bias:g} + "
        f"{mc.data.noise} noise (scale {mc.data.noise_scale:g}), x ~ U(0,1)^{mc.data.n_features}; "
        f"sizes {list(mc.sweep.sizes)} ({mc.data.coupling} coupling), {mc.sweep.seeds} seeds, "
        f"{mc.train.epochs} epochs, {', '.join(mc.train.optimizer)}, learning rates "
        f"{list(mc.train.learning_rate)}, batch {list(mc.train.batch_size)}, true L1 subgradient; "
        f"test sets of {mc.data.test_size}. Real data: {real_name}. Initial rate window k = {RATE_WINDOW} epochs.",
        "",
        f"Verdict rules (code in `l1jax/claims.py`): smallest vs largest size in every setting "
        f"(optimizer x batch x learning rate), 95% intervals over seeds; a difference counts when "
        f"its interval excludes 0 and it exceeds {C.MATERIAL:.0%}; settings that disagree give "
        f"\"{C.DEPENDS}\". The numbers shown are the reference setting of each batch mode (the "
        "learning rate with the lowest final test L1 at the largest size); all settings are listed below.",
        "",
        "| # | the article's claim | verdict: synthetic | verdict: real data | deciding numbers (synthetic; 95% CI) | rule | figure |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (m, r) in enumerate(zip(main_claims, real_claims), start=1):
        lines.append(f"| {i} | {m.text} | **{m.verdict}** | **{r.verdict}** | {_numbers(m, main)} | "
                     f"{m.rule} | [{m.figure}]({rel(m.figure)}) |")
    lines.append(f"| 6 | {art.text} | **{art.verdict}** | n/a | {_numbers(art, None)} | {art.rule} | "
                 f"[{art.figure}]({rel(art.figure)}) |")
    lines += ["", "## The article's experiment", "", "```", seed_report(repro), "```", "",
              f"![article]({rel('fig1_article.png')})", "", "## Figures", ""]
    for f, cap in [("fig2_curves.png", "train and test L1 by epoch, per size"),
                   ("fig3_rate.png", "initial decrease rate against size"),
                   ("fig4_final.png", "final L1 against size, with theory"),
                   ("fig5_spread.png", "seed-to-seed spread of the final loss"),
                   ("fig6_heatmaps.png", "learning rate x size"),
                   ("fig7_real.png", f"real data: {real_name}")]:
        lines += [f"### {cap}", "", f"![{cap}]({rel(f)})", ""]
    theory_rows = [f"| {n} | {t:.4f} | {np.nanmean(e):.4f} ± {1.96 * np.nanstd(e, ddof=1) / np.sqrt(e.size):.4f} |"
                   for n, t, e in zip(mc.sweep.sizes, main.theory, main.optima.test_l1)]
    lines += ["## Theory check", "",
              f"Bayes L1 floor {main.floor:.4f}. Expected test L1 of the exact L1 fit, "
              "floor + p/(4 f(0) n), against its measured mean over seeds (± 95% normal interval):", "",
              "| n | theory | exact fit, measured |", "|---|---|---|", *theory_rows, ""]
    for title, cl in (("synthetic", main_claims + [art]), (real_name, real_claims)):
        lines += [f"## All settings: {title}", ""]
        for c in cl:
            lines += [f"**{c.text}** Verdict: **{c.verdict}**. {c.detail}.", "",
                      "| setting | quantity | estimate [95% CI] | outcome |", "|---|---|---|---|"]
            lines += [f"| {e.setting} | {e.quantity} | {e.estimate} | {e.outcome} |" for e in c.evidence]
            lines.append("")
    div = [(t, int(a.results.diverged.sum()), a.results.diverged.size)
           for t, a in (("main", main), ("real", real))]
    lines += ["## Divergent runs", "",
              "Excluded from every statistic: " + "; ".join(f"{t}: {d} of {n}" for t, d, n in div) + ".", ""]
    path = out / "report.md"
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def study(out: Path, figdir: Path | None = None, main_cfg: Config | None = None,
          real_cfg: Config | None = None, seeds_article: int = 100) -> Path:
    """Run everything; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    figdir = figdir or out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    main_cfg = main_cfg or load_config(DEFAULT_MAIN)
    real_cfg = real_cfg or load_config(DEFAULT_REAL)
    timings: dict[str, float] = {}
    stages = ["article experiment", "main sweep", "main analysis", "real-data sweep",
              "real-data analysis", "figures and report"]
    bar = tqdm(stages, desc="study", unit="stage")
    t = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t
        timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        bar.set_postfix_str(name)
        bar.update()

    repro = reproduce(seeds_article, main_cfg.sweep.base_seed); tick(stages[0])
    main_res = run(main_cfg); main_res.save(out / "main"); tick(stages[1])
    main = analyze(main_res, RATE_WINDOW); tick(stages[2])
    real_res = run(real_cfg); real_res.save(out / "real"); tick(stages[3])
    real = analyze(real_res, RATE_WINDOW); tick(stages[4])
    real_name = f"{Path(real_cfg.data.path).name} (target {real_cfg.data.target})"
    plots.fig_article(repro, figdir / "fig1_article.png")
    plots.fig_curves(main, figdir / "fig2_curves.png")
    plots.fig_rate(main, figdir / "fig3_rate.png", RATE_WINDOW)
    plots.fig_final(main, figdir / "fig4_final.png")
    plots.fig_spread(main, figdir / "fig5_spread.png")
    plots.fig_heatmaps(main, figdir / "fig6_heatmaps.png", RATE_WINDOW)
    plots.fig_real(real, figdir / "fig7_real.png", real_name)
    tick(stages[5])
    bar.close()
    return write_report(out, figdir, repro, main, real, real_name, timings)
