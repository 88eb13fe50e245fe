"""Closed-form theory of the study: the Bayes L1 floor and the exact L1 fit's expected test loss.

Noise families (as drawn by ``l1jax.data.noise``), all symmetric about 0 so their median is 0:
gaussian s*N(0,1); laplace s*Laplace(0,1); student_t s*t(df); contaminated N(0, s^2) with
probability 1 - outlier_fraction and N(0, (C*s)^2) otherwise, C = ``CONTAMINATION_SCALE``.
"""

from __future__ import annotations

import math

import numpy as np

from l1jax.engine.config import DataConfig
from l1jax.engine.data import CONTAMINATION_SCALE

_HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)  # E|Z| for Z ~ N(0, 1)
_NORMAL_PDF0 = 1.0 / math.sqrt(2.0 * math.pi)  # N(0, 1) density at 0


def _t_pdf0(df: float) -> float:
    """Density of the standard Student t(df) at 0."""
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)


def _t_abs_mean(df: float) -> float:
    """E|T| of the standard Student t(df): 2 df f(0) / (df - 1), infinite for df <= 1."""
    return 2.0 * df * _t_pdf0(df) / (df - 1.0) if df > 1.0 else math.inf


def _mixture(cfg: DataConfig, narrow: float, wide: float) -> float:
    """Outlier-fraction mixture of a statistic of N(0, s^2) and of N(0, (C s)^2)."""
    return (1.0 - cfg.outlier_fraction) * narrow + cfg.outlier_fraction * wide


def bayes_l1_floor(cfg: DataConfig) -> float:
    """E|noise|: the least expected test L1 of any predictor, attained by the true function,
    because the noise median is 0."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return s * _HALF_NORMAL_MEAN
    if cfg.noise == "laplace":
        return s
    if cfg.noise == "student_t":
        return s * _t_abs_mean(cfg.noise_df)
    if cfg.noise == "contaminated":
        return _mixture(cfg, s * _HALF_NORMAL_MEAN, CONTAMINATION_SCALE * s * _HALF_NORMAL_MEAN)
    raise ValueError(f"unknown noise family {cfg.noise!r}")


def noise_density_at_zero(cfg: DataConfig) -> float:
    """f(0), the noise density at its median: it sets the L1 fit's precision."""
    s = cfg.noise_scale
    if cfg.noise == "gaussian":
        return _NORMAL_PDF0 / s
    if cfg.noise == "laplace":
        return 0.5 / s
    if cfg.noise == "student_t":
        return _t_pdf0(cfg.noise_df) / s
    if cfg.noise == "contaminated":
        return _mixture(cfg, _NORMAL_PDF0 / s, _NORMAL_PDF0 / (CONTAMINATION_SCALE * s))
    raise ValueError(f"unknown noise family {cfg.noise!r}")


def expected_test_l1(cfg: DataConfig, n: float | np.ndarray) -> float | np.ndarray:
    """Large-n expected held-out L1 of the exact L1 fit on n samples: floor + p / (4 f(0) n).

    A prediction error a costs E|eps - a| - E|eps| = 2 int_0^|a| (F(t) - 1/2) dt ~ f(0) a^2, and
    the LAD fit is asymptotically N(theta*, Sigma^-1 / (4 f(0)^2 n)) with Sigma = E[(x,1)(x,1)^T],
    so E[a^2] = tr(Sigma Sigma^-1) / (4 f(0)^2 n) = p / (4 f(0)^2 n), p = n_features + 1.
    """
    p = cfg.n_features + 1
    return bayes_l1_floor(cfg) + p / (4.0 * noise_density_at_zero(cfg) * np.asarray(n, float))


def expected_train_l1(cfg: DataConfig, n: float | np.ndarray) -> float | np.ndarray:
    """Large-n expected minimal training L1 E L*_n of n samples: floor - p / (4 f(0) n).

    The fit uses its own noise: expanding the training L1 around theta*, its score at theta* is
    the mean of n terms sign(eps)(x, 1) with covariance Sigma / n, and its curvature 2 f(0) Sigma,
    so the minimum lies below L_n(theta*) (mean E|eps|) by half the score's squared Mahalanobis
    norm, E = tr(Sigma^-1 Sigma / n) / (4 f(0)) = p / (4 f(0) n): small sets fit below the floor.
    """
    p = cfg.n_features + 1
    return bayes_l1_floor(cfg) - p / (4.0 * noise_density_at_zero(cfg) * np.asarray(n, float))
