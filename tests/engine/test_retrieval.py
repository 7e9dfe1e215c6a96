"""Same-label retrieval: per-query average precision must equal scikit-learn's
average_precision_score (ties included) and recall@k / precision@k a literal ranking loop,
on the real pixels of scikit-learn's handwritten digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity
from threadpoolctl import threadpool_limits

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import bootstrap_mean_interval
from evaluation.engine.metrics.retrieval import query_scores, retrieval_scores


@pytest.fixture(autouse=True)
def one_thread():
    """Run BLAS/OpenMP on one thread: on a busy two-core machine their spinning thread pools
    made k-means and the probe fits tens of times slower, not faster."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data[:300].astype(np.float64), data.target[:300]


def sklearn_average_precision(similarity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of each query against all other items, by scikit-learn."""
    values = []
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        values.append(average_precision_score(labels[others] == labels[i], similarity[i, others]))
    return np.array(values)


def test_average_precision_matches_sklearn_per_query(digits):
    # A little noise breaks the few accidental exact ties among these digits (a tie in one
    # similarity computation may not be one in the other); tied data has its own test below.
    x = digits[0] + np.random.default_rng(0).normal(scale=1e-3, size=digits[0].shape)
    y = digits[1]
    similarity = cosine_similarity(x)
    off_diagonal = similarity[~np.eye(len(y), dtype=bool)].reshape(len(y), -1)
    assert all(len(np.unique(row)) == len(row) for row in off_diagonal)
    reference = sklearn_average_precision(similarity, y)
    scores = query_scores(x, y, ks=())
    np.testing.assert_allclose(scores.average_precision, reference, rtol=0, atol=1e-12)
    result = retrieval_scores(x, y)["map"]
    assert result.value == pytest.approx(reference.mean(), abs=1e-12)
    assert (result.ci_low, result.ci_high) == bootstrap_mean_interval(scores.average_precision)
    assert result.n == 300


def test_tied_similarities_are_scored_like_sklearn():
    # One-hot embeddings: every similarity is exactly 0 or 1, so most ranks are ties.
    rng = np.random.default_rng(0)
    x = np.eye(4)[rng.integers(0, 4, size=60)]
    y = rng.integers(0, 3, size=60)
    reference = sklearn_average_precision(x @ x.T, y)
    np.testing.assert_allclose(query_scores(x, y, ks=()).average_precision, reference, atol=1e-12)


def ranking_reference(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """recall@k (a relevant item in the top k) and precision@k by sorting each query's list."""
    similarity = cosine_similarity(x)
    hits, precision = [], []
    for i in range(len(y)):
        ranked = sorted((j for j in range(len(y)) if j != i), key=lambda j: -similarity[i, j])
        relevant = [y[j] == y[i] for j in ranked[:k]]
        hits.append(float(any(relevant)))
        precision.append(sum(relevant) / k)
    return np.array(hits), np.array(precision)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_recall_and_precision_at_k_match_a_ranking_loop(digits, k):
    x, y = digits
    hits, precision = ranking_reference(x, y, k)
    results = retrieval_scores(x, y, ks=(k,))
    assert results[f"recall@{k}"].value == pytest.approx(hits.mean(), abs=1e-12)
    assert results[f"recall@{k}"].details["precision_at_k"] == pytest.approx(precision.mean())
    assert results["map"].details["recall_at_k"] == {str(k): pytest.approx(hits.mean())}
    assert results["map"].details["precision_at_k"] == {str(k): pytest.approx(precision.mean())}


def test_recall_at_k_ties_go_to_the_lower_index():
    # Query 0 is equally similar to items 1 (other label) and 2 (its label).
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1, 0, 1])
    scores = query_scores(x, y, ks=(1,))
    assert scores.recall_at_k[1][0] == 0.0  # item 1 ranks first
    assert scores.recall_at_k[1][2] == 1.0  # for query 2, item 0 ranks first


def test_queries_without_a_relevant_item_are_left_out(digits):
    x, y = digits
    y = y.astype(str)
    y[0] = "only-one"
    result = retrieval_scores(x, y, ks=(5,))
    assert result["map"].n == result["recall@5"].n == 299
    assert result["map"].details["queries_without_relevant"] == 1
    assert np.isnan(
        query_scores(x, np.unique(y, return_inverse=True)[1], ks=()).average_precision[0]
    )


def test_perfectly_separated_labels_score_one_and_shuffled_labels_do_not(digits):
    x, y = digits
    perfect = retrieval_scores(np.eye(10)[y], y)
    assert perfect["map"].value == 1.0 and perfect["recall@1"].value == 1.0
    shuffled = retrieval_scores(x, np.random.default_rng(0).permutation(y))
    assert shuffled["map"].value < 0.2


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (np.eye(3), np.array([1, 1, 1]), {}, "at least two classes"),
        (np.eye(3), np.array([0, 1]), {}, "3 embeddings but 2 labels"),
        (np.eye(4), np.array([0, 1, 0, 1]), {"ks": (4,)}, r"recall@4 needs 1 <= k <= 3"),
        (np.eye(3), np.array([0, 1, 2]), {"ks": (1,)}, "no query has a relevant item"),
        (np.array([[np.inf, 0], [0, 1], [1, 1]]), np.array([0, 1, 0]), {"ks": (1,)}, "NaN or inf"),
    ],
)
def test_retrieval_refuses_bad_inputs_with_a_reason(embeddings, labels, kwargs, message):
    with pytest.raises(MetricError, match=message):
        retrieval_scores(embeddings, labels, **kwargs)
