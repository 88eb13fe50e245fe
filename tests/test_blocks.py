"""Layouts the engine picks per backend (cache-sized blocks of replicates on the CPU, one pass
over the data for all learning rates on accelerators) do not change a run's numbers."""

import jax
import numpy as np
import pytest

from l1jax.plan import CPU_BLOCK_BYTES, block_seeds, full_batch_group, plan, shared_lr_pass
from l1jax.sweep import group_inputs
from l1jax.train import make_train
from tests.helpers import small_config


def test_block_seeds_divides_and_fits():
    g = full_batch_group("sgd", (100, 3000), 12)
    per_seed = sum(g.tiles_per_dataset) * g.tile * 4 * 3
    k = block_seeds(g, 2, "cpu")
    assert 12 % k == 0 and k * per_seed <= CPU_BLOCK_BYTES
    assert 12 % (k + 1) or (k + 1) * per_seed > CPU_BLOCK_BYTES or k == 12
    assert block_seeds(g, 2, "gpu") == 12
    huge = full_batch_group("sgd", (10**7,), 3)
    assert block_seeds(huge, 2, "cpu") == 1
    assert not shared_lr_pass("cpu") and shared_lr_pass("gpu") and shared_lr_pass("tpu")


@pytest.mark.parametrize("batch", ["full", 8])
def test_layouts_give_the_same_numbers(batch):
    cfg = small_config(train={"epochs": 5, "learning_rate": [0.05, 0.3], "batch_size": [batch],
                              "record_every": 2}, sweep={"sizes": [7, 30], "seeds": 6})
    for g in plan(cfg):
        inputs = group_inputs(cfg, g, None, first_seed=3)
        one = jax.jit(make_train(cfg, g, 2, block_seeds=6, shared_pass=False))(inputs)
        layouts = {"three blocks": {"block_seeds": 2, "shared_pass": False},
                   "one pass for all learning rates": {"block_seeds": 6, "shared_pass": True}}
        for layout, kw in layouts.items():
            other = jax.jit(make_train(cfg, g, 2, **kw))(inputs)
            for name, a, b in zip(one._fields, one, other):
                np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=f"{name}, {layout}")
    with pytest.raises(ValueError, match="must divide"):
        make_train(cfg, plan(cfg)[0], 2, block_seeds=4)
