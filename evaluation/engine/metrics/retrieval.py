"""Same-label retrieval by cosine similarity: mean average precision and recall@k.

Every stimulus is a query against all the other stimuli, ranked by cosine similarity; the
relevant items are those sharing the query's label. A query whose label occurs only once
has nothing to find: it is left out of every score and counted in details.

Ranking and ties:
- Average precision treats tied similarities as one threshold, exactly as scikit-learn's
  ``average_precision_score``: every relevant item in a tie group counts with the precision
  at the end of that group, so AP does not depend on the order of equal scores.
- recall@k and precision@k cut a ranked list, so ties need an order: similarity descending,
  then item index ascending (a stable sort). Exact ties at the k-th place are rare with
  real embeddings but do make these depend on the order of the stimuli.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import bootstrap_means, quantile_interval
from evaluation.engine.metrics.knn import normalize_rows
from evaluation.engine.metrics.results import MetricResult, item_resampling
from evaluation.engine.metrics.validation import labelled_embeddings

# Entries of the query-by-item similarity block; the ranking keeps about eight arrays of
# this size alive, so 2**21 entries bound memory near 130 MB whatever the dataset size.
BLOCK_ENTRIES = 2**21


@dataclass(frozen=True)
class QueryScores:
    """Per-query retrieval scores; entries for queries without a relevant item are NaN."""

    average_precision: np.ndarray
    recall_at_k: dict[int, np.ndarray]  # 1.0 when a relevant item is in the top k, else 0.0
    precision_at_k: dict[int, np.ndarray]  # fraction of the top k that is relevant
    n_relevant: np.ndarray  # other items sharing the query's label


def _average_precision(
    sorted_similarity: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray
) -> np.ndarray:
    """AP per row of a ranking sorted by descending similarity, tie groups as in sklearn."""
    width = sorted_similarity.shape[1]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, width + 1)
    group_end = np.ones(sorted_similarity.shape, dtype=bool)
    group_end[:, :-1] = sorted_similarity[:, :-1] != sorted_similarity[:, 1:]
    end_positions = np.where(group_end, np.arange(width), width)
    end_of_group = np.minimum.accumulate(end_positions[:, ::-1], axis=1)[:, ::-1]
    precision_at_group_end = np.take_along_axis(precision, end_of_group, axis=1)
    total = (relevant * precision_at_group_end).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, total / n_relevant, np.nan)


def query_scores(x: np.ndarray, codes: np.ndarray, *, ks: Sequence[int]) -> QueryScores:
    """Rank all other items for every query (blockwise) and score each ranking."""
    x_normalized = normalize_rows(np.asarray(x, dtype=np.float64))
    n = len(x_normalized)
    n_relevant = np.bincount(codes)[codes] - 1
    average_precision = np.empty(n)
    recall = {k: np.empty(n) for k in ks}
    precision = {k: np.empty(n) for k in ks}
    block = max(1, min(n, BLOCK_ENTRIES // n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(stop - start)
        similarity = x_normalized[start:stop] @ x_normalized.T
        similarity[rows, start + rows] = -np.inf  # the query itself sorts last and is dropped
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]
        sorted_similarity = np.take_along_axis(similarity, order, axis=1)
        relevant = codes[order] == codes[start:stop, np.newaxis]
        average_precision[start:stop] = _average_precision(
            sorted_similarity, relevant, n_relevant[start:stop]
        )
        for k in ks:
            recall[k][start:stop] = relevant[:, :k].any(axis=1)
            precision[k][start:stop] = relevant[:, :k].mean(axis=1)
    without = n_relevant == 0
    for scores in (*recall.values(), *precision.values()):
        scores[without] = np.nan
    return QueryScores(average_precision, recall, precision, n_relevant)


def retrieval_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """Mean average precision and recall@k of same-label retrieval by cosine similarity.

    Returns ``{"map": ..., "recall@1": ..., "recall@5": ..., ...}``, one MetricResult per
    score, each over the queries that have at least one relevant item (``n``). recall@k is
    the fraction of queries with at least one relevant item in their top k (the "Recall@K"
    of deep metric learning, not the fraction of relevant items retrieved); precision@k, the
    mean fraction of the top k that is relevant, is in each recall@k result's details and,
    with all recall@k values, in the mAP result's details. Intervals are percentile
    bootstraps over queries of the per-query values (same seed, so resamples are paired).
    """
    data = labelled_embeddings(embeddings, labels, what="Retrieval")
    n = len(data.x)
    if n_resamples < 1:
        raise MetricError(f"The bootstrap needs at least one resample, got {n_resamples}.")
    ks = [int(k) for k in ks]
    for k in ks:
        if not 1 <= k <= n - 1:
            raise MetricError(f"recall@{k} needs 1 <= k <= {n - 1} (the other stimuli).")
    scores = query_scores(data.x, data.codes, ks=ks)
    answerable = scores.n_relevant > 0
    if not answerable.any():
        raise MetricError(
            "Every label occurs only once, so no query has a relevant item to retrieve."
        )
    n_queries = int(answerable.sum())
    recall = {k: float(scores.recall_at_k[k][answerable].mean()) for k in ks}
    precision = {k: float(scores.precision_at_k[k][answerable].mean()) for k in ks}
    shared = {
        "similarity": "cosine",
        "ci_method": "percentile-bootstrap-95 over queries",
        "queries_without_relevant": n - n_queries,
        "tie_rule": "AP: tied similarities form one threshold (sklearn); @k: lower index first",
    }

    def result(values: np.ndarray, details: dict[str, object]) -> MetricResult:
        means = bootstrap_means(values[answerable], n_resamples=n_resamples, seed=seed)
        low, high = quantile_interval(means)
        return MetricResult(
            value=float(values[answerable].mean()),
            ci_low=low,
            ci_high=high,
            n=n_queries,
            details={**shared, **details},
            resamples=means,
            resampling=item_resampling(n_queries, n_resamples, seed),
        )

    results = {
        "map": result(
            scores.average_precision,
            {
                "recall_at_k": {str(k): v for k, v in recall.items()},
                "precision_at_k": {str(k): v for k, v in precision.items()},
            },
        )
    }
    for k in ks:
        results[f"recall@{k}"] = result(
            scores.recall_at_k[k],
            {
                "k": k,
                "definition": "fraction of queries with a relevant item in the top k",
                "precision_at_k": precision[k],
            },
        )
    return results
