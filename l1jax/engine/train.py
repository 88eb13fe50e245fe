"""``make_train(cfg, group)`` returns one pure ``train(inputs)`` that generates a group's data
and trains all its runs: a ``lax.scan`` over epochs (and, for minibatches, over the rows of
the group's lane schedule) of steps on every dataset and learning rate at once (datasets packed
in tiles or lanes), in blocks of replicates on the CPU.  Wrap it in one ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l1jax.engine import data as D
from l1jax.engine.config import Config
from l1jax.engine.plan import Group, block_group, shared_lr_pass
from l1jax.engine.step import gradient_from_sums, init_states, mean_l1, packed_sums, tile_sums, update_all


class TrainInputs(NamedTuple):
    """Traced inputs of a group's program; only their shapes are compiled in."""

    base_seed: jax.Array  # uint32 scalar
    size: jax.Array  # [D] int32
    rep: jax.Array  # [D] int32
    lr: jax.Array  # [H] float32
    pool_x: jax.Array | None = None  # csv: training rows [n_pool, d]
    pool_y: jax.Array | None = None
    test_x: jax.Array | None = None  # csv: held-out rows [n_test, d]
    test_y: jax.Array | None = None


class TrainOutputs(NamedTuple):
    """Per recorded epoch [rec, D, H]; final parameters [D, H, p]; diverged_epoch [D, H], -1 if none."""

    train_l1: jax.Array
    test_l1: jax.Array
    param_error: jax.Array
    theta: jax.Array
    diverged_epoch: jax.Array


class Carry(NamedTuple):
    theta: jax.Array
    state: object
    diverged: jax.Array  # [D, H] first bad epoch, or a sentinel past the last epoch


def build_data(cfg: Config, group: Group, inp: TrainInputs, keys: D.Streams) -> D.Packed:
    """The group's training sets in the packed tile layout (padding slots zeroed)."""
    a = group.arrays()
    owner, rank = jnp.asarray(a.owner), jnp.asarray(a.rank)
    j = D.slot_index(rank, group.tile)
    count = jnp.clip(inp.size[owner] - rank * group.tile, 0, group.tile)
    valid = D.inside(count, group.tile)
    if cfg.data.source == "synthetic":
        x, y = D.synthetic_rows(keys.train[owner], j, cfg.data)
    else:
        n_pool = inp.pool_y.shape[0]
        order = jax.vmap(D.subsample_order, (0, None))(keys.train, n_pool)
        idx = order[owner[:, None], jnp.minimum(j, n_pool - 1)]
        x, y = inp.pool_x[idx], inp.pool_y[idx]
    return D.Packed(jnp.moveaxis(jnp.where(valid[..., None], x, 0.0), -1, 0),
                    jnp.where(valid, y, 0.0), count, owner)


def build_test(cfg: Config, inp: TrainInputs, keys: D.Streams) -> tuple[jax.Array, jax.Array]:
    """Held-out sets, x feature-major: synthetic [d, D, test_size] per dataset; csv [d, 1, n_test]."""
    if cfg.data.source == "csv":
        return inp.test_x.T[:, None], inp.test_y[None]
    m = cfg.data.test_size
    j = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (inp.size.shape[0], m))
    x, y = D.synthetic_rows(keys.test, j, cfg.data)
    return jnp.moveaxis(x, -1, 0), y


def initial_theta(init: str, keys: D.Streams, n_lr: int, p: int) -> jax.Array:
    """Starting parameters [D, H, p]: N(0, 1) per dataset (shared by its learning rates) or 0."""
    n = keys.init.shape[0]
    if init == "zeros":
        theta = jnp.zeros((n, p))
    else:
        theta = jax.vmap(lambda k: jax.random.normal(k, (p,)))(keys.init)
    return jnp.broadcast_to(theta[:, None, :], (n, n_lr, p))


