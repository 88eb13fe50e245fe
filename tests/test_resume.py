"""Kill `l1jax run` with SIGKILL mid-sweep, rerun it: it continues from the finished chunks and
its results are bit-identical to an uninterrupted run; corrupt chunks are named."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from l1jax.engine.config import load_config
from l1jax.engine.plan import bytes_per_seed, plan

CONFIG = ("[data]\ntest_size = 0\n[train]\nepochs = 40000\nrecord_every = 40000\n"
          "learning_rate = [0.01]\n[sweep]\nsizes = [4000]\nseeds = 6\n")


def budget_for_one_replicate(conf) -> int:
    """A --memory-budget that fits one replicate of the config in ``conf``, not two."""
    cfg = load_config(conf)
    return max(bytes_per_seed(cfg, g, cfg.data.n_features) for g in plan(cfg))


def _run(out, conf, **kw):
    cmd = [sys.executable, "-m", "l1jax", "run", str(conf), "--out", str(out), "--quiet",
           "--no-cache", "--memory-budget", str(budget_for_one_replicate(conf))]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _done(out):
    return len(list((out / "chunks").glob("seeds-*.sha256")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    conf = tmp / "c.toml"
    conf.write_text(CONFIG)
    whole = _run(tmp / "whole", conf)
    assert whole.wait(timeout=600) == 0
    killed = _run(tmp / "killed", conf)
    deadline = time.time() + 300
    while _done(tmp / "killed") < 2 and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    finished_before = _done(tmp / "killed")
    resumed = _run(tmp / "killed", conf)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    return tmp, conf, finished_before


def test_rerun_after_sigkill_continues_and_matches(runs):
    tmp, _, finished_before = runs
    assert 1 <= finished_before < 6, "the kill should land mid-sweep"
    man = json.loads((tmp / "killed" / "manifest.json").read_text())
    assert man["resumed_chunks"] == finished_before
    with np.load(tmp / "whole" / "results.npz") as a, np.load(tmp / "killed" / "results.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_corrupt_chunk_is_named(runs):
    tmp, conf, _ = runs
    chunk = tmp / "killed" / "chunks" / "seeds-0-1.npz"
    chunk.write_bytes(chunk.read_bytes()[:50])
    p = _run(tmp / "killed", conf)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 2
    assert f"{chunk} is truncated or corrupt" in err and "Traceback" not in err
