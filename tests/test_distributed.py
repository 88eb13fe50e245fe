"""`l1jax run --distributed`: two local CPU processes over loopback (gloo) split the chunks;
process 0 writes results identical to a one-process run, also when rerun after an interruption."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from l1jax.engine.config import load_config
from l1jax.engine.results import Results
from l1jax.engine.sweep import run
from tests.test_resume import budget_for_one_replicate

CONFIG = ("[data]\ntest_size = 50\n[train]\nepochs = 5\nlearning_rate = [0.05, 0.2]\n"
          "batch_size = ['full', 8]\n[sweep]\nsizes = [9, 40]\nseeds = 5\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(conf, outs) -> tuple[list[subprocess.Popen], list[tuple[str, str]]]:
    port, budget = _free_port(), str(budget_for_one_replicate(conf))
    procs = [subprocess.Popen(
        [sys.executable, "-m", "l1jax", "run", str(conf), "--out", str(out), "--no-cache",
         "--memory-budget", budget, "--distributed", "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        for i, out in enumerate(outs)]
    return procs, [p.communicate(timeout=600) for p in procs]


def test_two_processes_match_one(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(CONFIG)
    out = tmp_path / "out"
    procs, logs = _two_processes(conf, [out, out])
    for p, (o, e) in zip(procs, logs):
        assert p.returncode == 0, e[-3000:]
    assert "process 1: done; process 0 writes" in logs[1][0]
    assert f"results: {out / 'results.npz'}" in logs[0][0]
    got = Results.load(out)
    assert got.meta["processes"] == 2 and got.meta["seed_chunks"] == [[s, s + 1] for s in range(5)]
    assert len(list((out / "chunks").glob("*.sha256"))) == 5
    want = run(load_config(conf))
    for k, v in want.arrays.items():
        np.testing.assert_array_equal(got.arrays[k], v, err_msg=k)

    # as if both were killed before chunks 1 (process 1's) and 4 (process 0's) finished:
    # the rerun recomputes those and reuses the rest
    for f in ["results.npz", "manifest.json", "chunks/seeds-1-2.sha256", "chunks/seeds-4-5.sha256"]:
        (out / f).unlink()
    procs, logs = _two_processes(conf, [out, out])
    assert [p.returncode for p in procs] == [0, 0], logs[0][1][-3000:]
    again = Results.load(out)
    assert again.meta["resumed_chunks"] == 2  # process 0's chunks 0 and 2
    for k, v in want.arrays.items():
        np.testing.assert_array_equal(again.arrays[k], v, err_msg=k)


def test_an_error_on_one_process_stops_both(tmp_path):
    """Process 1 is pointed at a directory process 0 does not write: it says so, process 0
    names it, and neither waits forever."""
    conf = tmp_path / "c.toml"
    conf.write_text(CONFIG)
    procs, logs = _two_processes(conf, [tmp_path / "a", tmp_path / "b"])
    assert [p.returncode for p in procs] == [2, 2]
    assert "--out must be a directory that every process shares" in logs[1][1]
    assert "process 1 failed while opening the output directory" in logs[0][1]
    assert not (tmp_path / "a" / "results.npz").exists()


def test_process_flags_need_distributed(tmp_path, capsys):
    from l1jax.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "c.toml", "--out", str(tmp_path), "--process-id", "1"])
    assert e.value.code == 2 and "need --distributed" in capsys.readouterr().err
