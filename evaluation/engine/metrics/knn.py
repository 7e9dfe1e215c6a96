"""k-nearest-neighbour classification accuracy under cosine distance.

Follows scikit-learn's KNeighborsClassifier(metric="cosine", algorithm="brute",
weights="uniform"): cosine distance is 1 - cos (clipped to [0, 2]), neighbours are the k
smallest distances and a tied vote goes to the smallest class label. One rule is ours:
of exactly equal distances (duplicated embeddings) the lower training index is the nearer,
at the k-th place too (k_smallest). scikit-learn keeps whichever tied neighbour its
argpartition returns, so the two agree wherever no tie straddles the k-th place.
Queries are processed in blocks so memory stays bounded.

Distances are computed in float64 whatever the embeddings' dtype: in float32, near-ties
between neighbours flip with the BLAS blocking (a 1 x n product and an n x n product round
differently), so the result would depend on how the queries were batched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import wilson_interval
from evaluation.engine.metrics.results import confusion_matrix
from evaluation.engine.metrics.validation import (
    at_least,
    classifier_inputs,
    labelled_embeddings,
    split_mask,
)

QUERY_BLOCK = 1024


@dataclass(frozen=True)
class KnnResult:
    accuracy: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    correct: int
    details: dict[str, Any] = field(default_factory=dict)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length rows; all-zero rows stay zero (as sklearn.preprocessing.normalize)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    return x / norms[:, np.newaxis]


def knn_predict(
    train_x: np.ndarray,
    train_codes: np.ndarray,
    query_x: np.ndarray,
    *,
    k: int,
    n_classes: int,
    exclude_self: bool = False,
) -> np.ndarray:
    """Predicted class codes for ``query_x``; with ``exclude_self`` query i is train i (LOO)."""
    train, train_codes, query = classifier_inputs(
        train_x, train_codes, query_x, n_classes=n_classes, exclude_self=exclude_self, k=k
    )
    train_n, query_n = normalize_rows(train), normalize_rows(query)
    predictions = np.empty(len(query_x), dtype=np.int64)
    for start in range(0, len(query_x), QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, len(query_x))
        # In place, as scikit-learn does (S *= -1; S += 1; clip): same values, no copies.
        distances = query_n[start:stop] @ train_n.T
        np.subtract(1.0, distances, out=distances)
        np.clip(distances, 0.0, 2.0, out=distances)
        if exclude_self:
            rows = np.arange(stop - start)
            distances[rows, start + rows] = np.inf
        neighbours = k_smallest(distances, k)
        votes = np.zeros((stop - start, n_classes), dtype=np.int64)
        np.add.at(votes, (np.arange(stop - start)[:, None], train_codes[neighbours]), 1)
        predictions[start:stop] = votes.argmax(axis=1)  # first maximum: smallest label
    return predictions


def k_smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries per row, ordered by (value, index).

    Equal values go to the lower index, at the k-th place too: of three items tied for the
    last two places, items 0 and 1 are kept, never 2. argpartition finds the k smallest in
    linear time but keeps an arbitrary subset of the entries equal to the k-th value (it
    depends on the rest of the row), so in the rows where such a tie straddles the k-th
    place its picks from the tie are swapped for the lowest indices of the tie: no sort.
    """
    width = values.shape[1]
    if k >= width:
        candidates = np.broadcast_to(np.arange(width), values.shape).copy()
    else:
        candidates = np.argpartition(values, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(values, candidates, axis=1)
        kth = chosen.max(axis=1, keepdims=True)
        at_kth = values == kth
        slots = chosen == kth  # every entry below the k-th value is already a candidate
        straddling = np.flatnonzero(np.count_nonzero(at_kth, axis=1) > slots.sum(axis=1))
        if len(straddling):
            _replace_tied(candidates, slots, at_kth, straddling)
    chosen = np.take_along_axis(values, candidates, axis=1)
    order = np.lexsort((candidates, chosen), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def _replace_tied(
    candidates: np.ndarray, slots: np.ndarray, at_kth: np.ndarray, rows: np.ndarray
) -> None:
    """Fill each row's k-th-value slots with the lowest indices holding that value."""
    tied_row, tied_column = np.nonzero(at_kth[rows])  # row-major: columns ascend per row
    row_slots = slots[rows]
    first_of_row = np.searchsorted(tied_row, np.arange(len(rows)))
    rank_in_row = np.arange(len(tied_row)) - first_of_row[tied_row]
    lowest = tied_column[rank_in_row < row_slots.sum(axis=1)[tied_row]]
    picked = candidates[rows]
    picked[row_slots] = lowest  # both row-major, the same count per row
    candidates[rows] = picked


def knn_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    k: int,
    test_mask: np.ndarray | None = None,
) -> KnnResult:
    """k-NN accuracy: leave-one-out when ``test_mask`` is None, else train on ~mask."""
    at_least(k, 1, name="k")
    data = labelled_embeddings(embeddings, labels, what="k-NN accuracy")
    classes, codes = data.classes, data.codes
    if test_mask is None:
        train_x, train_codes, query_x, query_codes = data.x, codes, data.x, codes
        n_train = len(data.x) - 1
        split = "leave-one-out"
    else:
        mask = split_mask(test_mask, len(data.x))
        train_x, train_codes = data.x[~mask], codes[~mask]
        query_x, query_codes = data.x[mask], codes[mask]
        n_train = len(train_x)
        split = "train/test"
    if k > n_train:
        raise MetricError(f"k={k} is larger than the {n_train} training stimuli available.")
    predicted = knn_predict(
        train_x, train_codes, query_x, k=k, n_classes=len(classes), exclude_self=test_mask is None
    )
    correct = int((predicted == query_codes).sum())
    low, high = wilson_interval(correct, len(query_x))
    return KnnResult(
        accuracy=correct / len(query_x),
        ci_low=low,
        ci_high=high,
        n_train=n_train,
        n_test=len(query_x),
        correct=correct,
        details={
            "split": split,
            "k": k,
            "distance": "cosine",
            "vote": "uniform",
            "ci_method": "wilson-95",
            "classes": [str(c) for c in classes],
            "confusion": confusion_matrix(query_codes, predicted, len(classes)).tolist(),
            "majority_class_rate": float(np.bincount(query_codes).max() / len(query_codes)),
        },
    )
