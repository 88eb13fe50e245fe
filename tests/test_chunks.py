"""Memory-planned chunks of replicates: a run's numbers do not depend on the chunking."""

import numpy as np
import pytest

from l1jax.engine import plan as plan_module
from l1jax.engine.errors import ConfigError
from l1jax.engine.plan import bytes_per_seed, plan, seed_chunks
from l1jax.engine.sweep import run
from tests.helpers import small_config
from tests.test_resume import budget_for_one_replicate


def test_seed_chunks_cover_every_seed_once_within_budget():
    for seeds, per, budget in [(10, 100, 1000), (10, 100, 350), (7, 100, 50), (1, 5, 10**9)]:
        chunks = seed_chunks(seeds, per, budget)
        covered = [s for a, b in chunks for s in range(a, b)]
        assert covered == list(range(seeds))
        assert all(b - a <= max(1, budget // per) for a, b in chunks)
        assert len({b - a for a, b in chunks[:-1]}) <= 1  # equal chunks share programs
    for seeds, per, budget, devices in [(10, 100, 250, 4), (9, 100, 100, 4), (3, 100, 10**6, 8)]:
        chunks = seed_chunks(seeds, per, budget, devices)
        assert [s for a, b in chunks for s in range(a, b)] == list(range(seeds))
        assert all(-(-(b - a) // devices) <= max(1, budget // per) for a, b in chunks)  # per device


def test_chunked_sweep_equals_one_call():
    cfg = small_config(train={"epochs": 6, "learning_rate": [0.05, 0.2], "batch_size": ["full", 8]},
                       sweep={"sizes": [9, 40], "seeds": 5})
    per_seed = max(bytes_per_seed(cfg, g, 2) for g in plan(cfg))
    whole = run(cfg)
    chunked = run(cfg, memory_budget=2 * per_seed)  # two replicates at a time
    assert chunked.meta["seed_chunks"] == [(0, 2), (2, 4), (4, 5)]
    assert whole.meta["seed_chunks"] == [(0, 5)]
    for k, v in whole.arrays.items():
        np.testing.assert_array_equal(chunked.arrays[k], v, err_msg=k)
    assert not np.isnan(chunked.train_l1).any()


def test_chunks_keep_slot_indices_within_int32(monkeypatch):
    """A device's share never holds more sample slots than int32 indices address: with that
    limit lowered to two replicates' slots the sweep splits into chunks, and its numbers do not
    move."""
    cfg = small_config(train={"epochs": 3, "batch_size": [8]}, sweep={"sizes": [9, 40], "seeds": 5})
    whole = run(cfg)
    slots = max(g.replicate_slots for g in plan(cfg))
    monkeypatch.setattr(plan_module, "INDEX_LIMIT", 2 * slots + 1)
    capped = run(cfg)
    assert capped.meta["seed_chunks"] == [(0, 2), (2, 4), (4, 5)]
    for k, v in whole.arrays.items():
        np.testing.assert_array_equal(capped.arrays[k], v, err_msg=k)


def test_a_stored_chunk_plan_beyond_int32_slots_is_refused(tmp_path, monkeypatch):
    """A resumed run keeps its stored chunk boundaries; one whose next chunk would put more
    slots on a device than int32 indices address is refused in one line, not computed."""
    from l1jax.engine.store import ChunkStore

    cfg = small_config(train={"epochs": 2, "batch_size": [8]}, sweep={"sizes": [9], "seeds": 3})
    ChunkStore(tmp_path, cfg).plan([(0, 3)])  # planned, then interrupted before any chunk
    slots = max(g.replicate_slots for g in plan(cfg))
    monkeypatch.setattr(plan_module, "INDEX_LIMIT", 2 * slots)
    with pytest.raises(ConfigError, match="the stored chunk of seeds 0-2 puts more than 2 replicates"):
        run(cfg, store=ChunkStore(tmp_path, cfg))


def test_cli_memory_budget(tmp_path, capsys):
    from l1jax.cli import main

    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 2\n[sweep]\nsizes = [10]\nseeds = 3\n[data]\ntest_size = 0\n")
    budget = str(budget_for_one_replicate(conf))
    assert main(["run", str(conf), "--out", str(tmp_path / "o"), "--memory-budget", budget]) == 0
    assert "(3 chunks of seeds, 0 reused from disk)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["run", str(conf), "--out", str(tmp_path / "o"), "--memory-budget", "lots"])
    assert e.value.code == 2 and "is not a memory size" in capsys.readouterr().err


def test_million_run_script_small(tmp_path, capsys):
    """scripts/million.py at 3 seeds (120 runs) in two chunks; the README shows it at 25000."""
    import importlib.util
    from pathlib import Path

    from l1jax.engine.results import Results

    path = Path(__file__).parents[1] / "scripts" / "million.py"
    spec = importlib.util.spec_from_file_location("million", path)
    million = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(million)
    assert million.main(["--out", str(tmp_path / "m"), "--seeds", "3", "--epochs", "4",
                         "--memory-budget", "20000"]) == 0
    res = Results.load(tmp_path / "m")
    assert res.train_l1[..., -1].size == 3 * 4 * 10
    assert len(res.meta["seed_chunks"]) >= 2 and "120 runs" in capsys.readouterr().out
    assert np.isfinite(res.train_l1[~res.diverged]).all()


def test_sharded_over_four_devices_equals_one_device():
    import jax

    assert len(jax.local_devices()) == 4  # conftest forces 4 CPU devices
    cfg = small_config(train={"epochs": 5, "learning_rate": [0.05, 0.2], "batch_size": ["full", 8]},
                       sweep={"sizes": [9, 40], "seeds": 7})  # 2 per device, 1 padding replicate
    four = run(cfg)
    one = run(cfg, devices=jax.local_devices()[:1])
    assert four.meta["device_count"] == 4 and one.meta["device_count"] == 1
    assert {i["devices"] for i in four.meta["programs"]} == {4}
    for k, v in one.arrays.items():
        np.testing.assert_array_equal(four.arrays[k], v, err_msg=k)
    assert not np.isnan(four.train_l1).any()


def test_results_assembled_on_disk_and_memory_mapped(tmp_path):
    from l1jax.engine.results import Results
    from l1jax.engine.store import ChunkStore

    cfg = small_config(train={"epochs": 4, "learning_rate": [0.1]}, sweep={"sizes": [9, 40], "seeds": 3})
    in_ram = run(cfg)
    store = ChunkStore(tmp_path, cfg)
    one = max(bytes_per_seed(cfg, g, 2) for g in plan(cfg))  # a replicate a chunk
    on_disk = run(cfg, store=store, on_disk=True, memory_budget=one)
    assert on_disk.meta["assembled_on_disk"] and not in_ram.meta["assembled_on_disk"]
    assert all(isinstance(v, np.memmap) for v in on_disk.arrays.values())
    on_disk.save(tmp_path)
    store.discard_scratch()
    assert not list((tmp_path / "chunks").glob("assembly-*"))
    mapped = Results.load(tmp_path, mmap=True)
    for k, v in in_ram.arrays.items():
        assert isinstance(mapped.arrays[k], np.memmap)
        np.testing.assert_array_equal(mapped.arrays[k], v, err_msg=k)
        np.testing.assert_array_equal(on_disk.arrays[k], v, err_msg=k)
