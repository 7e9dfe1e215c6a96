"""Probe accuracies (DINO weighted k-NN, nearest class mean, linear probe, few-shot) must
equal independent references: plain Python loops written here, or scikit-learn, on the
real pixels of scikit-learn's handwritten digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import t_interval, wilson_interval
from evaluation.engine.metrics.probes import (
    few_shot_accuracy,
    few_shot_episodes,
    linear_probe_accuracy,
    nearest_class_mean_accuracy,
    weighted_knn_accuracy,
    weighted_knn_predict,
)


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


def unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.sqrt((v * v).sum()))
    return v / norm if norm else v


# --- weighted k-NN ----------------------------------------------------------------------------


def dino_knn_reference(train_x, train_y, query_x, *, k, temperature, leave_one_out=False):
    """DINO's eval_knn vote, one query at a time: top-k cosine, weights exp(sim / T)."""
    train_unit = [unit(t) for t in train_x]
    predictions = []
    for i, query in enumerate(query_x):
        q = unit(query)
        sims = [
            (float(q @ t), j) for j, t in enumerate(train_unit) if not (leave_one_out and j == i)
        ]
        top = sorted(sims, key=lambda s: (-s[0], s[1]))[:k]
        votes: dict[int, float] = {}
        for sim, j in top:
            votes[int(train_y[j])] = votes.get(int(train_y[j]), 0.0) + math.exp(sim / temperature)
        predictions.append(max(sorted(votes), key=lambda c: votes[c]))
    return np.array(predictions)


def test_weighted_knn_leave_one_out_matches_the_reference_loop(digits):
    x, y = digits[0][:400], digits[1][:400]
    reference = dino_knn_reference(x, y, x, k=20, temperature=0.07, leave_one_out=True)
    ours = weighted_knn_predict(x, y, x, k=20, temperature=0.07, n_classes=10, exclude_self=True)
    np.testing.assert_array_equal(ours, reference)
    result = weighted_knn_accuracy(x, y)  # DINO defaults: k=20, T=0.07
    correct = int((reference == y).sum())
    assert result.value == correct / len(y)
    assert (result.ci_low, result.ci_high) == wilson_interval(correct, len(y))
    assert result.n == 400 and result.details["n_train"] == 399


def test_weighted_knn_split_matches_the_reference_loop(digits):
    x, y = digits[0][:500], digits[1][:500]
    test = np.random.default_rng(3).random(len(y)) < 0.3
    reference = dino_knn_reference(x[~test], y[~test], x[test], k=10, temperature=0.5)
    result = weighted_knn_accuracy(x, y, k=10, temperature=0.5, test_mask=test)
    assert result.value == (reference == y[test]).mean()
    assert result.n == test.sum()


def test_weighted_knn_breaks_ties_at_the_kth_place_by_lower_index():
    # One-hot embeddings: similarities are exactly 0 or 1, so the k-th place is always tied.
    rng = np.random.default_rng(1)
    x = np.eye(3)[rng.integers(0, 3, size=80)]
    y = rng.integers(0, 4, size=80)
    for k in (1, 4, 9):
        reference = dino_knn_reference(x, y, x, k=k, temperature=0.07, leave_one_out=True)
        ours = weighted_knn_predict(x, y, x, k=k, temperature=0.07, n_classes=4, exclude_self=True)
        np.testing.assert_array_equal(ours, reference)


def test_weighted_knn_lets_one_close_neighbour_outvote_two_far_ones():
    # Uniform voting would pick "far" (2 votes to 1); weights exp(sim / T) pick "near".
    train = np.array([[1.0, 0.05], [0.6, 0.8], [0.6, -0.8]])
    labels = np.array(["near", "far", "far"])
    test = np.array([False, False, False, True])
    x = np.vstack([train, [[1.0, 0.0]]])
    y = np.append(labels, "near")
    assert weighted_knn_accuracy(x, y, k=3, temperature=0.07, test_mask=test).value == 1.0
    assert weighted_knn_accuracy(x, y, k=3, temperature=100.0, test_mask=test).value == 0.0


def test_weighted_knn_with_k_1_is_the_plain_cosine_nearest_neighbour(digits):
    x, y = digits[0][:300], digits[1][:300]
    test = np.arange(300) % 4 == 0
    reference = (
        KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
        .fit(x[~test], y[~test])
        .predict(x[test])
    )
    assert weighted_knn_accuracy(x, y, k=1, test_mask=test).value == (reference == y[test]).mean()


