"""`l1jax bench` writes only where it is told; scripts/bench.py tells it the repo's docs/."""

import dataclasses
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import l1jax.bench
import l1jax.cli
from l1jax.bench import Workload, local_order, numba_loop, paired_warm, peer_runs, write_docs, write_record
from l1jax.cli import main
from l1jax.reference import train_reference

ROOT = Path(__file__).resolve().parent.parent


def test_refused_workload_creates_nothing_in_the_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--workload", "bench-gpu"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_measured_run_writes_only_its_json(tmp_path, monkeypatch, capsys):
    record = json.loads(next((ROOT / "docs" / "bench").glob("*.json")).read_text())
    monkeypatch.setattr(l1jax.bench, "benchmark", lambda name, budget: record)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--workload", "bench-cpu"]) == 0
    assert list(tmp_path.iterdir()) == [] and "wrote" not in capsys.readouterr().out
    assert main(["bench", "--workload", "bench-cpu", "--json", "out/r.json"]) == 0
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("out"), Path("out/r.json")]
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == record


def test_docs_without_records_is_refused_before_measuring(tmp_path, capsys):
    docs = tmp_path / "d" / "benchmarks.md"
    assert main(["bench", "--workload", "bench-cpu", "--docs", str(docs)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"l1jax: error: --docs {docs} is rebuilt from the records in {docs.parent / 'bench'}/, "
        f"which does not exist: pass --json {docs.parent / 'bench'}/NAME.json"]
    assert list(tmp_path.iterdir()) == []


def test_docs_table_is_rebuilt_from_the_sibling_bench_directory(tmp_path):
    record = json.loads(next((ROOT / "docs" / "bench").glob("*.json")).read_text())
    write_record(record, tmp_path / "bench" / "x.json")
    assert json.loads((tmp_path / "bench" / "x.json").read_text()) == record
    write_docs(tmp_path / "benchmarks.md")
    count = f" x{record['devices']}" if "devices" in record else ""  # devices, when recorded
    rows = [l for l in (tmp_path / "benchmarks.md").read_text().splitlines()
            if l.startswith(f"| {record['workload']} | {record['device']}{count} (")]
    assert len(rows) == 1


@pytest.mark.parametrize("extra, want", [
    ([], ["--json", str(ROOT / "docs" / "bench" / "bench-cpu-cpu.json"),
          "--docs", str(ROOT / "docs" / "benchmarks.md")]),
    (["--json", "r.json", "--docs", "b.md"], []),
])
def test_script_passes_the_repo_docs_paths(monkeypatch, extra, want):
    seen = []
    monkeypatch.setattr(l1jax.cli, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--workload", "bench-cpu", *extra])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="__main__")
    assert e.value.code == 0
    assert seen == [["bench", "--workload", "bench-cpu", *extra, *want]]


# Float32 peer vs float64 reference, residual signs agreeing (checked data): each update adds the
# rounding of a batch sum of <= 64 terms |sign * x| <= 1 (<= 64 * 2^-24 relative, times lr <= 0.5)
# and of theta itself (|theta| < 4: 2.4e-7), so the <= 32 updates here drift < 2e-5; a wrong
# ragged mean, sign or bias term moves theta by >= lr / n ~ 1.5e-3.
PEER_ATOL = 2e-5


PEER_WORKLOAD = Workload(sizes=(5, 33, 64), seeds=1, epochs=4, learning_rates=(0.1, 0.5), batch=8)


def test_numba_peer_matches_the_reference_full_batch_and_minibatch():
    pytest.importorskip("numba")
    from l1jax import peers

    w = PEER_WORKLOAD
    x, y, start, theta0, lr = peer_runs(w, w.seeds, np.random.default_rng(0))
    full, mini, order, orders = theta0.copy(), theta0.copy(), local_order(start), []
    peers.train_full(x, y, start, full, lr, w.epochs)
    for e in range(w.epochs):  # one epoch a call: ``order`` is then the epoch's visiting order
        peers.train_minibatch(x, y, start, mini, lr, 1, w.batch, order, e)
        orders.append(order.copy())
    for r, (a, z) in enumerate(zip(start[:-1], start[1:])):
        args = x[:, a:z].T, y[a:z], theta0[r], float(lr[r]), w.epochs
        perms = [o[a:z] for o in orders]
        assert all(np.array_equal(np.sort(p), np.arange(z - a)) for p in perms)
        np.testing.assert_allclose(full[r], train_reference(*args).theta, rtol=0, atol=PEER_ATOL)
        np.testing.assert_allclose(mini[r], train_reference(*args, batch=w.batch, perms=perms).theta,
                                   rtol=0, atol=PEER_ATOL)


def test_peer_draws_the_benchmark_data_the_same_whatever_its_threads():
    """x ~ U(0, 1)^2 and eps = y - 2 x1 - 3 x2 ~ N(0, 1): means, variances, P(|eps| < 1) and the
    correlation of the Box-Muller pairs' two normals within 4.5 standard errors (134,000 samples
    in datasets of odd and even sizes), and the same bits on one thread as on two."""
    numba = pytest.importorskip("numba")
    from l1jax import peers

    start = np.concatenate([[0], np.cumsum(np.tile([999, 1, 1000], 67))])  # even starts but for the 1s
    n = int(start[-1])
    x, y = np.empty((2, n), np.float32), np.empty(n, np.float32)
    peers.draw_data(x, y, start, 7)
    eps = (y - 2 * x[0].astype(np.float64) - 3 * x[1]).astype(np.float64)
    for v, mean, var in [(x[0], 0.5, 1 / 12), (x[1], 0.5, 1 / 12), (eps, 0.0, 1.0),
                         (np.abs(eps) < 1, 0.682689492, 0.682689492 * 0.317310508)]:
        assert abs(np.mean(v) - mean) < 4.5 * np.sqrt(var / n), (mean, np.mean(v))
    for v, var, kurt in [(x[0], 1 / 12, 1.8), (eps, 1.0, 3.0)]:
        assert abs(np.var(v) - var) < 4.5 * var * np.sqrt((kurt - 1) / n), (var, np.var(v))
    pairs = eps.reshape(-1, 2)  # a pair's cos and sin (bar each 999 dataset's last and the 1s)
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 4.5 / np.sqrt(len(pairs))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        x1, y1 = np.empty_like(x), np.empty_like(y)
        peers.draw_data(x1, y1, start, 7)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(x1, x) and np.array_equal(y1, y)


def test_numba_loop_times_both_kernels():
    pytest.importorskip("numba")
    for w in (PEER_WORKLOAD, dataclasses.replace(PEER_WORKLOAD, batch="full")):
        got = numba_loop(w, 1.0)
        assert got["measured_seeds"] == 1 and 0 < got["compile_s"] <= got["cold_s"] and got["warm_s"] > 0
        assert 0 < got["draw_warm_s"] <= got["draw_cold_s"]


def test_without_numba_the_record_and_row_say_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)
    assert numba_loop(PEER_WORKLOAD, 1.0) == {"note": "not installed"}
    record = json.loads((ROOT / "docs" / "bench" / "bench-sgd-cpu.json").read_text())
    record["numba"] = {"note": "not installed", "cold_rate": None, "warm_rate": None}
    write_record(record, tmp_path / "bench" / "x.json")
    write_docs(tmp_path / "benchmarks.md")
    row = next(l for l in (tmp_path / "benchmarks.md").read_text().splitlines() if l.startswith("| bench-sgd"))
    assert "| not installed | | | |" in row and row.count("|") == 19


def test_paired_warm_alternates_the_two_runs_and_takes_the_median_ratio():
    calls, mine_s, peer_s = [], iter([1.0, 2.0, 4.0]), iter([3.0, 2.0, 2.0])
    mine = lambda: calls.append("l1jax") or next(mine_s)
    peer = lambda: calls.append("peer") or next(peer_s)
    got = paired_warm(mine, peer, rounds=3)
    assert calls == ["l1jax", "peer"] * 3
    assert got == {"rounds": 3, "ratios": [3.0, 1.0, 0.5], "median": 1.0}


def test_the_kernel_lines_give_the_alternated_median_and_range_only_where_recorded():
    record = json.loads((ROOT / "docs" / "bench" / "bench-sgd-cpu-xeon.json").read_text())
    record.pop("paired", None)
    assert "alternated" not in "\n".join(l1jax.bench._kernel_lines([record]))
    record["paired"] = {"rounds": 3, "ratios": [1.5, 0.75, 1.25], "median": 1.25}
    line = next(l for l in l1jax.bench._kernel_lines([record]) if l.startswith("- bench-sgd"))
    assert "alternated with the peer (3 warm runs each, `paired_warm`) 1.25x median, 0.75x to 1.5x;" in line
