"""Figures of any sweep (matplotlib, Agg), each drawn from an Analysis into one PNG.

Every label comes from the sweep's own coordinates and config.  Lines are means over seeds,
bands and error bars Student t 95% intervals of the mean (bootstrap for standard deviations);
sizes are on log axes.  Each (optimizer, batch mode) is shown at its reference learning rate:
the one with the lowest mean final test L1 (train L1 without a test set) at the largest size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from l1jax.analysis import rate_theory as RT
from l1jax.analysis import stats  # noqa: E402
from l1jax.analysis.analyze import Analysis, has_test_set  # noqa: E402
from l1jax.analysis.theory import expected_test_l1  # noqa: E402
from l1jax.analysis.twin import SweepTwin, seed_mean  # noqa: E402
from l1jax.engine.files import atomic_file  # noqa: E402

# Okabe-Ito (colour-blind safe), without its yellow, which is faint on white
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"]
plt.rcParams.update({"axes.prop_cycle": matplotlib.cycler(color=PALETTE), "figure.dpi": 110,
                     "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def colours(k: int) -> list:
    """k distinct colours: the palette, or viridis steps beyond it."""
    return PALETTE[:k] if k <= len(PALETTE) else list(plt.cm.viridis(np.linspace(0, 0.95, k)))


def batch_label(bs: int | str) -> str:
    return "full batch" if bs == "full" else f"minibatch {bs}"


def _log_sizes(ax, sizes) -> None:
    """Log x axis labelled at the swept sizes, in plain numbers."""
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if len(sizes) == 1:
        ax.set_xlim(sizes[0] / 2, sizes[0] * 2)


def _log_y(ax) -> None:
    """Log y axis with plain-number tick labels, if everything drawn is positive."""
    lo, _ = ax.get_ylim()
    if lo <= 0:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))

    def minor(v, _):  # all labelled on a short axis, only 2x and 5x a power of ten on a long one
        lo, hi = ax.get_ylim()
        return f"{v:g}" if np.log10(hi / lo) < 1.2 or f"{v:.0e}"[0] in "25" else ""
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def _save(fig: plt.Figure, path: Path, title: str | None = None) -> Path:
    if title:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title
    else:
        fig.tight_layout()
    with atomic_file(path) as tmp:  # no reader sees half a figure
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def reference_lr(a: Analysis, o: int, b: int) -> int:
    """Index of the reference learning rate of optimizer ``o``, batch mode ``b`` (0 if every
    run at the largest size diverged)."""
    q = a.metrics.final_test if has_test_set(a.results.config) else a.metrics.final_train
    with np.errstate(invalid="ignore"), stats.quiet():
        m = np.nanmean(q[o, b, :, -1], axis=-1)
    return int(np.nanargmin(m)) if np.isfinite(m).any() else 0


def modes(a: Analysis) -> Iterator[tuple[int, int, int, str]]:
    """(optimizer, batch, reference lr) index and label of every optimizer and batch mode."""
    co = a.results.coords
    for o, opt in enumerate(co["optimizer"]):
        for b, bs in enumerate(co["batch_size"]):
            l = reference_lr(a, o, b)
            yield o, b, l, f"{opt}, {batch_label(bs)}, lr {co['learning_rate'][l]:g}"


def _seeds(a: Analysis) -> str:
    return f"{a.results.config.sweep.seeds} seeds"


def _loss_names(a: Analysis) -> list[tuple[str, str]]:
    """(field, label) of the losses this sweep recorded: train L1, and test L1 with a test set."""
    return [("train", "train L1")] + ([("test", "test L1")] if has_test_set(a.results.config) else [])


def _floor(ax, a: Analysis) -> None:
    if a.floor is not None:
        ax.axhline(a.floor, color="0.4", ls=":", lw=1, label=f"Bayes L1 floor {a.floor:.3g}")


def _errorbar(ax, x, s: stats.Summary, colour, label: str, style: str = "o-") -> None:
    ok = np.isfinite(s.mean)
    lo, hi = np.where(np.isfinite(s.ci_low), s.ci_low, s.mean), np.where(np.isfinite(s.ci_high), s.ci_high, s.mean)
    ax.errorbar(np.asarray(x)[ok], s.mean[ok], yerr=[(s.mean - lo)[ok], (hi - s.mean)[ok]], fmt=style,
                capsize=3, color=colour, label=label, lw=1.3, ms=4)


def fig_curves(a: Analysis, path: Path, tw: SweepTwin | None = None) -> Path:
    """Train (and test) L1 by epoch, one band per size; a row per optimizer and batch mode; dashed,
    each size's mean prediction from its runs' infinite-data twins."""
    co, cv = a.results.coords, a.curves
    pred = None if tw is None else {"train": seed_mean(tw.predicted.train, tw.ok),
                                    "test": seed_mean(tw.predicted.test, tw.ok)}
    rows, losses = list(modes(a)), _loss_names(a)
    fig, axes = plt.subplots(len(rows), len(losses), figsize=(5 * len(losses), 3.4 * len(rows)),
                             squeeze=False)
    ep = np.asarray(co["epoch"])
    cs = colours(len(co["size"]))
    for r, (o, b, l, label) in enumerate(rows):
        for c, (field, name) in enumerate(losses):
            ax, s = axes[r, c], getattr(cv, field)
            for i, n in enumerate(co["size"]):
                m = s.mean[o, b, l, i]
                if np.isfinite(m).any():
                    ax.plot(ep, m, color=cs[i], lw=1.4, label=f"n={n}",
                            marker="o" if len(ep) <= 25 else None, ms=3)  # few epochs recorded: show which
                    ax.fill_between(ep, s.ci_low[o, b, l, i], s.ci_high[o, b, l, i], color=cs[i],
                                    alpha=0.25, lw=0)
                if pred is not None and np.isfinite(pred[field][o, b, l, i]).any():
                    ax.plot(ep, pred[field][o, b, l, i], ls="--", color=cs[i], lw=1.2)
            if pred is not None:
                ax.plot([], [], ls="--", color="0.3", lw=1.2, label="dashed: predicted from the twins")
            _floor(ax, a)
            _log_y(ax)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{name} (mean absolute error)")
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.legend(fontsize=7, ncol=2)
    return _save(fig, path, f"L1 by epoch, mean over {_seeds(a)} with 95% t band")


def fig_rate(a: Analysis, path: Path) -> Path:
    """Initial decrease of train L1 against size, per epoch and per optimizer step."""
    co = a.results.coords
    n = np.asarray(co["size"], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ms = list(modes(a))
    theory = False
    for (o, b, l, label), colour in zip(ms, colours(len(ms))):
        for ax, v, steps in zip(axes, (a.metrics.rate_epoch, a.metrics.rate_step),
                                (1.0, RT.steps_per_epoch(n.astype(int), co["batch_size"][b]))):
            s = stats.t_summary(stats.moments(v[o, b, l]), v.shape[-1])
            _errorbar(ax, n, s, colour, label)
            if a.rate_terms is not None and co["optimizer"][o] == "sgd":
                lstar = np.nanmean(a.optima.lstar, axis=-1)
                pred = RT.predicted_rate(a.rate_terms, n, co["batch_size"][b], co["learning_rate"][l],
                                         a.k, lstar) / steps
                ax.plot(n, pred, ls="--", color=colour, lw=1, alpha=0.8)
                theory = True
    if theory:  # one legend entry for every dashed line
        axes[0].plot([], [], ls="--", color="0.3", lw=1,
                     label="theory: steps × lr (|G|² + tr Σ/n), capped at the gap")
    k = a.k
    for ax, unit in zip(axes, ("epoch", "optimizer step")):
        _log_sizes(ax, co["size"])
        _log_y(ax)
        ax.set_xlabel("dataset size n (samples)")
        ax.set_ylabel(f"initial decrease of train L1 per {unit}")
        ax.set_title(f"(L(0) - L({k})) / {k} per {unit}" if unit == "epoch" else
                     f"(L(0) - L({k})) / (steps in {k} epochs)")
        ax.legend(fontsize=7)
    return _save(fig, path, f"Initial rate of L1 decrease against size: mean over {_seeds(a)} ± 95% t interval")


def _final_panels(a: Analysis):
    """What the final-loss figures share: coords, sizes, the recorded losses, a panel for each,
    the modes and the per-run final losses."""
    co = a.results.coords
    losses = _loss_names(a)
    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 4), squeeze=False)
    finals = {"train": a.metrics.final_train, "test": a.metrics.final_test}
    return co, np.asarray(co["size"], float), losses, fig, axes[0], list(modes(a)), finals


def fig_final(a: Analysis, path: Path) -> Path:
    """Final L1 against size, with the exact L1 fit and (synthetic data) the theory."""
    co, n, losses, fig, axes, ms, finals = _final_panels(a)
    exact = {"train": (a.optima.lstar, "exact L1 fit: L*"), "test": (a.optima.test_l1, "exact L1 fit")}
    for (o, b, l, label), colour in zip(ms, colours(len(ms))):
        for ax, (field, _) in zip(axes, losses):
            v = finals[field][o, b, l]
            _errorbar(ax, n, stats.t_summary(stats.moments(v), v.shape[-1]), colour, label)
    for ax, (field, name) in zip(axes, losses):
        v, label = exact[field]
        _errorbar(ax, n, stats.t_summary(stats.moments(v), v.shape[-1]), "0.3", label, style="s:")
        if field == "test" and a.theory is not None and len(n) > 1:
            grid = np.geomspace(n[0], n[-1], 100)
            ax.plot(grid, expected_test_l1(a.results.config.data, grid), color="0.6", lw=2.5,
                    alpha=0.6, zorder=0, label="theory, exact fit: floor + p / (4 f(0) n)")
        _floor(ax, a)
        _log_sizes(ax, co["size"])
        ax.set_xlabel("dataset size n (samples)")
        ax.set_ylabel(f"final {name} (mean absolute error)")
        ax.set_title(f"final {name} after {co['epoch'][-1]} epochs")
        ax.legend(fontsize=7)
    return _save(fig, path, f"Final L1 against size: mean over {_seeds(a)} ± 95% t interval")


def fig_spread(a: Analysis, path: Path) -> Path:
    """Standard deviation over seeds of the final losses against size."""
    co, n, losses, fig, axes, ms, finals = _final_panels(a)
    for j, ((o, b, l, label), colour) in enumerate(zip(ms, colours(len(ms)))):
        for ax, (field, _) in zip(axes, losses):
            sd, lo, hi = (np.asarray(v) for v in zip(*(stats.sd_interval(x) for x in finals[field][o, b, l])))
            ok = np.isfinite(sd)
            ax.errorbar(n[ok], sd[ok], yerr=[(sd - lo)[ok], (hi - sd)[ok]], fmt="o-", capsize=3,
                        color=colour, label=label, lw=1.3, ms=4)
            if ok.any() and len(n) > 1:
                first = int(np.flatnonzero(ok)[0])
                ax.plot(n, sd[first] * np.sqrt(n[first] / n), ":", color=colour, lw=1,
                        label="dotted: ∝ n^(-1/2) through each line's smallest size" if j == 0 else None)
    for ax, (_, name) in zip(axes, losses):
        _log_sizes(ax, co["size"])
        _log_y(ax)
        ax.set_xlabel("dataset size n (samples)")
        ax.set_ylabel(f"sd over seeds of final {name}")
        ax.set_title(f"final {name}")
        ax.legend(fontsize=7)
    return _save(fig, path, f"Seed-to-seed spread of the final loss: {_seeds(a)}, 95% bootstrap interval")


def _norm(values: np.ndarray) -> Normalize:
    """One colour scale for a column of heatmaps: log where all values are positive and span
    more than a factor of 10."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Normalize(0, 1)
    if v.min() > 0 and v.max() > 10 * v.min():
        return LogNorm(v.min(), v.max())
    return Normalize(v.min(), v.max())


