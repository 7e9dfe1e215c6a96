"""Model-discriminating designs: which judgments to ask people for next.

When several models lead a leaderboard, judgments on which they all agree cannot tell them
apart. These functions propose the pairs (for similarity ratings) and the triplets (for
odd-one-out) on which the given models' predictions differ most, so that the next human
study separates them with the fewest judgments.

- Pairs: each model's similarities of the candidate pairs are turned into ranks scaled to
  [0, 1], so models on different scales (cosine, dot product, a distance turned into a
  similarity) are compared on equal terms. The disagreement of a pair is the variance of
  its scaled ranks across models (or their range, max - min).
- Triplets: each model predicts the odd one out, the item outside its most similar pair.
  The disagreement of a triplet is the entropy of the models' predictions. A model whose
  most similar pair is tied makes no prediction and abstains: counting its indecision as
  disagreement would steer the design to triplets a model knows nothing about. Among
  equal entropies, the triplet on which the models are more confident (a larger mean gap,
  in scaled ranks, between each model's most similar pair and its runner-up) comes first.

Ties are broken deterministically (by the stimulus indices), so the same inputs always
give the same design. ``max_per_stimulus`` caps how often one stimulus appears in a
design, so one odd stimulus cannot fill it. Stimulus indices are those of the matrices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from evaluation.engine.errors import MetricError

MEASURES = ("variance", "range")
MAX_ALL_PAIRS_STIMULI = 5000  # all pairs of 5000 stimuli: 12.5 M per model, 100 MB float64
DEFAULT_TRIPLET_CANDIDATES = 20_000
TIE_DECIMALS = 12  # disagreements equal to 12 decimals are ties, whatever the float rounding


def _check_similarities(similarities: Sequence[np.ndarray]) -> np.ndarray:
    """The models' similarity matrices as one (models x n x n) float64 array, checked."""
    if len(similarities) < 2:
        raise MetricError(
            f"A discriminating design needs at least 2 models' similarities; got "
            f"{len(similarities)}."
        )
    matrices = [np.asarray(s, dtype=np.float64) for s in similarities]
    first = matrices[0].shape
    for index, matrix in enumerate(matrices):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise MetricError(
                f"Model {index}: a similarity matrix must be square (stimuli x stimuli); got "
                f"shape {matrix.shape}."
            )
        if matrix.shape != first:
            raise MetricError(
                f"Model {index} has {matrix.shape[0]} stimuli, model 0 has {first[0]}; all "
                "models must cover the same stimuli in the same order."
            )
        if not np.isfinite(matrix).all():
            raise MetricError(f"Model {index}: the similarity matrix has NaN or inf values.")
        if not np.allclose(matrix, matrix.T, rtol=1e-6, atol=1e-9):
            raise MetricError(
                f"Model {index}: the similarity matrix is not symmetric; a pair's similarity "
                "must not depend on the order of its stimuli."
            )
    if first[0] < 3:
        raise MetricError(f"A design needs at least 3 stimuli; got {first[0]}.")
    return np.stack(matrices)


