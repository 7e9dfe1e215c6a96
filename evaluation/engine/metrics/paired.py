"""Paired comparisons of models scored on the same bootstrap resamples.

Two scores on the same target computed on the same resamples (the same stimuli drawn, see
``MetricResult.resampling``) pair up resample by resample: the difference of their values in
each resample is a bootstrap sample of the difference of the two scores. Its percentile
interval and two-sided bootstrap p-value test the difference directly; overlap of the two
marginal intervals is a conservative and often wrong test of it, since the two scores share
their stimuli and so their sampling error.

- ``paired_difference``: the difference a - b with the 95% percentile interval of its
  paired resamples, and a two-sided p-value from their standard deviation (the bootstrap
  standard error): p = 2 (1 - Phi(|a - b| / se)). The percentile p-value, the share of
  resamples on the far side of 0, cannot go below 2 / (B + 1) = 0.002 with 1000 resamples:
  too coarse for Holm over many comparisons (190 pairs of 20 models need p < 0.00026).
- ``holm``: Holm's step-down adjustment (Holm 1979) of a family of p-values, so a set of
  comparisons shown together keeps its family-wise error rate at 5%.
- ``rank_intervals``: each model's rank in every resample (1 = best, ties share the lowest
  rank), and the 2.5th and 97.5th percentiles of those ranks.
- ``tie_groups``: models in score order, grouped from the top: a group's first model and
  the models after it that the paired test does not separate from it (Holm over its
  comparisons with every model below it); the first model it separates starts the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from evaluation.engine.errors import MetricError

ALPHA = 0.05
MIN_PAIRED_RESAMPLES = 10


@dataclass(frozen=True)
class PairedDifference:
    difference: float  # value a - value b
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap p-value, unadjusted
    resamples: int  # resamples where both are defined


def paired_difference(
    samples_a: np.ndarray, samples_b: np.ndarray, value_a: float, value_b: float
) -> PairedDifference:
    """The difference of two scores on the same resamples (see the module docstring)."""
    a, b = np.asarray(samples_a, dtype=np.float64), np.asarray(samples_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MetricError(
            f"Paired resamples must be two equal-length vectors; got {a.shape} and {b.shape}."
        )
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if len(d) < MIN_PAIRED_RESAMPLES:
        raise MetricError(
            f"Only {len(d)} resamples define both scores; a paired comparison needs "
            f"{MIN_PAIRED_RESAMPLES}."
        )
    low, high = np.quantile(d, [ALPHA / 2, 1 - ALPHA / 2])
    return PairedDifference(
        difference=float(value_a - value_b),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(p_values_against(a, value_a, b[None, :], np.array([value_b]))[0]),
        resamples=len(d),
    )


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values: the k-th smallest of m is multiplied by (m - k + 1), made
    monotone in that order and capped at 1; reject where the adjusted value is < alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def ranks_per_resample(samples: np.ndarray, *, higher_is_better: bool = True) -> np.ndarray:
    """(models, resamples) values -> ranks, 1 = best; ties share the best of their ranks.
    Resamples where any model's value is undefined are left out (a rank needs them all)."""
    values = np.asarray(samples, dtype=np.float64)
    values = values[:, np.isfinite(values).all(axis=0)]
    signed = -values if higher_is_better else values
    return rankdata(signed, method="min", axis=0).astype(np.int64)


def rank_intervals(
    samples: np.ndarray, *, higher_is_better: bool = True
) -> list[tuple[int, int]] | None:
    """Each model's 95% rank interval over the resamples (None where fewer than
    MIN_PAIRED_RESAMPLES resamples define every model)."""
    ranks = ranks_per_resample(samples, higher_is_better=higher_is_better)
    if ranks.shape[1] < MIN_PAIRED_RESAMPLES:
        return None
    low = np.quantile(ranks, ALPHA / 2, axis=1, method="inverted_cdf")
    high = np.quantile(ranks, 1 - ALPHA / 2, axis=1, method="inverted_cdf")
    return [(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True)]


