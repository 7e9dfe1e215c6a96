"""Clustering agreement: NMI and ARI of a k-means clustering must be scikit-learn's on the
same clustering, reach 1.0 on separable data and sit near 0 for shuffled labels, on the real
pixels of scikit-learn's handwritten digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.clustering import clustering_scores


@pytest.fixture(autouse=True)
def one_thread():
    """Run BLAS/OpenMP on one thread: on a busy two-core machine their spinning thread pools
    made k-means and the probe fits tens of times slower, not faster."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.astype(np.float64), data.target


@pytest.mark.parametrize("normalized", [True, False])
def test_scores_are_sklearns_on_sklearns_kmeans(digits, normalized):
    x, y = digits[0][:500], digits[1][:500]
    features = normalize(x) if normalized else x
    clusters = KMeans(n_clusters=10, n_init=4, random_state=3).fit(features).labels_
    results = clustering_scores(x, y, seed=3, n_init=4, normalize=normalized, n_resamples=50)
    assert results["nmi"].value == pytest.approx(normalized_mutual_info_score(y, clusters))
    assert results["ari"].value == pytest.approx(adjusted_rand_score(y, clusters))
    assert results["nmi"].details["n_clusters"] == 10 and results["nmi"].n == 500


def test_bootstrap_resamples_stimuli_of_the_fixed_assignment(digits):
    x, y = digits[0][:400], digits[1][:400]
    clusters = KMeans(n_clusters=10, n_init=2, random_state=0).fit(normalize(x)).labels_
    rng = np.random.default_rng(0)
    nmi, ari = [], []
    for _ in range(100):
        picks = rng.integers(0, len(y), size=len(y))
        nmi.append(normalized_mutual_info_score(y[picks], clusters[picks]))
        ari.append(adjusted_rand_score(y[picks], clusters[picks]))
    results = clustering_scores(x, y, n_init=2, n_resamples=100)
    for name, values in (("nmi", nmi), ("ari", ari)):
        low, high = np.quantile(values, [0.025, 0.975])
        value = results[name].value
        bias = np.mean(values) - value  # resampling duplicates stimuli, which inflates NMI
        assert results[name].ci_low == pytest.approx(low - bias)
        assert results[name].ci_high == pytest.approx(high - bias)
        assert results[name].ci_low < value < results[name].ci_high


def test_separable_embeddings_score_one(digits):
    # Each digit pulled almost onto its class mean: ten tight, well-separated clusters.
    x, y = digits[0][:600], digits[1][:600]
    means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    tight = means[y] + 0.01 * (x - means[y])
    results = clustering_scores(tight, y, n_resamples=50)
    assert results["nmi"].value == pytest.approx(1.0)
    assert results["ari"].value == pytest.approx(1.0)


def test_shuffled_labels_score_near_zero(digits):
    x, y = digits
    shuffled = np.random.default_rng(0).permutation(y)
    results = clustering_scores(x, shuffled, n_init=2, n_resamples=50)
    assert results["nmi"].value < 0.03
    assert abs(results["ari"].value) < 0.01
    assert clustering_scores(x, y, n_init=2, n_resamples=50)["nmi"].value > 0.6


def test_the_number_of_clusters_can_differ_from_the_number_of_classes(digits):
    x, y = digits[0][:300], digits[1][:300]
    result = clustering_scores(x, y, n_clusters=4, n_resamples=20)["ari"]
    assert result.details["n_clusters"] == 4
    assert np.array(result.details["contingency"]).shape == (10, 4)
    assert np.array(result.details["contingency"]).sum() == 300


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (np.eye(3), np.array([1, 1, 1]), {}, "at least two classes"),
        (np.eye(3), np.array([0, 1]), {}, "3 embeddings but 2 labels"),
        (np.eye(3), np.array([0, 1, 0]), {"n_clusters": 4}, "between 2 and 3"),
        (np.array([[np.nan, 0], [0, 1], [1, 1]]), np.array([0, 1, 0]), {}, "NaN or inf"),
    ],
)
def test_clustering_refuses_bad_inputs_with_a_reason(embeddings, labels, kwargs, message):
    with pytest.raises(MetricError, match=message):
        clustering_scores(embeddings, labels, **kwargs)
