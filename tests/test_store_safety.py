"""The run store never mixes results: chunks carry their config's fingerprint and seed range, one
writer holds a directory at a time, temporary files never follow planted symlinks, an
interrupted --overwrite leaves a resumable state, exports stay outside the results, and damaged
files are refused in one line."""

import json
import os
import shutil

import numpy as np
import pytest

from l1jax.cli import main
from l1jax.engine import files
from l1jax.engine.config import ConfigError
from l1jax.engine.files import DirLock
from l1jax.engine.plan import bytes_per_seed, plan
from l1jax.engine.results import Results
from l1jax.engine.store import ChunkStore, open_out
from l1jax.engine.sweep import run_to_dir
from tests.helpers import small_config

SWEEP = {"sizes": [16, 40], "seeds": 4}


def _cfg(lr):
    return small_config(data={"test_size": 0}, train={"epochs": 4, "learning_rate": [lr]}, sweep=SWEEP)


A, B = _cfg(0.05), _cfg(0.2)  # same shapes, different numbers
BUDGET = 2 * max(bytes_per_seed(A, g, 2) for g in plan(A))  # two replicates per chunk


def _toml(tmp_path, lr):
    path = tmp_path / f"lr{lr}.toml"
    path.write_text(f"[data]\ntest_size = 0\n[train]\nepochs = 4\nlearning_rate = [{lr}]\n"
                    f"[sweep]\nsizes = {SWEEP['sizes']}\nseeds = {SWEEP['seeds']}\n")
    return path


