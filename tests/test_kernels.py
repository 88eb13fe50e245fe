"""The fused CPU kernels (engine/kernels) against the XLA path and the float64 NumPy reference.

Bounds: both paths round every sum in float32 but in another order (the kernels vectorize and
fuse multiply-adds), so a sum of m terms may differ by about m ulp of its largest term.  Over
these short runs that stayed below 2e-6 relative; ``REL`` allows 2e-5 (a wrong order, mask or
update is off by orders of magnitude more).  Against the float64 reference, ``TOL`` as in
tests/test_engine.py.
"""

import itertools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l1jax.engine import data as D
from l1jax.engine.config import config_from_dict
from l1jax.engine.kernels import _Child, cpu_unavailable, fused_path, prepare_cpu
from l1jax.engine.kernels import cpu as K
from l1jax.engine.kernels.wide import ATTRIBUTES, wide_vectors
from l1jax.engine.sweep import run
from tests.helpers import reference_for, small_config

REL = 2e-5
TOL = 1e-4
FIELDS = ("train_l1", "test_l1", "param_error")


def both_paths(**sections):
    """Results of one config on the fused path and on the forced XLA path."""
    train = sections.pop("train", {})
    return tuple(run(small_config(train={**train, "kernels": k}, **sections)) for k in ("fused", "xla"))


def assert_close(fused, xla, rel=REL):
    for name in FIELDS + ("theta",):
        a, b = getattr(fused, name), getattr(xla, name)
        scale = float(np.abs(b[np.isfinite(b)]).max(initial=1.0))
        np.testing.assert_allclose(a, b, rtol=rel, atol=rel * scale, err_msg=name)
    np.testing.assert_array_equal(fused.diverged_epoch, xla.diverged_epoch)


def test_the_kernels_run_here():
    assert cpu_unavailable() is None


def test_dispatch_names_the_kernel_of_each_group():
    assert fused_path("cpu", "sgd", "constant", False, "fused") == "cpu_sgd_epoch"
    assert fused_path("cpu", "adam", "cosine", True, "fused") == "cpu_full_batch"
    assert fused_path("cpu", "sgd", "cosine", True, "fused") == "cpu_full_batch"
    assert fused_path("cpu", "sgd", "constant", True, "fused") == "cpu_full_sgd_epochs"
    assert fused_path("gpu", "adam", "constant", True, "fused") == "pallas_full_batch"
    assert fused_path("gpu", "sgd", "cosine", False, "fused") == "pallas_sgd_epoch"
    for args in (("cpu", "adam", "constant", False, "fused"), ("cpu", "sgd", "cosine", False, "fused"),
                 ("gpu", "adam", "constant", False, "fused"), ("gpu", "sgd", "constant", True, "xla"),
                 ("cpu", "sgd", "constant", True, "xla")):
        assert fused_path(*args) is None, args


@pytest.mark.parametrize("n", [1, 2, 3, 5, 33, 100, 1000, 4099, 65537, 300007])
def test_kernel_order_is_the_feistel_permutation(n):
    """The kernel's own round keys, cycle walks and passes over the grid (CHUNK positions at a
    time, round by round; 300007 has rows longer than a chunk) visit exactly
    ``data.epoch_permutation``'s order."""
    a, b = D.grid_sides(n)
    assert n < 300000 or b > K.CHUNK
    for epoch in (0, 3, 2**31 - 1):
        key = jax.random.fold_in(jax.random.key(11), n)
        keys = np.empty(8, np.uint32)
        kd = np.asarray(jax.random.key_data(key), np.uint32)
        K.round_keys(kd[0], kd[1], epoch, keys)
        np.testing.assert_array_equal(keys, np.asarray(D.round_keys(key, epoch)))
        dom = D.Domain(*(jnp.uint32(v) for v in (n, a, b)))
        walks = np.full(max(a * b - n, 1), 7, np.uint32)
        K.cycle_walks(keys, n, a, b, walks)
        np.testing.assert_array_equal(walks[:a * b - n],
                                      np.asarray(D.cycle_walks(jnp.asarray(keys), dom, a * b - n)))
        expected = np.asarray(D.epoch_permutation(key, epoch, n))
        order, first_round = np.full(n + 3, -1, np.int32), np.full(b + 3, 5, np.uint32)
        K.epoch_order(order, first_round, np.empty((2, K.CHUNK), np.uint32), n, a, b, keys, walks)
        np.testing.assert_array_equal(order[:n], expected)
        assert (order[n:] == -1).all() and (first_round[b:] == 5).all()