def _first_tiles(group: Group) -> np.ndarray:
    """Index of each dataset's first tile in the packed layout [D]."""
    return np.searchsorted(group.arrays().owner, np.arange(group.n_datasets)).astype(np.int32)


def _first_bad(diverged: jax.Array, bad: jax.Array, epoch: jax.Array) -> jax.Array:
    return jnp.where(bad, jnp.minimum(diverged, epoch), diverged)


def _all_finite(theta: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(theta), axis=-1)


def _scan_epochs(epoch: Callable[[Any, jax.Array], Any], carry: Any, start: jax.Array, length: int) -> Any:
    """``length`` epochs from epoch ``start``, counted in the carry: no per-epoch input or output,
    so memory does not grow with the epochs between records."""
    def body(ce: tuple[Any, jax.Array], _: None) -> tuple[tuple[Any, jax.Array], None]:
        c, e = ce
        return (epoch(c, e), e + 1), None
    (carry, _), _ = jax.lax.scan(body, (carry, start), None, length=length)
    return carry


def make_train(cfg: Config, group: Group, n_features: int, block_seeds: int | None = None,
               shared_pass: bool | None = None) -> Callable[[TrainInputs], TrainOutputs]:
    """The pure training function of one group (see module docstring).

    Its replicates train in blocks of ``block_seeds`` (default: ``plan.block_group`` for this
    backend), one block after another, so that on the CPU a block's data stays in cache for
    all its epochs.  ``shared_pass`` (default: ``plan.shared_lr_pass`` for this backend) reads
    the data once per epoch for all learning rates.  Blocks leave a run's numbers unchanged to the
    bit; the shared pass may round its sums in another order (about 1 ulp).
    """
    backend = jax.default_backend()
    block = (dataclasses.replace(group, seeds=block_seeds) if block_seeds
             else block_group(group, n_features, backend))
    k = block.seeds
    if group.seeds % k:
        raise ValueError(f"block_seeds {k} must divide the group's {group.seeds} replicates")
    shared = shared_lr_pass(backend) if shared_pass is None else shared_pass
    train_block = _make_block_train(cfg, block, n_features, shared)
    if k == group.seeds:
        return train_block
    n_blocks, n_sizes = group.seeds // k, len(group.sizes)

    def split(v: jax.Array) -> jax.Array:  # [D] (size-major) -> [blocks, sizes * k]
        return v.reshape(n_sizes, n_blocks, k).swapaxes(0, 1).reshape(n_blocks, n_sizes * k)

    def merge(v: jax.Array, axis: int) -> jax.Array:  # inverse of split on the dataset axis
        v = jnp.moveaxis(v, 0, axis)
        head, tail = v.shape[:axis], v.shape[axis + 2:]
        v = v.reshape(*head, n_blocks, n_sizes, k, *tail).swapaxes(axis, axis + 1)
        return v.reshape(*head, group.n_datasets, *tail)

    def train(inp: TrainInputs) -> TrainOutputs:
        out = jax.lax.map(lambda sr: train_block(inp._replace(size=sr[0], rep=sr[1])),
                          (split(inp.size), split(inp.rep)))
        return TrainOutputs(merge(out.train_l1, 1), merge(out.test_l1, 1), merge(out.param_error, 1),
                            merge(out.theta, 0), merge(out.diverged_epoch, 0))

    return train


