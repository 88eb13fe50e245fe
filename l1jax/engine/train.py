"""``make_train(cfg, group)`` returns one pure ``train(inputs)`` that generates a group's data
and trains all its runs: a ``lax.scan`` over epochs (and, for minibatches, over the rows of
the group's lane schedule) of steps on every dataset and learning rate at once (datasets packed
in tiles or lanes), in blocks of replicates on the CPU.  Where ``kernels.fused_path`` names a
fused kernel (Numba on the CPU, Pallas on GPUs), an epoch's data pass or whole minibatch epoch
(on the CPU, plain SGD in either batch mode: all the epochs between two records) is one call to
it inside the same scan.  Wrap it in one ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l1jax.engine import data as D
from l1jax.engine.config import Config
from l1jax.engine.kernels import fused_path, pallas_pass, pallas_sgd
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
    """What the scan over epochs carries: every run's parameters, optimizer state and divergence."""

    theta: jax.Array
    state: object
    diverged: jax.Array  # [D, H] first bad epoch, or a sentinel past the last epoch


def build_data(cfg: Config, group: Group, inp: TrainInputs, keys: D.Streams,
               bits_of: D.Bits = D.sample_bits) -> D.Packed:
    """The group's training sets in the packed tile layout (padding slots zeroed; synthetic
    samples from the bits ``bits_of`` computes)."""
    a = group.arrays()
    owner, rank = jnp.asarray(a.owner), jnp.asarray(a.rank)
    j = D.slot_index(rank, group.tile)
    count = jnp.clip(inp.size[owner] - rank * group.tile, 0, group.tile)
    valid = D.inside(count, group.tile)
    if cfg.data.source == "synthetic":
        x, y = D.synthetic_rows(keys.train[owner], j, cfg.data, bits_of)
    else:
        n_pool = inp.pool_y.shape[0]
        order = jax.vmap(D.subsample_order, (0, None))(keys.train, n_pool)
        idx = order[owner[:, None], jnp.minimum(j, n_pool - 1)]
        x, y = inp.pool_x[idx], inp.pool_y[idx]
    return D.Packed(jnp.moveaxis(jnp.where(valid[..., None], x, 0.0), -1, 0),
                    jnp.where(valid, y, 0.0), count, owner)


def build_test(cfg: Config, inp: TrainInputs, keys: D.Streams,
               bits_of: D.Bits = D.sample_bits) -> tuple[jax.Array, jax.Array]:
    """Held-out sets, x feature-major: synthetic [d, D, test_size] per dataset; csv [d, 1, n_test]."""
    if cfg.data.source == "csv":
        return inp.test_x.T[:, None], inp.test_y[None]
    m = cfg.data.test_size
    j = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (inp.size.shape[0], m))
    x, y = D.synthetic_rows(keys.test, j, cfg.data, bits_of)
    return jnp.moveaxis(x, -1, 0), y


def initial_theta(init: str, keys: D.Streams, n_lr: int, p: int) -> jax.Array:
    """Starting parameters [D, H, p]: N(0, 1) per dataset (shared by its learning rates) or 0."""
    n = keys.init.shape[0]
    if init == "zeros":
        theta = jnp.zeros((n, p))
    else:
        theta = jax.vmap(lambda k: jax.random.normal(k, (p,)))(keys.init)
    return jnp.broadcast_to(theta[:, None, :], (n, n_lr, p))


def bits_function(fused: str | None) -> D.Bits:
    """What computes synthetic samples' bits: the CPU kernel wherever a fused CPU kernel trains
    the group (the same bits, 4x faster), else XLA (``data.sample_bits``)."""
    if fused and fused.startswith("cpu"):
        from l1jax.engine.kernels import cpu  # Numba loads only where a fused kernel runs
        return cpu.sample_bits
    return D.sample_bits


def _first_tiles(group: Group) -> np.ndarray:
    """Index of each dataset's first tile in the packed layout [D]."""
    return np.searchsorted(group.arrays().owner, np.arange(group.n_datasets)).astype(np.int32)


