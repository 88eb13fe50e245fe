"""Command line: a thin layer over the Python API.  User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from l1jax.engine.config import ConfigError, load_config
from l1jax.engine.files import check_dir_path


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.distributed:
        from l1jax.engine.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    import jax

    from l1jax.analysis.summary import summary
    from l1jax.engine.distributed import agree
    from l1jax.engine.store import ChunkStore, open_out
    from l1jax.engine.sweep import run

    check_dir_path(args.out, "--out")
    out = Path(args.out)
    first = jax.process_index() == 0
    lock = store = None
    for stage, turn in (("checking the output directory", first), ("opening the output directory", not first)):
        error = None
        if turn:
            try:  # process 0 locks, checks and clears the output before the others open it
                if first:
                    lock, store = open_out(out, cfg, args.overwrite)
                else:
                    store = ChunkStore(out, cfg, writes_index=False)
            except (ConfigError, OSError) as e:
                error = e
        agree(error, stage)
    try:
        results = run(cfg, quiet=args.quiet or not first, memory_budget=args.memory_budget, store=store)
        if not first:
            print(f"process {jax.process_index()}: done; process 0 writes {out}")
            return 0
        results.save(out, store.fingerprint)
    except BaseException:
        if store is not None:
            store.abandon()  # a run refused before its first chunk leaves no index behind
        raise
    finally:
        if store is not None:
            store.discard_scratch()  # after the results are saved, or on any failure
        if lock is not None:
            lock.release()
    print(summary(results))
    print(f"results: {out / 'results.npz'} (arrays), {out / 'manifest.json'} (config, coordinates, "
          f"provenance)\nnext: `l1jax report {out}` (figures, metrics.csv, claims.json, report.md), "
          f"`l1jax export {out} --csv FILE` or `--parquet FILE` (one row per run and epoch)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from l1jax.analysis.report import report

    if args.out is not None:
        check_dir_path(args.out, "--out")
    r = report(args.dir, args.out, quiet=args.quiet, memory_budget=args.memory_budget)
    verdicts = "; ".join(f"{c.number}: {c.verdict}" for c in r.claim_list)
    print(f"the article's claims on this sweep: {verdicts}")
    print(f"report: {r.report}\nfigures: {r.figures[0].parent}/ ({', '.join(f.name for f in r.figures)})\n"
          f"tables: {r.metrics} (one row per grid point and metric), {r.claims} (verdicts and evidence)"
          + ("" if r.theory is None else f", {r.theory} (the twins' predicted curves beside the measured ones)"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from l1jax.engine.results import Results, check_export_path, check_export_space

    targets = [t for t in (args.csv, args.parquet) if t]
    if not targets:
        raise ConfigError("export needs --csv FILE, --parquet FILE or both")
    if len(targets) == 2 and Path(args.csv).resolve() == Path(args.parquet).resolve():
        raise ConfigError(f"--csv and --parquet both name {args.csv}: give them different files")
    for t in targets:
        check_export_path(args.dir, t)
    res = Results.load(args.dir, mmap=True)  # exports stream block by block: no need for RAM
    if args.csv:
        check_export_space(res, Path(args.csv))
    if args.parquet:  # first: it is the one that may lack its optional dependency
        res.export_parquet(args.parquet)
    if args.csv:
        res.export_csv(args.csv)
    print(f"wrote {' and '.join(targets)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from l1jax.study.reproduce import reproduce, report

    print(report(reproduce(args.seeds, args.base_seed)))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from l1jax.study.study import study

    check_dir_path(args.out, "--out")
    r = study(Path(args.out), seeds_article=args.seeds, overwrite=args.overwrite, quiet=args.quiet,
              memory_budget=args.memory_budget, figures_beside=True)
    print(r.summary)
    print(f"report: {r.report}\nfigures: {r.figures}/\nsweeps (each an `l1jax run` directory with "
          f"its own report/): {', '.join(str(d) for d in r.sweeps)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import jax

    from l1jax.bench import (GPU_ONLY, WORKLOADS, benchmark, records_dir, useful_sample_epochs, write_docs,
                             write_record)

    if args.workload in GPU_ONLY and jax.default_backend() == "cpu" and not args.force:
        work = useful_sample_epochs(WORKLOADS[args.workload])
        raise ConfigError(f"--workload {args.workload} is sized for an accelerator ({work:.1e} "
                          "sample-epochs): run it on a GPU, or pass --force")
    if args.docs:  # checked before measuring: the table is rebuilt from DOCS's sibling bench/
        records = records_dir(Path(args.docs))
        fills_it = args.json and Path(args.json).resolve().parent == records.resolve()
        if not records.is_dir() and not fills_it:
            raise ConfigError(f"--docs {args.docs} is rebuilt from the records in {records}/, which "
                              f"does not exist: pass --json {records}/NAME.json")
    record = benchmark(args.workload, args.peer_budget)
    if args.json:
        write_record(record, Path(args.json))
    if args.docs:
        write_docs(Path(args.docs))
    m = record["l1jax"]
    wrote = " and ".join(p for p in (args.json, args.docs) if p)
    print(f"{args.workload} on {record['device']}: l1jax warm {m['warm_rate']:.3g}/s, cold "
          f"{m['cold_rate']:.3g}/s; NumPy loop {record['numpy_loop']['rate']:.3g}/s; roofline "
          f"{record['roofline_rate']:.3g}/s" + (f"; wrote {wrote}" if wrote else ""))
    return 0


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_MAX_BYTES = 2**60
_MAX_BASE_SEED = 2**32 - 1  # as for [sweep] base_seed


def _bytes(v: str) -> int:
    """A memory size: bytes, or a number with K, M, G or T (powers of 1024; a trailing B is optional)."""
    text = v.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        n = float(text[: len(text) - len(unit)]) * _UNITS[unit]
    except ValueError:
        n = -1.0
    if not 1 <= n <= _MAX_BYTES:
        raise argparse.ArgumentTypeError(f"{v!r} is not a memory size from 1 byte to 1024P "
                                         "(e.g. 8G, 512M, 1000000)")
    return int(n)


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r} is not a positive integer")
    return n


def _seed(v: str) -> int:
    n = int(v)
    if not 0 <= n <= _MAX_BASE_SEED:
        raise argparse.ArgumentTypeError(f"{v!r} is not a base seed (an integer from 0 to {_MAX_BASE_SEED})")
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
    e = sub.add_parser("export", help="write a results directory as a tidy table (one row per run "
                       "and recorded epoch): CSV, Parquet or both")
    e.add_argument("dir", help="a directory written by `l1jax run`")
    e.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    e.add_argument("--parquet", metavar="FILE", help="write the table as Parquet (needs "
                   "pip install 'l1jax[parquet]')")
    e.set_defaults(func=cmd_export)
    s = sub.add_parser("seed", help="the article's experiment: its code vs the engine")
    s.add_argument("--seeds", type=_positive, default=100, help="engine replicates")
    s.add_argument("--base-seed", type=_seed, default=0)
    s.set_defaults(func=cmd_seed)
    rp = sub.add_parser("report", help="figures, metrics.csv, theory.csv, claims.json and report.md of a finished run")
    rp.add_argument("dir", help="a directory written by `l1jax run`")
    rp.add_argument("--out", help="where the report goes (default: DIR/report)")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.add_argument("--memory-budget", type=_bytes, help="bytes the analysis may hold at once "
                    "(e.g. 8G; default as for run)")
    rp.add_argument("--no-cache", action="store_true", help="do not keep compiled programs on disk")
    rp.set_defaults(func=cmd_report)
    st = sub.add_parser("study", help="the main job: the article's experiment and the built-in "
                        "sweeps, each run and reported, and the study's report.md")
    st.add_argument("--out", default="out/study")
    st.add_argument("--seeds", type=_positive, default=100, help="replicates for the article's experiment")
    st.add_argument("--overwrite", action="store_true", help="replace sweeps of another config in OUT")
    st.add_argument("--quiet", action="store_true", help="no progress output")
    st.add_argument("--memory-budget", type=_bytes, help="bytes a chunk may use (default as for run)")
    st.add_argument("--no-cache", action="store_true", help="do not keep compiled programs on disk")
    st.set_defaults(func=cmd_study)
    b = sub.add_parser("bench", help="benchmark a named workload against its peers")
    b.add_argument("--workload", required=True, choices=["bench-cpu", "bench-gpu", "bench-lr", "bench-lr-cpu", "bench-sgd",
                                                         "gpu-full", "gpu-sgd"])
    b.add_argument("--json", metavar="FILE", help="write the JSON record here (default: print only)")
    b.add_argument("--docs", metavar="FILE", help="rebuild this markdown table from the records in "
                   "FILE's sibling bench/ directory (e.g. docs/benchmarks.md from docs/bench/*.json)")
    b.add_argument("--peer-budget", type=float, default=20.0, help="seconds per slow peer before extrapolating")
    b.add_argument("--force", action="store_true", help="run an accelerator workload on the CPU anyway")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run" and not args.distributed and (
            args.coordinator or args.num_processes or args.process_id is not None):
        parser().error("--coordinator, --num-processes and --process-id need --distributed")
    from l1jax.engine.devices import use_cpu_cores

    use_cpu_cores()
    if not getattr(args, "no_cache", True):
        from l1jax.engine.cache import enable_compilation_cache

        enable_compilation_cache()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        kept = " (finished chunks are kept: rerun the same command to resume)" if args.command in (
            "run", "study") else ""
        print(f"l1jax: interrupted{kept}", file=sys.stderr)
        return 130
    except ConfigError as e:
        return _fail(str(e))
    except OSError as e:  # a path that cannot be written or read, a full disk: the user's to fix
        return _fail(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")
    except Exception as e:  # noqa: BLE001 - only the device running out of memory is worded
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return _fail("the device ran out of memory: pass a smaller --memory-budget (finished "
                     f"chunks are kept) [{str(e).splitlines()[0][:200]}]")


def _fail(message: str) -> int:
    """Print a user or environment error as one line; exit status 2.  A run of over 300
    characters without a space (a pasted value, a key name) is cut, so the line stays readable."""
    cut = re.sub(r"\S{301,}", lambda m: f"{m[0][:100]}...({len(m[0]):,} characters)", message)
    print(f"l1jax: error: {' '.join(cut.splitlines())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