def fig_heatmaps(a: Analysis, path: Path) -> Path:
    """Learning rate x size heatmaps of the mean final loss and initial rate, a row per
    optimizer and batch mode, each column on one shared colour scale."""
    co = a.results.coords
    rows = list(modes(a))
    test = has_test_set(a.results.config)
    loss = f"final {'test' if test else 'train'} L1"
    panels = ((a.metrics.final_test if test else a.metrics.final_train, f"mean {loss}", loss),
              (a.metrics.rate_epoch, f"mean initial decrease of train L1 per epoch (k = {a.k})",
               "train L1 decrease per epoch"))
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 0.9 + 0.42 * len(co["learning_rate"]) * len(rows)
                                                    + 1.2 * len(rows)), squeeze=False)
    for j, (v, name, short) in enumerate(panels):
        with np.errstate(invalid="ignore"), stats.quiet():
            means = np.nanmean(v, axis=-1)  # [opt, batch, lr, size]
        norm = _norm(means)
        for r, (o, b, _, _) in enumerate(rows):
            ax, m = axes[r, j], means[o, b]
            im = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", norm=norm)
            for (li, si), val in np.ndenumerate(m):
                text = "all diverged" if not np.isfinite(val) else f"{val:.3g}"
                shade = norm(val) if np.isfinite(val) else 1.0
                ax.text(si, li, text, ha="center", va="center", fontsize=7,
                        color="w" if shade < 0.5 else "k")
            ax.set_xticks(range(len(co["size"])), [str(s) for s in co["size"]])
            ax.set_yticks(range(len(co["learning_rate"])), [f"{x:g}" for x in co["learning_rate"]])
            ax.set_xlabel("dataset size n (samples)")
            ax.set_ylabel("learning rate")
            ax.set_title(f"{name}\n{co['optimizer'][o]}, {batch_label(co['batch_size'][b])}, {_seeds(a)}",
                         fontsize=8)
            ax.grid(False)
            fig.colorbar(im, ax=ax).set_label(short)
    return _save(fig, path)


