"""Shared test utilities: small configs and the reference run of one engine run."""

from __future__ import annotations

import numpy as np

from l1jax.engine.config import Config, config_from_dict
from l1jax.engine.data import epoch_permutation
from l1jax.reference import ReferenceRun, train_reference
from l1jax.engine.train import one_dataset


def small_config(**sections) -> Config:
    """A tiny synthetic sweep; keyword sections override keys of [data], [train], [sweep]."""
    raw = {"data": {"test_size": 300}, "train": {"epochs": 12},
           "sweep": {"sizes": [37, 200], "seeds": 2}}
    for sec, kv in sections.items():
        raw.setdefault(sec, {}).update(kv)
    return config_from_dict(raw)


def reference_for(cfg: Config, optimizer: str, batch, lr: float, size: int, rep: int,
                  inputs=None) -> ReferenceRun:
    """The NumPy reference of one engine run, on the engine's own data, start and shuffles."""
    ds = one_dataset(cfg, rep, size, inputs)
    bs = None if batch == "full" else min(batch, size)
    perms = None if bs is None else [np.asarray(epoch_permutation(ds.shuffle_key, e, size))
                                     for e in range(cfg.train.epochs)]
    star = (np.array(cfg.data.true_weights + (cfg.data.true_bias,))
            if cfg.data.source == "synthetic" else None)
    return train_reference(ds.x, ds.y, ds.theta0, lr, cfg.train.epochs, mode=cfg.train.gradient,
                           optimizer=optimizer, schedule=cfg.train.schedule, batch=bs, perms=perms,
                           x_test=ds.x_test, y_test=ds.y_test, theta_star=star)
