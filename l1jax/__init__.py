"""l1jax: Monte Carlo studies of L1 (mean absolute error) regression training in JAX."""

__version__ = "0.1.0"