def fig_steps(a: Analysis, tw: SweepTwin, path: Path) -> Path:
    """Train L1 against optimizer steps (log axis), every size and batch mode of each optimizer and
    learning rate in one panel, with the infinite-data twin: where the curves collapse onto it,
    steps, not size, set the rate."""
    co = a.results.coords
    panels = [(o, l) for o in range(len(co["optimizer"])) for l in range(len(co["learning_rate"]))]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5 * cols, 7), 3.6 * rows), squeeze=False)
    cs = colours(len(co["size"]))
    styles = ["-", ":", "-.", (0, (5, 1, 1, 1))]
    twin = seed_mean(tw.curves.loss, tw.ok)
    # one twin for all sizes and batch modes where they share starts and the schedule ignores the
    # run's length; else each size's own (dashed, in its colour)
    shared = cfg_shares_twin(a)
    for ax, (o, l) in zip(axes.flat, panels):
        points = []
        for b, bs in enumerate(co["batch_size"]):
            for i, n in enumerate(co["size"]):
                k = tw.curves.steps[b, i]
                m = a.curves.train.mean[o, b, l, i]
                keep = (k > 0) & np.isfinite(m)
                ax.plot(k[keep], m[keep], ls=styles[b % len(styles)], color=cs[i], lw=1.3,
                        label=f"n={n}, {batch_label(bs)}")
                t = twin[o, b, l, i]
                keep = (k > 0) & np.isfinite(t)
                if shared:
                    points += list(zip(k[keep], t[keep]))
                else:
                    ax.plot(k[keep], t[keep], ls="--", color=cs[i], lw=1,
                            label="dashed: each run's twin (mean)" if (b, i) == (0, 0) else None)
        if points:
            k, t = np.asarray(sorted(set(points))).T
            ax.plot(k, t, ls="--", color="k", lw=1.4, label="infinite-data twin (mean)")
        _floor(ax, a)
        ax.set_xscale("log")
        _log_y(ax)
        ax.set_xlabel("optimizer steps (log scale)")
        ax.set_ylabel("train L1 (mean absolute error)")
        ax.set_title(f"{co['optimizer'][o]}, lr {co['learning_rate'][l]:g}", fontsize=9)
    axes.flat[0].legend(fontsize=6, ncol=2)  # the same entries in every panel
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path, f"Train L1 against optimizer steps, mean over {_seeds(a)}; "
                            "dashed: the runs' twins")


