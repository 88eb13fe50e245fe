"""The full-batch data pass as one Pallas kernel (GPU; interpret mode elsewhere): per tile of the
packed layout, the sums of |r| and of the L1 subgradient terms of every learning rate's run, from
one read of the tile's samples (``step.tile_sums`` computes the same sums with XLA, one
reduction per learning rate).  Each program reads ``tiles`` whole tiles, row by row coalesced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

DEFAULT_TILES = 1  # tiles per program (of 1024 slots or fewer): tuned on an H200 by scripts/gpu_probe.py
DEFAULT_WARPS = 4
SLOTS_PER_PROGRAM = 1024  # small tiles are grouped so a program reads at least this many slots


def _pass_kernel(*refs, n_features: int, n_lr: int, gradient: str) -> None:
    """One program: its tiles' sums for every learning rate (see module docstring)."""
    x_refs, (y_ref, count_ref, theta_ref, out_ref) = refs[:n_features], refs[n_features:]
    p = n_features + 1
    y = y_ref[...]
    x = [r[...] for r in x_refs]  # [tiles, T] each
    keep = jnp.arange(y.shape[1], dtype=jnp.int32)[None, :] < count_ref[...][:, None]
    for h in range(n_lr):
        w = [theta_ref[:, h * p + k] for k in range(p)]  # [tiles] each
        r = w[-1][:, None] - y
        for k in range(n_features):
            r = r + x[k] * w[k][:, None]
        s = jnp.where(r > 0, 1.0, jnp.where(r < 0, -1.0, 0.0)).astype(r.dtype) if gradient == "l1" else r
        s = jnp.where(keep, s, 0.0)
        out_ref[:, h * (p + 1)] = jnp.sum(jnp.where(keep, jnp.abs(r), 0.0), axis=1)
        for k in range(n_features):
            out_ref[:, h * (p + 1) + 1 + k] = jnp.sum(s * x[k], axis=1)
        out_ref[:, h * (p + 1) + p] = jnp.sum(s, axis=1)


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def tiles_per_program(n_tiles: int, tile: int, tiles: int) -> int:
    """The largest power of two that divides ``n_tiles``, at most ``tiles`` or enough tiles for
    ``SLOTS_PER_PROGRAM`` slots, whichever is more."""
    want = max(tiles, SLOTS_PER_PROGRAM // tile)
    g = 1
    while g * 2 <= want and n_tiles % (g * 2) == 0:
        g *= 2
    return g


def tile_sums(x: jax.Array, y: jax.Array, count: jax.Array, theta: jax.Array, gradient: str,
              tiles: int | None = None, warps: int | None = None,
              interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """``step.tile_sums`` as one kernel: x [d, R, T] (T a power of two), y [R, T], count [R],
    theta [R, H, p] -> |r| sums [R, H] and gradient sums [R, H, p]."""
    d, n_tiles, tile = x.shape
    n_lr, p = theta.shape[1], d + 1
    g = tiles_per_program(n_tiles, tile, tiles or DEFAULT_TILES)
    width_in, width_out = _pow2(n_lr * p), _pow2(n_lr * (p + 1))
    th = jnp.pad(theta.reshape(n_tiles, n_lr * p), ((0, 0), (0, width_in - n_lr * p)))
    row = lambda i: (i, 0)
    in_specs = ([pl.BlockSpec((None, g, tile), lambda i, k=k: (k, i, 0)) for k in range(d)]
                + [pl.BlockSpec((g, tile), row), pl.BlockSpec((g,), lambda i: (i,)),
                   pl.BlockSpec((g, width_in), row)])
    kernel = functools.partial(_pass_kernel, n_features=d, n_lr=n_lr, gradient=gradient)
    params = None if interpret else plgpu.CompilerParams(num_warps=warps or DEFAULT_WARPS, num_stages=1)
    out = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((n_tiles, width_out), x.dtype),
                         grid=(n_tiles // g,), in_specs=in_specs, out_specs=pl.BlockSpec((g, width_out), row),
                         interpret=interpret, compiler_params=params, name="l1jax_full_batch_pass")(
        *([x] * d), y, count, th)
    out = out[:, :n_lr * (p + 1)].reshape(n_tiles, n_lr, p + 1)
    return out[..., 0], out[..., 1:]
