"""Layouts the engine picks per backend do not change a run's numbers: cache-sized blocks of
replicates (the CPU) give identical bits, one pass over the data for all learning rates (TPUs;
the CPU and GPUs take one per learning rate) the same numbers up to float32 rounding of its sums."""

import dataclasses

import numpy as np
import pytest

from l1jax.engine import data as D
from l1jax.engine.plan import (CPU_BLOCK_BYTES, block_seeds, full_batch_group, l2_cache_bytes, plan,
                              shared_lr_pass)
from l1jax.engine.sweep import compile_program, group_inputs
from l1jax.engine.train import build_data, make_train
from tests.helpers import small_config


def test_block_seeds_divides_and_fits():
    g = full_batch_group("sgd", (100, 3000), 12)
    per_seed = g.replicate_slots * 4 * 3
    one = dataclasses.replace(g, seeds=1)  # the bytes of a replicate's packed arrays, as built
    cfg = small_config(sweep={"sizes": list(g.sizes), "seeds": 1})
    inp = group_inputs(cfg, one, None)
    packed = build_data(cfg, one, inp, D.streams(inp.base_seed, inp.rep, inp.size, False))
    assert packed.x.nbytes + packed.y.nbytes == per_seed
    k = block_seeds(g, 2, "cpu")
    assert 12 % k == 0 and k * per_seed <= CPU_BLOCK_BYTES
    assert 12 % (k + 1) or (k + 1) * per_seed > CPU_BLOCK_BYTES or k == 12
    assert block_seeds(g, 2, "gpu") == 12
    huge = full_batch_group("sgd", (10**7,), 3)
    assert block_seeds(huge, 2, "cpu") == 1
    assert not shared_lr_pass("cpu") and not shared_lr_pass("gpu") and shared_lr_pass("tpu")


def test_blocks_are_sized_from_the_l2_cache_linux_reports(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "2048K"), (3, "Unified", "480M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, v in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(f"{v}\n")
    assert l2_cache_bytes(tmp_path) == 2048 * 1024
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert l2_cache_bytes(tmp_path) == 1 << 20
    (tmp_path / "index2" / "size").write_text("big\n")  # unreadable: the 1 MiB default
    assert l2_cache_bytes(tmp_path) == 1 << 20
    assert l2_cache_bytes(tmp_path / "absent") == 1 << 20
    assert CPU_BLOCK_BYTES == l2_cache_bytes() // 2


@pytest.mark.parametrize("batch", ["full", 8])
def test_layouts_give_the_same_numbers(batch):
    cfg = small_config(train={"epochs": 5, "learning_rate": [0.05, 0.3], "batch_size": [batch],
                              "record_every": 2}, sweep={"sizes": [7, 30], "seeds": 6})
    for g in plan(cfg):
        inputs = group_inputs(cfg, g, None, first_seed=3)
        # compiled as the sweep compiles them (on the CPU: its compiler options)
        run = lambda **kw: compile_program(make_train(cfg, g, 2, **kw), inputs, full_batch=g.full_batch)[0](inputs)
        one = run(block_seeds=6, shared_pass=False)
        blocked = run(block_seeds=2, shared_pass=False)  # three blocks: the same arithmetic
        for name, a, b in zip(one._fields, one, blocked):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=f"{name}, blocks")
        # one reduction for all learning rates: its sums may round in another order (1 ulp)
        shared = run(block_seeds=6, shared_pass=True)
        for name, a, b in zip(one._fields, one, shared):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}, shared pass")
    with pytest.raises(ValueError, match="must divide"):
        make_train(cfg, plan(cfg)[0], 2, block_seeds=4)