def cfg_shares_twin(a: Analysis) -> bool:
    """Whether every size and batch mode of a setting shares one twin trajectory (nested starts,
    a schedule that does not depend on the run's length)."""
    cfg = a.results.config
    return cfg.data.coupling == "nested" and cfg.train.schedule in ("constant", "inverse_sqrt")


def figure_paths(figdir: Path, tw: SweepTwin | None = None) -> list[Path]:
    """The files ``draw_all`` writes, in order (the steps figure only where the sweep has a twin)."""
    names = ["curves.png"] + (["steps.png"] if tw is not None else []) + [
        "rate.png", "final.png", "spread.png", "heatmaps.png"]
    return [figdir / n for n in names]


def draw_all(a: Analysis, figdir: Path, tw: SweepTwin | None = None) -> list[Path]:
    """Every figure of a sweep report into ``figdir`` (with the twin's overlay and steps figure
    where the sweep has a twin): ``figure_paths``."""
    figdir.mkdir(parents=True, exist_ok=True)
    draw = {"curves.png": lambda path: fig_curves(a, path, tw), "steps.png": lambda path: fig_steps(a, tw, path),
            "rate.png": lambda path: fig_rate(a, path), "final.png": lambda path: fig_final(a, path),
            "spread.png": lambda path: fig_spread(a, path), "heatmaps.png": lambda path: fig_heatmaps(a, path)}
    return [draw[path.name](path) for path in figure_paths(figdir, tw)]


