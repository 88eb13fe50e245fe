"""Memory planning: a replicate that cannot fit is refused up front in one line, the estimate
grows with sizes and records but not with unrecorded epochs, and neither does a program."""

import pytest

from l1jax.engine import sweep
from l1jax.engine.config import Config, SweepConfig, TrainConfig
from l1jax.engine.errors import ConfigError
from l1jax.engine.plan import bytes_per_seed, check_fits, memory_text, plan, recorded_count
from l1jax.engine.sweep import compile_program, group_inputs, run
from l1jax.engine.train import make_train
from tests.helpers import small_config


def _per_seed(cfg: Config) -> int:
    return max(bytes_per_seed(cfg, g, cfg.data.n_features) for g in plan(cfg))


def _no_compile(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled a program for a sweep that should have been refused")
    monkeypatch.setattr(sweep, "compile_program", refuse)


def test_replicate_over_budget_is_refused_before_any_compile(monkeypatch):
    _no_compile(monkeypatch)
    cfg = small_config(train={"batch_size": ["full", 8]})
    with pytest.raises(ConfigError) as e:
        run(cfg, memory_budget=1000)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"one replicate needs about {memory_text(_per_seed(cfg))} (sizes up to 200, ")
    assert "more than the memory budget of 1,000 bytes" in msg and "--memory-budget" in msg


@pytest.mark.parametrize("cfg", [Config(sweep=SweepConfig(sizes=(2_000_000_000,))),
                                 Config(train=TrainConfig(epochs=20_000_000, record_every=1))])
def test_huge_replicates_are_refused_without_building_them(monkeypatch, cfg):
    """A size of 2e9 (built past the config's checks) or 2e7 recorded epochs: refused at once."""
    _no_compile(monkeypatch)
    with pytest.raises(ConfigError, match=r"^one replicate needs about [\d.]+ GiB .* more than the "):
        run(cfg, memory_budget=1 << 28)


def test_the_device_limit_names_the_device_and_no_larger_budget():
    cfg = small_config()
    check_fits(cfg, 5 << 30, 6 << 30, 8 << 30)  # fits both
    with pytest.raises(ConfigError) as e:
        check_fits(cfg, 10 << 30, 100 << 30, 8 << 30)
    assert "about 10.0 GiB" in str(e.value) and "more than the 8.0 GiB this device offers" in str(e.value)
    assert "--memory-budget" not in str(e.value)
    with pytest.raises(ConfigError, match="more than the memory budget of 4.0 GiB: .* --memory-budget$"):
        check_fits(cfg, 5 << 30, 4 << 30, 8 << 30)


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from l1jax.cli import main

    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 2\n[sweep]\nsizes = [10]\nseeds = 3\n")
    assert main(["run", str(conf), "--out", str(tmp_path / "o"), "--memory-budget", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("l1jax: error: one replicate needs about ")


@pytest.mark.parametrize("batch", ["full", 8])
def test_estimate_grows_with_sizes_and_records_not_with_unrecorded_epochs(batch):
    est = lambda sizes, **train: _per_seed(small_config(
        train={"batch_size": [batch], **train}, sweep={"sizes": sizes}))
    by_size = [est([n]) for n in (10, 100, 1000, 10**4, 10**5)]
    assert by_size == sorted(by_size) and len(set(by_size)) == len(by_size)
    assert est([10, 1000]) > est([1000])
    assert est([100], epochs=10, record_every=10) == est([100], epochs=10**8, record_every=10**8)
    assert est([100], epochs=1000, record_every=1) > est([100], epochs=1000, record_every=10)


def test_recorded_count_is_the_number_of_recorded_epochs():
    for epochs, every in [(1, 1), (12, 1), (12, 5), (12, 12), (12, 100), (10, 5)]:
        cfg = small_config(train={"epochs": epochs, "record_every": every})
        assert recorded_count(cfg) == len(cfg.recorded_epochs)


@pytest.mark.parametrize("batch", ["full", 4])
def test_program_memory_does_not_grow_with_unrecorded_epochs(batch):
    """XLA's buffers of a program with 2 recorded epochs are the same at 10 or 10^6 epochs (they
    once held an epoch index, and in full batch a loss, for every epoch)."""
    def temp_bytes(epochs: int) -> int:
        cfg = small_config(train={"epochs": epochs, "record_every": epochs, "batch_size": [batch]},
                           sweep={"sizes": [5, 9], "seeds": 1})
        g = plan(cfg)[0]
        program, _ = compile_program(make_train(cfg, g, 2), group_inputs(cfg, g, None), full_batch=g.full_batch)
        return program.memory_analysis().temp_size_in_bytes

    assert temp_bytes(10**6) == temp_bytes(10)


def test_progress_says_the_work_and_each_compile_in_log_mode(capsys):
    cfg = small_config(train={"epochs": 3}, sweep={"sizes": [9, 40], "seeds": 2})
    run(cfg, quiet=False)  # stderr is captured, not a terminal: log mode
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sweep: 4 runs, 294 sample-epochs, 1 program to compile, "
                               "1 chunk of up to 2 replicates (about ")
    assert lines[1] == "sweep: compiling program 1 of 1 (sgd, batch full, 2 replicates) ..."
    assert lines[2].startswith("sweep: 4/4 runs")
    run(cfg)
    assert capsys.readouterr().err == ""