@pytest.mark.parametrize("noise", ["gaussian", "student_t", "contaminated"])
def test_kernel_sample_bits_and_rows_are_xla_s_to_the_bit(noise):
    """The kernel's bits (and folded keys) are ``data.sample_bits``'s, so the data a fused
    program trains on is the XLA path's own, every value equal."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(3))
    j = jnp.asarray([[0, 1, 7, 2**31 - 1, 40]] * 3, jnp.int32) + jnp.arange(3, dtype=jnp.int32)[:, None]
    for words in (1, 4):
        want, want_k = D.sample_bits(keys, j, words)
        got, got_k = jax.jit(K.sample_bits, static_argnums=(2, 3))(keys, j, words, True)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_k, want_k)
        assert jax.jit(K.sample_bits, static_argnums=(2, 3))(keys, j, words, False)[1] is None
    cfg = small_config(data={"noise": noise}).data
    rows = jax.jit(lambda k, i, f: D.synthetic_rows(k, i, cfg, f), static_argnums=2)
    for a, b in zip(rows(keys, j, K.sample_bits), rows(keys, j, D.sample_bits)):
        np.testing.assert_array_equal(a, b)


def test_minibatch_sgd_epoch_matches_xla_and_reference():
    """Ragged last batches (37 and 200 in batches of 16), several learning rates, a test set."""
    fused, xla = both_paths(train={"learning_rate": [0.05, 0.5], "batch_size": [16], "epochs": 6,
                                   "record_every": 3})
    assert_close(fused, xla)
    # a grid of several chunks' positions, batches that straddle chunks and rows
    assert_close(*both_paths(train={"learning_rate": [0.05], "batch_size": [50], "epochs": 3},
                             sweep={"sizes": [1500], "seeds": 2}, data={"test_size": 0}))
    cfg = small_config(train={"learning_rate": [0.05, 0.5], "batch_size": [16], "epochs": 6, "record_every": 3})
    for (l, lr), (s, n) in zip(enumerate(cfg.train.learning_rate), enumerate(cfg.sweep.sizes)):
        ref = reference_for(cfg, "sgd", 16, lr, n, 1)
        np.testing.assert_allclose(fused.train_l1[0, 0, l, s, 1], ref.train_l1[[0, 3, 6]], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(fused.theta[0, 0, l, s, 1], ref.theta, rtol=TOL, atol=TOL)


def test_full_batch_sgd_epochs_match_xla_and_reference():
    """Whole full-batch epochs of plain SGD in one call per record block (datasets of one tile
    and of several, several learning rates, records every 2 epochs and a shorter last block)."""
    sections = dict(train={"learning_rate": [0.05, 0.5], "batch_size": ["full"], "epochs": 7, "record_every": 2},
                    sweep={"sizes": [37, 1500], "seeds": 2})
    fused, xla = both_paths(**sections)
    assert_close(fused, xla)
    cfg = small_config(**sections)
    for (l, lr), (s, n) in itertools.product(enumerate(cfg.train.learning_rate), enumerate(cfg.sweep.sizes)):
        ref = reference_for(cfg, "sgd", "full", lr, n, 1)
        np.testing.assert_allclose(fused.train_l1[0, 0, l, s, 1], ref.train_l1[[0, 2, 4, 6, 7]], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(fused.theta[0, 0, l, s, 1], ref.theta, rtol=TOL, atol=TOL)


def test_any_feature_count_seed_mode_and_optax_updates_around_the_full_batch_pass():
    """Three features (the kernels' general loops), the article's gradient, full batch with sgd
    and adam (optax updates from the fused sums) and minibatch sgd (fused epoch), adam
    minibatch on the XLA path."""
    fused, xla = both_paths(data={"n_features": 3, "true_weights": [1.0, -2.0, 0.5]},
                            train={"gradient": "seed", "optimizer": ["sgd", "adam"], "learning_rate": [0.01],
                                   "batch_size": ["full", 7], "epochs": 5}, sweep={"sizes": [37, 1100], "seeds": 2})
    assert_close(fused, xla)


def test_diverging_runs_diverge_at_the_same_epoch_on_both_paths():
    fused, xla = both_paths(train={"gradient": "seed", "learning_rate": [0.01, 1e6], "batch_size": ["full", 8],
                                   "epochs": 8}, data={"test_size": 0})
    div = fused.diverged_epoch
    assert (div[..., 1, :, :] > 0).all() and (div[..., 0, :, :] == -1).all()
    np.testing.assert_array_equal(div, xla.diverged_epoch)
    calm = lambda r: r.train_l1[..., 0, :, :, :]
    np.testing.assert_allclose(calm(fused), calm(xla), rtol=REL)


def test_l1_runs_at_lr_1e6_stay_finite_and_match_the_reference():
    """The L1 subgradient bounds each step, so lr 1e6 runs stay finite: huge parameters, where
    one sign decides each step (its loss is compared against the reference)."""
    cfg = small_config(train={"learning_rate": [1e6], "batch_size": [16], "epochs": 3}, data={"test_size": 0})
    res = run(cfg)
    assert (res.diverged_epoch == -1).all()
    ref = reference_for(cfg, "sgd", 16, 1e6, 37, 0)
    np.testing.assert_allclose(res.train_l1[0, 0, 0, 0, 0], ref.train_l1, rtol=1e-3)


def test_csv_data_on_both_paths():
    """The diabetes table: ten features, a held-out share, minibatch and full batch."""
    path = Path(__file__).resolve().parent.parent / "l1jax" / "study" / "data" / "diabetes.csv"
    runs = []
    for k in ("fused", "xla"):
        runs.append(run(config_from_dict({
            "data": {"source": "csv", "path": str(path), "target": "progression", "standardize": True},
            "train": {"epochs": 4, "learning_rate": [0.01, 0.1], "batch_size": ["full", 16], "kernels": k},
            "sweep": {"sizes": [20, 80], "seeds": 2}})))
    assert_close(*runs)


def test_a_run_is_bit_identical_whatever_the_other_seeds_and_learning_rates():
    """Blocks, devices and neighbours change; a run's numbers do not (same sizes: same tiles)."""
    for batch in ("full", 16):
        alone = run(small_config(train={"learning_rate": [0.05], "batch_size": [batch], "epochs": 5},
                                 sweep={"seeds": 1}))
        big = run(small_config(train={"learning_rate": [0.01, 0.05, 0.2], "batch_size": [batch], "epochs": 5},
                               sweep={"seeds": 5}))
        for name in FIELDS + ("theta",):
            np.testing.assert_array_equal(getattr(big, name)[0, 0, 1, :, :1], getattr(alone, name)[0, 0, 0],
                                          err_msg=f"{name} batch={batch}")


def test_a_frame_the_handler_does_not_expect_is_an_error_not_a_number():
    x = jnp.zeros((3, 4), jnp.float32)
    call = jax.ffi.ffi_call(K.target(K.SGD_EPOCHS), jax.ShapeDtypeStruct((1, 1, 3), jnp.float32), vmap_method="sequential")
    with pytest.raises(Exception, match="call frame differs"):
        jax.block_until_ready(jax.jit(call)(x))


def test_kernels_compile_from_a_fresh_location_into_numba_s_disk_cache(tmp_path):
    """A copy of the package at a new path compiles its handlers once into the cache directory
    (numba writes beside the package, or to its user-wide cache where the package is read-only):
    ``prepare_cpu`` leaves the first target to this process and gives the rest to its child, whose
    result this process then loads; a second process finds both in the cache and starts no child."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(["cp", "-r", str(root / "l1jax"), str(tmp_path / "l1jax")], check=True)
    script = ("import l1jax.engine.kernels as K; from l1jax.engine.kernels import cpu, cpu_ffi; "
              "from l1jax.engine.kernels.probe import layout_error; assert layout_error() is None; "
              "names = [K.FULL_BATCH + '_2', K.SAMPLE_BITS]; K.prepare_cpu(names); child = sorted(K._Child.pending); "
              "[cpu.target(n) for n in names]; "
              "print(cpu_ffi.probe.cache_hits, child, [cpu._COMPILED[n].cache_hits for n in names], sep=';')")
    env = {"PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
           "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.strip().splitlines()[-1] for _ in range(2)]
    assert runs == ["0;['l1jax_cpu_sample_bits'];[0, 1]", "1;[];[1, 1]"]
    assert any((tmp_path / "cache").rglob("*.nbi"))


def test_an_untested_jax_is_refused_in_one_line(monkeypatch):
    from l1jax.engine.kernels import probe
    monkeypatch.setattr(probe, "_jax_version", lambda: (0, 99))
    why = probe.layout_error()
    assert why is not None and "not among the versions" in why and "\n" not in why


def test_a_sweep_names_exactly_the_kernels_its_groups_call():
    """``kernel_targets`` lists what ``prepare_cpu`` compiles ahead: bits for synthetic data, the
    data sums of every fused group, the epochs of plain-SGD minibatch groups, per feature count;
    the full-batch epochs of plain-SGD full-batch groups, nothing for groups on the XLA path."""
    from l1jax.engine.sweep import kernel_targets
    sgd = small_config(train={"batch_size": ["full", 16]})
    assert kernel_targets(sgd) == [K.SAMPLE_BITS, K.FULL_BATCH + "_2", K.FULL_SGD + "_2", K.SAMPLE_BITS,
                                   K.FULL_BATCH + "_2", K.SGD_EPOCHS + "_2"]
    wide = small_config(data={"n_features": 3, "true_weights": [1.0, 2.0, 3.0]}, train={"batch_size": [16]})
    assert kernel_targets(wide) == [K.SAMPLE_BITS, K.FULL_BATCH, K.SGD_EPOCHS]
    assert kernel_targets(small_config(train={"batch_size": [16], "optimizer": ["adam"]})) == []
    assert kernel_targets(small_config(train={"kernels": "xla"})) == []


def test_a_sweep_gives_the_same_numbers_with_its_kernels_compiled_ahead():
    """``prepare_cpu`` hands its child only handlers this process has not loaded (the child
    compiles into Numba's cache while the sweep traces; a target asked for meanwhile waits for
    it), and the numbers are the same as without."""
    cfg = small_config(train={"batch_size": [16], "epochs": 3})
    first = run(cfg)
    prepare_cpu(list(K._HANDLERS))
    assert not _Child.pending & set(K._COMPILED)
    again = run(cfg)
    for name in FIELDS + ("theta",):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    for name in K._HANDLERS:
        assert K.target(name) == name and name in K._COMPILED


def _mix_all(v, out):
    for i in range(v.shape[0]):
        out[i] = K._mix(v[i])


def _mix_all_wide(v, out):
    wide_vectors()
    for i in range(v.shape[0]):
        out[i] = K._mix(v[i])


def test_wide_vectors_mark_only_their_function_and_change_no_integer():
    from llvmlite import binding
    from numba import njit

    narrow, wide = njit(_mix_all), njit(_mix_all_wide)
    v = np.random.default_rng(0).integers(0, 2 ** 32, 4099, dtype=np.uint32)
    a, b = np.empty_like(v), np.empty_like(v)
    narrow(v, a)
    wide(v, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.asarray(D._mix(jnp.asarray(v))))
    ir = wide.inspect_llvm(wide.signatures[0]).splitlines()
    groups = dict(line.split(" = ", 1) for line in ir if line.startswith("attributes #"))
    marked = [line for line in ir if line.startswith("define") and "#" in line
              and all(x in groups.get("attributes " + line.split()[-2], "") for x in ATTRIBUTES + ("noinline",))]
    assert len(marked) == 1, "the wide function's definition must carry the attributes"
    assert not any(x in narrow.inspect_llvm(narrow.signatures[0]) for x in ATTRIBUTES)
    if "+avx512f" in binding.get_host_cpu_features().flatten():  # then LLVM must use 512-bit vectors
        assert "zmm" in wide.inspect_asm(wide.signatures[0])
