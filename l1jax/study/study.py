"""``l1jax study``: the main job.  Runs the article's experiment, then each built-in sweep into
``OUT/<sweep>/`` as an ordinary (resumable) ``l1jax run`` directory, reports each with
``l1jax report``, and writes the study's own ``OUT/report.md`` and ``OUT/figures/`` on top.
Every number and verdict in the report comes from these runs.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from l1jax.analysis import claims as C
from l1jax.analysis import plots, stats
from l1jax.analysis.analyze import Analysis
from l1jax.analysis.report import (Report, certified_line, evidence_section, report, theory_section,
                                   verdict_rules, write_text)
from l1jax.analysis.twin import SweepTwin
from l1jax.engine.config import Config, ConfigError, load_config
from l1jax.engine.files import DirLock, write_atomic
from l1jax.engine.kernels import prepare_cpu
from l1jax.engine.sweep import host_description, kernel_targets, run_to_dir
from l1jax.study import answer as A
from l1jax.study.reproduce import SIZES, Reproduction, report as seed_report, reproduce

DATA = Path(__file__).with_name("data")
SWEEPS = {"article": DATA / "article.toml", "article_minibatch": DATA / "article_minibatch.toml",
          "main": DATA / "main.toml", "real": DATA / "diabetes.toml",
          **{f"noise_{n}": DATA / f"noise_{n}.toml" for n in ("laplace", "student_t", "contaminated")},
          "twin_stress": DATA / "twin_stress.toml"}
TITLES = {"article": "article setting, full batch", "article_minibatch": "article setting, batch 32",
          "main": "synthetic grid", "real": "real data (diabetes)", "noise_laplace": "Laplace noise",
          "noise_student_t": "Student t noise", "noise_contaminated": "contaminated noise",
          "twin_stress": "adam (chosen to break the twin)"}


class FigureWorker:
    """Draws the sweeps' figures (``plots.draw_all``) in one spawned process while the study goes
    on with the next sweep: the figures took about a third of a study's wall time, on one core,
    beside work that mostly leaves the other core idle.  ``draw`` is ``report``'s ``draw``;
    ``wait`` returns once every figure is written, raising the first error of a drawing.  A
    spawned process imports the caller's main module, so a script that uses it needs the usual
    ``if __name__ == "__main__":`` guard (the command line has it)."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        # a first task starts the process now, so that its imports overlap the article's experiment
        self.pending = [self.pool.submit(plots.figure_paths, Path("."))]

    def draw(self, a: Analysis, figdir: Path, tw: SweepTwin | None) -> list[Path]:
        if len(self.pending) == 1:
            self.pending[0].result()  # a process that could not start says so now, not at the end
        self.pending.append(self.pool.submit(_draw_quietly, a, figdir, tw))
        return plots.figure_paths(figdir, tw)

    def wait(self) -> None:
        try:
            for done in self.pending:
                done.result()
        finally:
            self.pool.shutdown(cancel_futures=True)

    def abandon(self) -> None:
        """Stop (the study failed): drawings not yet started are dropped, and the one under way
        ends before the study lets go of its directory."""
        self.pool.shutdown(cancel_futures=True)


def _draw_quietly(a: Analysis, figdir: Path, tw: SweepTwin | None) -> list[Path]:
    """``plots.draw_all`` as ``report`` calls it: groups with no finite run are drawn, not warned about."""
    with stats.quiet():
        return plots.draw_all(a, figdir, tw)


class StudyRun(NamedTuple):
    report: Path
    figures: Path
    sweeps: list[Path]
    summary: str  # the claims, verdict by verdict, for the terminal


def article_claim(r: Reproduction) -> C.Claim:
    return C.claim_article_code(r.article[:, -1] > r.article[:, 0], r.seed_curves[..., -1].T > r.seed_curves[..., 0].T)


