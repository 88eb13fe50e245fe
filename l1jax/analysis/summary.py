"""A printed summary of a sweep: final losses per grid point over seeds, and how it ran."""

from __future__ import annotations

import numpy as np

from l1jax.engine.results import Results


def _mean_sem(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "-"
    sem = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan
    return f"{v.mean():.4f}±{sem:.4f}"


def summary(r: Results) -> str:
    """One line per (optimizer, batch, learning rate, size): final train/test L1 (mean±sem)."""
    co = r.coords
    lines = [f"{'optimizer':<9} {'batch':>6} {'lr':>8} {'size':>7} {'train L1 (final)':>18} "
             f"{'test L1 (final)':>18} {'diverged':>9}"]
    for o, opt in enumerate(co["optimizer"]):
        for b, bs in enumerate(co["batch_size"]):
            for l, lr in enumerate(co["learning_rate"]):
                for s, n in enumerate(co["size"]):
                    ok = ~r.diverged[o, b, l, s]
                    lines.append(
                        f"{opt:<9} {str(bs):>6} {lr:>8.3g} {n:>7} "
                        f"{_mean_sem(r.train_l1[o, b, l, s, ok, -1]):>18} "
                        f"{_mean_sem(r.test_l1[o, b, l, s, ok, -1]):>18} "
                        f"{int((~ok).sum()):>4}/{len(ok)}")
    m = r.meta
    runs = sum(p["runs"] for p in m["programs"])
    lines.append(f"{runs} runs in {m['compiled_programs']} compiled programs "
                 f"({len(m['seed_chunks'])} chunks of seeds) on {m['backend']} "
                 f"({m['device']}): compile {sum(p['compile_s'] for p in m['programs']):.1f} s, "
                 f"run {sum(p['run_s'] for p in m['programs']):.1f} s, "
                 f"padding efficiency {m['padding_efficiency']:.1%}")
    return "\n".join(lines)
