"""Wall time of `l1jax study` for one or more source trees, cold (empty XLA and Numba caches)
then warm (the same caches again), the variants interleaved round by round so that they share
the machine's drift.  `python scripts/time_study.py . --kernels fused xla` times this tree on
its fused kernels and on the XLA path (every sweep and the article's experiment with
`kernels = "xla"`); `python scripts/time_study.py . ../old --skip twin_stress` times two trees
(make ../old with `git worktree add ../old COMMIT`; --skip leaves out built-in sweeps that
another tree lacks).  Each run is its own process, set up as `l1jax study` sets itself up (the figures drawn
beside the study, where the tree can), with the article experiment's 100 seeds."""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """import sys
from pathlib import Path
from l1jax.engine.devices import use_cpu_cores
use_cpu_cores()
from l1jax.engine.cache import enable_compilation_cache
enable_compilation_cache()
from dataclasses import replace
from l1jax.engine.config import load_config
from l1jax.study import reproduce
from l1jax.study.study import SWEEPS, study
out, kernels, skip = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def forced(cfg):
    return cfg if kernels == "default" else replace(cfg, train=replace(cfg.train, kernels=kernels))
article_config = reproduce.article_config
reproduce.article_config = lambda *a: forced(article_config(*a))
import inspect
beside = {"figures_beside": True} if "figures_beside" in inspect.signature(study).parameters else {}  # as `l1jax study`
study(out, seeds_article=100, quiet=True,
      configs={n: forced(load_config(p)) for n, p in SWEEPS.items() if n not in skip}, **beside)
"""


def timed_study(tree: Path, kernels: str, scratch: Path, skip: list[str]) -> float:
    """Seconds of one study of ``tree`` (``kernels``: "default", "fused" or "xla" for every
    sweep) into a fresh output directory, caches under ``scratch``."""
    out = Path(tempfile.mkdtemp(dir=scratch)) / "study"
    env = {**os.environ, "PYTHONPATH": str(tree), "L1JAX_COMPILATION_CACHE": str(scratch / "xla"),
           "NUMBA_CACHE_DIR": str(scratch / "numba")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", STUDY, str(out), kernels, *skip], env=env, cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (each holds an l1jax package)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kernels", nargs="+", default=["default"], choices=["default", "fused", "xla"],
                        help="each tree's sweeps as configured, or all forced to one path")
    parser.add_argument("--skip", nargs="*", default=[], help="built-in sweeps to leave out")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give 1 or more")
    for tree in args.trees:
        if not (tree / "l1jax" / "__init__.py").is_file():
            parser.error(f"{tree} holds no l1jax package: name source trees (a checkout of this repository)")
    with tempfile.TemporaryDirectory() as tmp:
        variants = [(tree, kernels) for tree in args.trees for kernels in args.kernels]
        for r in range(args.rounds):
            for i, (tree, kernels) in enumerate(variants):
                scratch = Path(tmp) / f"{r}-{i}"
                scratch.mkdir()
                for kind in ("cold", "warm"):
                    seconds = timed_study(tree.resolve(), kernels, scratch, args.skip)
                    print(f"round {r + 1} {tree} kernels={kernels} {kind}: {seconds:.1f} s, "
                          f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
