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
- ``tie_groups``: models in score order, grouped from the top (``TIE_GROUPS_RULE``).
- ``pairwise_table``: ``paired_difference`` for every pair, Holm over all of them.
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
    monotone in that order and capped at 1; reject where the adjusted value is < alpha.
    NaN (a comparison that could not be made) is left out of the family and stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m:
        order = tested[np.argsort(p[tested], kind="stable")]
        stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
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
    defined = np.isfinite(d)  # d is NaN where either is undefined
    n = defined.sum(axis=1)
    observed = value - np.asarray(other_values, dtype=np.float64)
    filled = np.where(defined, d, 0.0)
    mean = filled.sum(axis=1) / np.maximum(n, 1)
    squares = (np.where(defined, d - mean[:, None], 0.0) ** 2).sum(axis=1)
    spread = np.sqrt(squares / np.maximum(n - 1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(observed) / spread
    z[(spread == 0) & (observed == 0)] = 0.0
    p = 2 * norm.sf(z)
    p[n < MIN_PAIRED_RESAMPLES] = np.nan
    return p


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
    """``paired_difference`` of every pair of models ((models, resamples) samples); a pair
    with too few shared resamples stays NaN and out of the Holm family."""
    m = len(values)
    diff = np.full((m, m), np.nan)
    low, high, p = diff.copy(), diff.copy(), diff.copy()
    for i in range(m):
        for j in range(i + 1, m):
            try:
                pair = paired_difference(samples[i], samples[j], values[i], values[j])
            except MetricError:
                continue
            diff[i, j], diff[j, i] = pair.difference, -pair.difference
            low[i, j], high[i, j] = pair.ci_low, pair.ci_high
            low[j, i], high[j, i] = -pair.ci_high, -pair.ci_low
            p[i, j] = p[j, i] = pair.p_value
    upper = np.triu_indices(m, k=1)
    adjusted = np.full((m, m), np.nan)
    adjusted[upper] = holm(p[upper])
    adjusted.T[upper] = adjusted[upper]
    return PairwiseTable(diff, low, high, p, adjusted)


TIE_GROUPS_RULE = (
    "group 1 is the first model and the models after it up to the first one that the "
    "paired test separates from it (Holm over its comparisons with every model below it); "
    "that model starts group 2, tested the same way, and so on"
)


def tie_groups(samples: np.ndarray, values: np.ndarray, *, limit: int | None = None) -> list[int]:
    """Group numbers (1, 2, ...) for models in score order ((models, resamples) samples), by
    TIE_GROUPS_RULE: for the first model, the Holm family is exactly the "not separable
    from the leader" one. Only the first ``limit`` models get a number, but every group's
    first model is tested against all the models below it."""
    m = len(values)
    limit = m if limit is None else min(limit, m)
    groups: list[int] = []
    head, group = 0, 1
    while head < limit:
        below = np.arange(head + 1, m)
        adjusted = holm(
            p_values_against(samples[head], values[head], samples[below], values[below])
        )
        separated = np.flatnonzero(adjusted < ALPHA)
        end = int(below[separated[0]]) if len(separated) else m
        groups += [group] * (min(end, limit) - head)
        head, group = end, group + 1
    return groups
