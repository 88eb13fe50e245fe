"""User and environment errors on the command line: one line naming the problem, exit 2, and
Ctrl-C one line with exit 130, finished chunks kept (the table of bad inputs grows here)."""

import signal
import subprocess
import sys
import time

import pytest

from l1jax.cli import main
from l1jax.engine.results import Results
from tests.test_resume import budget_for_one_replicate

CONFIG = "[data]\ntest_size = 0\n[train]\nepochs = 3\n[sweep]\nsizes = [10]\nseeds = 2\n"
# about a second per one-replicate chunk on a 2-core CPU, so Ctrl-C lands mid-sweep
SLOW = ("[data]\ntest_size = 0\n[train]\nepochs = 400000\nrecord_every = 400000\n"
        "learning_rate = [0.01]\n[sweep]\nsizes = [4000]\nseeds = 6\n")


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    return path


def _one_line(capsys, argv, code=2):
    """The one error line that ``l1jax ARGV`` prints (argparse adds its usage lines)."""
    try:
        got = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors: usage line plus one error line
        got = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith(("usage:", " "))]
    assert got == code and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_out_that_is_not_a_directory(tmp_path, conf, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    for out in (afile, "/dev/null"):
        assert f"--out {out} is not a directory" in _one_line(capsys, ["run", conf, "--out", out, "--quiet"])
    assert f"--out {afile} is not a directory" in _one_line(capsys, ["study", "--out", afile, "--quiet"])
    assert afile.read_text() == ""


def test_export_to_a_path_under_a_file(tmp_path, capsys):
    from tests.test_store_safety import A, BUDGET
    from l1jax.engine.sweep import run_to_dir

    out, afile = tmp_path / "o", tmp_path / "afile"
    afile.write_text("")
    run_to_dir(A, out, memory_budget=BUDGET)
    line = _one_line(capsys, ["export", out, "--csv", afile / "x.csv"])
    assert str(afile) in line


@pytest.mark.parametrize("argv, message", [
    (["seed", "--base-seed=-1"], "'-1' is not a base seed (an integer from 0 to 4294967295)"),
    (["seed", "--base-seed", "99999999999999999999"], "is not a base seed"),
    (["run", "c.toml", "--out", "o", "--memory-budget", "inf"], "'inf' is not a memory size"),
    (["run", "c.toml", "--out", "o", "--memory-budget", "1e400"], "'1e400' is not a memory size"),
    (["report", "o", "--memory-budget=-3G"], "'-3G' is not a memory size"),
])
def test_bad_arguments(capsys, argv, message):
    assert message in _one_line(capsys, argv)


def test_ctrl_c_is_one_line_keeps_chunks_and_resumes(tmp_path):
    conf = tmp_path / "slow.toml"
    conf.write_text(SLOW)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "l1jax", "run", str(conf), "--out", str(out), "--quiet",
           "--no-cache", "--memory-budget", str(budget_for_one_replicate(conf))]
    # a shell that starts jobs in the background ignores SIGINT, and so would the child: restore it
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not list(out.glob("chunks/seeds-*.sha256")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    kept = len(list(out.glob("chunks/seeds-*.sha256")))
    assert p.returncode == 130 and kept >= 1, err
    assert err == ("l1jax: interrupted (finished chunks are kept: rerun the same command to "
                   "resume)\n")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert Results.load(out).meta["resumed_chunks"] >= kept
