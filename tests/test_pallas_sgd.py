"""The fused plain-SGD minibatch epoch (``kernels.pallas_sgd``) against the XLA path, the float64
NumPy reference and optax, in Pallas' interpreter here (CI has no GPU) and compiled on a GPU.

Bound: both paths take the same steps on the same samples in the same order; only the batch sums
are rounded in another order, each within (B - 1) u sum|terms| (u = 2^-24), which over a few
epochs of these runs stays below 1e-5.  A wrong order, mask, count or update is off by far more.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l1jax.engine.config import config_from_dict
from l1jax.engine.plan import plan
from l1jax.engine.sweep import group_inputs
from l1jax.engine.table import load_csv
from l1jax.engine.train import StepRule, advance_states, make_train
from l1jax.engine.step import init_states, update_all
from tests.helpers import reference_for, small_config

INTERPRET = jax.default_backend() != "gpu"  # compiled on a GPU, interpreted elsewhere
TOL = 2e-5


def _both(cfg, inputs=None, table=None):
    (g,) = plan(cfg)
    inp = inputs if inputs is not None else group_inputs(cfg, g, table)
    p = (table.x_train.shape[1] if table is not None else cfg.data.n_features) + 1
    return [jax.jit(make_train(cfg, g, p - 1, fused=f, interpret=INTERPRET))(inp) for f in ("", "pallas_sgd_epoch")]


CASES = {
    # ragged last batches, sizes below and above the batch, two learning rates, a cosine schedule
    # (its rate depends on optax's step count)
    "l1": dict(train={"learning_rate": [0.05, 0.5], "batch_size": [16], "epochs": 6,
                      "schedule": "cosine"}, sweep={"sizes": [5, 37, 200], "seeds": 3}),
    # the article's gradient, a batch that is no power of two, and runs that diverge (lr 1e6: the
    # L1 subgradient is bounded, so only this gradient overflows)
    "seed": dict(train={"gradient": "seed", "learning_rate": [0.01, 1e6], "batch_size": [7], "epochs": 4},
                 sweep={"sizes": [37, 64], "seeds": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_epoch_matches_the_xla_path(case):
    cfg = small_config(**CASES[case])
    xla, fused = _both(cfg)
    finite = np.isfinite(xla.theta)
    np.testing.assert_array_equal(finite, np.isfinite(fused.theta))
    np.testing.assert_allclose(fused.theta[finite], xla.theta[finite], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(fused.train_l1, xla.train_l1, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(fused.diverged_epoch, xla.diverged_epoch)
    if case == "seed":
        assert (fused.diverged_epoch[:, 1] > 0).all() and (fused.diverged_epoch[:, 0] == -1).all()


def test_fused_epoch_matches_the_float64_reference():
    cfg = small_config(**CASES["l1"])
    _, fused = _both(cfg)
    (g,) = plan(cfg)
    for s, n in enumerate(cfg.sweep.sizes):
        for h, lr in enumerate(cfg.train.learning_rate):
            ref = reference_for(cfg, "sgd", 16, lr, n, 1)
            np.testing.assert_allclose(fused.theta[s * cfg.sweep.seeds + 1, h], ref.theta, rtol=1e-4,
                                       atol=1e-4, err_msg=f"n={n} lr={lr}")


def test_fused_epoch_on_csv_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = x @ [1.0, -2.0, 0.5] + rng.laplace(size=120)
    path = tmp_path / "t.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,target", comments="")
    cfg = config_from_dict({"data": {"source": "csv", "path": str(path), "target": "target",
                                     "test_fraction": 0.25},
                            "train": {"batch_size": [8], "epochs": 3, "learning_rate": [0.1]},
                            "sweep": {"sizes": [10, 90], "seeds": 2}})
    table = load_csv(cfg.data, cfg.sweep.base_seed)
    xla, fused = _both(cfg, table=table)
    np.testing.assert_allclose(fused.theta, xla.theta, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(fused.test_l1, xla.test_l1, rtol=TOL, atol=TOL)


def test_a_fused_run_does_not_depend_on_the_other_runs_in_its_call():
    alone = small_config(train={"learning_rate": [0.05], "batch_size": [16]}, sweep={"sizes": [100], "seeds": 1})
    big = small_config(train={"learning_rate": [0.01, 0.05, 0.2], "batch_size": [16]},
                       sweep={"sizes": [30, 100, 1000], "seeds": 2})
    a, b = (jax.jit(make_train(c, plan(c)[0], 2, fused="pallas_sgd_epoch", interpret=INTERPRET))(group_inputs(c, plan(c)[0], None))
            for c in (alone, big))
    np.testing.assert_array_equal(b.theta[2, 1], a.theta[0, 0])  # dataset (n = 100, rep 0), lr 0.05
    # the recorded loss is summed by XLA over tiles whose width depends on the sweep's sizes
    np.testing.assert_allclose(b.train_l1[:, 2, 1], a.train_l1[:, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_advance_states_equals_optax_step_by_step(schedule):
    theta = jnp.zeros((3, 2, 3))
    lr, total = jnp.asarray([0.1, 0.2]), jnp.asarray([40.0, 40.0, 40.0])
    rule = StepRule("sgd", schedule, "l1", False, lr, total)
    state = init_states("sgd", schedule, theta, lr, total)
    steps = jnp.asarray([1, 4, 7], jnp.int32)
    want = state
    for k in range(7):
        new = update_all("sgd", schedule, jnp.ones_like(theta), want, theta, lr, total)[1]
        want = jax.tree.map(lambda a, b: jnp.where((k < steps).reshape(-1, *([1] * (a.ndim - 1))), b, a),
                            want, new)
    got = advance_states(rule, state, theta, steps)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_the_kernel_lowers_to_triton_for_gpus():
    """The compiled kernel's lowering (Pallas to Triton IR) runs on any host, so CI catches a
    kernel that a GPU could not compile; the GPU run itself is scripts/gpu_bench.sh's."""
    cfg = small_config(train={"batch_size": [16], "epochs": 2}, sweep={"sizes": [37], "seeds": 1})
    (g,) = plan(cfg)
    fn = jax.jit(make_train(cfg, g, 2, fused="pallas_sgd_epoch"))
    check = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = jax.export.export(fn, platforms=["cuda"], disabled_checks=[check])(group_inputs(cfg, g, None))
    assert "xla.gpu.triton" in exported.mlir_module()
