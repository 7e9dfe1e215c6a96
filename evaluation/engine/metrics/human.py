"""Alignment of model similarity with human judgments, with bootstrap CIs and ceilings.

Three kinds of judgment:

- **pairs**: ratings of how similar two stimuli are. Rows for the same unordered pair are
  separate judgments and are averaged per pair; a stimulus paired with itself is a catch
  trial, not data, and is left out. The score is the Pearson or Spearman correlation between
  model similarity and the mean human rating per pair. Spearman is scale-free; Pearson is
  invariant to linear rescaling of the ratings only.
- **triplets** (odd-one-out): the model picks as odd the item outside its most similar pair;
  the score is the share of human responses it agrees with (ties share the credit).
- **2AFC**: a reference and two candidates; the model picks the candidate more similar to
  the reference; the score is the mean human vote share of the model's pick (0.5 on a tie).

Confidence intervals bootstrap over *stimuli*, as rsatoolbox's ``eval_bootstrap_pattern``:
each resample draws stimuli with replacement and keeps every judgment whose stimuli were all
drawn, counted as many times as the product of their draw counts (a stimulus drawn twice
makes two copies of each of its pairs; the pair of a stimulus with its own copy is dropped).
Spearman correlations are re-ranked exactly within every resample, ties averaged, without
sorting anything per resample: the pairs are sorted once by each variable, so a tie group's
average rank is the cumulative multiplicity of the groups below it plus (its own + 1) / 2.
A compiled (numba) kernel makes two passes over the pairs per resample, one summing the
multiplicities per tie group, one summing the products of the ranks.

Ceilings: split-half reliability with the Spearman-Brown correction for ratings (mean over
random splits); leave-one-out majority agreement for choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.knn import normalize_rows
from evaluation.engine.metrics.results import MetricResult, stimulus_resampling
from evaluation.engine.metrics.validation import (
    IndexLike,
    ValueLike,
    at_least,
    embedding_matrix,
    finite_values,
    one_of,
    proportions,
    same_lengths,
    stimulus_indices,
)

BOOTSTRAP_CHUNK_CELLS = 20_000_000  # resamples x judgments held in memory at once
CORRELATIONS = ("pearson", "spearman")
MIN_RELIABILITY_PAIRS = 10
MIN_RELIABILITY_COVERAGE = 0.5  # share of pairs that must have two or more judgments
MIN_BOOT = 10  # percentile_interval needs at least this many defined resamples


# --- Similarity of the model ----------------------------------------------------------------
def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Finite float64 embeddings scaled to unit length (zero rows stay zero)."""
    return normalize_rows(embedding_matrix(embeddings, name="embeddings"))


