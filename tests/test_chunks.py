"""Memory-planned chunks of replicates: a run's numbers do not depend on the chunking."""

import numpy as np

from l1jax.plan import bytes_per_seed, plan, seed_chunks
from l1jax.sweep import run
from tests.helpers import small_config


def test_seed_chunks_cover_every_seed_once_within_budget():
    for seeds, per, budget in [(10, 100, 1000), (10, 100, 350), (7, 100, 50), (1, 5, 10**9)]:
        chunks = seed_chunks(seeds, per, budget)
        covered = [s for a, b in chunks for s in range(a, b)]
        assert covered == list(range(seeds))
        assert all(b - a <= max(1, budget // per) for a, b in chunks)
        assert len({b - a for a, b in chunks[:-1]}) <= 1  # equal chunks share programs


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


def test_cli_memory_budget(tmp_path, capsys):
    from l1jax.cli import main

    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 2\n[sweep]\nsizes = [10]\nseeds = 3\n[data]\ntest_size = 0\n")
    assert main(["run", str(conf), "--out", str(tmp_path / "o"), "--memory-budget", "1"]) == 0
    assert "(3 chunks of seeds)" in capsys.readouterr().out
    import pytest
    with pytest.raises(SystemExit) as e:
        main(["run", str(conf), "--out", str(tmp_path / "o"), "--memory-budget", "lots"])
    assert e.value.code == 2 and "is not a memory size" in capsys.readouterr().err


def test_million_run_script_small(tmp_path, capsys):
    """scripts/million.py at 3 seeds (120 runs) in two chunks; the README shows it at 25000."""
    import importlib.util
    from pathlib import Path

    from l1jax.results import Results

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
