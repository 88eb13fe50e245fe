"""What a run's numbers may depend on: nothing but its own coordinates, except that the recorded
train L1 may move by float32 rounding (the README's stated 1e-6 relative) when the number of
learning rates in the grid changes; parameters, test L1 and ‖θ − θ*‖ stay bit-identical."""

import numpy as np
import pytest

from l1jax.engine.sweep import run
from tests.helpers import small_config


@pytest.mark.parametrize("batch", ["full", 8])
def test_run_in_a_longer_learning_rate_grid(batch):
    def sweep(lrs):
        return run(small_config(train={"epochs": 30, "learning_rate": lrs, "batch_size": [batch]},
                                sweep={"sizes": [37, 200], "seeds": 6}))

    alone, grid = sweep([0.05]), sweep([0.01, 0.05, 0.2, 0.5])
    for k in ("theta", "test_l1", "param_error", "diverged_epoch"):
        np.testing.assert_array_equal(alone.arrays[k][:, :, 0], grid.arrays[k][:, :, 1], err_msg=k)
    np.testing.assert_allclose(alone.train_l1[:, :, 0], grid.train_l1[:, :, 1], rtol=1e-6, atol=0)
