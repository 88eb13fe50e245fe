"""l1jax: Monte Carlo studies of L1 (mean absolute error) regression training in JAX."""

__version__ = "0.1.0"

from l1jax.engine.config import Config, ConfigError, load_config  # noqa: E402
from l1jax.engine.results import Results  # noqa: E402
from l1jax.engine.sweep import run  # noqa: E402
from l1jax.analysis.optimum import lad  # noqa: E402

__all__ = ["Config", "ConfigError", "Results", "lad", "load_config", "run", "__version__"]
