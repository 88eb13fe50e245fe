"""Sweep planning: few programs, and padding that stays small on log-spaced size grids."""

import numpy as np
import pytest

from l1jax.plan import full_batch_group, minibatch_groups, padding_efficiency, plan
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
def test_minibatch_buckets_keep_padding_small(sizes, batch):
    groups = minibatch_groups("sgd", batch, sizes, 8)
    assert sorted(n for g in groups for n in g.sizes) == sorted(sizes)
    for g in groups:
        # each bucket: useful steps over padded steps >= 90% (a lone size can't do better
        # than its own ragged last batch)
        assert len(g.sizes) == 1 or g.useful_slots / g.padded_slots >= 0.9
    assert padding_efficiency(groups) >= 0.9 or batch > min(sizes)


def test_programs_per_optimizer_and_batch():
    cfg = small_config(train={"optimizer": ["sgd", "adam"], "batch_size": ["full", 16],
                              "learning_rate": [0.1, 0.2, 0.3]})
    groups = plan(cfg)
    assert sum(g.full_batch for g in groups) == 2  # one full-batch program per optimizer
    assert {g.optimizer for g in groups} == {"sgd", "adam"}