def p_values_against(
    samples: np.ndarray, value: float, others: np.ndarray, other_values: np.ndarray
) -> np.ndarray:
    """Two-sided p-values of the difference between one model (its resamples ``samples``
    and its score ``value``) and each row of ``others`` (resamples) with ``other_values``:
    the observed difference over the standard deviation of its paired resamples, against
    the normal distribution (NaN where fewer than MIN_PAIRED_RESAMPLES resamples define
    both). A difference that no resample varies is p = 1 when it is 0, else p = 0."""
    d = np.asarray(samples, dtype=np.float64)[None, :] - np.asarray(others, dtype=np.float64)
    n = np.isfinite(d).sum(axis=1)  # d is NaN where either is undefined
    observed = value - np.asarray(other_values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.nanstd(d, axis=1, ddof=1)
        z = np.abs(observed) / spread
    z[(spread == 0) & (observed == 0)] = 0.0
    p = 2 * norm.sf(z)
    p[n < MIN_PAIRED_RESAMPLES] = np.nan
    return p


def pairwise_p_values(samples: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(m, m) symmetric matrix of ``p_values_against`` for every pair (NaN on the diagonal)."""
    m = len(samples)
    p = np.full((m, m), np.nan)
    for i in range(m - 1):
        p[i, i + 1 :] = p[i + 1 :, i] = p_values_against(
            samples[i], values[i], samples[i + 1 :], values[i + 1 :]
        )
    return p


def holm_matrix(p_values: np.ndarray) -> np.ndarray:
    """Holm over the family of all pairs (i < j) of a symmetric p-value matrix; pairs
    without a p-value are left out of the family and stay NaN."""
    m = len(p_values)
    upper = np.triu_indices(m, k=1)
    raw = p_values[upper]
    tested = np.isfinite(raw)
    adjusted_upper = np.full(len(raw), np.nan)
    adjusted_upper[tested] = holm(raw[tested])
    adjusted = np.full((m, m), np.nan)
    adjusted[upper] = adjusted_upper
    adjusted.T[upper] = adjusted_upper
    return adjusted


@dataclass(frozen=True)
class PairwiseTable:
    """Every pair of models in the order given: the difference row - column, its interval,
    raw and Holm-adjusted p-values (the family: all pairs shown)."""

    differences: np.ndarray  # (m, m), antisymmetric; NaN on the diagonal
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_values: np.ndarray  # symmetric, raw
    adjusted: np.ndarray  # symmetric, Holm over the m (m - 1) / 2 pairs


def pairwise_table(samples: np.ndarray, values: np.ndarray) -> PairwiseTable:
    """Paired differences of every pair of models ((models, resamples) samples)."""
    m = len(values)
    diff = np.full((m, m), np.nan)
    low, high = diff.copy(), diff.copy()
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            defined = np.isfinite(samples[i]) & np.isfinite(samples[j])
            if defined.sum() < MIN_PAIRED_RESAMPLES:
                continue
            d = samples[i][defined] - samples[j][defined]
            diff[i, j] = values[i] - values[j]
            low[i, j], high[i, j] = np.quantile(d, [ALPHA / 2, 1 - ALPHA / 2])
    p = pairwise_p_values(samples, values)
    return PairwiseTable(diff, low, high, p, holm_matrix(p))


def tie_groups(samples: np.ndarray, values: np.ndarray) -> list[int]:
    """Group numbers (1, 2, ...) for models in score order ((models, resamples) samples):
    the first model heads group 1, which runs on until the first model that the paired test
    separates from the head (Holm over the head's comparisons with every model below it:
    for the leader, exactly the "not separable from the leader" family); that model heads
    the next group, tested likewise against the models below it; and so on. A comparison
    without a p-value (too few shared resamples) does not separate."""
    m = len(values)
    groups = [0] * m
    head, group = 0, 1
    while head < m:
        below = np.arange(head + 1, m)
        raw = p_values_against(samples[head], values[head], samples[below], values[below])
        adjusted = np.full(len(raw), np.nan)
        tested = np.isfinite(raw)
        adjusted[tested] = holm(raw[tested])
        separated = np.flatnonzero(adjusted < ALPHA)
        end = int(below[separated[0]]) if len(separated) else m
        groups[head:end] = [group] * (end - head)
        head, group = end, group + 1
    return groups
