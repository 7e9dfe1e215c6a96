"""Confidence intervals."""

from __future__ import annotations

import math

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
