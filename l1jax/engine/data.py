"""Datasets: PRNG key streams, synthetic samples, csv subsamples and the packed tile layout.

Randomness comes only from a run's coordinates: the key of sample ``j`` of replicate ``rep``
at size ``n`` is ``fold_in(fold_in(fold_in(fold_in(key(base), rep), n), TRAIN), j)``
(``nested`` coupling drops the size), so a sample never depends on which runs share a call.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from l1jax.engine.config import DataConfig

# Stream tags folded into a run's key.
TRAIN, TEST, INIT, SHUFFLE = 0, 1, 2, 3
CONTAMINATION_SCALE = 10.0  # outliers of "contaminated" noise have this many times noise_scale


class Streams(NamedTuple):
    """Per-dataset PRNG keys: one typed key per stream, each of shape [D]."""

    train: jax.Array
    test: jax.Array
    init: jax.Array
    shuffle: jax.Array


def streams(base_seed: jax.Array, rep: jax.Array, size: jax.Array, nested: bool) -> Streams:
    """Keys of datasets (rep[i], size[i]).  With ``nested`` the data and the initial parameters
    ignore the size, so every size of a replicate trains on the first n samples of one dataset
    from one start (paired starts: the start dominates the early rate); shuffles stay per size."""
    rep_key = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(base_seed), rep)
    run_key = jax.vmap(jax.random.fold_in)(rep_key, size)
    data_key = rep_key if nested else run_key
    fold = jax.vmap(jax.random.fold_in, (0, None))
    return Streams(fold(data_key, TRAIN), fold(data_key, TEST), fold(data_key, INIT),
                   fold(run_key, SHUFFLE))


class Packed(NamedTuple):
    """Datasets packed into tiles of T slots; a tile holds samples of one dataset (its owner).

    A tile's first ``count`` slots hold real samples; padding slots have x = 0 and y = 0.
    Training masks by comparing a slot's index with ``count`` inside its fused pass, so no
    mask array is read from memory.
    """

    x: jax.Array  # [d, tiles, T], feature-major
    y: jax.Array  # [tiles, T]
    count: jax.Array  # [tiles] int32 real samples in the tile
    owner: jax.Array  # [tiles] int32 dataset index

    @property
    def mask(self) -> jax.Array:
        """[tiles, T] float32, 1 for a real sample."""
        return inside(self.count, self.y.shape[-1]).astype(jnp.float32)


def inside(count: jax.Array, tile: int) -> jax.Array:
    """[R, T] bool: slot j of row i holds a real sample (j < count[i])."""
    return jnp.arange(tile, dtype=count.dtype)[None, :] < count[:, None]


def slot_index(rank: jax.Array, tile: int) -> jax.Array:
    """Sample index j of each slot: tile ``rank`` within its dataset times T plus the slot."""
    return rank[:, None] * tile + jnp.arange(tile, dtype=rank.dtype)[None, :]


# ---------------------------------------------------------------- synthetic

def unit_floats(bits: jax.Array) -> jax.Array:
    """uint32 bits -> floats in the open interval (0, 1): 23 mantissa bits, offset by half a step."""
    one = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)
    return one - (1.0 - 2.0 ** -24)


def noise(u: jax.Array, key: jax.Array, cfg: DataConfig) -> jax.Array:
    """Draws of the configured noise family from uniforms u [..., 2] (0, 1) (inverse CDFs; the
    Student t draws from ``key``, typed keys of u's leading shape; contaminated noise alone
    reads u[..., 1], which may be absent otherwise)."""
    s = cfg.noise_scale
    v = 2.0 * u[..., 0] - 1.0
    if cfg.noise == "laplace":
        return -s * jnp.sign(v) * jnp.log1p(-jnp.abs(v))
    if cfg.noise == "student_t":
        flat = jax.vmap(lambda k: jax.random.t(k, cfg.noise_df))(key.reshape(-1))
        return s * flat.reshape(key.shape)
    z = jnp.sqrt(2.0) * jax.scipy.special.erfinv(v)
    if cfg.noise == "gaussian":
        return s * z
    return jnp.where(u[..., 1] < cfg.outlier_fraction, CONTAMINATION_SCALE * s, s) * z


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds, JAX's rotations and key schedule) of counters (x0, x1) under key
    (k0, k1), uint32 arrays that broadcast: the hash behind ``jax.random``."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def sample_bits(keys: jax.Array, j: jax.Array, words: int,
                with_keys: bool = True) -> tuple[jax.Array, jax.Array | None]:
    """The first ``words`` of ``jax.random.bits(fold_in(key, j), (m,), uint32)`` (JAX's default
    partitionable threefry: word i hashes the counter (0, i)) for typed keys [R] and indices
    j [R, T], computed on whole arrays: [R, T, words], with k = fold_in(key, j) as key data
    [R, T, 2] (None unless ``with_keys``; tests/test_data.py checks both against jax.random).
    On the CPU this ran 5x faster than vmapped ``jax.random`` calls, and the words no sample
    reads are not hashed.  ``kernels.cpu.sample_bits`` computes the same, 4x faster again."""
    kd = jax.random.key_data(keys).astype(jnp.uint32)[:, None, :]
    k0, k1 = threefry2x32(kd[..., 0], kd[..., 1], jnp.uint32(0), j.astype(jnp.uint32))
    out = [threefry2x32(k0, k1, jnp.uint32(0), jnp.uint32(i)) for i in range(words)]
    return jnp.stack([a ^ b for a, b in out], axis=-1), jnp.stack([k0, k1], axis=-1) if with_keys else None


Bits = Callable[[jax.Array, jax.Array, int, bool], tuple[jax.Array, jax.Array | None]]  # as sample_bits


def synthetic_rows(keys: jax.Array, j: jax.Array, cfg: DataConfig,
                   bits_of: Bits = sample_bits) -> tuple[jax.Array, jax.Array]:
    """Samples j[r, :] of datasets keys[r]; returns x [R, T, d] and y [R, T].  Sample j of a
    dataset: x ~ U(0,1)^d, y = x.w* + b* + noise, from the bits of k = fold_in(key, j) (one hash
    for the bits keeps compilation cheap; ``bits_of`` computes them, ``sample_bits`` or the
    CPU kernel); Student t noise draws from fold_in(k, 1), never from k itself."""
    d = cfg.n_features
    bits, k = bits_of(keys, j, d + (2 if cfg.noise == "contaminated" else 1), cfg.noise == "student_t")
    u = unit_floats(bits)
    x = u[..., :d]
    w = jnp.asarray(cfg.true_weights, jnp.float32)
    t_keys = (jax.vmap(jax.random.fold_in, (0, None))(jax.random.wrap_key_data(k.reshape(-1, 2)), 1).reshape(j.shape)
              if cfg.noise == "student_t" else None)
    return x, x @ w + cfg.true_bias + noise(u[..., d:], t_keys, cfg)


def subsample_order(key: jax.Array, n_pool: int) -> jax.Array:
    """Order in which a dataset draws pool rows: its first n entries are its size-n subsample."""
    return jax.random.permutation(key, n_pool)


# ---------------------------------------------------------------- shuffles
#
# An epoch visits a dataset's n samples in the order sigma(0), sigma(1), ... where sigma is a keyed
# pseudo-random bijection of [0, n): a Feistel network on the grid Z_a x Z_b (a b >= n, both sides
# near sqrt(n), ``grid_sides``) whose rounds add their hash modulo the side they write, with cycle
# walking: a position whose image lands in the excess [n, a b) takes the first image below n on
# its cycle.  Walks start only from the a b - n excess values (a handful: the sides are chosen to
# make it small), so they are tabulated once per epoch and dataset (``cycle_walks``) and a position
# costs one pass of the network and a few selects, with no loop, sort or data-dependent branch.
# The round keys come from threefry fold_in(shuffle key, epoch).

# With 4 or 6 rounds the gap between the first two samples of an epoch was visibly non-uniform on
# small grids such as 3 x 11 (n = 33); 8 pass the uniformity tests of tests/test_data.py.
FEISTEL_ROUNDS = 8
MAX_SIDE = 1 << 16  # a round scales a 16-bit hash to its side, so sides stay at most 2^16


class Domain(NamedTuple):
    """Per dataset its size n and grid sides a, b (uint32 arrays that broadcast together)."""

    n: jax.Array
    a: jax.Array
    b: jax.Array


def grid_sides(n: int) -> tuple[int, int]:
    """Sides (a, b = ceil(n / a)) of size n's grid: a from ceil(sqrt(n)) / 2 to ceil(sqrt(n)), at
    least 2 where n > 1 (so every round mixes) and at least n / 2^16 (so b fits a round), with
    the smallest excess a b - n, the largest such a.  The excess stays small (a few tens at most
    in tests/test_data.py, up to n = 2^31 - 1), and so does the table of walks."""
    hi = math.isqrt(n - 1) + 1 if n > 1 else 1  # ceil(sqrt(n))
    a = np.arange(max(-(-hi // 2), -(-n // MAX_SIDE), min(2, hi)), hi + 1, dtype=np.int64)
    excess = -(-n // a) * a - n
    best = int(a[np.flatnonzero(excess == excess.min())[-1]])
    return best, -(-n // best)


def domains(sizes: np.ndarray) -> Domain:
    """The Domain of each size (host numpy, uint32)."""
    sides = {int(n): grid_sides(int(n)) for n in np.unique(sizes)}
    a, b = (np.asarray([sides[int(n)][i] for n in sizes], np.uint32).reshape(np.shape(sizes)) for i in (0, 1))
    return Domain(np.asarray(sizes, np.uint32), a, b)


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer finalizer (lowbias32): every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def round_keys(key: jax.Array, epoch: jax.Array | int) -> jax.Array:
    """The Feistel round keys [FEISTEL_ROUNDS] uint32 of one dataset's epoch."""
    k = jax.random.key_data(jax.random.fold_in(key, epoch)).astype(jnp.uint32)
    r = jnp.arange(FEISTEL_ROUNDS, dtype=jnp.uint32)
    return _mix(k[0] ^ _mix(k[1] + r * jnp.uint32(0x9E3779B9)))


