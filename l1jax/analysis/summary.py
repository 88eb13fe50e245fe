"""The short summary ``l1jax run`` prints: final losses per grid point (mean ± standard error over
seeds), capped at a screenful, and how the sweep ran."""

from __future__ import annotations

import numpy as np

from l1jax.analysis import stats
from l1jax.analysis.analyze import has_test_set
from l1jax.engine.results import Results

MAX_ROWS = 24


def _mean_se(m: stats.Summary, i: tuple[int, ...]) -> str:
    if not np.isfinite(m.mean[i]):
        return "-"
    return f"{m.mean[i]:.4f} ± {m.sem[i]:.4f}" if np.isfinite(m.sem[i]) else f"{m.mean[i]:.4f}"


def summary(r: Results, max_rows: int = MAX_ROWS) -> str:
    """Final train (and test) L1 per grid point, mean ± se over seeds, at most ``max_rows`` rows."""
    co = r.coords
    ok = ~r.diverged
    test = has_test_set(r.config)
    final = {"train": r.train_l1[..., -1], "test": r.test_l1[..., -1]}
    sums = {k: stats.t_summary(stats.moments(np.where(ok, v, np.nan)), ok.shape[-1])
            for k, v in final.items() if k == "train" or test}
    head = f"{'optimizer':<9} {'batch':>6} {'lr':>8} {'size':>7} {'final train L1':>18}"
    head += f" {'final test L1':>18}" if test else ""
    lines = [head + f" {'diverged':>9}"]
    grid = list(np.ndindex(ok.shape[:4]))
    for i in grid[:max_rows]:
        o, b, l, s = i
        row = (f"{co['optimizer'][o]:<9} {str(co['batch_size'][b]):>6} {co['learning_rate'][l]:>8.3g} "
               f"{co['size'][s]:>7} {_mean_se(sums['train'], i):>18}")
        row += f" {_mean_se(sums['test'], i):>18}" if test else ""
        lines.append(row + f" {int((~ok[i]).sum()):>5}/{ok.shape[-1]}")
    if len(grid) > max_rows:
        lines.append(f"... {len(grid) - max_rows} more grid points (all of them: `l1jax report`)")
    lines.append("(mean ± standard error over seeds; diverged runs left out and counted)")
    m = r.meta
    runs = sum(p["runs"] for p in m["programs"])
    lines.append(f"{runs} runs computed in {m['compiled_programs']} compiled programs "
                 f"({len(m['seed_chunks'])} chunks of seeds, {m['resumed_chunks']} reused from disk) "
                 f"on {m['backend']} ({m['device']}): compile {sum(p['compile_s'] for p in m['programs']):.1f} s, "
                 f"run {sum(p['run_s'] for p in m['programs']):.1f} s, padding efficiency "
                 f"{m['padding_efficiency']:.1%}")
    return "\n".join(lines)
