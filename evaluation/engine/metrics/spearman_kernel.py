"""The compiled kernel of the exact Spearman stimulus bootstrap (see ``human._spearman_bootstrap``).

A module of its own so that numba, and LLVM behind it, load only in the processes that
score (``human`` imports it when it first needs it), not in every web process.
"""

from __future__ import annotations

import numba
import numpy as np


# Single-threaded on purpose: it meets issue 20's figure alone, and a Celery prefork worker
# then runs it with no threading layer to set up or to share. nogil lets a caller's other
# threads run meanwhile.
@numba.njit(cache=True, nogil=True)
def spearman_resamples(
    counts: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    ends_group: np.ndarray,
    group: np.ndarray,
    n_groups: int,
) -> np.ndarray:
    """Weighted Spearman under each row of stimulus draw ``counts`` of pairs (first[k],
    second[k]), sorted by one variable a (ends_group[k]: pair k is the last of its tie group
    in a), with group[k] the pair's tie group in the other variable b.

    Per resample, one pass over the pairs sums the weight of each b group; a second sums,
    group by group of a, the weight and the w * rank_b of its pairs. A group holding weight
    g after weight ``before`` has average rank before + (g + 1) / 2, and the mean rank is
    (W + 1) / 2 (W: all weight), so its centred rank, doubled, is the integer
    2 * before + g - W: exact, and the sums of squares subtract nothing that could cancel.
    One flat loop with a branch at each group's end is faster than a loop per group when
    most groups hold one pair (continuous values).
    """
    results = np.empty(counts.shape[0])
    weight_b = np.empty(n_groups, dtype=np.int64)
    rank_b = np.empty(n_groups)
    for r in range(counts.shape[0]):
        c = counts[r]
        weight_b[:] = 0
        for k in range(len(first)):
            weight_b[group[k]] += pair_weight(c, first[k], second[k])
        total = weight_b.sum()
        sbb = 0.0
        before = np.int64(0)
        for g in range(n_groups):
            rank_b[g] = 2 * before + weight_b[g] - total
            sbb += weight_b[g] * rank_b[g] * rank_b[g]
            before += weight_b[g]
        saa = 0.0
        sab = 0.0
        before = np.int64(0)
        weight = np.int64(0)
        inner = 0.0  # sum of w * rank_b over the pairs of the current a group so far
        for k in range(len(first)):
            w = pair_weight(c, first[k], second[k])
            weight += w
            inner += w * rank_b[group[k]]
            if ends_group[k]:
                rank_a = float(2 * before + weight - total)
                saa += weight * rank_a * rank_a
                sab += rank_a * inner
                before += weight
                weight = np.int64(0)
                inner = 0.0
        # No weight, or all of it in one tie group of a or of b: the correlation is 0 / 0.
        results[r] = np.nan if saa == 0.0 or sbb == 0.0 else sab / np.sqrt(saa * sbb)
    return results


@numba.njit(cache=True, inline="always")
def pair_weight(c: np.ndarray, first: int, second: int) -> np.int64:
    """``pair_weights`` for one pair: c_i * c_j, or c_i for a stimulus with itself."""
    w = np.int64(c[first])
    return w if first == second else w * c[second]