def split_position(p: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Grid coordinates (p // b, p % b) of values p (uint32)."""
    p = p.astype(jnp.uint32)
    return p // b, p % b


def _network(left: jax.Array, right: jax.Array, keys: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """The network on Z_a x Z_b: round r maps (L, R) to (R, (L + F_r(R)) mod m), m the side L
    lives on, so the sides swap each round and an even number of rounds restores them; F_r scales
    the top 16 bits of lowbias32(R xor key_r) to [0, m).  ``keys`` [..., rounds]."""
    m, m_next = a, b
    for r in range(FEISTEL_ROUNDS):
        h = _mix(right ^ keys[..., r]) >> 16
        s = left + ((h * m) >> 16)
        left, right, m, m_next = right, jnp.where(s >= m, s - m, s), m_next, m
    return left * b + right


def cycle_walks(keys: jax.Array, dom: Domain, width: int) -> jax.Array:
    """[..., width]: for each excess value v = n + k (k < a b - n) the first value below n on v's
    cycle, found by applying the network at most a b - n times (entries past the excess, and
    cycles of excess values only, which no position reaches, are left as they are)."""
    n, a, b = (v[..., None] for v in dom)
    v = n + jnp.arange(width, dtype=jnp.uint32)
    limit = a * b - n  # a walk from v meets each other excess value at most once
    k = keys[..., None, :]

    def walking(state: tuple[jax.Array, jax.Array]) -> jax.Array:
        v, steps = state
        return (v >= n) & (steps < limit)

    def step(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        v, steps = state
        return jnp.where(walking(state), _network(*split_position(v, b), k, a, b), v), steps + 1

    return jax.lax.while_loop(lambda s: jnp.any(walking(s)), step, (v, jnp.zeros_like(v)))[0]


def visit(left: jax.Array, right: jax.Array, keys: jax.Array, dom: Domain, walks: jax.Array) -> jax.Array:
    """Sample visited at positions with grid coordinates (left, right) (from ``split_position``):
    one pass of the network, then excess images replaced by their tabulated walks.  ``keys``
    [..., rounds] and ``walks`` [..., width] broadcast with the positions."""
    v = _network(left, right, keys, dom.a, dom.b)
    sample = v
    for k in range(walks.shape[-1]):
        sample = jnp.where(v == dom.n + jnp.uint32(k), walks[..., k], sample)
    return sample.astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def epoch_permutation(key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The order in which a size-n dataset's samples are visited in one epoch."""
    a, b = grid_sides(n)
    dom = Domain(*(jnp.uint32(v) for v in (n, a, b)))
    keys = round_keys(key, epoch)
    return visit(*split_position(jnp.arange(n, dtype=jnp.uint32), dom.b), keys, dom,
                 cycle_walks(keys, dom, a * b - n))
