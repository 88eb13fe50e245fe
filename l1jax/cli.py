"""Command line: a thin layer over the Python API.  User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l1jax.engine.config import ConfigError, load_config


def _check_out(out: Path, cfg_dict: dict, overwrite: bool) -> None:
    """Refuse to replace results of a different config unless asked to."""
    man = out / "manifest.json"
    if man.is_file() and not overwrite:
        try:
            old = json.loads(man.read_text()).get("config")
        except json.JSONDecodeError:
            old = None
        if old != cfg_dict:
            raise ConfigError(f"{out} holds results of a different config: choose another --out "
                              "or pass --overwrite")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.distributed:
        from l1jax.engine.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    import jax

    from l1jax.engine.distributed import agree
    from l1jax.engine.store import ChunkStore
    from l1jax.analysis.summary import summary
    from l1jax.engine.sweep import run

    out = Path(args.out)
    first = jax.process_index() == 0
    def open_store() -> ChunkStore:
        if first:  # process 0 checks and clears the output before the others open it
            _check_out(out, cfg.to_dict(), args.overwrite)
            return ChunkStore(out, cfg, overwrite=args.overwrite)
        return ChunkStore(out, cfg, writes_index=False)

    store = None
    for stage, turn in (("checking the output directory", first), ("opening the output directory", not first)):
        error = None
        if turn:
            try:
                store = open_store()
            except ConfigError as e:
                error = e
        agree(error, stage)
    results = run(cfg, quiet=args.quiet or not first, memory_budget=args.memory_budget, store=store)
    if not first:
        print(f"process {jax.process_index()}: done; process 0 writes {out}")
        return 0
    results.save(out)
    store.discard_scratch()
    print(summary(results))
    print(f"wrote {out / 'results.npz'} and {out / 'manifest.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from l1jax.engine.results import Results

    Results.load(args.dir).export_csv(args.csv)
    print(f"wrote {args.csv}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from l1jax.study.reproduce import reproduce, report

    print(report(reproduce(args.seeds, args.base_seed)))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from l1jax.study.study import DEFAULT_MAIN, study

    main_cfg = load_config(args.config or DEFAULT_MAIN)
    out = Path(args.out)
    _check_out(out / "main", main_cfg.to_dict(), args.overwrite)
    report = study(out, Path(args.figures) if args.figures else None, main_cfg,
                   seeds_article=args.seeds)
    print(report.read_text().split("\n## The article's experiment")[0])
    print(f"wrote {report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import jax

    from l1jax.bench import WORKLOADS, benchmark, useful_sample_epochs, write

    if args.workload in ("bench-gpu", "bench-lr") and jax.default_backend() == "cpu" and not args.force:
        work = useful_sample_epochs(WORKLOADS[args.workload])
        raise ConfigError(f"--workload {args.workload} is sized for an accelerator ({work:.1e} "
                          "sample-epochs): run it on a GPU, or pass --force")
    record = benchmark(args.workload, args.peer_budget)
    json_path = Path(args.json or f"docs/bench/{args.workload}-{record['device'].split(':')[0]}.json")
    write(record, json_path, Path(args.docs))
    m = record["l1jax"]
    print(f"{args.workload} on {record['device']}: l1jax warm {m['warm_rate']:.3g}/s, cold "
          f"{m['cold_rate']:.3g}/s; NumPy loop {record['numpy_loop']['rate']:.3g}/s; roofline "
          f"{record['roofline_rate']:.3g}/s; wrote {json_path} and {args.docs}")
    return 0


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _bytes(v: str) -> int:
    """A memory size: bytes, or a number with K, M, G or T (powers of 1024; a trailing B is optional)."""
    text = v.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        n = float(text[: len(text) - len(unit)]) * _UNITS[unit]
    except ValueError:
        n = -1.0
    if not n >= 1:
        raise argparse.ArgumentTypeError(f"{v!r} is not a memory size (e.g. 8G, 512M, 1000000)")
    return int(n)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r} is not a positive integer")
    return n


def _index(v: str) -> int:
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{v!r} is not a process number (0, 1, ...)")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l1jax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the sweep a TOML config describes")
    r.add_argument("config")
    r.add_argument("--out", required=True, help="results directory")
    r.add_argument("--overwrite", action="store_true", help="replace results of another config")
    r.add_argument("--no-cache", action="store_true", help="do not keep compiled programs on disk")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--memory-budget", type=_bytes, help="bytes a chunk of replicates may use "
                   "(e.g. 8G; default: 60%% of accelerator memory, or half the available RAM)")
    d = r.add_argument_group("many hosts (jax.distributed; omitted values come from the "
                             "environment, e.g. Slurm)")
    d.add_argument("--distributed", action="store_true", help="join the other processes of this run")
    d.add_argument("--coordinator", help="HOST:PORT of process 0")
    d.add_argument("--num-processes", type=_positive, help="how many processes take part")
    d.add_argument("--process-id", type=_index, help="this process's number, 0 to N-1")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("export", help="write a results directory as a tidy CSV")
    e.add_argument("dir")
    e.add_argument("--csv", required=True)
    e.set_defaults(func=cmd_export)
    s = sub.add_parser("seed", help="the article's experiment: its code vs the engine")
    s.add_argument("--seeds", type=_positive, default=100, help="engine replicates")
    s.add_argument("--base-seed", type=int, default=0)
    s.set_defaults(func=cmd_seed)
    st = sub.add_parser("study", help="the main job: sweeps, analysis, figures, report.md")
    st.add_argument("--config", help="the main synthetic sweep (default: the embedded study)")
    st.add_argument("--out", default="out/study")
    st.add_argument("--figures", help="where the PNGs go (default: OUT/figures)")
    st.add_argument("--seeds", type=_positive, default=100, help="replicates for `seed`")
    st.add_argument("--overwrite", action="store_true")
    st.add_argument("--no-cache", action="store_true", help="do not keep compiled programs on disk")
    st.set_defaults(func=cmd_study)
    b = sub.add_parser("bench", help="benchmark a named workload against its peers")
    b.add_argument("--workload", required=True, choices=["bench-cpu", "bench-gpu", "bench-lr", "bench-sgd"])
    b.add_argument("--json", help="record file (default docs/bench/WORKLOAD-PLATFORM.json)")
    b.add_argument("--docs", default="docs/benchmarks.md", help="markdown table rebuilt from docs/bench/")
    b.add_argument("--peer-budget", type=float, default=20.0, help="seconds per slow peer before extrapolating")
    b.add_argument("--force", action="store_true", help="run an accelerator workload on the CPU anyway")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run" and not args.distributed and (
            args.coordinator or args.num_processes or args.process_id is not None):
        parser().error("--coordinator, --num-processes and --process-id need --distributed")
    if not getattr(args, "no_cache", True):
        from l1jax.engine.cache import enable_compilation_cache

        enable_compilation_cache()
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"l1jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
