"""The study's figures (matplotlib, Agg): each function draws one PNG from measured arrays.

Colours are the Okabe-Ito palette (colour-blind safe); bands are 95% bootstrap intervals
of the mean over seeds; sizes are on log axes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from l1jax.analysis import stats  # noqa: E402
from l1jax.analysis.optima import Analysis  # noqa: E402
from l1jax.study.reproduce import SIZES, Reproduction  # noqa: E402
from l1jax.analysis.theory import expected_test_l1  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
plt.rcParams.update({"axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "figure.dpi": 110,
                     "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def _log_sizes(ax, sizes) -> None:
    """Log x axis labelled at the swept sizes, in plain numbers."""
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _log_y(ax) -> None:
    """Log y axis with plain-number tick labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # minor ticks: all labelled on a short axis, only 2x and 5x a power of ten on a long one
    def minor(v, _):
        lo, hi = ax.get_ylim()
        short = np.log10(hi / lo) < 1.2
        return f"{v:g}" if short or f"{v:.0e}"[0] in "25" else ""
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def _size_panels(axes, sizes, ylabels, titles, log_y: bool = False, legend_size: int = 7) -> None:
    """Finish panels whose x axis is the dataset size: log scale at the swept sizes, labels, legend."""
    for ax, ylabel, title in zip(axes, ylabels, titles):
        _log_sizes(ax, sizes)
        if log_y:
            _log_y(ax)
        ax.set_xlabel("dataset size n (samples)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=legend_size)


def _save(fig: plt.Figure, path: Path, title: str | None = None) -> Path:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, x, values, color, label, axis=0, style="-"):
    """Mean over ``axis`` (seeds) with its 95% bootstrap band."""
    s = stats.summarize(values, axis=axis)
    ax.plot(x, s.mean, style, color=color, label=label, lw=1.5)
    ax.fill_between(x, s.ci_low, s.ci_high, color=color, alpha=0.25, lw=0)


def batch_label(bs) -> str:
    return "full batch" if bs == "full" else f"minibatch {bs}"


def reference_lr(a: Analysis, o: int, b: int) -> int:
    """Index of the learning rate with the lowest mean final test L1 at the largest size (train
    L1 where there is no test set): the setting the size figures show."""
    q = a.metrics.final_test if np.isfinite(a.metrics.final_test).any() else a.metrics.final_train
    with np.errstate(invalid="ignore"):
        return int(np.nanargmin(np.nanmean(q[o, b, :, -1], axis=-1)))


def _reference_panels(a: Analysis, axes, arrays: tuple[np.ndarray, ...]):
    """Per batch mode at its reference learning rate (first optimizer), per panel: the axes,
    the mode's colour, a label and the panel's array sliced to [size, seed] (skipped if all NaN)."""
    co = a.results.coords
    for b, bs in enumerate(co["batch_size"]):
        l = reference_lr(a, 0, b)
        label = f"{co['optimizer'][0]}, {batch_label(bs)}, lr {co['learning_rate'][l]:g}"
        for ax, v in zip(axes, arrays):
            if np.isfinite(v[0, b, l]).any():
                yield ax, OKABE_ITO[b], label, v[0, b, l]


def _setting(a: Analysis, o: int, b: int, l: int) -> str:
    co = a.results.coords
    return (f"{co['optimizer'][o]}, {batch_label(co['batch_size'][b])}, "
            f"lr {co['learning_rate'][l]:g}, {len(co['seed'])} seeds")


