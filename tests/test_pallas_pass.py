"""The full-batch data pass as one Pallas kernel (``kernels.pallas_pass``) against XLA's tile sums
(``step.tile_sums``) and in whole training runs, in Pallas' interpreter here and compiled on a GPU.

Bound: each sum adds the same terms in another order, within (T - 1) u sum|terms| (u = 2^-24).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l1jax.engine import step
from l1jax.engine.kernels import pallas_pass
from l1jax.engine.plan import plan
from l1jax.engine.sweep import group_inputs
from l1jax.engine.train import make_train
from tests.helpers import small_config

INTERPRET = jax.default_backend() != "gpu"  # compiled on a GPU, interpreted elsewhere


@pytest.mark.parametrize("gradient", ["l1", "seed"])
def test_pass_kernel_sums_equal_xlas(gradient):
    rng = np.random.default_rng(1)
    tiles, tile, d, h = 6, 16, 3, 3
    x = jnp.asarray(rng.uniform(size=(d, tiles, tile)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(tiles, tile)), jnp.float32)
    count = jnp.asarray([16, 16, 5, 0, 1, 16], jnp.int32)  # full, ragged, empty tiles
    theta = jnp.asarray(rng.normal(size=(tiles, h, d + 1)), jnp.float32)
    want = step.tile_sums(x, y, count, theta, gradient)
    got = pallas_pass.tile_sums(x, y, count, theta, gradient, interpret=INTERPRET)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(got[0][3]).max()) == 0.0  # the empty tile sums nothing


def test_tiles_per_program_divides_and_fills():
    assert pallas_pass.tiles_per_program(12, 1024, 1) == 1
    assert pallas_pass.tiles_per_program(12, 32, 1) == 4  # 1024 slots would take 32; 4 divides 12
    assert pallas_pass.tiles_per_program(64, 64, 2) == 16


def test_training_with_the_pass_kernel_matches_xla():
    cfg = small_config(train={"optimizer": ["adam"], "learning_rate": [0.05, 0.5], "epochs": 8},
                       sweep={"sizes": [37, 200], "seeds": 2})
    (g,) = plan(cfg)
    inp = group_inputs(cfg, g, None)
    xla, kern = (jax.jit(make_train(cfg, g, 2, fused=f, interpret=INTERPRET))(inp) for f in ("", "pallas_full_batch"))
    np.testing.assert_allclose(kern.train_l1, xla.train_l1, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(kern.theta, xla.theta, rtol=2e-5, atol=2e-5)


def test_the_pass_kernel_lowers_to_triton_for_gpus():
    """The compiled kernel's lowering runs on any host (see test_pallas_sgd.py)."""
    cfg = small_config(train={"learning_rate": [0.1, 0.2], "epochs": 2}, sweep={"sizes": [37], "seeds": 1})
    (g,) = plan(cfg)
    fn = jax.jit(make_train(cfg, g, 2, fused="pallas_full_batch"))
    check = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = jax.export.export(fn, platforms=["cuda"], disabled_checks=[check])(group_inputs(cfg, g, None))
    assert "l1jax_full_batch_pass" in exported.mlir_module()