@pytest.mark.parametrize(
    ("embeddings", "labels", "kwargs", "message"),
    [
        (np.ones((4, 2)), np.array([1, 1, 1, 1]), {}, "at least two classes"),
        (np.ones((4, 2)), np.array([0, 1, 0]), {}, "4 embeddings but 3 labels"),
        (np.array([[1.0, np.nan], [1, 0], [0, 1]]), np.array([0, 1, 0]), {}, "NaN or infinite"),
        (np.eye(3), np.array([0, 1, 0]), {"k": 3}, "k=3 is larger than the 2 training"),
        (np.eye(3), np.array([0, 1, 0]), {"k": 1, "temperature": 0.0}, "temperature"),
        (
            np.eye(3),
            np.array([0, 1, 0]),
            {"k": 1, "test_mask": np.ones(3, bool)},
            "nothing to train",
        ),
    ],
)
def test_weighted_knn_refuses_bad_inputs_with_a_reason(embeddings, labels, kwargs, message):
    with pytest.raises(MetricError, match=message):
        weighted_knn_accuracy(embeddings, labels, **kwargs)


# --- nearest class mean -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_ has at least 1 zero")
def test_euclidean_class_means_on_a_split_match_sklearn_nearest_centroid(digits):
    x, y = digits
    test = np.random.default_rng(0).random(len(y)) < 0.3
    reference = NearestCentroid().fit(x[~test], y[~test]).predict(x[test])
    result = nearest_class_mean_accuracy(x, y, metric="euclidean", test_mask=test)
    assert result.value == (reference == y[test]).mean()


def ncm_reference(train_x, train_y, query_x, *, metric):
    """Class means by a literal loop; the closest one wins (first class on a tie)."""
    if metric == "cosine":
        train_x = np.array([unit(v) for v in train_x])
        query_x = np.array([unit(v) for v in query_x])
    classes = sorted(set(train_y.tolist()))
    means = {c: train_x[train_y == c].mean(axis=0) for c in classes}
    predictions = []
    for q in query_x:
        if metric == "cosine":
            scores = [float(q @ unit(means[c])) for c in classes]
        else:
            scores = [-float(((q - means[c]) ** 2).sum()) for c in classes]
        predictions.append(classes[int(np.argmax(scores))])
    return np.array(predictions)


def test_cosine_class_means_on_a_split_match_the_reference(digits):
    x, y = digits
    test = np.random.default_rng(1).random(len(y)) < 0.3
    reference = ncm_reference(x[~test], y[~test], x[test], metric="cosine")
    result = nearest_class_mean_accuracy(x, y, metric="cosine", test_mask=test)
    assert result.value == (reference == y[test]).mean()
    assert result.details["metric"] == "cosine"


def loo_reference(x, y, *, metric):
    """Refit the class means without item i, for every i (classes left empty drop out)."""
    predictions = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        predictions.append(ncm_reference(x[keep], y[keep], x[i : i + 1], metric=metric)[0])
    return np.array(predictions)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_leave_one_out_class_means_match_refitting_without_each_item(digits, metric):
    x, y = digits[0][:300], digits[1][:300].astype(str).astype(object)
    y[7] = "solo"  # a class of one: without its only member it cannot be predicted
    reference = loo_reference(x, y, metric=metric)
    result = nearest_class_mean_accuracy(x, y, metric=metric)
    assert result.value == (reference == y).mean()
    assert reference[7] != "solo"
    # The leave-one-out score is lower than scoring items against means that include them.
    optimistic = ncm_reference(x, y, x, metric=metric)
    assert result.value < (optimistic == y).mean()


def test_nearest_class_mean_refuses_an_unknown_metric(digits):
    with pytest.raises(MetricError, match="Unknown metric 'manhattan'"):
        nearest_class_mean_accuracy(*digits, metric="manhattan")  # type: ignore[arg-type]


# --- linear probe -----------------------------------------------------------------------------


def sklearn_probe(Cs, folds, seed):
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return GridSearchCV(
        pipeline,
        {"logisticregression__C": list(Cs)},
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
    )


def test_linear_probe_cross_validation_matches_sklearn_nested_cv(digits):
    x, y = digits[0][:240], digits[1][:240]
    Cs, folds = (0.01, 1.0, 100.0), 3
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    reference = cross_validate(
        sklearn_probe(Cs, folds, 0), x, y, cv=outer, return_estimator=True, return_indices=True
    )
    predicted = np.empty_like(y)
    for search, test in zip(reference["estimator"], reference["indices"]["test"], strict=True):
        predicted[test] = search.predict(x[test])
    result = linear_probe_accuracy(x, y, folds=folds, Cs=Cs, seed=0)
    assert result.value == (predicted == y).mean()
    assert result.n == 240  # every item predicted exactly once
    assert result.details["chosen_C"] == [
        search.best_params_["logisticregression__C"] for search in reference["estimator"]
    ]


def test_linear_probe_split_standardises_on_the_training_part_only(digits):
    x, y = digits[0][:600], digits[1][:600]
    test = np.random.default_rng(2).random(len(y)) < 0.3
    scaler = StandardScaler().fit(x[~test])
    model = LogisticRegression(C=0.5, max_iter=5000).fit(scaler.transform(x[~test]), y[~test])
    reference = model.predict(scaler.transform(x[test]))
    result = linear_probe_accuracy(x, y, test_mask=test, Cs=(0.5,))
    assert result.value == (reference == y[test]).mean()
    assert result.details["chosen_C"] == [0.5]


