"""Datasets: PRNG key streams, synthetic samples, csv subsamples and the packed tile layout.

Randomness comes only from a run's coordinates: the key of sample ``j`` of replicate ``rep``
at size ``n`` is ``fold_in(fold_in(fold_in(fold_in(key(base), rep), n), TRAIN), j)``
(``nested`` coupling drops the size), so a sample never depends on which runs share a call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

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
    """One draw of the configured noise family from two uniforms u (0, 1) (inverse CDFs; the
    Student t draws from ``key``)."""
    s = cfg.noise_scale
    v = 2.0 * u[0] - 1.0
    if cfg.noise == "laplace":
        return -s * jnp.sign(v) * jnp.log1p(-jnp.abs(v))
    if cfg.noise == "student_t":
        return s * jax.random.t(key, cfg.noise_df)
    z = jnp.sqrt(2.0) * jax.scipy.special.erfinv(v)
    if cfg.noise == "gaussian":
        return s * z
    return jnp.where(u[1] < cfg.outlier_fraction, CONTAMINATION_SCALE * s, s) * z


def synthetic_sample(key: jax.Array, j: jax.Array, cfg: DataConfig) -> tuple[jax.Array, jax.Array]:
    """Sample j of a dataset: x ~ U(0,1)^d, y = x.w* + b* + noise, from one key k = fold_in(key, j)
    (one hash for the bits keeps compilation cheap); Student t noise draws from fold_in(k, 1),
    never from k itself."""
    k = jax.random.fold_in(key, j)
    u = unit_floats(jax.random.bits(k, (cfg.n_features + 2,), jnp.uint32))
    x = u[:cfg.n_features]
    w = jnp.asarray(cfg.true_weights, jnp.float32)
    return x, x @ w + cfg.true_bias + noise(u[cfg.n_features:], jax.random.fold_in(k, 1), cfg)


def synthetic_rows(keys: jax.Array, j: jax.Array, cfg: DataConfig) -> tuple[jax.Array, jax.Array]:
    """Samples j[r, :] of datasets keys[r]; returns x [R, T, d] and y [R, T]."""
    per_row = jax.vmap(synthetic_sample, (None, 0, None))
    return jax.vmap(per_row, (0, 0, None))(keys, j, cfg)


def subsample_order(key: jax.Array, n_pool: int) -> jax.Array:
    """Order in which a dataset draws pool rows: its first n entries are its size-n subsample."""
    return jax.random.permutation(key, n_pool)


# ---------------------------------------------------------------- shuffles
#
# An epoch visits a dataset's samples in the order sigma(0), sigma(1), ... where sigma is a keyed
# pseudo-random bijection of [0, n): a Feistel network on [0, 2^k) (2^k >= n, halves of
# floor(k/2) and ceil(k/2) bits that swap widths each round) with cycle walking, which needs
# fewer than 2 tries per position on average since 2^k < 2n.  Position p's sample is computed
# on its own in O(1), with no sort and no shuffled copy of the data; the round keys come from
# threefry fold_in(shuffle key, epoch).

FEISTEL_ROUNDS = 6


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


def _split_bits(n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Widths (a, b) of the two halves, a + b = k the fewest bits with 2^k >= n (k >= 2)."""
    m = jnp.maximum(n, 2).astype(jnp.uint32) - jnp.uint32(1)  # integer bit count: a float32 log2
    k = jnp.maximum(jnp.uint32(32) - jax.lax.clz(m), jnp.uint32(2))  # was one bit short above 2^24
    return k // 2, k - k // 2


def _feistel(i: jax.Array, keys: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """One pass of the network over i < 2^(a + b): left a bits, right b bits; each round maps
    (L, R) to (R, L ^ F(R)), so the widths swap, and an even number of rounds restores them."""
    one = jnp.uint32(1)
    left, right, wl, wr = i >> b, i & ((one << b) - 1), a, b
    for r in range(FEISTEL_ROUNDS):
        left, right, wl, wr = right, left ^ (_mix(right ^ keys[r]) & ((one << wl) - 1)), wr, wl
    return (left << wr) | right


def visit_order(keys: jax.Array, n: jax.Array, p: jax.Array) -> jax.Array:
    """Sample visited at positions p (any shape, each < n) of an epoch with round ``keys``."""
    a, b = _split_bits(n)
    nn = n.astype(jnp.uint32)
    walk = lambda v: jnp.where(v >= nn, _feistel(v, keys, a, b), v)
    out = jax.lax.while_loop(lambda v: jnp.any(v >= nn), walk, _feistel(p.astype(jnp.uint32), keys, a, b))
    return out.astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def epoch_permutation(key: jax.Array, epoch: int | jax.Array, n: int) -> jax.Array:
    """The order in which a size-n dataset's samples are visited in one epoch."""
    return visit_order(round_keys(key, epoch), jnp.int32(n), jnp.arange(n, dtype=jnp.int32))
