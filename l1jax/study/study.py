"""``l1jax study``: the main job.  Runs the article's experiment, then each built-in sweep into
``OUT/<sweep>/`` as an ordinary (resumable) ``l1jax run`` directory, reports each with
``l1jax report``, and writes the study's own ``OUT/report.md`` and ``OUT/figures/`` on top.
Every number and verdict in the report comes from these runs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from l1jax.analysis import claims as C
from l1jax.analysis import plots
from l1jax.analysis.report import (Report, describe_data, describe_training, evidence_section, report,
                                   theory_section, write_text)
from l1jax.engine.config import Config, ConfigError, load_config
from l1jax.engine.files import DirLock
from l1jax.engine.sweep import host_description, run_to_dir
from l1jax.study.reproduce import SIZES, Reproduction, report as seed_report, reproduce

DATA = Path(__file__).with_name("data")
SWEEPS = {"main": DATA / "main.toml", "real": DATA / "diabetes.toml"}  # name -> config
TITLES = {"main": "synthetic", "real": "real data"}


class StudyRun(NamedTuple):
    report: Path
    figures: Path
    sweeps: list[Path]
    summary: str  # the claims, verdict by verdict, for the terminal


def article_claim(r: Reproduction) -> C.Claim:
    return C.claim_article_code(r.article[:, -1] > r.article[:, 0], r.seed_curves[..., -1].T > r.seed_curves[..., 0].T)


def deciding_numbers(claim: C.Claim, rep: Report | None) -> str:
    """The evidence shown in the claims table: each optimizer and batch mode at its reference
    learning rate (and evidence that has no learning rate)."""
    ref = None
    if rep is not None:
        co = rep.analysis.results.coords
        ref = {C.setting_label(co["optimizer"][o], co["batch_size"][b], co["learning_rate"][l])
               for o, b, l, _ in plots.modes(rep.analysis)}
    picked = [e for e in claim.evidence if ref is None or e.setting in ref or ", lr " not in e.setting]
    return "<br>".join(f"{e.setting}: {e.quantity} = {e.estimate}" for e in picked) or claim.detail


def write_study_report(out: Path, repro: Reproduction, reports: dict[str, Report],
                       timings: dict[str, float]) -> Path:
    names = list(reports)
    main = reports[names[0]]
    art = article_claim(repro)
    heads = " | ".join(f"verdict: {TITLES.get(n, n)}" for n in names)
    lines = ["# Does the rate of L1 loss decrease depend on dataset size? The article's claims, tested", ""]
    for n, r in reports.items():
        cfg = r.analysis.results.config
        lines += [f"**{TITLES.get(n, n)}** (`{n}/`, its own report in [{n}/report/report.md]({n}/report/report.md)): "
                  f"{describe_data(cfg)}. {describe_training(cfg, r.analysis.k)}.", ""]
    lines += [f"Verdict rules (code in `l1jax/analysis/claims.py`): smallest vs largest size in every "
              f"setting (optimizer x batch x learning rate), 95% intervals over seeds; a difference counts "
              f"when its interval excludes 0 and it exceeds {C.MATERIAL:.0%}; settings that disagree give "
              f"\"{C.DEPENDS}\". The numbers shown are the reference setting of each batch mode (the "
              "learning rate with the lowest final test L1 at the largest size); every setting is listed "
              "below.", "",
              f"| # | the article's claim | {heads} | deciding numbers ({TITLES.get(names[0], names[0])}; 95% CI) | rule | figure |",
              "|---|---|" + "---|" * len(names) + "---|---|---|"]
    claims = {n: r.claim_list for n, r in reports.items()}
    for i, c in enumerate(main.claim_list):
        verdicts = " | ".join(f"**{claims[n][i].verdict}**" for n in names)
        lines.append(f"| {i + 1} | {c.text} | {verdicts} | {deciding_numbers(c, main)} | {c.rule} | "
                     f"[{c.figure}](figures/{names[0]}_{c.figure}) |")
    na = " | ".join(["**" + art.verdict + "**"] + ["n/a"] * (len(names) - 1))
    lines.append(f"| {len(main.claim_list) + 1} | {art.text} | {na} | {deciding_numbers(art, None)} | "
                 f"{art.rule} | [article.png](figures/article.png) |")
    lines += ["", "## The article's experiment", "", "```", seed_report(repro), "```", "",
              "![the article's update against the true subgradient](figures/article.png)", "",
              "## Figures", ""]
    captions = {"curves.png": "L1 by epoch per size", "rate.png": "initial rate against size",
                "final.png": "final L1 against size, with the exact fit and theory",
                "spread.png": "seed-to-seed spread of the final loss", "heatmaps.png": "learning rate x size"}
    for n, r in reports.items():
        for f in r.figures:
            cap = f"{TITLES.get(n, n)}: {captions[f.name]}"
            lines += [f"### {cap}", "", f"![{cap}](figures/{n}_{f.name})", ""]
    for n, r in reports.items():
        lines += [f"## Exact optimum and theory: {TITLES.get(n, n)}", "", *theory_section(r.analysis)]
    for n, r in reports.items():
        lines += [f"## All settings: {TITLES.get(n, n)}", "", *evidence_section(r.claim_list)]
    lines += ["## All settings: the article's code", "", *evidence_section([art])]
    div = "; ".join(f"{TITLES.get(n, n)}: {int(r.analysis.results.diverged.sum())} of "
                    f"{r.analysis.results.diverged.size}" for n, r in reports.items())
    meta = main.analysis.results.meta
    lines += ["## Divergent runs", "", f"Left out of every statistic and counted: {div}.", "",
              "## Provenance", "",
              f"Measured on: {meta['backend']} backend, device {meta['device']} x{meta['device_count']}, "
              f"host {host_description()}, python {meta['python']}, jax {meta['versions']['jax']}. "
              "Wall time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".", ""]
    return write_text(out / "report.md", "\n".join(lines))


def study(out: Path, seeds_article: int = 100, overwrite: bool = False, quiet: bool = True,
          memory_budget: int | None = None, configs: dict[str, Config] | None = None) -> StudyRun:
    """Run and report everything; ``configs`` replaces the built-in sweeps (tests run tiny ones)."""
    configs = configs or {n: load_config(p) for n, p in SWEEPS.items()}
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is not a directory: name a new or existing directory")
    lock = DirLock(out)  # one study per directory; each sweep's directory has its own lock too
    try:
        return _study(out, configs, seeds_article, overwrite, quiet, memory_budget)
    finally:
        lock.release()


def _study(out: Path, configs: dict[str, Config], seeds_article: int, overwrite: bool, quiet: bool,
           memory_budget: int | None) -> StudyRun:
    """:func:`study` once ``out`` is locked."""
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    bar = tqdm(total=1 + 2 * len(configs), desc="study", unit="stage", disable=quiet)
    t = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t
        timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        bar.set_postfix_str(name)
        bar.update()

    repro = reproduce(seeds_article, 0)
    plots.fig_article(repro.article, repro.seed_curves, repro.l1_curves, repro.floor, SIZES,
                      figdir / "article.png")
    tick("article experiment")
    reports: dict[str, Report] = {}
    for name, cfg in configs.items():
        run_to_dir(cfg, out / name, overwrite=overwrite, quiet=True, memory_budget=memory_budget)
        tick(f"{name} sweep")
        reports[name] = report(out / name, out / name / "report", quiet=True,
                               memory_budget=memory_budget, name=name)
        for f in reports[name].figures:
            shutil.copyfile(f, figdir / f"{name}_{f.name}")
        tick(f"{name} report")
    bar.close()
    path = write_study_report(out, repro, reports, timings)
    verdicts = [f"{i}. {c.text} " + ", ".join(f"{TITLES.get(n, n)}: {r.claim_list[i - 1].verdict}"
                                               for n, r in reports.items())
                for i, c in enumerate(next(iter(reports.values())).claim_list, start=1)]
    art = article_claim(repro)
    verdicts.append(f"{len(verdicts) + 1}. {art.text} {art.verdict}")
    return StudyRun(path, figdir, [out / n for n in configs], "\n".join(verdicts))