def _make_block_train(cfg: Config, group: Group, n_features: int,
                      shared: bool) -> Callable[[TrainInputs], TrainOutputs]:
    """Training of all runs of ``group`` at once (epochs scanned)."""
    tc = cfg.train
    epochs, every = tc.epochs, tc.record_every
    rec = np.asarray(cfg.recorded_epochs)
    lengths = np.diff(rec)  # epochs per record block: `every`, except maybe the last
    n_full = int(np.sum(lengths == every))
    tail = int(lengths[-1]) if lengths[-1] != every else 0
    n_data, tile = group.n_datasets, group.tile
    has_test = cfg.data.source == "csv" or cfg.data.test_size > 0
    star = (jnp.asarray(cfg.data.true_weights + (cfg.data.true_bias,), jnp.float32)
            if cfg.data.source == "synthetic" else None)

    def train(inp: TrainInputs) -> TrainOutputs:
        keys = D.streams(inp.base_seed, inp.rep, inp.size, cfg.data.coupling == "nested")
        data = build_data(cfg, group, inp, keys)
        test_x, test_y = build_test(cfg, inp, keys) if has_test else (None, None)
        count = inp.size.astype(jnp.float32)
        n_lr = inp.lr.shape[0]
        theta0 = initial_theta(tc.init, keys, n_lr, n_features + 1)
        total = jnp.full((n_data,), epochs, jnp.float32) if group.full_batch else (
            epochs * jnp.ceil(count / group.width))
        update = lambda g, s, th: update_all(group.optimizer, tc.schedule, g, s, th, inp.lr, total)
        if not group.full_batch:  # slots of the data in a row; a dataset's first slot; the lanes
            xs, ys = data.x.reshape(data.x.shape[0], -1), data.y.reshape(-1)
            first_slot = jnp.asarray(_first_tiles(group) * tile)
            width = group.width
            schedule = tuple(jnp.asarray(v) for v in group.schedule)

        def train_l1(theta):
            return packed_sums(data, theta, n_data, tc.gradient, shared)[0] / count[:, None]

        def others(theta):
            nan = jnp.full(theta.shape[:2], jnp.nan)
            test = mean_l1(test_x, test_y, theta, shared) if has_test else nan
            err = jnp.linalg.norm(theta - star, axis=-1) if star is not None else nan
            return test, err

        def epoch_full(c: Carry, e):
            a, g = packed_sums(data, c.theta, n_data, tc.gradient, shared)
            loss = a / count[:, None]
            theta, state = update(gradient_from_sums(g, count[:, None, None], tc.gradient),
                                  c.state, c.theta)
            div = _first_bad(c.diverged, ~jnp.isfinite(loss), e)
            div = _first_bad(div, ~_all_finite(theta), e + 1)
            return Carry(theta, state, div), loss

        def epoch_minibatch(c: Carry, e):
            rk = jax.vmap(D.round_keys, (0, None))(keys.shuffle, e)  # [D, rounds]
            pad = lambda v: jnp.concatenate([v, v[:1]])  # row n_data: where idle lanes write
            rk_, size_, total_, first_ = pad(rk), pad(inp.size), pad(total), pad(first_slot)

            def step(tables, row):
                d, s = row  # [lanes]: each lane's dataset (n_data if idle) and its step
                theta_t, state_t = tables
                theta = theta_t[d]
                state = jax.tree.map(lambda v: v[d], state_t)
                n = size_[d]
                p = s[:, None] * width + jnp.arange(width, dtype=jnp.int32)  # [lanes, B]
                valid = p < n[:, None]  # the last batch is ragged
                # padding positions ask for position 0 (a cycle walk from p >= n need not end)
                idx = jax.vmap(D.visit_order)(rk_[d], n, jnp.where(valid, p, 0))
                slot = first_[d][:, None] + idx
                count_b = jnp.where(d < n_data, jnp.clip(n - s * width, 0, width), 0)
                _, g = tile_sums(xs[:, slot], ys[slot], count_b, theta, tc.gradient, shared)
                n_b = count_b.astype(jnp.float32)
                new_theta, new_state = update_all(
                    group.optimizer, tc.schedule,
                    gradient_from_sums(g, jnp.maximum(n_b, 1.0)[:, None, None], tc.gradient),
                    state, theta, inp.lr, total_[d])
                active = n_b > 0
                keep = lambda new, old: jnp.where(
                    active.reshape(-1, *([1] * (new.ndim - 1))), new, old)
                put = lambda t, new, old: t.at[d].set(keep(new, old))
                return (put(theta_t, new_theta, theta),
                        jax.tree.map(put, state_t, new_state, state)), None

            tables = (pad(c.theta), jax.tree.map(pad, c.state))
            (theta, state), _ = jax.lax.scan(step, tables, schedule)
            theta, state = theta[:n_data], jax.tree.map(lambda v: v[:n_data], state)
            div = _first_bad(c.diverged, ~_all_finite(theta), e + 1)
            return Carry(theta, state, div)

        def epoch_full_from(start):
            """A full-batch epoch that also carries the training L1 of epoch ``start``."""
            def epoch(cl: tuple[Carry, jax.Array], e):
                c, loss = epoch_full(cl[0], e)
                return c, jnp.where(e == start, loss, cl[1])
            return epoch

        def block(length):
            def run_block(c: Carry, start):
                test, err = others(c.theta)
                if group.full_batch:
                    c, train = _scan_epochs(epoch_full_from(start), (c, jnp.zeros(c.diverged.shape)), start, length)
                else:
                    train = train_l1(c.theta)
                    c = _scan_epochs(epoch_minibatch, c, start, length)
                return c, (train, test, err)
            return run_block

        state0 = init_states(group.optimizer, tc.schedule, theta0, inp.lr, total)
        c = Carry(theta0, state0, jnp.full(theta0.shape[:2], epochs + 1, jnp.int32))
        c, recs = jax.lax.scan(block(every), c, jnp.arange(n_full, dtype=jnp.int32) * every)
        parts = [recs]
        if tail:
            c, last = block(tail)(c, jnp.int32(n_full * every))
            parts.append(jax.tree.map(lambda v: v[None], last))
        test, err = others(c.theta)
        parts.append(jax.tree.map(lambda v: v[None], (train_l1(c.theta), test, err)))
        train_l1s, test_l1s, errs = (jnp.concatenate(v) for v in zip(*parts))
        bad_rec = ~jnp.isfinite(train_l1s)
        first_rec = jnp.min(jnp.where(bad_rec, jnp.asarray(rec, jnp.int32)[:, None, None], epochs + 1), axis=0)
        div = jnp.minimum(c.diverged, first_rec)
        return TrainOutputs(train_l1s, test_l1s, errs, c.theta, jnp.where(div > epochs, -1, div))

    return train