def _first_bad(diverged: jax.Array, bad: jax.Array, epoch: jax.Array) -> jax.Array:
    """The first bad epoch of each run: ``epoch`` where ``bad`` and none was seen before."""
    return jnp.where(bad, jnp.minimum(diverged, epoch), diverged)


def _all_finite(theta: jax.Array) -> jax.Array:
    """Whether each run's parameters [D, H] are all finite."""
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
               shared_pass: bool | None = None,
               fused: str | None = None, interpret: bool = False) -> Callable[[TrainInputs], TrainOutputs]:
    """The pure training function of one group (see module docstring).

    Its replicates train in blocks of ``block_seeds`` (default: ``plan.block_group`` for this
    backend), one block after another, so that on the CPU a block's data stays in cache for
    all its epochs.  ``shared_pass`` (default: ``plan.shared_lr_pass`` for this backend) reads
    the data once per epoch for all learning rates.  Blocks leave a run's numbers unchanged to the
    bit; the shared pass may round its sums in another order (about 1 ulp).  ``fused``
    names the kernel that trains the group (default: ``kernels.fused_path`` for this backend and
    ``train.kernels``; "" for the XLA path), whose sums round in another order; ``interpret``
    runs a Pallas kernel in Pallas' interpreter (tests off a GPU).
    """
    backend = jax.default_backend()
    block = (dataclasses.replace(group, seeds=block_seeds) if block_seeds
             else block_group(group, n_features, backend))
    k = block.seeds
    if group.seeds % k:
        raise ValueError(f"block_seeds {k} must divide the group's {group.seeds} replicates")
    shared = shared_lr_pass(backend) if shared_pass is None else shared_pass
    if fused is None:
        fused = fused_path(backend, group.optimizer, cfg.train.schedule, group.full_batch, cfg.train.kernels)
    train_block = _make_block_train(cfg, block, n_features, shared, fused or None, interpret)
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


class StepRule(NamedTuple):
    """How every run steps: its optimizer, schedule and gradient mode, whether one pass over the
    data serves all learning rates (``shared``), the learning rates [H], steps per run [D], and
    the fused kernel that trains it (``kernels.fused_path``; None for the XLA path)."""

    optimizer: str
    schedule: str
    gradient: str
    shared: bool
    lr: jax.Array
    total_steps: jax.Array
    fused: str | None = None  # the kernel that trains the group (``kernels.fused_path``), None for XLA
    interpret: bool = False  # Pallas kernels in Pallas' interpreter (tests off a GPU)


class TrainingSet(NamedTuple):
    """The group's training sets, packed, and their sizes [D] as floats (to take means)."""

    data: D.Packed
    count: jax.Array


class HeldOut(NamedTuple):
    """What a record measures against: held-out sets (None without) and the true parameters
    (None for csv data)."""

    test_x: jax.Array | None
    test_y: jax.Array | None
    true_theta: jax.Array | None


class Record(NamedTuple):
    """The numbers recorded at one epoch, each [D, H] (or with a leading epoch axis)."""

    train_l1: jax.Array
    test_l1: jax.Array
    param_error: jax.Array


class MinibatchLayout(NamedTuple):
    """Where minibatch steps find their samples.  The packed data as flat slots; per dataset (with
    an extra row D for idle lanes) its first slot and shuffle domain; per cell of the lane schedule
    its dataset (D where the lane is idle), batch size (0 there) and steps per run [rows, lanes],
    and the shuffle grid coordinates of its batch positions [rows, lanes, B]."""

    samples: jax.Array  # [d + 1, slots]: x then y
    first_slot: jax.Array  # [D + 1]
    domain: D.Domain  # [D + 1] each
    walk_width: int  # the largest excess of the group's shuffle grids
    dataset: jax.Array  # [rows, lanes]
    count: jax.Array  # [rows, lanes] int32
    total_steps: jax.Array  # [rows, lanes]
    left: jax.Array  # [rows, lanes, B] uint32
    right: jax.Array


