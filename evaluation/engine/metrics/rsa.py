"""Representational similarity analysis: how alike two RDMs are.

The comparison methods follow rsatoolbox.rdm.compare so that values can be set beside
published RSA results:

- ``pearson``: Pearson r of the dissimilarities (rsatoolbox "corr").
- ``spearman``: Pearson r of tie-averaged ranks, i.e. scipy.stats.spearmanr (rsatoolbox
  "spearman"). It rewards a model for predicting ties, so prefer the next two when an
  RDM has many (a categorical model RDM, human ratings on a coarse scale).
- ``rho_a``: 12 sum(r_a r_b) / (n^3 - n) over centred tie-averaged ranks, the expected
  Spearman rho under random tie-breaking (rsatoolbox "rho-a"; Nili et al. 2014).
- ``kendall_tau_a``: (concordant - discordant) / (n (n - 1) / 2), no tie correction in the
  denominator (rsatoolbox "tau-a"). Discordant pairs are counted by a vectorised merge
  count, O(n log^2 n), so RDMs of a few thousand stimuli take well under a second.

Pearson and Spearman are undefined when either RDM is constant and raise MetricError; rho-a
and tau-a are then 0 (no pair is ordered), as rsatoolbox returns.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import rankdata

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.similarity import RdmKind, rdm
from evaluation.engine.metrics.validation import (
    condensed_stimuli,
    embedding_matrix,
    finite_values,
)

RsaMethod = Literal["pearson", "spearman", "kendall_tau_a", "rho_a"]
RSA_METHODS: tuple[str, ...] = ("pearson", "spearman", "kendall_tau_a", "rho_a")
MIN_ENTRIES = 3


def _as_rdm_vector(values: np.ndarray, name: str) -> np.ndarray:
    vector = np.asarray(values)
    if vector.ndim != 1:
        raise MetricError(
            f"{name} must be a condensed RDM (1-D, pdist order); got shape {vector.shape}. "
            "Use upper_triangle() on a square matrix."
        )
    if len(vector) < MIN_ENTRIES:
        raise MetricError(
            f"{name} has {len(vector)} dissimilarities; comparing RDMs needs at least "
            f"{MIN_ENTRIES} (an RDM of 3 stimuli)."
        )
    condensed_stimuli(len(vector), name=name)
    return finite_values(vector, name=name)


def _pearson(a: np.ndarray, b: np.ndarray, what: str) -> float:
    for label, vector in (("first", a), ("second", b)):
        if vector.max() == vector.min():
            raise MetricError(
                f"The {label} RDM is constant, so its {what} with another RDM is undefined. "
                "Use rho_a or kendall_tau_a, which score a constant RDM as 0."
            )
    a = a - a.mean()
    b = b - b.mean()
    cosine = (a @ b) / np.sqrt((a @ a) * (b @ b))
    return float(np.clip(cosine, -1.0, 1.0))


def _rho_a(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = rankdata(a)
    ranks_b = rankdata(b)
    n = len(a)
    centred_a = ranks_a - ranks_a.mean()
    centred_b = ranks_b - ranks_b.mean()
    return float(12.0 * (centred_a @ centred_b) / (n**3 - n))


def _tied_pairs(sorted_codes: np.ndarray) -> int:
    """Pairs sharing a value, given the values' integer codes in sorted order."""
    boundaries = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    counts = np.diff(boundaries).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def strict_inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j], for non-negative integer ``values``.

    Bottom-up merge sort where numpy does the merging: at each level a stable argsort of
    (block, value) keys merges the sorted halves of every block (timsort finds the two
    runs, so a level costs little more than a pass). An element of a right half that
    lands ``m`` places further left than it started has jumped exactly the ``m`` larger
    elements of its left half; summing those jumps counts the inversions across halves.
    """
    current = np.asarray(values, dtype=np.int64)
    n = len(current)
    if n < 2:
        return 0
    span = int(current.max()) + 1
    index = np.arange(n, dtype=np.int64)
    total = 0
    width = 1
    while width < n:
        keys = (index // (2 * width)) * span + current
        order = np.argsort(keys, kind="stable")
        from_right = (order // width) % 2 == 1
        total += int((order - index)[from_right].sum())
        current = current[order]
        width *= 2
    return total


def _kendall_tau_a(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    _, codes_a = np.unique(a, return_inverse=True)
    _, codes_b = np.unique(b, return_inverse=True)
    joint = codes_a.astype(np.int64) * (int(codes_b.max()) + 1) + codes_b
    order = np.argsort(joint)
    sorted_joint = joint[order]
    # Sorted by (a, b), a pair i < j is discordant exactly when b_i > b_j: pairs tied in
    # a are in increasing b order, so they never count.
    discordant = strict_inversions(codes_b[order])
    ties_a = _tied_pairs(codes_a[order])
    ties_b = _tied_pairs(np.sort(codes_b))
    ties_both = _tied_pairs(sorted_joint)
    total = n * (n - 1) // 2
    concordant_minus_discordant = total - ties_a - ties_b + ties_both - 2 * discordant
    return max(-1.0, min(1.0, concordant_minus_discordant / total))


def rsa(rdm_a: np.ndarray, rdm_b: np.ndarray, *, method: RsaMethod = "spearman") -> float:
    """Similarity of two condensed RDMs over the same stimulus pairs (see module notes)."""
    if method not in RSA_METHODS:
        raise MetricError(f"Unknown RSA method {method!r}; choose one of {', '.join(RSA_METHODS)}.")
    a = _as_rdm_vector(rdm_a, "rdm_a")
    b = _as_rdm_vector(rdm_b, "rdm_b")
    if len(a) != len(b):
        raise MetricError(
            f"The RDMs cover different numbers of pairs ({len(a)} and {len(b)}); "
            "they must describe the same stimuli in the same order."
        )
    return correlate(a, b, method)


def correlate(a: np.ndarray, b: np.ndarray, method: RsaMethod = "spearman") -> float:
    """``method``'s correlation of two finite vectors of equal length, at least
    ``MIN_ENTRIES``, not checked to be an RDM's triangle: what ``rsa`` computes once it has
    checked its RDMs, for callers comparing other pair lists (the compare page's judged
    pairs) who check their own input."""
    if method == "pearson":
        return _pearson(a, b, "Pearson correlation")
    if method == "spearman":
        return _pearson(rankdata(a), rankdata(b), "Spearman correlation")
    if method == "rho_a":
        return _rho_a(a, b)
    if method == "kendall_tau_a":
        return _kendall_tau_a(a, b)
    raise MetricError(f"Unknown RSA method {method!r}; choose one of {', '.join(RSA_METHODS)}.")


def rsa_between(
    x: np.ndarray,
    y: np.ndarray,
    *,
    rdm_kind: RdmKind = "correlation",
    method: RsaMethod = "spearman",
) -> float:
    """RSA between two representations (rows = the same stimuli, in the same order)."""
    x = embedding_matrix(x, name="x", min_rows=3)
    y = embedding_matrix(y, name="y", min_rows=3)
    if len(x) != len(y):
        raise MetricError(
            f"The representations cover {len(x)} and {len(y)} stimuli; RSA needs the same "
            "stimuli in the same order."
        )
    return rsa(rdm(x, kind=rdm_kind), rdm(y, kind=rdm_kind), method=method)
