"""The persistent compilation cache: where it lives, how it is switched off, that it fills."""

import jax
import pytest

from l1jax.engine.cache import cache_dir, enable_compilation_cache
from l1jax.engine.sweep import run
from tests.helpers import small_config


def test_cache_dir_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("L1JAX_COMPILATION_CACHE", "0")
    assert cache_dir() is None
    monkeypatch.setenv("L1JAX_COMPILATION_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("L1JAX_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "l1jax" / "xla"


@pytest.fixture
def restore_cache_config():
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_a_run_fills_the_cache(tmp_path, restore_cache_config):
    enable_compilation_cache(tmp_path / "xla")
    # a tiny program compiles in about the 0.5 s threshold once the compiler is warm: keep all
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    run(small_config(train={"epochs": 2}, sweep={"sizes": [10], "seeds": 1}))
    assert any((tmp_path / "xla").iterdir())