def fig_article(article: np.ndarray, seed_curves: np.ndarray, l1_curves: np.ndarray, floor: float,
                sizes: tuple[int, ...], path: Path) -> Path:
    """The article's script and its update replicated by the engine (loss climbs), beside the
    true L1 subgradient (loss falls): ``article`` [size, epoch], curves [size, seed, epoch]."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ep = np.arange(seed_curves.shape[-1])
    n_seeds = seed_curves.shape[1]
    for i, (n, c) in enumerate(zip(sizes, colours(len(sizes)))):
        axes[0].plot(np.arange(article.shape[1]), article[i], "--", color=c, lw=1,
                     label=f"article's script, n={n}")
        for ax, curves, what in ((axes[0], seed_curves, "its update"), (axes[1], l1_curves, "true subgradient")):
            s = stats.t_summary(stats.moments(curves[i], axis=0), n_seeds)
            ax.plot(ep, s.mean, color=c, lw=1.5, label=f"l1jax, {what}, n={n}")
            ax.fill_between(ep, s.ci_low, s.ci_high, color=c, alpha=0.25, lw=0)
    for ax in axes:
        ax.axhline(floor, color="0.4", ls=":", lw=1, label=f"Bayes L1 floor {floor:.3f}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("train L1 (mean absolute error)")
    _log_y(axes[0])
    axes[0].set_title(f"The article's update -(2/n)Xᵀ(ŷ-y), w - lr·dw: loss grows\n"
                      f"sgd, full batch, lr 0.01; l1jax mean of {n_seeds} seeds, 95% t band")
    axes[1].set_title(f"The true L1 subgradient: loss falls\nsgd, full batch, lr 0.01, {n_seeds} seeds")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=7)
    return _save(fig, path)