def _scaled_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis scaled to [0, 1] (all 0.5 for a single value)."""
    count = values.shape[-1]
    if count == 1:
        return np.full(values.shape, 0.5)
    return (rankdata(values, method="average", axis=-1) - 1) / (count - 1)


def _index_rows(
    rows: np.ndarray | Sequence[Sequence[int]], width: int, n: int, what: str
) -> np.ndarray:
    array = np.asarray(rows, dtype=np.int64)
    if array.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != width:
        raise MetricError(f"{what} must be rows of {width} stimulus indices; got {array.shape}.")
    if (array < 0).any() or (array >= n).any():
        raise MetricError(f"{what} name stimuli outside 0..{n - 1}.")
    return np.sort(array, axis=1)


def _greedy(
    members: np.ndarray, order: np.ndarray, k: int, max_per_stimulus: int | None, n: int
) -> np.ndarray:
    """The first k rows in ``order`` such that no stimulus appears more than the cap."""
    if max_per_stimulus is None:
        return order[:k]
    if max_per_stimulus < 1:
        raise MetricError(f"max_per_stimulus must be at least 1; got {max_per_stimulus}.")
    used = np.zeros(n, dtype=np.int64)
    chosen: list[int] = []
    for row in order:
        items = members[row]
        if (used[items] < max_per_stimulus).all():
            used[items] += 1
            chosen.append(int(row))
            if len(chosen) == k:
                break
    return np.asarray(chosen, dtype=np.int64)


def _check_k(k: int) -> None:
    if k < 1:
        raise MetricError(f"Ask for at least one proposal; got k={k}.")


# --- Pairs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairProposals:
    """Proposed pairs, most discriminating first."""

    i: np.ndarray  # (k,), i < j
    j: np.ndarray
    disagreement: np.ndarray  # (k,), variance or range of the scaled ranks across models
    scaled_ranks: np.ndarray  # (k, models): each model's similarity as a rank in [0, 1]
    measure: str
    n_candidates: int  # pairs considered after exclusions


def discriminating_pairs(
    similarities: Sequence[np.ndarray],
    k: int,
    exclude: np.ndarray | Sequence[Sequence[int]] | None = None,
    *,
    candidates: np.ndarray | Sequence[Sequence[int]] | None = None,
    max_per_stimulus: int | None = None,
    measure: str = "variance",
) -> PairProposals:
    """The (at most) k unordered pairs i < j on which the models disagree most.

    ``similarities``: one stimulus x stimulus similarity matrix per model (2 or more).
    Candidates are all pairs i < j, or the pairs in ``candidates`` (say, those whose
    stimuli can be shown); each model's similarities are ranked among the candidates and
    scaled to [0, 1]. Pairs in ``exclude`` (already judged, in either order) are skipped;
    self-pairs never qualify. Order: disagreement, descending; then i, then j.
    """
    _check_k(k)
    if measure not in MEASURES:
        raise MetricError(f"Unknown disagreement {measure!r}; use variance or range.")
    stacked = _check_similarities(similarities)
    n = stacked.shape[1]
    if candidates is None:
        if n > MAX_ALL_PAIRS_STIMULI:
            raise MetricError(
                f"{n} stimuli have {n * (n - 1) // 2} pairs; above {MAX_ALL_PAIRS_STIMULI} "
                "stimuli, pass the candidate pairs to consider."
            )
        rows = np.stack(np.triu_indices(n, k=1), axis=1)
    else:
        rows = _index_rows(candidates, 2, n, "Candidate pairs")
        rows = np.unique(rows[rows[:, 0] != rows[:, 1]], axis=0)
        if len(rows) == 0:
            raise MetricError("There are no candidate pairs of two different stimuli.")
    ranks = _scaled_ranks(stacked[:, rows[:, 0], rows[:, 1]]).T  # (pairs, models)
    if exclude is not None:
        done = _index_rows(exclude, 2, n, "Excluded pairs")
        keep = ~np.isin(rows[:, 0] * n + rows[:, 1], done[:, 0] * n + done[:, 1])
        rows, ranks = rows[keep], ranks[keep]
    if measure == "variance":
        disagreement = ranks.var(axis=1)
    else:
        disagreement = ranks.max(axis=1) - ranks.min(axis=1)
    order = np.lexsort((rows[:, 1], rows[:, 0], -np.round(disagreement, TIE_DECIMALS)))
    chosen = _greedy(rows, order, k, max_per_stimulus, n)
    return PairProposals(
        i=rows[chosen, 0],
        j=rows[chosen, 1],
        disagreement=disagreement[chosen],
        scaled_ranks=ranks[chosen],
        measure=measure,
        n_candidates=len(rows),
    )


# --- Triplets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TripletProposals:
    """Proposed triplets (sorted stimulus indices per row), most discriminating first."""

    triplets: np.ndarray  # (k, 3)
    predictions: np.ndarray  # (k, models): each model's odd one out, -1 where it ties
    entropy: np.ndarray  # (k,), nats, of the deciding models' predictions (0 .. ln 3)
    margin: np.ndarray  # (k,), mean over models of their top-pair gap in scaled ranks
    n_candidates: int  # triplets considered after exclusions
    sampled: bool  # True when the candidates were a random sample of all triplets


def _candidate_triplets(n: int, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """All triplets if there are at most ``limit``, else ``limit`` distinct random ones.

    Work is bounded by ``limit``: up to twice as many triplets as are sampled are
    enumerated (then subsampled without replacement); beyond that, random triplets are
    drawn in rounds and duplicates dropped, each round needing more than half new ones.
    """
    total = math.comb(n, 3)
    if total <= 2 * limit:
        every = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(n), 3)),
            dtype=np.int64,
            count=3 * total,
        ).reshape(total, 3)
        if total <= limit:
            return every, False
        pick = np.sort(rng.choice(total, size=limit, replace=False))
        return every[pick], True
    found = np.zeros((0, 3), dtype=np.int64)
    while len(found) < limit:
        draws = np.sort(rng.integers(0, n, size=(2 * (limit - len(found)), 3)), axis=1)
        draws = draws[(draws[:, 0] != draws[:, 1]) & (draws[:, 1] != draws[:, 2])]
        merged = np.vstack([found, draws])
        _, first = np.unique(merged, axis=0, return_index=True)
        found = merged[np.sort(first)][:limit]  # keep draw order: no bias to low indices
    return found, True


def discriminating_triplets(
    similarities: Sequence[np.ndarray],
    k: int,
    candidates: np.ndarray | Sequence[Sequence[int]] | None = None,
    *,
    seed: int = 0,
    max_candidates: int = DEFAULT_TRIPLET_CANDIDATES,
    exclude: np.ndarray | Sequence[Sequence[int]] | None = None,
    max_per_stimulus: int | None = None,
) -> TripletProposals:
    """The (at most) k triplets whose odd one out the models predict most differently.

    Candidates are ``candidates`` (rows of three distinct stimuli) or, without them, every
    triplet when there are at most ``max_candidates``, else ``max_candidates`` distinct
    triplets drawn at random with ``seed``: the work is O(max_candidates x models), however
    many stimuli there are. Triplets in ``exclude`` (any order) are skipped. Each model's
    similarities are ranked among the pairs inside the candidates and scaled to [0, 1].
    Order: entropy of the predictions of the models that do not tie, descending; then the
    mean margin, descending; then the stimulus indices.
    """
    _check_k(k)
    stacked = _check_similarities(similarities)
    n = stacked.shape[1]
    if candidates is None:
        if max_candidates < 1:
            raise MetricError(f"max_candidates must be at least 1; got {max_candidates}.")
        rows, sampled = _candidate_triplets(n, max_candidates, np.random.default_rng(seed))
    else:
        rows = _index_rows(candidates, 3, n, "Candidate triplets")
        if ((rows[:, 0] == rows[:, 1]) | (rows[:, 1] == rows[:, 2])).any():
            raise MetricError("Every candidate triplet needs three different stimuli.")
        rows, sampled = np.unique(rows, axis=0), False
    if exclude is not None:
        done = _index_rows(exclude, 3, n, "Excluded triplets")
        key = (rows[:, 0] * n + rows[:, 1]) * n + rows[:, 2]
        rows = rows[~np.isin(key, (done[:, 0] * n + done[:, 1]) * n + done[:, 2])]
    if len(rows) == 0:
        raise MetricError("No candidate triplet is left to propose.")
    a, b, c = rows[:, 0], rows[:, 1], rows[:, 2]
    # Column p holds the pair without item p: the model picks item p when that pair wins.
    pair_keys = np.stack([b * n + c, a * n + c, a * n + b], axis=1)
    unique_keys, where = np.unique(pair_keys, return_inverse=True)
    where = where.reshape(pair_keys.shape)
    ranks = _scaled_ranks(stacked[:, unique_keys // n, unique_keys % n])  # (models, pairs)
    sims = ranks[:, where]  # (models, triplets, 3)
    top = sims.max(axis=2, keepdims=True)
    is_top = np.isclose(sims, top, rtol=0, atol=1e-12)
    decided = is_top.sum(axis=2) == 1  # (models, triplets): a tie abstains
    picked = np.take_along_axis(rows, sims.argmax(axis=2).T, axis=1)  # (triplets, models)
    predictions = np.where(decided.T, picked, -1)
    votes = (is_top & decided[:, :, None]).sum(axis=0).astype(np.float64)  # (triplets, 3)
    share = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1.0)
    safe = np.where(share > 0, share, 1.0)  # 0 log 0 = 0
    entropy = -(share * np.log(safe)).sum(axis=1)
    ordered = np.sort(sims, axis=2)
    margin = (ordered[:, :, 2] - ordered[:, :, 1]).mean(axis=0)
    order = np.lexsort((c, b, a, -np.round(margin, TIE_DECIMALS), -np.round(entropy, TIE_DECIMALS)))
    chosen = _greedy(rows, order, k, max_per_stimulus, n)
    return TripletProposals(
        triplets=rows[chosen],
        predictions=predictions[chosen],
        entropy=entropy[chosen],
        margin=margin[chosen],
        n_candidates=len(rows),
        sampled=sampled,
    )
