"""Sweep planning: few programs, and padding that stays small on log-spaced size grids."""

import numpy as np
import pytest

from l1jax.engine.plan import full_batch_group, minibatch_group, plan
from tests.helpers import small_config

LOG_GRIDS = [tuple(np.unique(np.geomspace(lo, hi, k).astype(int)).tolist())
             for lo, hi, k in [(32, 32768, 16), (100, 100000, 4), (10, 1000, 30), (7, 5000, 9)]]


@pytest.mark.parametrize("sizes", LOG_GRIDS)
def test_full_batch_is_one_program_with_small_padding(sizes):
    g = full_batch_group("sgd", sizes, 64)
    assert g.useful_slots / g.padded_slots >= 0.95
    a = g.arrays()
    # every dataset's tiles are contiguous, hold exactly its samples, and only its last is partial
    counts = np.bincount(a.owner, minlength=g.n_datasets)
    assert (counts == np.ceil(a.size / g.tile)).all()
    assert (a.rank == np.concatenate([np.arange(c) for c in counts])).all()


@pytest.mark.parametrize("sizes", LOG_GRIDS)
@pytest.mark.parametrize("batch", [1, 32, 100])
def test_minibatch_is_one_program_whose_lanes_run_every_step_once(sizes, batch):
    g = minibatch_group("sgd", batch, sizes, 8)
    dataset, step = g.schedule
    a = g.arrays()
    want = -(-a.size // g.width)  # steps per epoch of each dataset
    for d in range(g.n_datasets):
        rows, lanes = np.nonzero(dataset == d)
        assert len(set(lanes)) == 1  # one lane, consecutive rows, steps 0..S-1 in order
        assert (np.diff(rows) == 1).all() and (step[rows, lanes] == np.arange(want[d])).all()
    assert (dataset == g.n_datasets).sum() + want.sum() == dataset.size  # the rest is idle
    assert g.steps == dataset.shape[0] >= want.max()
    # slot efficiency: only idle lane ends and each dataset's ragged last batch are wasted
    ragged = (want * g.width - a.size).sum()
    assert g.useful_slots / g.padded_slots >= 0.9 * (1 - ragged / (want.sum() * g.width))


def test_programs_per_optimizer_and_batch():
    cfg = small_config(train={"optimizer": ["sgd", "adam"], "batch_size": ["full", 16],
                              "learning_rate": [0.1, 0.2, 0.3]})
    groups = plan(cfg)
    assert len(groups) == 4  # one program per optimizer and batch, whatever the sizes
    assert sum(g.full_batch for g in groups) == 2
    assert {g.optimizer for g in groups} == {"sgd", "adam"}
