"""`l1jax bench` writes only where it is told; scripts/bench.py tells it the repo's docs/."""

import json
import runpy
import sys
from pathlib import Path

import pytest

import l1jax.bench
import l1jax.cli
from l1jax.bench import write_docs, write_record
from l1jax.cli import main

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
    rows = [l for l in (tmp_path / "benchmarks.md").read_text().splitlines()
            if l.startswith(f"| {record['workload']} | {record['device']} (")]
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