def fig_article(r: Reproduction, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ep = np.arange(r.seed_curves.shape[-1])
    for i, n in enumerate(SIZES):
        c = OKABE_ITO[i]
        axes[0].plot(np.arange(r.article.shape[1]), r.article[i], "--", color=c, lw=1,
                     label=f"article's script, n={n}")
        _band(axes[0], ep, r.seed_curves[i], c, f"l1jax, its update, n={n}")
        _band(axes[1], ep, r.l1_curves[i], c, f"l1jax, true subgradient, n={n}")
    for ax in axes:
        ax.axhline(r.floor, color="k", ls=":", lw=1, label=f"Bayes floor {r.floor:.3f}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("train L1 (mean absolute error)")
    _log_y(axes[0])
    n_seeds = r.seed_curves.shape[1]
    axes[0].set_title(f"The article's update -(2/n)Xᵀ(ŷ-y), w - lr·dw: loss grows\n"
                      f"sgd, full batch, lr 0.01; l1jax mean of {n_seeds} seeds with 95% CI")
    axes[1].set_title(f"The true L1 subgradient: loss falls\nsgd, full batch, lr 0.01, {n_seeds} seeds")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=7)
    return _save(fig, path)


def fig_curves(a: Analysis, path: Path) -> Path:
    co = a.results.coords
    nb = len(co["batch_size"])
    fig, axes = plt.subplots(2, nb, figsize=(5 * nb, 7), squeeze=False)
    ep = np.asarray(co["epoch"])
    for b in range(nb):
        l = reference_lr(a, 0, b)
        for i, n in enumerate(co["size"]):
            c = OKABE_ITO[i % len(OKABE_ITO)]
            for row, name in enumerate(("train_l1", "test_l1")):
                v = a.results.arrays[name][0, b, l, i]
                if np.isfinite(v).any():
                    _band(axes[row, b], ep, v, c, f"n={n}")
        for row, name in enumerate(("train L1", "test L1")):
            ax = axes[row, b]
            if np.isfinite(a.floor):
                ax.axhline(a.floor, color="k", ls=":", lw=1, label="Bayes floor")
            _log_y(ax)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{name} (mean absolute error)")
            ax.set_title(f"{name}: {_setting(a, 0, b, l)}")
            ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def fig_rate(a: Analysis, path: Path, k: int) -> Path:
    co = a.results.coords
    n = np.asarray(co["size"], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, color, label, v in _reference_panels(a, axes, (a.metrics.rate_epoch, a.metrics.rate_step)):
        s = stats.summarize(v, axis=-1)
        ax.errorbar(n, s.mean, yerr=[s.mean - s.ci_low, s.ci_high - s.mean], marker="o",
                    capsize=3, color=color, label=label)
    units = ("epoch", "optimizer step")
    _size_panels(axes, co["size"], [f"initial decrease of train L1 per {u}" for u in units],
                 [f"(L(0) - L({k})) / {k}, per {u}" for u in units], log_y=True, legend_size=8)
    return _save(fig, path, f"Initial rate of L1 decrease against size: sgd, {len(co['seed'])} seeds, "
                            "mean ± 95% CI")


def fig_final(a: Analysis, path: Path) -> Path:
    co = a.results.coords
    n = np.asarray(co["size"], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, color, label, v in _reference_panels(a, axes, (a.metrics.final_train, a.metrics.final_test)):
        _band(ax, n, v, color, label, axis=-1, style="o-")
    _band(axes[0], n, a.optima.lstar, "k", "exact L1 fit (L*)", axis=-1, style="s:")
    if np.isfinite(a.optima.test_l1).any():
        _band(axes[1], n, a.optima.test_l1, "k", "exact L1 fit", axis=-1, style="s:")
    if np.isfinite(a.theory).any():
        grid = np.geomspace(n[0], n[-1], 100)
        axes[1].plot(grid, expected_test_l1(a.results.config.data, grid), color=OKABE_ITO[3], lw=2,
                     label="theory: floor + p / (4 f(0) n)")
    names = ("final train L1", "final test L1")
    for ax in axes:
        if np.isfinite(a.floor):
            ax.axhline(a.floor, color="k", ls=":", lw=1, label=f"Bayes floor {a.floor:.3f}")
    _size_panels(axes, co["size"], [f"{m} (mean absolute error)" for m in names], names)
    return _save(fig, path, f"Final L1 after {co['epoch'][-1]} epochs against size: "
                            f"{len(co['seed'])} seeds, mean ± 95% CI")


def fig_spread(a: Analysis, path: Path) -> Path:
    co = a.results.coords
    n = np.asarray(co["size"], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, color, label, v in _reference_panels(a, axes, (a.metrics.final_train, a.metrics.final_test)):
        sd, lo, hi = stats.sd_interval(v, axis=-1)
        ax.errorbar(n, sd, yerr=[sd - lo, hi - sd], marker="o", capsize=3, color=color, label=label)
        ax.plot(n, sd[0] * np.sqrt(n[0] / n), ":", color=color, lw=1,
                label="∝ n^(-1/2) through the smallest size")
    names = ("final train L1", "final test L1")
    _size_panels(axes, co["size"], [f"sd over seeds of {m}" for m in names], names, log_y=True)
    return _save(fig, path, f"Seed-to-seed spread of the final loss: {len(co['seed'])} seeds, "
                            "95% bootstrap CI")


def fig_heatmaps(a: Analysis, path: Path, k: int) -> Path:
    co = a.results.coords
    nb = len(co["batch_size"])
    fig, axes = plt.subplots(nb, 2, figsize=(11, 3.6 * nb), squeeze=False)
    for b, bs in enumerate(co["batch_size"]):
        panels = ((a.metrics.final_test, "mean final test L1"),
                  (a.metrics.rate_epoch, f"mean initial decrease per epoch (k={k})"))
        for j, (v, name) in enumerate(panels):
            ax = axes[b, j]
            with np.errstate(invalid="ignore"):
                m = np.nanmean(v[0, b], axis=-1)  # [lr, size]
            im = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis")
            for (li, si), val in np.ndenumerate(m):
                ax.text(si, li, f"{val:.3g}", ha="center", va="center", fontsize=7,
                        color="w" if val < np.nanmean(m) else "k")
            ax.set_xticks(range(len(co["size"])), [str(s) for s in co["size"]])
            ax.set_yticks(range(len(co["learning_rate"])), [f"{x:g}" for x in co["learning_rate"]])
            ax.set_xlabel("dataset size n (samples)")
            ax.set_ylabel("learning rate")
            ax.set_title(f"{name}: sgd, {batch_label(bs)}, {len(co['seed'])} seeds", fontsize=8)
            ax.grid(False)
            fig.colorbar(im, ax=ax).set_label(name.split(" (")[0].replace("mean ", ""))
    return _save(fig, path)


def fig_real(a: Analysis, path: Path, name: str) -> Path:
    co = a.results.coords
    n = np.asarray(co["size"], float)
    l = reference_lr(a, 0, 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ep = np.asarray(co["epoch"])
    for i, size in enumerate(co["size"]):
        _band(axes[0], ep, a.results.test_l1[0, 0, l, i], OKABE_ITO[i % 8], f"n={size}")
    _log_y(axes[0])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("test L1 (target sd units)")
    axes[0].set_title(f"held-out L1 by epoch: {_setting(a, 0, 0, l)}")
    axes[0].legend(fontsize=7)
    _band(axes[1], n, a.metrics.final_train[0, 0, l], OKABE_ITO[0], "train L1 (sgd)", axis=-1, style="o-")
    _band(axes[1], n, a.metrics.final_test[0, 0, l], OKABE_ITO[1], "test L1 (sgd)", axis=-1, style="o-")
    _band(axes[1], n, a.optima.lstar, "k", "exact L1 fit: train (L*)", axis=-1, style="s--")
    _band(axes[1], n, a.optima.test_l1, OKABE_ITO[3], "exact L1 fit: test", axis=-1, style="s--")
    _log_sizes(axes[1], co["size"])
    axes[1].set_xlabel("training subsample size n (rows)")
    axes[1].set_ylabel("final L1 (target sd units)")
    axes[1].set_title(f"final L1 after {ep[-1]} epochs, mean ± 95% CI")
    axes[1].legend(fontsize=7)
    return _save(fig, path, f"Real data: {name}")
