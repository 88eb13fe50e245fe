"""Optimizers and learning-rate schedules, with every float hyperparameter a traced value.

``make_optimizer`` is called inside the vmapped run function, so the initial learning rate
and a run's total step count are tracers: a learning-rate sweep compiles once.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

EXPONENTIAL_FINAL = 0.01  # "exponential" decays to this fraction of the initial rate

# Factories of the learning rate alone: the other hyperparameters stay Python constants, so only
# the learning rate is injected as a traced value.
_FACTORIES: dict[str, Callable[[jax.Array], optax.GradientTransformation]] = {
    "sgd": lambda learning_rate: optax.sgd(learning_rate),
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "nesterov": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9, nesterov=True),
    "adam": lambda learning_rate: optax.adam(learning_rate),
    "adamw": lambda learning_rate: optax.adamw(learning_rate, weight_decay=1e-4),
    "adagrad": lambda learning_rate: optax.adagrad(learning_rate),
    "rmsprop": lambda learning_rate: optax.rmsprop(learning_rate),
}


def learning_rate(schedule: str, lr0: jax.Array, step: jax.Array, total: jax.Array) -> jax.Array:
    """Learning rate at optimizer step ``step`` of ``total`` (0-based)."""
    t = jnp.asarray(step, jnp.float32)
    frac = jnp.minimum(t / jnp.maximum(total, 1), 1.0)
    if schedule == "constant":
        return lr0 * jnp.ones_like(t)
    if schedule == "cosine":
        return lr0 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    if schedule == "inverse_sqrt":
        return lr0 / jnp.sqrt(1.0 + t)
    if schedule == "exponential":
        return lr0 * EXPONENTIAL_FINAL ** frac
    raise ValueError(f"unknown schedule {schedule!r}")


def make_optimizer(name: str, schedule: str, lr0: jax.Array,
                   total_steps: jax.Array) -> optax.GradientTransformation:
    """An optax transformation whose learning rate follows ``schedule`` from ``lr0``."""
    return optax.inject_hyperparams(_FACTORIES[name])(
        learning_rate=lambda count: learning_rate(schedule, lr0, count, total_steps))
