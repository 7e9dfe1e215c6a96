"""Paired comparisons of models scored on the same bootstrap resamples.

Two scores on the same target computed on the same resamples (the same stimuli drawn, see
``MetricResult.resampling``) pair up resample by resample: the difference of their values in
each resample is a bootstrap sample of the difference of the two scores. Its percentile
interval and two-sided bootstrap p-value test the difference directly; overlap of the two
marginal intervals is a conservative and often wrong test of it, since the two scores share
their stimuli and so their sampling error.

- ``paired_difference``: the difference a - b with its 95% percentile interval and
  p = min(1, 2 min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1)) over the B resamples where
  both are defined (the +1 keeps a finite bootstrap from claiming p = 0). The interval
  excludes 0 when p < 0.05, up to the resolution of B resamples.
- ``holm``: Holm's step-down adjustment (Holm 1979) of a family of p-values, so a set of
  comparisons shown together keeps its family-wise error rate at 5%.
- ``rank_intervals``: each model's rank in every resample (1 = best, ties share the lowest
  rank), and the 2.5th and 97.5th percentiles of those ranks.
- ``tie_groups``: models in score order, grouped so that no test within a group separates
  two of its members (a model starts a new group when a test separates it from any member
  of the current one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

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
        p_value=float(p_values_against(a, b[None, :])[0]),
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


def p_values_against(samples: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-values of the difference between ``samples`` (one model's
    resamples) and each row of ``others`` (NaN where fewer than MIN_PAIRED_RESAMPLES
    resamples define both)."""
    d = np.asarray(samples, dtype=np.float64)[None, :] - np.asarray(others, dtype=np.float64)
    defined = np.isfinite(d)  # NaN where either is undefined
    n = defined.sum(axis=1)
    at_most = ((d <= 0) & defined).sum(axis=1) + 1
    at_least = ((d >= 0) & defined).sum(axis=1) + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2 * np.minimum(at_most, at_least) / (n + 1))
    p[n < MIN_PAIRED_RESAMPLES] = np.nan
    return p


def pairwise_p_values(samples: np.ndarray) -> np.ndarray:
    """(m, m) symmetric matrix of ``p_values_against`` for every pair (NaN on the diagonal)."""
    m = len(samples)
    p = np.full((m, m), np.nan)
    for i in range(m - 1):
        p[i, i + 1 :] = p[i + 1 :, i] = p_values_against(samples[i], samples[i + 1 :])
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
    p = pairwise_p_values(samples)
    return PairwiseTable(diff, low, high, p, holm_matrix(p))


def tie_groups(adjusted: np.ndarray) -> list[int]:
    """Group numbers (1, 2, ...) for models in score order, from Holm-adjusted pairwise
    p-values (see the module docstring). A pair without a p-value is not separated."""
    groups: list[int] = []
    members: list[int] = []
    for k in range(len(adjusted)):
        separated = any(adjusted[k, other] < ALPHA for other in members)
        if members and not separated:
            members.append(k)
            groups.append(groups[-1])
        else:
            members = [k]
            groups.append((groups[-1] if groups else 0) + 1)
    return groups