def write_study_report(out: Path, repro: Reproduction, reports: dict[str, Report],
                       timings: dict[str, float]) -> Path:
    """The study's report.md: the answer first (the article's setting, the mechanism), then the
    article-setting table, the theory against the engine, the wider sweeps, the other noise
    laws, the article's code, the figures and every setting; hardware and timings last."""
    title = lambda n: TITLES.get(n, n)
    art = article_claim(repro)
    lines = ["# Does the rate of L1 loss decrease depend on dataset size?", "", "## The answer", ""]
    if "article" in reports:
        lines += A.article_paragraph(reports["article"], reports.get("article_minibatch"))
    if "real" in reports:
        lines += A.real_paragraph(reports["real"])
    lines += A.twin_paragraph(reports, TITLES)
    lines += [f"**The article's own script** steps uphill on the squared error: {art.evidence[0].quantity}. "
              f"Its claim that the code shows the loss dropping: **{art.verdict}**.", ""]
    setting = {n: r for n, r in reports.items() if n in ("article", "article_minibatch")}
    if setting:
        lines += ["## The article's setting, claim by claim", "", *A.claims_overview(setting, TITLES), ""]
    rows = [(title(n), A.size_rates(r.analysis, 0, b, l)) for n, r in reports.items()
            if n in ("article", "article_minibatch", "real") and r.analysis.rate_terms is not None
            for b in range(len(r.analysis.results.coords["batch_size"]))
            for l in range(min(1, len(r.analysis.results.coords["learning_rate"])))]
    if rows:
        lines += ["## Why: the theory of the rate, against the engine", "",
                  "To first order one gradient step lowers the training L1 by lr·‖g_n‖² on average, "
                  "E‖g_n‖² = ‖G‖² + tr Σ / n, and an epoch takes ceil(n / B) steps; the saturated "
                  "column caps the decrease over the rate window at the gap L(θ₀) − E L*_n "
                  "(`l1jax/analysis/rate_theory.py`, tested against the engine at small lr). First "
                  "learning rate of each sweep shown; dashed lines in each sweep's rate figure.", "",
                  *A.rate_table(rows), ""]
    if any(r.twin is not None for r in reports.values()):
        lines += ["## The whole curve from theory, against the engine", "",
                  "Each run's infinite-data twin (`l1jax/analysis/twin.py`) with the finite-n terms, "
                  "against the measured mean training L1 at every recorded epoch: per setting the "
                  "largest paired gap in standard errors over its sizes and epochs (every number per "
                  "grid point and epoch is in each sweep's `theory.csv`). How each prediction is "
                  "made is in each sweep's report.", "", *A.twin_table(reports, TITLES), ""]
    wide = {n: r for n, r in reports.items() if n in ("main", "real")}
    if wide:
        lines += ["## The wider sweeps", "", *verdict_rules(), "", *A.claims_overview(wide, TITLES), ""]
    noise = {n: r for n, r in reports.items() if n == "article" or n.startswith("noise_")}
    if len(noise) > 1:
        lines += ["## Beyond gaussian noise", "",
                  "The article's setting (full batch) under each noise law, scale 1; claims 1 to 4 "
                  "on each sweep (claim 5 needs several learning rates):", "", *A.noise_table(noise), ""]
    lines += ["## The article's experiment", "", "```", seed_report(repro), "```", "",
              "![the article's update against the true subgradient](figures/article.png)", "",
              "## Figures", ""]
    captions = {"curves.png": "L1 by epoch per size, with the twins' prediction",
                "steps.png": "train L1 against optimizer steps, with the infinite-data twin",
                "rate.png": "initial rate against size, with theory",
                "final.png": "final L1 against size, with the exact fit and theory",
                "spread.png": "seed-to-seed spread of the final loss", "heatmaps.png": "learning rate x size"}
    for n, r in reports.items():
        for f in r.figures:
            cap = f"{title(n)}: {captions[f.name]}"
            lines += [f"### {cap}", "", f"![{cap}](figures/{n}_{f.name})", ""]
    for n, r in reports.items():
        lines += [f"## Exact optimum and theory: {title(n)}", "", certified_line(r.analysis.optima), "",
                  *theory_section(r.analysis)]
    for n, r in reports.items():
        lines += [f"## Every setting: {title(n)}", "", *evidence_section(r.claim_list)]
    lines += ["## Every setting: the article's code", "", *evidence_section([art])]
    div = "; ".join(f"{title(n)}: {int(r.analysis.results.diverged.sum())} of "
                    f"{r.analysis.results.diverged.size}" for n, r in reports.items())
    meta = next(iter(reports.values())).analysis.results.meta
    lines += ["## Divergent runs", "", f"Left out of every statistic and counted: {div}.", "",
              "## Hardware and stage timings", "",
              f"Measured on: {meta['backend']} backend, device {meta['device']} x{meta['device_count']}, "
              f"host {host_description()}, python {meta['python']}, jax {meta['versions']['jax']}. "
              "Wall time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".", ""]
    return write_text(out / "report.md", "\n".join(lines))


def study(out: Path, seeds_article: int = 100, overwrite: bool = False, quiet: bool = True,
          memory_budget: int | None = None, configs: dict[str, Config] | None = None,
          figures_beside: bool = False) -> StudyRun:
    """Run and report everything; ``configs`` replaces the built-in sweeps (tests run tiny ones);
    ``figures_beside`` draws the figures in a second process while the study goes on
    (``FigureWorker``: the command line's choice)."""
    configs = configs or {n: load_config(p) for n, p in SWEEPS.items()}
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is not a directory: name a new or existing directory")
    lock = DirLock(out)  # one study per directory; each sweep's directory has its own lock too
    try:
        return _study(out, configs, seeds_article, overwrite, quiet, memory_budget, figures_beside)
    finally:
        lock.release()


def _study(out: Path, configs: dict[str, Config], seeds_article: int, overwrite: bool, quiet: bool,
           memory_budget: int | None, figures_beside: bool) -> StudyRun:
    """:func:`study` once ``out`` is locked."""
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    bar = tqdm(total=1 + figures_beside + 2 * len(configs), desc="study", unit="stage", disable=quiet)
    t = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t
        timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        bar.set_postfix_str(name)
        bar.update()

    prepare_cpu([name for cfg in configs.values() for name in kernel_targets(cfg)])  # compiled while the article runs
    worker = FigureWorker() if figures_beside else None
    try:
        repro = reproduce(seeds_article, 0)
        plots.fig_article(repro.article, repro.seed_curves, repro.l1_curves, repro.floor, SIZES,
                          figdir / "article.png")
        tick("article experiment")
        reports: dict[str, Report] = {}
        for name, cfg in configs.items():
            run_to_dir(cfg, out / name, overwrite=overwrite, quiet=True, memory_budget=memory_budget)
            tick(f"{name} sweep")
            reports[name] = report(out / name, out / name / "report", quiet=True, memory_budget=memory_budget,
                                   name=name, draw=plots.draw_all if worker is None else worker.draw)
            tick(f"{name} report")
    except BaseException:
        if worker is not None:
            worker.abandon()
        raise
    if worker is not None:
        worker.wait()
        tick("figures")  # the drawing not yet done when the last report was
    for name, r in reports.items():
        for f in r.figures:
            write_atomic(figdir / f"{name}_{f.name}", f.read_bytes())
    bar.close()
    path = write_study_report(out, repro, reports, timings)
    verdicts = [f"{c.number}. {c.text} " + ", ".join(f"{TITLES.get(n, n)}: {r.claim_list[i].verdict}"
                                                  for n, r in reports.items())
                for i, c in enumerate(next(iter(reports.values())).claim_list)]
    art = article_claim(repro)
    verdicts.append(f"{art.number}. {art.text} {art.verdict}")
    return StudyRun(path, figdir, [out / n for n in configs], "\n".join(verdicts))
