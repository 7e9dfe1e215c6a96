"""k-NN accuracy must equal scikit-learn's KNeighborsClassifier exactly (same embeddings,
k, cosine metric and split), on real embeddings of real images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import cosine_distances
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation.engine.adapters import load_adapter
from evaluation.engine.errors import MetricError
from evaluation.engine.extraction import extract_to_file
from evaluation.engine.metrics.intervals import wilson_interval
from evaluation.engine.metrics.knn import k_smallest, knn_accuracy, knn_predict
from evaluation.engine.specs import ModelSpec, StimulusInput


@pytest.fixture(scope="module")
def digit_embeddings(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of 300 real digits by an (untrained) timm network: real, not synthetic."""
    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    stimuli = []
    for index in range(300):
        path = folder / f"{index}.png"
        Image.fromarray((digits.images[index] * 15).astype(np.uint8)).save(path)
        stimuli.append(StimulusInput(path=str(path)))
    adapter = load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))
    out = extract_to_file(adapter, stimuli, layer="", out_path=folder / "emb.npy", batch_size=50)
    # sklearn gets the same embeddings in the precision Likeness computes distances in.
    return np.load(out.path).astype(np.float64), digits.target[:300]


def sklearn_knn(k: int) -> KNeighborsClassifier:
    return KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights="uniform"
    )


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_leave_one_out_matches_sklearn_exactly(digit_embeddings, k):
    x, y = digit_embeddings
    reference = cross_val_predict(sklearn_knn(k), x, y, cv=LeaveOneOut())
    result = knn_accuracy(x, y, k=k)
    assert result.accuracy == (reference == y).mean()
    assert result.n_test == len(y) and result.n_train == len(y) - 1


@pytest.mark.parametrize("k", [1, 5, 15])
def test_train_test_split_predictions_match_sklearn_exactly(digit_embeddings, k):
    x, y = digit_embeddings
    test = np.random.default_rng(k).random(len(y)) < 0.3
    reference = sklearn_knn(k).fit(x[~test], y[~test]).predict(x[test])
    classes, codes = np.unique(y, return_inverse=True)
    ours = knn_predict(x[~test], codes[~test], x[test], k=k, n_classes=len(classes))
    np.testing.assert_array_equal(classes[ours], reference)
    assert knn_accuracy(x, y, k=k, test_mask=test).accuracy == (reference == y[test]).mean()


def test_tied_votes_go_to_the_smallest_label_like_sklearn():
    # Two neighbours, one vote each: sklearn predicts the smaller class label.
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array(["b", "a"])
    query = np.array([[1.0, 1.0]])
    reference = sklearn_knn(2).fit(train, labels).predict(query)
    classes, codes = np.unique(labels, return_inverse=True)
    ours = classes[knn_predict(train, codes, query, k=2, n_classes=2)]
    assert list(ours) == list(reference) == ["a"]


def test_wilson_interval_matches_statsmodels_formula_values():
    # Reference values: statsmodels proportion_confint(8, 10, method="wilson").
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4901624, abs=1e-6)
    assert high == pytest.approx(0.9433178, abs=1e-6)


def test_accuracy_carries_a_confidence_interval_around_it(digit_embeddings):
    x, y = digit_embeddings
    result = knn_accuracy(x, y, k=5)
    assert result.ci_low < result.accuracy < result.ci_high


def test_single_class_is_refused_with_a_specific_message():
    with pytest.raises(MetricError, match="at least two classes"):
        knn_accuracy(np.eye(4), np.array(["a"] * 4), k=1)


def test_k_larger_than_training_set_is_refused():
    with pytest.raises(MetricError, match="k=10 is larger than the 3 training stimuli"):
        knn_accuracy(np.eye(4), np.array(["a", "b", "a", "b"]), k=10)


# --- Exact distance ties: the nearer training index wins --------------------------------------


def test_tied_distances_at_the_kth_place_go_to_the_lowest_training_index():
    # The reproducer: distances [2, 2, 0, 0]; the third neighbour is item 0 or 1.
    x = np.array([[-1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    codes = np.array([0, 1, 0, 1, 1])
    predicted = knn_predict(x[:4], codes[:4], x[4:], k=3, n_classes=2)
    # Neighbours 2, 3 and 0 (not 1): votes 2 for class 0 against 1 for class 1.
    assert predicted.tolist() == [0]


def duplicate_heavy_digits() -> tuple[np.ndarray, np.ndarray]:
    """Real digits pooled to 4 x 4 and thresholded: 1,797 images on 189 distinct patterns,
    so most neighbours are exact duplicates and ties at the k-th place are everywhere.

    A random projection turns the patterns into generic embeddings: binary vectors would
    also tie in exact arithmetic between different patterns (cosine 2/4 = 3/6), and those
    ties are decided by rounding, which differs between any two implementations.
    """
    digits = load_digits()
    pooled = digits.images.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))
    patterns = (pooled > 6).reshape(len(pooled), -1).astype(np.float64)
    return patterns @ np.random.default_rng(0).normal(size=(16, 32)), digits.target


def index_tie_broken_ranks(distances: np.ndarray) -> np.ndarray:
    """Each row's ranks by (distance, column index): all distinct, in the documented order."""
    order = np.argsort(distances, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(distances.shape[1])[np.newaxis, :], axis=1)
    return ranks.astype(np.float64)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_leave_one_out_with_many_ties_matches_sklearn_given_the_tie_rule(k):
    # scikit-learn's own tie order is whatever argpartition returns, so it gets distances in
    # which ties are already broken by index: its vote then follows the documented rule.
    x, y = duplicate_heavy_digits()
    distances = cosine_distances(x)
    np.fill_diagonal(distances, np.inf)  # leave-one-out: a query never votes for itself
    ranks = index_tie_broken_ranks(distances)
    reference = KNeighborsClassifier(n_neighbors=k, metric="precomputed").fit(ranks, y)
    expected = reference.predict(ranks)
    assert knn_accuracy(x, y, k=k).accuracy == (expected == y).mean()
    np.testing.assert_array_equal(
        knn_predict(x, y, x, k=k, n_classes=10, exclude_self=True), expected
    )


def test_train_test_split_with_many_ties_matches_sklearn_given_the_tie_rule():
    x, y = duplicate_heavy_digits()
    test = np.random.default_rng(0).random(len(y)) < 0.3
    ranks = index_tie_broken_ranks(cosine_distances(x[test], x[~test]))
    reference = KNeighborsClassifier(n_neighbors=7, metric="precomputed")
    reference.fit(index_tie_broken_ranks(cosine_distances(x[~test])), y[~test])
    expected = reference.predict(ranks)
    ours = knn_predict(x[~test], y[~test], x[test], k=7, n_classes=10)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("k", [1, 2, 7, 25, 49, 50])
def test_neighbour_selection_equals_a_stable_full_sort_on_tie_heavy_rows(k):
    values = np.random.default_rng(k).integers(0, 4, size=(300, 50)).astype(np.float64)
    values[::7, 3] = np.inf  # as a left-out query's own column
    expected = np.argsort(values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(k_smallest(values, k), expected)