def model_pair_similarity(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows i[k] and j[k] (float64)."""
    unit = unit_rows(embeddings)
    same_lengths(i=i, j=j)
    i = stimulus_indices(i, name="i", n_stimuli=len(unit))
    j = stimulus_indices(j, name="j", n_stimuli=len(unit))
    return pair_cosines(unit, i, j)


def pair_cosines(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of unit rows i[k] and j[k], a self-pair's being exactly 1 (0 for an all-zero
    row). Reads them off the Gram matrix where that is the smaller work (many pairs of few
    stimuli: all 499,500 pairs of 1,000 stimuli take 0.06 s so, 26 s row by row)."""
    n, dims = unit.shape
    if n * n < len(i) * dims:
        cosines = (unit @ unit.T)[i, j]
    else:
        cosines = np.einsum("ij,ij->i", unit[i], unit[j])
    # A stimulus's cosine with itself is 1 by definition; computed, it comes out 1 give or
    # take a rounding error that would order self-pairs at random in a rank correlation.
    same = i == j
    cosines[same] = np.abs(unit[i[same]]).sum(axis=1) > 0  # 0 for an all-zero embedding
    return cosines


# --- Pairs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRatings:
    """Human ratings of pairs of stimuli (indices into the embeddings), one entry per unit of
    analysis: an unordered pair with its mean rating (``aggregate_pairs``), or a row as
    published (``row_pairs``). A pair of a stimulus with itself (i == j) is kept: in imported
    data it is a judgment (STS sets have them) and the model's similarity of a stimulus with
    itself is scored like any other; studies never aggregate their catch trials into data."""

    i: np.ndarray
    j: np.ndarray
    mean: np.ndarray
    count: np.ndarray  # judgments behind each entry
    unit: str = "pair"  # "pair": mean per unordered pair; "row": each row as published

    @property
    def self_pairs(self) -> int:
        return int((self.i == self.j).sum())


UNITS = ("pair", "row")
UNIT_DESCRIPTIONS = {
    "pair": "mean rating per unordered pair",
    "row": "each row as published (repeated pairs count once per row)",
}


def _pair_rows(
    a: IndexLike, b: IndexLike, values: ValueLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One judgment per row: stimulus indices a and b and a finite rating."""
    same_lengths(a=a, b=b, values=values)
    return (
        stimulus_indices(a, name="a"),
        stimulus_indices(b, name="b"),
        finite_values(values, name="values (ratings)"),
    )


def aggregate_pairs(a: IndexLike, b: IndexLike, values: ValueLike) -> PairRatings:
    """The mean rating of each unordered pair (repeated rows averaged)."""
    a_arr, b_arr, v = _pair_rows(a, b, values)
    lo, hi = np.minimum(a_arr, b_arr), np.maximum(a_arr, b_arr)
    keys, inverse = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    count = np.bincount(inverse, minlength=len(keys))
    mean = np.bincount(inverse, weights=v, minlength=len(keys)) / count
    return PairRatings(keys[:, 0], keys[:, 1], mean, count, unit="pair")


def row_pairs(a: IndexLike, b: IndexLike, values: ValueLike) -> PairRatings:
    """Every row its own unit of analysis, as benchmarks that score each published row do
    (MTEB's STS): a pair listed twice counts twice, with each of its ratings."""
    a_arr, b_arr, v = _pair_rows(a, b, values)
    lo, hi = np.minimum(a_arr, b_arr), np.maximum(a_arr, b_arr)
    return PairRatings(lo, hi, v, np.ones(len(v), dtype=np.int64), unit="row")


def pairs_by_unit(a: IndexLike, b: IndexLike, values: ValueLike, *, unit: str) -> PairRatings:
    one_of(unit, UNITS, name="unit")
    return aggregate_pairs(a, b, values) if unit == "pair" else row_pairs(a, b, values)


def checked_pairs(pairs: PairRatings, n_stimuli: int) -> PairRatings:
    """``pairs`` with indices into ``n_stimuli`` embeddings and finite ratings."""
    same_lengths(**{"pairs.i": pairs.i, "pairs.j": pairs.j, "pairs.mean": pairs.mean})
    i = stimulus_indices(pairs.i, name="pairs.i", n_stimuli=n_stimuli)
    j = stimulus_indices(pairs.j, name="pairs.j", n_stimuli=n_stimuli)
    ratings = "mean ratings" if pairs.unit == "pair" else "ratings"
    mean = finite_values(pairs.mean, name=f"pairs.mean ({ratings})")
    return PairRatings(i, j, mean, pairs.count, pairs.unit)


def pair_alignment(
    embeddings: np.ndarray,
    pairs: PairRatings,
    *,
    correlation: str = "spearman",
    n_boot: int = 1000,
    seed: int = 0,
    ceiling: float | None = None,
) -> MetricResult:
    one_of(correlation, CORRELATIONS, name="correlation")
    at_least(n_boot, MIN_BOOT, name="n_boot")
    unit = unit_rows(embeddings)
    pairs = checked_pairs(pairs, len(unit))
    if len(pairs.mean) < 3:
        what = "distinct pairs" if pairs.unit == "pair" else "rows"
        raise MetricError(f"Only {len(pairs.mean)} {what}: a correlation needs at least 3.")
    model = pair_cosines(unit, pairs.i, pairs.j)
    value = weighted_correlation(model, pairs.mean, np.ones_like(model), correlation)
    if not np.isfinite(value):
        raise MetricError("The correlation is undefined: model or human similarities are constant.")
    samples = bootstrap_pair_correlations(
        pairs.i,
        pairs.j,
        model,
        pairs.mean,
        correlation=correlation,
        n_boot=n_boot,
        seed=seed,
        n_stimuli=len(embeddings),
    )
    low, high = percentile_interval(samples)
    return MetricResult(
        value=float(value),
        ci_low=low,
        ci_high=high,
        n=len(np.union1d(pairs.i, pairs.j)),
        ceiling=ceiling,
        details={
            "correlation": correlation,
            "similarity": "cosine",
            "pairs": len(pairs.mean),
            "judgments": int(pairs.count.sum()),
            "self_pairs": pairs.self_pairs,
            "unit": pairs.unit,
            "aggregation": UNIT_DESCRIPTIONS[pairs.unit],
            "ci_method": "bootstrap over stimuli, 95% percentile",
            "n_boot": n_boot,
            "bootstrap_valid": int(np.isfinite(samples).sum()),
        },
        resamples=samples,
        resampling=stimulus_resampling(len(embeddings), n_boot, seed),
    )


def weighted_correlation(x: np.ndarray, y: np.ndarray, w: np.ndarray, method: str) -> float:
    """Correlation of the multiset in which item k appears w[k] times."""
    if method == "spearman":
        x, y = weighted_ranks(x, w), weighted_ranks(y, w)
    return float(_weighted_pearson(x[None, :], y[None, :], w[None, :])[0])


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of items repeated ``weights`` times; ties share their ranks."""
    return _weighted_ranks_rows(values, weights[None, :])[0]


def bootstrap_pair_correlations(
    i: np.ndarray,
    j: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    correlation: str,
    n_boot: int,
    seed: int,
    n_stimuli: int,
) -> np.ndarray:
    """Correlation in each stimulus-bootstrap resample (NaN where it is undefined)."""
    counts = _resample_counts(n_stimuli, n_boot, seed)
    if correlation == "spearman":
        return _spearman_bootstrap(i, j, x, y, counts)
    if _dense_is_cheaper(len(x), n_stimuli):
        return _pearson_bootstrap_dense(i, j, x, y, counts)
    results = np.empty(n_boot)
    chunk = max(1, BOOTSTRAP_CHUNK_CELLS // max(1, len(x)))
    for start in range(0, n_boot, chunk):
        weights = pair_weights(counts[start : start + chunk], i, j)
        results[start : start + chunk] = _weighted_pearson(x[None, :], y[None, :], weights)
    return results


DENSE_MAX_STIMULI = 4000  # six n x n float64 matrices: 768 MB at this size


def pair_weights(counts: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """How often each pair enters each resample: a pair of two stimuli drawn c_i and c_j
    times c_i * c_j times (every copy with every copy); a stimulus paired with itself c_i
    times (each copy keeps its own self-pair, as the data give one per stimulus)."""
    weights = (counts[:, i] * counts[:, j]).astype(np.float64)
    same = i == j
    if same.any():
        weights[:, same] = counts[:, i[same]]
    return weights


def _dense_is_cheaper(n_pairs: int, n_stimuli: int) -> bool:
    """Quadratic forms cost O(n^2) per resample whatever the number of pairs; the direct
    form costs O(pairs). Dense wins when most pairs of the stimuli are judged (RDMs)."""
    return n_stimuli <= DENSE_MAX_STIMULI and n_pairs * 8 >= n_stimuli * n_stimuli


def _pearson_bootstrap_dense(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Weighted Pearson per resample through quadratic forms.

    With w_ij = c_i * c_j, every weighted sum over pairs of two stimuli is c^T A c / 2 for a
    symmetric zero-diagonal matrix A holding the summands per pair (summed where a pair has
    several rows), and over self-pairs (w = c_i) it is c . d for the vector d of their
    summands, so all resamples together are a few matrix products instead of a pass over
    every pair per resample.
    """
    n = counts.shape[1]
    x = x - x.mean()  # centring keeps the sums of squares from cancelling
    y = y - y.mean()
    same = i == j

    def symmetric(values: np.ndarray) -> np.ndarray:
        matrix = np.zeros((n, n))
        np.add.at(matrix, (i[~same], j[~same]), values[~same])
        np.add.at(matrix, (j[~same], i[~same]), values[~same])
        return matrix

    def diagonal(values: np.ndarray) -> np.ndarray:
        return np.bincount(i[same], weights=values[same], minlength=n)

    summands = [np.ones_like(x), x, y, x * x, y * y, x * y]
    results = np.empty(len(counts))
    chunk = max(1, BOOTSTRAP_CHUNK_CELLS // max(1, n))
    forms = [(symmetric(v), diagonal(v)) for v in summands]
    for start in range(0, len(counts), chunk):
        c = counts[start : start + chunk].astype(np.float64)
        s1, sx, sy, sxx, syy, sxy = (np.einsum("bi,bi->b", c @ m, c) / 2 + c @ d for m, d in forms)
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = sxy - sx * sy / s1
            var = (sxx - sx * sx / s1) * (syy - sy * sy / s1)
            results[start : start + chunk] = cov / np.sqrt(var)
    return results


def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each stimulus is drawn in each resample (n_boot x n)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n), dtype=np.int32)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1)
    return counts


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The engine's stimulus bootstrap, for callers that resample with it (the compare
    page's rho-a and tau-a intervals): how often each of ``n`` stimuli is drawn in each of
    ``n_boot`` resamples."""
    return _resample_counts(n, n_boot, seed)


def weighted_ranks_rows(
    values: np.ndarray, weights: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """Average ranks of ``values`` where each counts as often as its weight, one row of
    ranks per row of ``weights`` (``order``: the stable argsort of ``values``, if known)."""
    return _weighted_ranks_rows(values, weights, order)


def _spearman_bootstrap(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Spearman correlation per resample, every resample re-ranked exactly (ties averaged).

    The values never change between resamples, only how often each pair counts, so the
    pairs are sorted once and each pair's tie group is fixed: a resample only has to sum
    the weight of each group to know every group's average rank. The kernel walks the pairs
    in the order of the variable with more tie groups and looks up the other variable's
    (fewer, so cache-friendlier) groups; Spearman is symmetric, so either may be walked.
    """
    if len(x) == 0:
        return np.full(len(counts), np.nan)
    walk_order, walk_starts = _ties(x)
    other_order, other_starts = _ties(y)
    if len(other_starts) > len(walk_starts):
        walk_order, walk_starts, other_order, other_starts = (
            other_order,
            other_starts,
            walk_order,
            walk_starts,
        )
    other_group = np.empty(len(x), dtype=np.uint32)
    other_group[other_order] = np.repeat(
        np.arange(len(other_starts), dtype=np.uint32), np.diff(np.r_[other_starts, len(x)])
    )
    ends_group = np.zeros(len(x), dtype=np.bool_)
    ends_group[np.r_[walk_starts[1:], len(x)] - 1] = True
    # Imported here: numba (and LLVM behind it) loads only in the processes that score.
    from evaluation.engine.metrics.spearman_kernel import spearman_resamples

    # Unsigned indices: numba then skips the check for negative (from-the-end) indices.
    return spearman_resamples(
        np.ascontiguousarray(counts, dtype=np.int32),
        i[walk_order].astype(np.uint32),
        j[walk_order].astype(np.uint32),
        ends_group,
        other_group[walk_order],
        len(other_starts),
    )


def _ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts ``values`` and where each run of equal values starts in it."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    return order, np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


def _weighted_ranks_rows(
    values: np.ndarray, weights: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """Row-wise weighted average ranks of the same ``values`` under each row of ``weights``
    (``order``: their stable argsort, where the caller has it). Before the compiled kernel
    this was the bootstrap's re-ranking; the test and the bench keep it as the reference."""
    if order is None:
        order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_of = np.repeat(np.arange(len(group_starts)), np.diff(np.r_[group_starts, len(values)]))
    w_sorted = weights[:, order]
    group_weight = np.add.reduceat(w_sorted, group_starts, axis=1)
    before = np.cumsum(group_weight, axis=1) - group_weight
    group_rank = before + (group_weight + 1) / 2
    ranks = np.empty_like(w_sorted)
    ranks[:, order] = group_rank[:, group_of]
    return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise weighted Pearson correlation; x and y broadcast against w."""
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(axis=1) / total
        my = (w * y).sum(axis=1) / total
        dx = x - mx[:, None]
        dy = y - my[:, None]
        cov = (w * dx * dy).sum(axis=1)
        var = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
        return cov / var


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) < 10:
        raise MetricError(
            "Too few stimuli for a bootstrap interval: fewer than 10 resamples were defined."
        )
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def split_half_reliability(
    a: IndexLike,
    b: IndexLike,
    values: ValueLike,
    participants: Sequence[str] | None = None,
    *,
    correlation: str = "spearman",
    n_splits: int = 100,
    seed: int = 0,
) -> dict[str, float | int | str | None]:
    """Split-half reliability of the mean rating per pair, Spearman-Brown corrected.

    With participant ids, participants are split in halves; without them, each pair's
    judgments are split (treating each judgment as a different rater). Returns
    ``{"mean": None, "reason": ...}`` when the data cannot support a ceiling.
    """
    one_of(correlation, CORRELATIONS, name="correlation")
    at_least(n_splits, 1, name="n_splits")
    a_arr, b_arr, v = _pair_rows(a, b, values)
    if participants is not None:
        same_lengths(values=v, participants=participants)
    keep = a_arr != b_arr
    lo, hi, v = np.minimum(a_arr, b_arr)[keep], np.maximum(a_arr, b_arr)[keep], v[keep]
    _, pair = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
    pair = pair.ravel()
    rng = np.random.default_rng(seed)
    by_participant = participants is not None and len({p for p in participants if p}) >= 2
    if by_participant:
        _, who = np.unique(
            np.asarray(participants, dtype=object)[keep].astype(str), return_inverse=True
        )
    n_pairs = int(pair.max()) + 1 if len(pair) else 0
    repeated = int((np.bincount(pair, minlength=n_pairs) >= 2).sum()) if n_pairs else 0
    if repeated < max(MIN_RELIABILITY_PAIRS, n_pairs * MIN_RELIABILITY_COVERAGE):
        # A handful of repeated pairs would give a confident-looking but meaningless ceiling.
        judged = "was" if repeated == 1 else "were"
        return {
            "mean": None,
            "reason": f"only {repeated:,} of {n_pairs:,} pairs {judged} judged more than once; "
            f"a split-half ceiling needs at least half of them (and {MIN_RELIABILITY_PAIRS}).",
        }
    estimates = []
    for _ in range(n_splits):
        if by_participant:
            half_of_participant = rng.permutation(who.max() + 1) % 2
            half = half_of_participant[who]
        else:
            half = _split_within_groups(pair, rng)
        r = _half_correlation(pair, v, half, correlation)
        if r is not None:
            estimates.append(2 * r / (1 + r))
    if not estimates:
        return {"mean": None, "reason": "no random split left three pairs judged in both halves."}
    values_arr = np.array(estimates)
    return {
        "mean": float(values_arr.mean()),
        "sd": float(values_arr.std(ddof=1)) if len(values_arr) > 1 else 0.0,
        "splits": len(values_arr),
        "method": "split-half, Spearman-Brown",
        "split_by": "participant" if by_participant else "judgment within pair",
    }


def _split_within_groups(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign each row to half 0 or 1, alternating in a random order within its group."""
    order = np.lexsort((rng.random(len(group)), group))
    position = np.empty(len(group), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    ranks = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    position[order] = ranks
    return position % 2


def _half_correlation(
    pair: np.ndarray, v: np.ndarray, half: np.ndarray, method: str
) -> float | None:
    n_pairs = pair.max() + 1
    sums = np.zeros((2, n_pairs))
    counts = np.zeros((2, n_pairs))
    np.add.at(sums, (half, pair), v)
    np.add.at(counts, (half, pair), 1)
    both = (counts > 0).all(axis=0)
    if both.sum() < 3:
        return None
    means = sums[:, both] / counts[:, both]
    r = weighted_correlation(means[0], means[1], np.ones(both.sum()), method)
    return r if np.isfinite(r) else None


# --- Triplets and 2AFC -------------------------------------------------------------------------
def triplet_accuracy(
    embeddings: np.ndarray,
    triplets: np.ndarray,
    chosen: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ceiling: float | None = None,
) -> MetricResult:
    """Agreement of the model's odd-one-out with each human response.

    ``triplets``: (n, 3) stimulus indices; ``chosen``: the index (a stimulus, not a position)
    each person picked as the odd one out.
    """
    at_least(n_boot, MIN_BOOT, name="n_boot")
    unit = unit_rows(embeddings)
    triplets = stimulus_indices(triplets, name="triplets", n_stimuli=len(unit), ndim=2)
    if triplets.shape[1] != 3:
        raise MetricError(f"triplets must hold three stimuli per row; got shape {triplets.shape}.")
    chosen = stimulus_indices(chosen, name="chosen", n_stimuli=len(unit))
    same_lengths(triplets=triplets, chosen=chosen)
    _refuse_repeats(np.sort(triplets, axis=1), "triplets", "three different stimuli")
    if not (triplets == chosen[:, None]).any(axis=1).all():
        raise MetricError("Some triplet choices are not one of the three stimuli shown.")
    credit = triplet_credit(unit, triplets, chosen)
    return _choice_result(credit, triplets, len(unit), n_boot, seed, ceiling, "triplets")


def _refuse_repeats(sorted_items: np.ndarray, name: str, needed: str) -> None:
    """Items (sorted within each row) must not show a stimulus twice: those are catch
    trials, whose answer is obvious, not judgments."""
    repeated = np.flatnonzero((sorted_items[:, 1:] == sorted_items[:, :-1]).any(axis=1))
    if len(repeated):
        raise MetricError(
            f"{name}: {len(repeated)} items show a stimulus twice (first at entry "
            f"{int(repeated[0])}: {sorted_items[repeated[0]].tolist()}); each item needs "
            f"{needed}. Such items are catch trials, not data: leave them out."
        )


def two_afc_accuracy(
    embeddings: np.ndarray,
    reference: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    share_first: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ceiling: float | None = None,
) -> MetricResult:
    """Mean human vote share of the model's choice per 2AFC item (0.5 when the model ties).

    ``share_first``: the share of people who picked ``first`` as closer to ``reference``.
    """
    at_least(n_boot, MIN_BOOT, name="n_boot")
    unit = unit_rows(embeddings)
    same_lengths(reference=reference, first=first, second=second, share_first=share_first)
    items = np.stack(
        [
            stimulus_indices(values, name=name, n_stimuli=len(unit))
            for name, values in (("reference", reference), ("first", first), ("second", second))
        ],
        axis=1,
    )
    share = proportions(share_first, name="share_first")
    _refuse_repeats(np.sort(items, axis=1), "2AFC items", "a reference and two other candidates")
    credit = two_afc_credit(unit, items, share)
    return _choice_result(credit, items, len(unit), n_boot, seed, ceiling, "2afc items")


def triplet_credit(unit: np.ndarray, triplets: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Each (checked) triplet's credit for the model, from unit-length embeddings: the odd
    one is the item outside the most similar pair; ties share the credit."""
    sim = np.stack(
        [
            pair_cosines(unit, triplets[:, 1], triplets[:, 2]),  # the pair without item 0
            pair_cosines(unit, triplets[:, 0], triplets[:, 2]),
            pair_cosines(unit, triplets[:, 0], triplets[:, 1]),
        ],
        axis=1,
    )
    is_best = np.isclose(sim, sim.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    credit: np.ndarray = (is_best & (triplets == chosen[:, None])).sum(axis=1) / is_best.sum(axis=1)
    return credit


def two_afc_credit(unit: np.ndarray, items: np.ndarray, share_first: np.ndarray) -> np.ndarray:
    """Each (checked) 2AFC item's credit, from unit-length embeddings: the human vote share
    of the candidate the model finds closer to the reference (0.5 when it ties).
    ``items``: (n, 3) reference, first, second."""
    s1 = pair_cosines(unit, items[:, 0], items[:, 1])
    s2 = pair_cosines(unit, items[:, 0], items[:, 2])
    return np.where(
        np.isclose(s1, s2, rtol=0, atol=1e-12), 0.5, np.where(s1 > s2, share_first, 1 - share_first)
    )


def _choice_result(
    credit: np.ndarray,
    items: np.ndarray,
    n_stimuli: int,
    n_boot: int,
    seed: int,
    ceiling: float | None,
    unit: str,
) -> MetricResult:
    if len(credit) == 0:
        raise MetricError(f"There are no {unit} to score.")
    counts = _resample_counts(n_stimuli, n_boot, seed)
    samples = np.empty(n_boot)
    chunk = max(1, BOOTSTRAP_CHUNK_CELLS // len(credit))
    for start in range(0, n_boot, chunk):
        c = counts[start : start + chunk]
        weights = (c[:, items[:, 0]] * c[:, items[:, 1]] * c[:, items[:, 2]]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples[start : start + chunk] = (weights * credit).sum(axis=1) / weights.sum(axis=1)
    low, high = percentile_interval(samples)
    return MetricResult(
        value=float(credit.mean()),
        ci_low=low,
        ci_high=high,
        n=len(np.unique(items)),
        ceiling=ceiling,
        details={
            "responses": len(credit),
            "ci_method": "bootstrap over stimuli, 95% percentile",
            "n_boot": n_boot,
            "tie_rule": "tied model similarities share the credit",
        },
        resamples=samples,
        resampling=stimulus_resampling(n_stimuli, n_boot, seed),
    )


def leave_one_out_agreement(
    item_keys: np.ndarray, choices: np.ndarray
) -> dict[str, float | int | str] | None:
    """Noise ceiling of choice data: each response against the most frequent choice among the
    *other* responses to the same item; a response among k tied modes earns 1/k. Items with a
    single response are left out. Returns None if no item has two responses."""
    keys = np.asarray(item_keys)
    choice = np.asarray(choices)
    if choice.ndim != 1:
        raise MetricError(f"choices must hold one choice per response; got shape {choice.shape}.")
    same_lengths(item_keys=keys, choices=choice)
    if len(choice) == 0:
        return None
    _, item = np.unique(keys, return_inverse=True, axis=0 if keys.ndim > 1 else None)
    item = item.ravel()
    _, option = np.unique(choice, return_inverse=True)
    option = option.ravel()
    table = np.zeros((item.max() + 1, option.max() + 1), dtype=np.int64)
    np.add.at(table, (item, option), 1)
    responses_per_item = table.sum(axis=1)
    usable = responses_per_item[item] >= 2
    if not usable.any():
        return None
    others = table[item] - np.eye(table.shape[1], dtype=np.int64)[option]  # drop own response
    top = others.max(axis=1, keepdims=True)
    is_mode = others == top
    credit = is_mode[np.arange(len(option)), option] / is_mode.sum(axis=1)
    return {
        "mean": float(credit[usable].mean()),
        "responses": int(usable.sum()),
        "items": int((responses_per_item >= 2).sum()),
        "method": "leave-one-out majority agreement",
    }