class Dataset(NamedTuple):
    """One dataset of a sweep, materialized on the host (for references and exact optima)."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    theta0: np.ndarray
    shuffle_key: jax.Array


def one_dataset(cfg: Config, rep: int, size: int, inputs: TrainInputs | None = None) -> Dataset:
    """The exact data, test set, start and shuffle key that replicate ``rep`` at ``size`` gets
    inside any sweep (``inputs`` carries a csv table's arrays)."""
    group = Group("sgd", None, (size,), 1, size, (1,))
    csv_part = {} if inputs is None else {k: getattr(inputs, k) for k in
                                          ("pool_x", "pool_y", "test_x", "test_y")}
    inp = TrainInputs(jnp.uint32(cfg.sweep.base_seed), jnp.asarray([size], jnp.int32),
                      jnp.asarray([rep], jnp.int32), jnp.ones(1, jnp.float32), **csv_part)
    keys = D.streams(inp.base_seed, inp.rep, inp.size, cfg.data.coupling == "nested")
    data = build_data(cfg, group, inp, keys)
    has_test = cfg.data.source == "csv" or cfg.data.test_size > 0
    tx, ty = build_test(cfg, inp, keys) if has_test else (None, None)
    p = data.x.shape[0] + 1
    theta0 = initial_theta(cfg.train.init, keys, 1, p)[0, 0]
    host = lambda v: None if v is None else np.asarray(v[0])
    xt = None if tx is None else np.asarray(tx[:, 0].T)
    return Dataset(np.asarray(data.x[:, 0].T), host(data.y), xt, host(ty), np.asarray(theta0),
                   keys.shuffle[0])