def _cli(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    return code, err


def _same(fresh_dir, b: Results):
    for k, v in Results.load(fresh_dir).arrays.items():
        np.testing.assert_array_equal(b.arrays[k], v, err_msg=k)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Each config run uninterrupted, in its own directory: {lr: directory}."""
    tmp = tmp_path_factory.mktemp("fresh")
    for lr, cfg in ((0.05, A), (0.2, B)):
        run_to_dir(cfg, tmp / str(lr), memory_budget=BUDGET)
    return {lr: tmp / str(lr) for lr in (0.05, 0.2)}


def test_orphan_chunks_of_another_config_are_refused(tmp_path, fresh):
    out = tmp_path / "o"
    run_to_dir(A, out, memory_budget=BUDGET)
    for name in ("results.npz", "manifest.json", "chunks/index.json"):  # tidied by hand
        (out / name).unlink()
    with pytest.raises(ConfigError, match="holds chunks but no index"):
        run_to_dir(B, out, memory_budget=BUDGET)
    shutil.copy(fresh[0.2] / "chunks" / "index.json", out / "chunks")  # B's index over A's chunks
    with pytest.raises(ConfigError, match="seeds-0-2.npz was written by a different config"):
        run_to_dir(B, out, memory_budget=BUDGET)
    _same(fresh[0.2], run_to_dir(B, out, overwrite=True, memory_budget=BUDGET))
    assert Results.load(out).config.train.learning_rate == (0.2,)


def test_results_of_an_engine_with_other_numbers_are_refused(tmp_path, fresh, monkeypatch):
    """A store written before a change of the engine's numbers (``NUMBERS_VERSION``) is neither
    resumed nor kept: the same config now computes other numbers."""
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    before = (out / "results.npz").read_bytes()
    monkeypatch.setattr(files, "NUMBERS_VERSION", files.NUMBERS_VERSION + 1)
    with pytest.raises(ConfigError, match="different config, data file or engine version"):
        run_to_dir(A, out, memory_budget=BUDGET)
    assert (out / "results.npz").read_bytes() == before
    _same(fresh[0.05], run_to_dir(A, out, overwrite=True, memory_budget=BUDGET))


def test_swapped_chunks_are_refused(tmp_path):
    out = tmp_path / "o"
    run_to_dir(A, out, memory_budget=BUDGET)
    c = out / "chunks"
    for ext in ("npz", "sha256"):
        os.replace(c / f"seeds-0-2.{ext}", tmp_path / f"x.{ext}")
        os.replace(c / f"seeds-2-4.{ext}", c / f"seeds-0-2.{ext}")
        os.replace(tmp_path / f"x.{ext}", c / f"seeds-2-4.{ext}")
    with pytest.raises(ConfigError, match="holds seeds other than 0 to 1"):
        run_to_dir(A, out, memory_budget=BUDGET)


def test_one_writer_per_directory(tmp_path, capsys):
    out = tmp_path / "o"
    held = DirLock(out)
    try:
        for extra in ([], ["--overwrite"]):
            code, err = _cli(capsys, "run", _toml(tmp_path, 0.2), "--out", out, "--quiet", *extra)
            assert code == 2 and f"{out} is being written by l1jax (pid {os.getpid()})" in err
            assert err.count("\n") == 1
        assert not (out / "chunks").exists()
    finally:
        held.release()
    lock, _ = open_out(out, A)  # free again once released
    lock.release()


def test_planted_symlinks_are_never_followed(tmp_path, fresh):
    out, victim = tmp_path / "o", tmp_path / "victim"
    victim.write_text("keep me")
    (out / "chunks").mkdir(parents=True)
    for name in ("chunks/seeds-0-2.npz.tmp", "chunks/index.json.tmp"):  # not l1jax's: refused
        (out / name).symlink_to(victim)
    with pytest.raises(ConfigError, match="holds files l1jax did not write"):
        run_to_dir(A, out, memory_budget=BUDGET)
    shutil.rmtree(out / "chunks")
    for name in ("results.npz.tmp", "manifest.json.tmp", "results.npz"):
        (out / name).symlink_to(victim)
    _same(fresh[0.05], run_to_dir(A, out, memory_budget=BUDGET))
    assert victim.read_text() == "keep me"
    assert not (out / "results.npz").is_symlink()


def test_interrupted_overwrite_never_mixes_and_resumes(tmp_path, fresh, monkeypatch):
    out = tmp_path / "o"
    run_to_dir(A, out, memory_budget=BUDGET)
    real = files.write_atomic

    def dies_at_manifest(path, data):
        if path.name == "manifest.json":
            raise KeyboardInterrupt  # killed between the new results.npz and its manifest
        real(path, data)

    monkeypatch.setattr(files, "write_atomic", dies_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        run_to_dir(B, out, overwrite=True, memory_budget=BUDGET)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="unfinished run"):  # neither old labels nor a mix
        Results.load(out)
    resumed = run_to_dir(B, out, memory_budget=BUDGET)  # no --overwrite needed: the old run is gone
    assert resumed.meta["resumed_chunks"] == 2
    _same(fresh[0.2], Results.load(out))


def test_overwrite_interrupted_mid_sweep_resumes(tmp_path, fresh, monkeypatch):
    out = tmp_path / "o"
    run_to_dir(A, out, memory_budget=BUDGET)
    real, calls = ChunkStore.save, []

    def dies_after_first_chunk(self, s0, s1, arrays):
        if calls:
            raise KeyboardInterrupt
        calls.append(s0)
        real(self, s0, s1, arrays)

    monkeypatch.setattr(ChunkStore, "save", dies_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_to_dir(B, out, overwrite=True, memory_budget=BUDGET)
    monkeypatch.undo()
    resumed = run_to_dir(B, out, overwrite=True, memory_budget=BUDGET)
    assert resumed.meta["resumed_chunks"] == 1
    _same(fresh[0.2], resumed)


def test_results_and_manifest_of_different_runs_are_refused(tmp_path, fresh):
    mixed = tmp_path / "mixed"
    shutil.copytree(fresh[0.05], mixed)
    shutil.copy(fresh[0.2] / "results.npz", mixed / "results.npz")
    for mmap in (False, True):
        with pytest.raises(ConfigError, match="does not belong to manifest.json"):
            Results.load(mixed, mmap=mmap)


def test_manifest_with_another_seed_count_is_refused(tmp_path, fresh):
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    man = json.loads((out / "manifest.json").read_text())
    man["config"]["sweep"]["seeds"] = 5
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ConfigError, match="does not match its fingerprint"):
        Results.load(out)
    # forged consistently (fingerprint recomputed in both files): the shapes still give it away
    man["fingerprint"] = files.config_fingerprint(man["config"], files.NUMBERS_VERSION, None)
    (out / "manifest.json").write_text(json.dumps(man))
    with np.load(out / "results.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "_fingerprint"}
    np.savez(out / "results.npz", **arrays, _fingerprint=np.array(man["fingerprint"]))
    with pytest.raises(ConfigError, match=r"train_l1 has shape \(1, 1, 1, 2, 4, 5\) but .* gives \(1, 1, 1, 2, 5, 5\)"):
        Results.load(out)


def test_damaged_member_is_refused_by_mapped_and_plain_loads(tmp_path, fresh):
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    npz = out / "results.npz"
    raw = bytearray(npz.read_bytes())
    with np.load(npz) as z:
        at = raw.find(z["train_l1"].tobytes()[:64])  # a byte inside train_l1's data
    raw[at + 3] ^= 0x10
    npz.write_bytes(bytes(raw))
    for mmap in (False, True):
        with pytest.raises(ConfigError, match="truncated or corrupt.*CRC"):
            Results.load(out, mmap=mmap)


def test_object_member_is_refused_not_mapped(tmp_path, fresh):
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    with np.load(out / "results.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["theta"] = arrays["theta"].astype(object)
    np.savez(out / "results.npz", **arrays)
    for mmap in (False, True):
        with pytest.raises(ConfigError, match="truncated or corrupt.*(object|Object)"):
            Results.load(out, mmap=mmap)


def test_export_stays_outside_the_results(tmp_path, capsys, fresh):
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    before = (out / "results.npz").read_bytes()
    for target in (out / "results.npz", out / "table.csv", out / "chunks" / "x.csv"):
        code, err = _cli(capsys, "export", out, "--csv", target)
        assert code == 2 and "is inside the results directory" in err and err.count("\n") == 1
    code, err = _cli(capsys, "export", out, "--csv", tmp_path)
    assert code == 2 and "is a directory" in err
    assert (out / "results.npz").read_bytes() == before


@pytest.mark.parametrize("damage, message", [
    (lambda c: (c / "index.json").write_text("[1, 2]"), "is not a valid chunk index"),
    (lambda c: (c / "index.json").write_text('{"config": {}, "chunks": "abc"}'), "is not a valid chunk index"),
    (lambda c: (c / "index.json").write_bytes(b"\xff\xfe"), "is not a valid chunk index"),
    (lambda c: (shutil.rmtree(c), c.write_text("")), "chunks is not a directory"),
    (lambda c: ((c / "seeds-0-2.npz").unlink(), (c / "seeds-0-2.npz").mkdir()), "seeds-0-2.npz is not a file"),
])
def test_damaged_store_is_one_line(tmp_path, capsys, fresh, damage, message):
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    (out / "manifest.json").unlink()  # an unfinished run: the chunks will be read
    damage(out / "chunks")
    code, err = _cli(capsys, "run", _toml(tmp_path, 0.05), "--out", out, "--quiet",
                     "--memory-budget", BUDGET)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_full_disk_is_one_line_and_resumable(tmp_path, capsys, fresh, monkeypatch):
    import errno

    out = tmp_path / "o"
    real = ChunkStore.save

    def full(self, s0, s1, arrays):
        if s0 > 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._file(s0, s1)))
        real(self, s0, s1, arrays)

    monkeypatch.setattr(ChunkStore, "save", full)
    code, err = _cli(capsys, "run", _toml(tmp_path, 0.05), "--out", out, "--quiet", "--memory-budget", BUDGET)
    assert code == 2 and err == f"l1jax: error: No space left on device: {out}/chunks/seeds-2-4.npz\n"
    monkeypatch.undo()
    code, _ = _cli(capsys, "run", _toml(tmp_path, 0.05), "--out", out, "--quiet", "--memory-budget", BUDGET)
    assert code == 0 and Results.load(out).meta["resumed_chunks"] == 1
    _same(fresh[0.05], Results.load(out))


@pytest.mark.parametrize("edit", ["config_and_coords", "config_only", "coords_only"])
def test_hand_edited_manifest_is_refused(tmp_path, capsys, fresh, edit):
    """The issue's case: learning_rate 0.05 relabelled 0.07 in the manifest's config and coords;
    export and report would have labelled lr 0.05's runs as 0.07."""
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    man = json.loads((out / "manifest.json").read_text())
    if edit != "coords_only":
        man["config"]["train"]["learning_rate"] = [0.07]
    if edit != "config_only":
        man["coords"]["learning_rate"] = [0.07]
    (out / "manifest.json").write_text(json.dumps(man))
    for argv in (["export", out, "--csv", tmp_path / "t.csv"], ["report", out, "--quiet"]):
        code, err = _cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1, err
        assert ("does not match its fingerprint" if edit != "coords_only" else "do not follow from its config") in err
    assert not (tmp_path / "t.csv").exists() and not (out / "report").exists()


def test_overwrite_never_deletes_what_l1jax_did_not_write(tmp_path, capsys, fresh):
    """The issue's case: `mkdir -p proj/chunks; echo notes > proj/chunks/notes.md; l1jax run
    --out proj --overwrite` deleted notes.md.  Now a foreign file is refused, with or without
    --overwrite, and so is a chunks/ whose index cannot be read; --overwrite over another
    config's run deletes only the files its index names."""
    conf = _toml(tmp_path, 0.05)
    out = tmp_path / "proj"
    (out / "chunks").mkdir(parents=True)
    (out / "chunks" / "notes.md").write_text("notes")
    for extra in ([], ["--overwrite"]):
        code, err = _cli(capsys, "run", conf, "--out", out, "--quiet", *extra)
        assert code == 2 and err.count("\n") == 1 and "notes.md" in err and "did not write" in err, err
    assert (out / "chunks" / "notes.md").read_text() == "notes"
    # another config's run, plus a file of the user's among its chunks
    other = tmp_path / "other"
    shutil.copytree(fresh[0.2], other)
    (other / "chunks" / "mine.txt").write_text("x")
    code, err = _cli(capsys, "run", conf, "--out", other, "--quiet", "--overwrite", "--memory-budget", BUDGET)
    assert code == 2 and "mine.txt" in err and len(list((other / "chunks").iterdir())) == 6
    (other / "chunks" / "mine.txt").unlink()
    code, err = _cli(capsys, "run", conf, "--out", other, "--quiet", "--overwrite", "--memory-budget", BUDGET)
    assert code == 0, err
    _same(fresh[0.05], Results.load(other))
    # an unreadable index: its folder's files cannot be told apart, so nothing is touched
    (other / "manifest.json").unlink()
    (other / "chunks" / "index.json").write_text("{")
    before = sorted(p.name for p in (other / "chunks").iterdir())
    code, err = _cli(capsys, "run", conf, "--out", other, "--quiet", "--overwrite")
    assert code == 2 and "is not a valid chunk index" in err
    assert sorted(p.name for p in (other / "chunks").iterdir()) == before


def test_another_configs_valid_index_is_named_as_such(tmp_path, capsys, fresh):
    """An index of a config with another seed count is a different config's, not 'invalid'."""
    out = tmp_path / "o"
    shutil.copytree(fresh[0.05], out)
    (out / "manifest.json").unlink()
    conf = tmp_path / "five.toml"
    conf.write_text(_toml(tmp_path, 0.05).read_text().replace("seeds = 4", "seeds = 5"))
    code, err = _cli(capsys, "run", conf, "--out", out, "--quiet")
    assert code == 2 and "holds chunks of a different config" in err, err


def test_symlinked_chunks_and_dangling_out_are_one_line(tmp_path, capsys):
    conf = _toml(tmp_path, 0.05)
    real = tmp_path / "elsewhere"
    real.mkdir()
    out = tmp_path / "o"
    out.mkdir()
    (out / "chunks").symlink_to(real)
    code, err = _cli(capsys, "run", conf, "--out", out, "--quiet")
    assert code == 2 and err.count("\n") == 1 and "is a symlink" in err, err
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere" / "x")
    code, err = _cli(capsys, "run", conf, "--out", dangling, "--quiet")
    assert code == 2 and err.count("\n") == 1 and "which does not exist" in err, err
    assert not list(real.iterdir())
