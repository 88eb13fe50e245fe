"""Results: save/load round trip, the tidy CSV, and the CLI run/export path."""

import csv
import json

import numpy as np

from l1jax.cli import main
from l1jax.engine.results import CSV_COLUMNS, Results
from l1jax.engine.sweep import run
from tests.helpers import small_config


def test_save_load_export_round_trip(tmp_path):
    cfg = small_config(train={"epochs": 4, "record_every": 3, "learning_rate": [0.1, 0.2]},
                       sweep={"sizes": [20, 50], "seeds": 2})
    res = run(cfg)
    res.save(tmp_path / "r")
    back = Results.load(tmp_path / "r")
    assert back.config == cfg
    for k, v in res.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
    man = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert man["dims"]["train_l1"] == ["optimizer", "batch_size", "learning_rate", "size", "seed", "epoch"]
    assert man["coords"]["epoch"] == [0, 3, 4]
    assert set(man["versions"]) == {"l1jax", "jax", "jaxlib", "optax", "numpy"}
    assert 0.9 <= man["padding_efficiency"] <= 1.0
    records = res.to_records()
    assert len(records) == 2 * 2 * 2 * 3  # lr x size x seed x recorded epochs
    res.export_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(records)
    for row, rec in zip(rows, records):
        assert int(row["size"]) == rec["size"] and int(row["epoch"]) == rec["epoch"]
        assert float(row["train_l1"]) == np.float32(rec["train_l1"])
        assert row["diverged"] == "False" and row["full_batch"] == "True" and row["batch_size"] == "0"
    want = res.train_l1[0, 0, 1, 1, 0, 2]  # lr 0.2, size 50, seed 0, epoch 4
    hit = [r for r in rows if (r["learning_rate"], r["size"], r["seed"], r["epoch"]) == ("0.2", "50", "0", "4")]
    assert float(hit[0]["train_l1"]) == want


def test_cli_run_then_export_and_refuses_other_config(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 2\n[sweep]\nsizes = [10]\nseeds = 2\n[data]\ntest_size = 0\n")
    out = tmp_path / "out"
    assert main(["run", str(conf), "--out", str(out)]) == 0
    assert main(["export", str(out), "--csv", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 2 * 3 and rows[0]["test_l1"] == "" and rows[0]["param_error"] != ""
    before = (out / "results.npz").read_bytes()
    conf.write_text("[train]\nepochs = 3\n[sweep]\nsizes = [10]\nseeds = 2\n")
    capsys.readouterr()
    assert main(["run", str(conf), "--out", str(out)]) == 2
    assert "holds results of a different config" in capsys.readouterr().err
    assert (out / "results.npz").read_bytes() == before
    (out / "results.npz").write_bytes(before[:100])
    assert main(["export", str(out), "--csv", str(tmp_path / "u.csv")]) == 2
    assert f"{out / 'results.npz'} is truncated or corrupt" in capsys.readouterr().err


def test_cli_progress_is_log_lines_off_a_terminal_and_silent_when_quiet(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 2\nbatch_size = ['full', 4]\n[sweep]\nsizes = [6, 30]\n"
                    "seeds = 2\n[data]\ntest_size = 0\n")
    assert main(["run", str(conf), "--out", str(tmp_path / "a")]) == 0
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("sweep: ")]
    assert lines[0].startswith("sweep: 8 runs, 288 sample-epochs, 2 programs to compile, 1 chunk ")
    assert [l[:33] for l in lines[1:] if "compiling" in l] == ["sweep: compiling program 1 of 2 (",
                                                               "sweep: compiling program 2 of 2 ("]
    done = [l for l in lines if "runs/s" in l]  # a line a program
    assert len(done) == 2 and done[-1].startswith("sweep: 8/8 runs")
    assert main(["run", str(conf), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "sweep: " not in capsys.readouterr().err