def test_linear_probe_is_at_chance_on_shuffled_labels(digits):
    # A probe scored on items it was trained on would fit shuffled labels well.
    x, y = digits[0][:400], digits[1][:400]
    shuffled = np.random.default_rng(0).permutation(y)
    assert linear_probe_accuracy(x, y, folds=3, Cs=(1.0,)).value > 0.9
    assert linear_probe_accuracy(x, shuffled, folds=3, Cs=(1.0,)).value < 0.2


def test_linear_probe_needs_enough_items_per_class_for_its_folds():
    x = np.random.default_rng(0).normal(size=(12, 3))
    y = np.array([0] * 9 + [1] * 3)
    with pytest.raises(MetricError, match="class '1' has 3"):
        linear_probe_accuracy(x, y, folds=5)


# --- few-shot ---------------------------------------------------------------------------------


def test_episodes_draw_distinct_classes_and_disjoint_support_and_query(digits):
    y = digits[1]
    episodes = few_shot_episodes(y, n_way=5, k_shot=3, n_query=4, episodes=50, seed=1)
    for episode in episodes:
        assert episode.support.shape == (5, 3) and episode.query.shape == (5, 4)
        items = np.concatenate([episode.support.ravel(), episode.query.ravel()])
        assert len(set(items.tolist())) == len(items)
        ways = y[episode.support[:, 0]]
        assert len(set(ways.tolist())) == 5
        assert (y[episode.support] == ways[:, None]).all()
        assert (y[episode.query] == ways[:, None]).all()
    again = few_shot_episodes(y, n_way=5, k_shot=3, n_query=4, episodes=50, seed=1)
    other = few_shot_episodes(y, n_way=5, k_shot=3, n_query=4, episodes=50, seed=2)
    assert all((a.query == b.query).all() for a, b in zip(episodes, again, strict=True))
    assert any((a.query != b.query).any() for a, b in zip(episodes, other, strict=True))


def test_few_shot_accuracy_matches_a_prototype_loop(digits):
    x, y = digits
    episodes = few_shot_episodes(y, n_way=5, k_shot=5, n_query=10, episodes=40, seed=4)
    accuracies = []
    for episode in episodes:
        prototypes = [unit(np.mean([unit(x[i]) for i in row], axis=0)) for row in episode.support]
        hits = [
            int(np.argmax([float(unit(x[i]) @ p) for p in prototypes])) == way
            for way, row in enumerate(episode.query)
            for i in row
        ]
        accuracies.append(np.mean(hits))
    result = few_shot_accuracy(x, y, n_way=5, k_shot=5, n_query=10, episodes=40, seed=4)
    np.testing.assert_allclose(result.details["episode_accuracies"], accuracies, rtol=0, atol=0)
    assert result.value == pytest.approx(np.mean(accuracies), abs=1e-12)
    low, high = t_interval(np.array(accuracies))
    assert (result.ci_low, result.ci_high) == (max(0.0, low), min(1.0, high))
    assert result.n == 40


def test_one_shot_prototypes_are_sklearn_one_nearest_neighbour(digits):
    x, y = digits
    result = few_shot_accuracy(x, y, n_way=5, k_shot=1, n_query=15, episodes=30, seed=5)
    for episode, accuracy in zip(
        few_shot_episodes(y, n_way=5, k_shot=1, n_query=15, episodes=30, seed=5),
        result.details["episode_accuracies"],
        strict=True,
    ):
        knn = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
        knn.fit(x[episode.support.ravel()], y[episode.support.ravel()])
        assert (
            accuracy == (knn.predict(x[episode.query.ravel()]) == y[episode.query.ravel()]).mean()
        )


def test_few_shot_is_good_on_digits_and_at_chance_on_shuffled_labels(digits):
    x, y = digits
    shuffled = np.random.default_rng(0).permutation(y)
    assert few_shot_accuracy(x, y, k_shot=5, episodes=100).value > 0.85
    assert abs(few_shot_accuracy(x, shuffled, k_shot=5, episodes=100).value - 0.2) < 0.03


def test_few_shot_leaves_out_small_classes_and_says_when_too_few_remain(digits):
    x, y = digits[0][:200], digits[1][:200].copy()
    y[y >= 7] = np.arange((y >= 7).sum()) + 100  # classes 7-9 become singletons
    result = few_shot_accuracy(x, y, n_way=5, k_shot=1, n_query=5, episodes=10)
    assert result.details["eligible_classes"] == 7
    assert "100" in result.details["excluded_classes"]
    with pytest.raises(MetricError, match="only 7 of the .* classes have that many"):
        few_shot_accuracy(x, y, n_way=8, k_shot=1, n_query=5, episodes=10)
