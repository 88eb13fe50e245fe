"""A full disk: a run whose files would not fit is refused in one line with both numbers before
anything is written; memory-mapped assembly files are reserved before they are mapped (a full
disk is an error, never a SIGBUS), and no assembly file outlives a run, failed or not."""

import errno
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from l1jax.cli import main
from l1jax.engine import store as S
from l1jax.engine import sweep
from l1jax.engine.results import Results

TOML = "[data]\ntest_size = 0\n[train]\nepochs = 2\nlearning_rate = [0.1]\n[sweep]\nsizes = [8]\nseeds = {seeds}\n"
Usage = namedtuple("Usage", "total used free")


def _conf(tmp_path: Path, seeds: int = 3) -> Path:
    path = tmp_path / f"s{seeds}.toml"
    path.write_text(TOML.format(seeds=seeds))
    return path


def _run(capsys, conf: Path, out: Path) -> tuple[int, str]:
    code = main(["run", str(conf), "--out", str(out), "--quiet", "--no-cache", "--memory-budget", "64M"])
    return code, capsys.readouterr().err


def _assembly(out: Path) -> list[Path]:
    return list((out / "chunks").glob("assembly-*"))


def test_a_run_that_would_not_fit_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(S.shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - 10, 10))
    out = tmp_path / "o"
    code, err = _run(capsys, _conf(tmp_path), out)
    assert code == 2 and err.count("\n") == 1, err
    assert "would need" in err and "10 bytes free" in err and "free" in err
    assert not list((out / "chunks").glob("seeds-*")) and not _assembly(out)


def test_reserving_an_assembly_file_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(S.os, "posix_fallocate", full)
    monkeypatch.setattr(sweep, "run", partial(sweep.run, on_disk=True))
    out = tmp_path / "o"
    code, err = _run(capsys, _conf(tmp_path), out)
    assert code == 2 and err.count("\n") == 1 and "no space left" in err, err
    assert not _assembly(out)


def test_without_fallocate_assembly_files_are_written_out_and_results_are_the_same(tmp_path, capsys, monkeypatch):
    conf = _conf(tmp_path)
    assert _run(capsys, conf, tmp_path / "ram")[0] == 0

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(S.os, "posix_fallocate", unsupported)
    monkeypatch.setattr(sweep, "run", partial(sweep.run, on_disk=True))
    out = tmp_path / "disk"
    (out / "chunks").mkdir(parents=True)
    stale = out / "chunks" / "assembly-p0-theta-left-by-a-killed-run.npy"
    stale.write_bytes(b"x")
    assert _run(capsys, conf, out)[0] == 0
    disk, ram = Results.load(out), Results.load(tmp_path / "ram")
    assert disk.meta["assembled_on_disk"] and not ram.meta["assembled_on_disk"]
    for k, v in ram.arrays.items():
        np.testing.assert_array_equal(disk.arrays[k], v, err_msg=k)
    assert not _assembly(out)  # the stale one too


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a private tmpfs")
def test_a_real_small_filesystem(tmp_path):
    """On a 1 MB tmpfs in a private mount namespace, 200,000 seeds (8 MB of results) are refused
    in one line, exit 2, and nothing but the lock is left (the issue's SIGBUS case)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    conf = _conf(tmp_path, 200_000)
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} && {sys.executable} -m l1jax run {conf} "
              f"--out {mnt}/o --quiet --no-cache; echo rc=$?; find {mnt}/o -type f")
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here")
    got = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)
    assert "rc=2" in got.stdout, got.stdout + got.stderr
    assert got.stderr.count("\n") == 1 and "would need" in got.stderr and "free" in got.stderr
    files = {Path(f).name for f in got.stdout.split() if f.startswith(str(mnt))}
    assert files == {".lock"}, files


def test_a_csv_export_that_cannot_fit_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    assert _run(capsys, _conf(tmp_path), tmp_path / "r")[0] == 0
    from l1jax.engine import results as R

    monkeypatch.setattr(R.shutil, "disk_usage", lambda p: Usage(10**6, 10**6 - 100, 100))
    code = main(["export", str(tmp_path / "r"), "--csv", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "100 bytes free" in err, err
    assert not list(tmp_path.glob("*t.csv*"))