class Batches(NamedTuple):
    """What one row of the lane schedule steps on, each with a leading rows axis when scanned:
    every lane's dataset, batch size and steps per run, and the slots of its batch [lanes, B]."""

    dataset: jax.Array
    count: jax.Array
    total_steps: jax.Array
    slot: jax.Array


class ParamTables(NamedTuple):
    """Every run's parameters [D + 1, H, p] and optimizer state, with row D for idle lanes."""

    theta: jax.Array
    state: Any


def _with_idle_row(v: jax.Array) -> jax.Array:
    """``v`` [D, ...] with a copy of its first row appended as row D, the idle lanes' row."""
    return jnp.concatenate([v, v[:1]])


def _update(rule: StepRule, grad: jax.Array, state: Any, theta: jax.Array,
            total_steps: jax.Array) -> tuple[jax.Array, Any]:
    """One optimizer step of every run from its gradient."""
    return update_all(rule.optimizer, rule.schedule, grad, state, theta, rule.lr, total_steps)


def minibatch_layout(group: Group, data: D.Packed, size: jax.Array,
                     total_steps: jax.Array) -> MinibatchLayout:
    """The minibatch view of a group's packed data (see ``MinibatchLayout``); positions past a
    dataset's size (in its ragged last batch, or idle) ask for position 0."""
    dataset, step = group.schedule
    dom = D.domains(np.append(group.arrays().size, group.sizes[0]))
    size, width = _with_idle_row(size), group.width
    count = jnp.where(jnp.asarray(dataset == group.n_datasets), 0,
                      jnp.clip(size[dataset] - jnp.asarray(step) * width, 0, width))
    position = jnp.asarray(step)[..., None] * width + jnp.arange(width, dtype=jnp.int32)  # [rows, lanes, B]
    left, right = D.split_position(jnp.where(position < size[dataset][..., None], position, 0),
                                   jnp.asarray(dom.b)[dataset][..., None])
    first_slot = jnp.asarray(_first_tiles(group) * group.tile)
    samples = jnp.concatenate([data.x.reshape(data.x.shape[0], -1), data.y.reshape(1, -1)])
    return MinibatchLayout(samples, _with_idle_row(first_slot), D.Domain(*(jnp.asarray(v) for v in dom)),
                           int(np.max(dom.a * dom.b - dom.n)), jnp.asarray(dataset), count,
                           _with_idle_row(total_steps)[dataset], left, right)


def epoch_slots(layout: MinibatchLayout, shuffle_keys: jax.Array, epoch: jax.Array) -> Batches:
    """Every row's batches of one epoch as the slots of their samples: each dataset's samples in
    the epoch's shuffled order (computed once, in one vectorized pass, before the rows scan)."""
    keys = _with_idle_row(jax.vmap(D.round_keys, (0, None))(shuffle_keys, epoch))  # [D + 1, rounds]
    walks = D.cycle_walks(keys, layout.domain, layout.walk_width)  # [D + 1, width]
    cell = layout.dataset
    at_cell = lambda v: v[cell][:, :, None]
    sample = D.visit(layout.left, layout.right, at_cell(keys), D.Domain(*map(at_cell, layout.domain)),
                     at_cell(walks))
    return Batches(cell, layout.count, layout.total_steps, layout.first_slot[cell][..., None] + sample)


