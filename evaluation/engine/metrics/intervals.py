"""Confidence intervals."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm


def wilson_interval(
    successes: int, trials: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a proportion (well behaved near 0 and 1, unlike Wald)."""
    if trials <= 0:
        raise ValueError("A proportion needs at least one trial.")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: np.ndarray, *, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of independent values (e.g. few-shot episodes)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise ValueError("A t interval needs at least two values.")
    mean = float(values.mean())
    half = float(
        t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    )
    return mean - half, mean + half


def bootstrap_means(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The mean of per-item values in each bootstrap resample of the items; the same seed and
    number of items draw the same resamples, so two models' means pair up resample by resample."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)


def bootstrap_mean_interval(
    values: np.ndarray, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-item values (items resampled)."""
    return quantile_interval(
        bootstrap_means(values, n_resamples=n_resamples, seed=seed), confidence
    )


def quantile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)