def minibatch_step(tables: ParamTables, row: Batches, samples: jax.Array,
                   rule: StepRule) -> tuple[ParamTables, None]:
    """One row of the lane schedule: each lane takes one batch step of its dataset's runs (idle
    lanes and empty batches leave their row unchanged); a ``lax.scan`` body."""
    theta = tables.theta[row.dataset]
    state = jax.tree.map(lambda v: v[row.dataset], tables.state)
    batch = samples[:, row.slot]  # [d + 1, lanes, B]
    x, y = batch[:-1], batch[-1]
    _, grad_sum = tile_sums(x, y, row.count, theta, rule.gradient, rule.shared)
    batch_size = row.count.astype(jnp.float32)
    grad = gradient_from_sums(grad_sum, jnp.maximum(batch_size, 1.0)[:, None, None], rule.gradient)
    new_theta, new_state = _update(rule, grad, state, theta, row.total_steps)
    active = batch_size > 0

    def put(table: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
        keep_new = active.reshape(-1, *([1] * (new.ndim - 1)))
        return table.at[row.dataset].set(jnp.where(keep_new, new, old))

    return ParamTables(put(tables.theta, new_theta, theta),
                       jax.tree.map(put, tables.state, new_state, state)), None


def minibatch_epoch(carry: Carry, epoch: jax.Array, layout: MinibatchLayout, shuffle_keys: jax.Array,
                    rule: StepRule) -> Carry:
    """One epoch of minibatch steps for every run: a scan over the rows of the lane schedule."""
    n_data = shuffle_keys.shape[0]
    tables = ParamTables(_with_idle_row(carry.theta), jax.tree.map(_with_idle_row, carry.state))
    step = functools.partial(minibatch_step, samples=layout.samples, rule=rule)
    tables, _ = jax.lax.scan(step, tables, epoch_slots(layout, shuffle_keys, epoch))
    theta, state = tables.theta[:n_data], jax.tree.map(lambda v: v[:n_data], tables.state)
    diverged = _first_bad(carry.diverged, ~_all_finite(theta), epoch + 1)
    return Carry(theta, state, diverged)


class PallasEpoch(NamedTuple):
    """A plain-SGD minibatch epoch as one kernel (``kernels.pallas_sgd``): the fused layout and the
    group's batch width."""

    layout: pallas_sgd.FusedLayout
    batch: int


def advance_states(rule: StepRule, state: Any, theta: jax.Array, steps: jax.Array) -> Any:
    """The optax states after ``steps`` [D] SGD steps of every run: counts moved to the last step,
    then that step made by optax itself (plain SGD's state holds only counts and the learning rate)."""
    moved = jax.tree.map(lambda v: v + (steps - 1).reshape(-1, *([1] * (v.ndim - 1))).astype(v.dtype)
                         if jnp.issubdtype(v.dtype, jnp.integer) else v, state)
    return _update(rule, jnp.zeros_like(theta), moved, theta, rule.total_steps)[1]


def pallas_minibatch_epoch(carry: Carry, epoch: jax.Array, fused: PallasEpoch, shuffle_keys: jax.Array,
                           rule: StepRule) -> Carry:
    """One epoch of plain-SGD minibatch steps for every run in one kernel (same steps, order and
    updates as ``minibatch_epoch``, sums rounded in another order)."""
    # the interpreter runs a program at a time: a few lanes each keep it quick
    lanes = 4 if rule.interpret else pallas_sgd.DEFAULT_LANES
    layout, (n_data, n_lr, p) = fused.layout, carry.theta.shape
    runs = pallas_sgd.run_table(carry.theta, carry.state.count, rule.lr, rule.total_steps, layout, lanes)
    theta = pallas_sgd.run_epoch(pallas_sgd.epoch_order(layout, shuffle_keys, epoch), layout.samples, runs,
                                 batch=fused.batch, gradient=rule.gradient, schedule=rule.schedule,
                                 lanes=lanes, warps=pallas_sgd.DEFAULT_WARPS, interpret=rule.interpret)
    theta = theta[:n_data * n_lr].reshape(n_data, n_lr, p)
    state = advance_states(rule, carry.state, theta, -(-layout.size // fused.batch))
    return Carry(theta, state, _first_bad(carry.diverged, ~_all_finite(theta), epoch + 1))


class CpuEpochLayout(NamedTuple):
    """What the fused CPU minibatch epochs read: the packed data as flat slots (x [d, slots], y
    [slots]), per dataset its first slot, size and shuffle grid sides [D, 4], the batch width, the
    largest size, grid side b and grid excess a b - n (scratch sizes), and each dataset's steps
    an epoch [D]."""

    x: jax.Array
    y: jax.Array
    table: jax.Array
    width: int
    max_size: int
    max_side: int
    walk_width: int
    steps: jax.Array


def cpu_epoch_layout(group: Group, data: D.Packed, size: jax.Array) -> CpuEpochLayout:
    """The fused CPU minibatch epochs' view of a group's packed data (see ``CpuEpochLayout``)."""
    dom = D.domains(group.arrays().size)
    first_slot = jnp.asarray(_first_tiles(group) * group.tile)
    table = jnp.stack([first_slot, size, jnp.asarray(dom.a, jnp.int32), jnp.asarray(dom.b, jnp.int32)], axis=1)
    steps = (size + group.width - 1) // group.width
    return CpuEpochLayout(data.x.reshape(data.x.shape[0], -1), data.y.reshape(-1), table, group.width,
                          max(group.sizes), int(np.max(dom.b)), int(np.max(dom.a * dom.b - dom.n)), steps)


def cpu_minibatch_epochs(carry: Carry, start: jax.Array, length: int, layout: CpuEpochLayout,
                         shuffle_keys: jax.Array, rule: StepRule) -> Carry:
    """``length`` minibatch epochs of plain SGD from epoch ``start`` for every run in one fused
    CPU kernel call: the same Feistel orders (``data.py``'s, recomputed in the kernel), batches
    and optax.sgd updates as ``minibatch_epoch``, and the same first bad epochs."""
    from l1jax.engine.kernels import cpu  # Numba loads only where a fused kernel runs
    theta, bad = cpu.sgd_epochs(layout.x, layout.y, carry.theta, rule.lr, layout.table,
                                jax.random.key_data(shuffle_keys).astype(jnp.uint32), start, length,
                                layout.width, layout.max_size, layout.max_side, layout.walk_width, rule.gradient)
    state = advance_states(rule, carry.state, theta, layout.steps * length)
    return Carry(theta, state, jnp.minimum(carry.diverged, bad))


def data_sums(data: D.Packed, theta: jax.Array, rule: StepRule) -> tuple[jax.Array, jax.Array]:
    """Per dataset the sums of |r| [D, H] and of the gradient terms [D, H, p] over the packed data:
    the fused CPU pass or the Pallas pass wherever a fused kernel trains the group, else XLA's."""
    if rule.fused is None:
        return packed_sums(data, theta, theta.shape[0], rule.gradient, rule.shared)
    if rule.fused.startswith("cpu"):
        from l1jax.engine.kernels import cpu  # Numba loads only where a fused kernel runs
        return cpu.full_batch_sums(data.x, data.y, data.count, data.owner, theta, rule.gradient)
    a, g = pallas_pass.tile_sums(data.x, data.y, data.count, theta[data.owner], rule.gradient,
                                 interpret=rule.interpret)
    seg = lambda v: jax.ops.segment_sum(v, data.owner, theta.shape[0], indices_are_sorted=True)
    return seg(a), seg(g)


def mean_of_sums(sums: jax.Array, count: jax.Array) -> jax.Array:
    """sums [D, H] / count [D], as a product with the reciprocal: XLA rewrites a division by a
    broadcast divisor into that product for some shapes and not others, which made a run's
    recorded loss depend on how many learning rates shared its program (1 ulp)."""
    return sums * (1.0 / count)[:, None]


def full_batch_epoch(carry: Carry, epoch: jax.Array, train_set: TrainingSet,
                     rule: StepRule) -> tuple[Carry, jax.Array]:
    """One full-batch step of every run; also returns the training L1 [D, H] before the step."""
    count = train_set.count
    l1_sum, grad_sum = data_sums(train_set.data, carry.theta, rule)
    loss = mean_of_sums(l1_sum, count)
    grad = gradient_from_sums(grad_sum, count[:, None, None], rule.gradient)
    theta, state = _update(rule, grad, carry.state, carry.theta, rule.total_steps)
    diverged = _first_bad(carry.diverged, ~jnp.isfinite(loss), epoch)
    diverged = _first_bad(diverged, ~_all_finite(theta), epoch + 1)
    return Carry(theta, state, diverged), loss


def _full_batch_epoch_keeping_loss(carry_loss: tuple[Carry, jax.Array], epoch: jax.Array,
                                   start: jax.Array, train_set: TrainingSet,
                                   rule: StepRule) -> tuple[Carry, jax.Array]:
    """A full-batch epoch that also carries the training L1 of epoch ``start`` (to record it)."""
    carry, loss = full_batch_epoch(carry_loss[0], epoch, train_set, rule)
    return carry, jnp.where(epoch == start, loss, carry_loss[1])


def cpu_full_batch_epochs(carry: Carry, start: jax.Array, length: int, train_set: TrainingSet,
                          rule: StepRule) -> tuple[Carry, jax.Array]:
    """``length`` full-batch epochs of plain SGD from epoch ``start`` for every run in one fused
    CPU kernel call (the same passes, optax.sgd updates and first bad epochs as
    ``full_batch_epoch``); also returns the training L1 [D, H] of epoch ``start``."""
    from l1jax.engine.kernels import cpu  # Numba loads only where a fused kernel runs
    data = train_set.data
    theta, l1_first, bad = cpu.full_sgd_epochs(data.x, data.y, data.count, data.owner, carry.theta, rule.lr,
                                               train_set.count, start, length, rule.gradient)
    state = advance_states(rule, carry.state, theta, jnp.full(theta.shape[:1], length))
    return Carry(theta, state, jnp.minimum(carry.diverged, bad)), mean_of_sums(l1_first, train_set.count)


def train_l1(theta: jax.Array, train_set: TrainingSet, rule: StepRule) -> jax.Array:
    """Mean training L1 [D, H] of every run at ``theta``."""
    return mean_of_sums(data_sums(train_set.data, theta, rule)[0], train_set.count)


def held_out_metrics(theta: jax.Array, held_out: HeldOut, shared: bool) -> tuple[jax.Array, jax.Array]:
    """Held-out L1 and distance to the true parameters [D, H] at ``theta`` (NaN where unknown)."""
    nan = jnp.full(theta.shape[:2], jnp.nan)
    test = mean_l1(held_out.test_x, held_out.test_y, theta, shared) if held_out.test_x is not None else nan
    err = jnp.linalg.norm(theta - held_out.true_theta, axis=-1) if held_out.true_theta is not None else nan
    return test, err


def first_bad_record(out: Record, recorded: jax.Array, epochs: int, test_rows: bool) -> jax.Array:
    """[D, H] first recorded epoch whose train L1, or test L1 where there are test rows, is not
    finite (a loss that overflowed float32 is a divergence too); ``epochs + 1`` if none."""
    bad = ~jnp.isfinite(out.train_l1)
    if test_rows:
        bad = bad | ~jnp.isfinite(out.test_l1)
    return jnp.min(jnp.where(bad, recorded[:, None, None], epochs + 1), axis=0)


def record(theta: jax.Array, train_set: TrainingSet, held_out: HeldOut, rule: StepRule) -> Record:
    """Every number recorded at ``theta``."""
    return Record(train_l1(theta, train_set, rule), *held_out_metrics(theta, held_out, rule.shared))


def record_block(carry: Carry, start: jax.Array, length: int, train_set: TrainingSet,
                 held_out: HeldOut, rule: StepRule,
                 layout: MinibatchLayout | CpuEpochLayout | PallasEpoch | None,
                 shuffle_keys: jax.Array) -> tuple[Carry, Record]:
    """Record epoch ``start``, then train ``length`` epochs: full-batch if ``layout`` is None
    (its first epoch's loss is the recorded training L1), else minibatch (fused or not)."""
    test, err = held_out_metrics(carry.theta, held_out, rule.shared)
    if layout is None and rule.fused == "cpu_full_sgd_epochs":  # all the block's epochs in one call
        carry, train = cpu_full_batch_epochs(carry, start, length, train_set, rule)
    elif layout is None:
        epoch = functools.partial(_full_batch_epoch_keeping_loss, start=start, train_set=train_set, rule=rule)
        carry, train = _scan_epochs(epoch, (carry, jnp.zeros(carry.diverged.shape)), start, length)
    else:
        train = train_l1(carry.theta, train_set, rule)
        if isinstance(layout, CpuEpochLayout):  # all the block's epochs in one call
            carry = cpu_minibatch_epochs(carry, start, length, layout, shuffle_keys, rule)
            return carry, Record(train, test, err)
        if isinstance(layout, PallasEpoch):
            epoch = functools.partial(pallas_minibatch_epoch, fused=layout, shuffle_keys=shuffle_keys, rule=rule)
        else:
            epoch = functools.partial(minibatch_epoch, layout=layout, shuffle_keys=shuffle_keys, rule=rule)
        carry = _scan_epochs(epoch, carry, start, length)
    return carry, Record(train, test, err)


def _make_block_train(cfg: Config, group: Group, n_features: int, shared: bool, fused: str | None,
                      interpret: bool) -> Callable[[TrainInputs], TrainOutputs]:
    """Training of all runs of ``group`` at once: record blocks of ``record_every`` epochs
    scanned, then a shorter last block if the epochs do not divide, then the final record."""
    tc = cfg.train
    epochs, every = tc.epochs, tc.record_every
    rec = np.asarray(cfg.recorded_epochs)
    lengths = np.diff(rec)  # epochs per record block: `every`, except maybe the last
    n_full = int(np.sum(lengths == every))
    tail = int(lengths[-1]) if lengths[-1] != every else 0
    has_test = cfg.data.source == "csv" or cfg.data.test_size > 0
    true_theta = (jnp.asarray(cfg.data.true_weights + (cfg.data.true_bias,), jnp.float32)
                  if cfg.data.source == "synthetic" else None)

    def train(inp: TrainInputs) -> TrainOutputs:
        keys = D.streams(inp.base_seed, inp.rep, inp.size, cfg.data.coupling == "nested")
        bits_of = bits_function(fused)
        train_set = TrainingSet(build_data(cfg, group, inp, keys, bits_of), inp.size.astype(jnp.float32))
        held_out = HeldOut(*(build_test(cfg, inp, keys, bits_of) if has_test else (None, None)), true_theta)
        theta0 = initial_theta(tc.init, keys, inp.lr.shape[0], n_features + 1)
        total_steps = (jnp.full((group.n_datasets,), epochs, jnp.float32) if group.full_batch
                       else epochs * jnp.ceil(train_set.count / group.width))
        rule = StepRule(group.optimizer, tc.schedule, tc.gradient, shared, inp.lr, total_steps, fused, interpret)
        if group.full_batch:
            layout = None
        elif fused == "cpu_sgd_epoch":
            layout = cpu_epoch_layout(group, train_set.data, inp.size)
        elif fused == "pallas_sgd_epoch":
            a = group.arrays()
            layout = PallasEpoch(pallas_sgd.fused_layout(train_set.data, a.rank, _first_tiles(group) * group.tile,
                                                         inp.size, a.size), group.width)
        else:
            layout = minibatch_layout(group, train_set.data, inp.size, total_steps)
        block = functools.partial(record_block, train_set=train_set, held_out=held_out, rule=rule,
                                  layout=layout, shuffle_keys=keys.shuffle)

        state0 = init_states(group.optimizer, tc.schedule, theta0, inp.lr, total_steps)
        carry = Carry(theta0, state0, jnp.full(theta0.shape[:2], epochs + 1, jnp.int32))
        carry, records = jax.lax.scan(functools.partial(block, length=every), carry,
                                      jnp.arange(n_full, dtype=jnp.int32) * every)
        parts = [records]
        if tail:
            carry, last = block(carry, jnp.int32(n_full * every), tail)
            parts.append(jax.tree.map(lambda v: v[None], last))
        parts.append(jax.tree.map(lambda v: v[None], record(carry.theta, train_set, held_out, rule)))
        out = jax.tree.map(lambda *v: jnp.concatenate(v), *parts)
        test_rows = held_out.test_y is not None and held_out.test_y.shape[-1] > 0  # csv may hold out none
        div = jnp.minimum(carry.diverged, first_bad_record(out, jnp.asarray(rec, jnp.int32), epochs, test_rows))
        return TrainOutputs(out.train_l1, out.test_l1, out.param_error, carry.theta,
                            jnp.where(div > epochs, -1, div))

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
