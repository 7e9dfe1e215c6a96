"""Classification probes of embeddings: weighted k-NN, nearest class mean, linear probe and
few-shot prototype episodes.

Each asks how well the embeddings separate a dataset's labels, with a different amount of
learning on top: none (k-NN, class means, prototypes) or a fitted linear layer. All return
a MetricResult whose value is an accuracy in [0, 1] and whose ``n`` is the number of test
items (episodes, for few-shot). Similarities are computed in float64 for the reason given
in knn.py, and queries are processed in blocks so memory stays bounded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import t_interval, wilson_interval
from evaluation.engine.metrics.knn import k_smallest, normalize_rows
from evaluation.engine.metrics.results import MetricResult, confusion_matrix
from evaluation.engine.metrics.validation import (
    LabelledEmbeddings,
    at_least,
    classifier_inputs,
    labelled_embeddings,
    split_mask,
)

QUERY_BLOCK = 1024
# Entries of one query-by-training-item similarity block; the top-k selection keeps about
# six arrays of this size, so memory stays near 200 MB however many training items there are.
BLOCK_ENTRIES = 2**22
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
# lbfgs on standardised features with weak regularisation (C=1e3) needs a few thousand
# iterations on nearly separable data; fits that still stop early are counted in details.
PROBE_MAX_ITER = 5000


@dataclass(frozen=True)
class _Split:
    train: np.ndarray  # indices of training stimuli
    test: np.ndarray  # indices of test stimuli
    leave_one_out: bool

    @property
    def n_train(self) -> int:
        return len(self.train) - 1 if self.leave_one_out else len(self.train)

    @property
    def name(self) -> str:
        return "leave-one-out" if self.leave_one_out else "train/test"


def _split(n: int, test_mask: np.ndarray | None) -> _Split:
    if test_mask is None:
        everyone = np.arange(n)
        return _Split(train=everyone, test=everyone, leave_one_out=True)
    mask = split_mask(test_mask, n)
    return _Split(train=np.flatnonzero(~mask), test=np.flatnonzero(mask), leave_one_out=False)


def _accuracy_result(
    data: LabelledEmbeddings, truth: np.ndarray, predicted: np.ndarray, details: dict[str, Any]
) -> MetricResult:
    correct = int((predicted == truth).sum())
    low, high = wilson_interval(correct, len(truth))
    return MetricResult(
        value=correct / len(truth),
        ci_low=low,
        ci_high=high,
        n=len(truth),
        details={
            **details,
            "correct": correct,
            "ci_method": "wilson-95",
            "classes": [str(c) for c in data.classes],
            "confusion": confusion_matrix(truth, predicted, data.n_classes).tolist(),
            "majority_class_rate": float(np.bincount(truth).max() / len(truth)),
        },
    )


# --- weighted k-NN (DINO) -------------------------------------------------------------------


def weighted_knn_predict(
    train_x: np.ndarray,
    train_codes: np.ndarray,
    query_x: np.ndarray,
    *,
    k: int,
    temperature: float,
    n_classes: int,
    exclude_self: bool = False,
) -> np.ndarray:
    """Predicted class codes by DINO's weighted vote; with ``exclude_self`` query i is train i."""
    train, train_codes, query = classifier_inputs(
        train_x, train_codes, query_x, n_classes=n_classes, exclude_self=exclude_self, k=k
    )
    train_n, query_n = normalize_rows(train), normalize_rows(query)
    predictions = np.empty(len(query_n), dtype=np.int64)
    block = max(1, min(QUERY_BLOCK, BLOCK_ENTRIES // max(len(train_n), 1)))
    for start in range(0, len(query_n), block):
        stop = min(start + block, len(query_n))
        rows = np.arange(stop - start)
        similarity = query_n[start:stop] @ train_n.T
        if exclude_self:
            similarity[rows, start + rows] = -np.inf
        # Most similar first; equal similarities go to the lower training index.
        neighbours = k_smallest(-similarity, k)
        nearest = np.take_along_axis(similarity, neighbours, axis=1)
        # exp(s / T) relative to the closest neighbour: the same vote ratios as DINO, but
        # no overflow or all-zero underflow when T is small.
        weights = np.exp((nearest - nearest[:, :1]) / temperature)
        votes = np.zeros((stop - start, n_classes))
        np.add.at(votes, (rows[:, np.newaxis], train_codes[neighbours]), weights)
        predictions[start:stop] = votes.argmax(axis=1)  # a tied vote goes to the smallest label
    return predictions


def weighted_knn_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    test_mask: np.ndarray | None = None,
) -> MetricResult:
    """DINO's k-NN accuracy (Caron et al. 2021, ``eval_knn.py``).

    Cosine similarity on L2-normalised embeddings; each of the k most similar training items
    votes for its class with weight exp(similarity / temperature) and the class with the
    largest summed weight wins. Leave-one-out when ``test_mask`` is None, else the items
    outside the mask are the training set. Wilson interval over test items.
    """
    data = labelled_embeddings(embeddings, labels, what="Weighted k-NN accuracy")
    at_least(k, 1, name="k")
    if not (np.isfinite(temperature) and temperature > 0):
        raise MetricError(f"The temperature must be a positive number, got {temperature}.")
    split = _split(len(data.x), test_mask)
    if k > split.n_train:
        raise MetricError(f"k={k} is larger than the {split.n_train} training stimuli available.")
    predicted = weighted_knn_predict(
        data.x[split.train],
        data.codes[split.train],
        data.x[split.test],
        k=k,
        temperature=temperature,
        n_classes=data.n_classes,
        exclude_self=split.leave_one_out,
    )
    return _accuracy_result(
        data,
        data.codes[split.test],
        predicted,
        {
            "split": split.name,
            "n_train": split.n_train,
            "k": k,
            "temperature": temperature,
            "similarity": "cosine",
            "vote": "exp(similarity / temperature)",
        },
    )


# --- nearest class mean ---------------------------------------------------------------------

CentroidMetric = Literal["cosine", "euclidean"]


def _class_sums(x: np.ndarray, codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, codes, x)
    return sums, np.bincount(codes, minlength=n_classes)


def _centroid_scores(
    query: np.ndarray, sums: np.ndarray, counts: np.ndarray, metric: CentroidMetric
) -> np.ndarray:
    """Per (query, class): larger is closer. Classes with no training item score -inf."""
    present = counts > 0
    if metric == "cosine":
        # The cosine to a mean is the cosine to the class sum: no division by counts needed.
        norms = np.linalg.norm(sums, axis=1)
        scores = (query @ sums.T) / np.where(norms > 0, norms, 1.0)
    else:
        means = sums / np.maximum(counts, 1)[:, np.newaxis]
        squared = (
            np.einsum("ij,ij->i", query, query)[:, np.newaxis]
            - 2.0 * (query @ means.T)
            + np.einsum("ij,ij->i", means, means)[np.newaxis, :]
        )
        scores = -np.maximum(squared, 0.0)
    scores[:, ~present] = -np.inf
    return scores


def _own_class_left_out_scores(
    query: np.ndarray, own_sums: np.ndarray, own_counts: np.ndarray, metric: CentroidMetric
) -> np.ndarray:
    """Score of each query against its own class mean with the query itself removed.

    Removing x from a class of n with sum S leaves sum S - x. For the Euclidean distance this
    is exact algebra: x - (S - x)/(n - 1) = n/(n - 1) * (x - S/n).
    """
    alone = own_counts == 1
    if metric == "cosine":
        query_dot_sum = np.einsum("ij,ij->i", query, own_sums)
        query_sq = np.einsum("ij,ij->i", query, query)
        sum_sq = np.einsum("ij,ij->i", own_sums, own_sums)
        remaining_norm = np.sqrt(np.maximum(sum_sq - 2.0 * query_dot_sum + query_sq, 0.0))
        remaining_dot = query_dot_sum - query_sq
        scores = remaining_dot / np.where(remaining_norm > 0, remaining_norm, 1.0)
    else:
        diff = query - own_sums / own_counts[:, np.newaxis]
        scale = own_counts / np.maximum(own_counts - 1, 1)
        scores = -(scale**2) * np.einsum("ij,ij->i", diff, diff)
    scores[alone] = -np.inf  # the class has no other member to form a mean
    return scores


def nearest_class_mean_predict(
    train_x: np.ndarray,
    train_codes: np.ndarray,
    query_x: np.ndarray,
    *,
    n_classes: int,
    metric: CentroidMetric = "cosine",
    leave_one_out: bool = False,
) -> np.ndarray:
    """Predicted class codes: the class whose training mean is closest.

    With cosine, items are L2-normalised before averaging. With ``leave_one_out`` the queries
    are the training items and each is scored against class means that exclude it.
    """
    train, train_codes, query = classifier_inputs(
        train_x, train_codes, query_x, n_classes=n_classes, exclude_self=leave_one_out
    )
    if metric == "cosine":
        train, query = normalize_rows(train), normalize_rows(query)
    sums, counts = _class_sums(train, train_codes, n_classes)
    predictions = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, len(query))
        scores = _centroid_scores(query[start:stop], sums, counts, metric)
        if leave_one_out:
            own = train_codes[start:stop]
            scores[np.arange(stop - start), own] = _own_class_left_out_scores(
                query[start:stop], sums[own], counts[own], metric
            )
        predictions[start:stop] = scores.argmax(axis=1)  # ties: the smallest label
    return predictions


def nearest_class_mean_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    metric: CentroidMetric = "cosine",
    test_mask: np.ndarray | None = None,
) -> MetricResult:
    """Accuracy of assigning each test item to the class with the closest training mean.

    ``metric="euclidean"`` is scikit-learn's NearestCentroid; ``"cosine"`` normalises items
    first and compares by cosine to the class means. Leave-one-out when ``test_mask`` is
    None: each item's own class mean is recomputed without it (analytically, not by
    refitting); an item whose class has no other member cannot be classified correctly.
    """
    data = labelled_embeddings(embeddings, labels, what="Nearest-class-mean accuracy")
    if metric not in ("cosine", "euclidean"):
        raise MetricError(
            f"Unknown metric {metric!r} for nearest class mean: use cosine or euclidean."
        )
    split = _split(len(data.x), test_mask)
    predicted = nearest_class_mean_predict(
        data.x[split.train],
        data.codes[split.train],
        data.x[split.test],
        n_classes=data.n_classes,
        metric=metric,
        leave_one_out=split.leave_one_out,
    )
    return _accuracy_result(
        data,
        data.codes[split.test],
        predicted,
        {"split": split.name, "n_train": split.n_train, "metric": metric},
    )


# --- linear probe ---------------------------------------------------------------------------


def _probe_pipeline(C: float) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=PROBE_MAX_ITER))


def _fit_probe(
    x: np.ndarray, codes: np.ndarray, *, Cs: Sequence[float], folds: int, seed: int
) -> tuple[Pipeline, float]:
    """The probe refitted on all of (x, codes) with C chosen by stratified inner CV.

    The scaler sits inside the pipeline so each inner fold standardises on its own training
    part; ties in CV accuracy go to the smaller C (stronger regularisation).
    """
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise MetricError("The linear probe's training part holds only one class.")
    if len(Cs) == 1:
        return _probe_pipeline(Cs[0]).fit(x, codes), float(Cs[0])
    inner = min(folds, int(counts.min()))
    if inner < 2:
        raise MetricError(
            "Choosing C by cross-validation needs at least 2 training stimuli per class; "
            "one class has a single one. Give a single C or more stimuli."
        )
    search = GridSearchCV(
        _probe_pipeline(Cs[0]),
        {"logisticregression__C": list(Cs)},
        cv=StratifiedKFold(n_splits=inner, shuffle=True, random_state=seed),
        scoring="accuracy",
    )
    search.fit(x, codes)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def linear_probe_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_mask: np.ndarray | None = None,
    folds: int = 5,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
) -> MetricResult:
    """Accuracy of a multinomial logistic regression on standardised embeddings.

    The scaler is fitted on training items only and C is chosen from ``Cs`` by stratified
    ``folds``-fold CV within the training part. With ``test_mask`` the items outside it
    train one probe; without, stratified ``folds``-fold outer CV predicts every item once
    by a probe that never saw it. Wilson interval over test items; ``details["chosen_C"]``
    lists the C picked for each outer fold.
    """
    data = labelled_embeddings(embeddings, labels, what="The linear probe")
    at_least(folds, 2, name="folds (cross-validation)")
    grid = sorted(float(C) for C in Cs)
    if not grid or any(not (np.isfinite(C) and C > 0) for C in grid):
        raise MetricError(f"The regularisation strengths Cs must be positive numbers, got {Cs}.")
    if test_mask is None:
        counts = np.bincount(data.codes)
        if counts.min() < folds:
            smallest = str(data.classes[counts.argmin()])
            raise MetricError(
                f"{folds}-fold cross-validation needs at least {folds} stimuli per class; "
                f"class {smallest!r} has {counts.min()}. Use fewer folds or a test split."
            )
        outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(outer.split(data.x, data.codes))
        split_name = f"stratified {folds}-fold"
    else:
        split = _split(len(data.x), test_mask)
        splits = [(split.train, split.test)]
        split_name = "train/test"
    predicted = np.empty(len(data.x), dtype=np.int64)
    chosen: list[float] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for train, test in splits:
            probe, C = _fit_probe(data.x[train], data.codes[train], Cs=grid, folds=folds, seed=seed)
            predicted[test] = probe.predict(data.x[test])
            chosen.append(C)
    unconverged = 0
    for caught_warning in caught:
        if issubclass(caught_warning.category, ConvergenceWarning):
            unconverged += 1
        else:
            warnings.warn(caught_warning.message, caught_warning.category, stacklevel=2)
    tested = np.concatenate([test for _, test in splits])
    return _accuracy_result(
        data,
        data.codes[tested],
        predicted[tested],
        {
            "split": split_name,
            "n_train": [len(train) for train, _ in splits],
            "Cs": grid,
            "chosen_C": chosen,
            "inner_folds": folds,
            "model": "standardised features, multinomial logistic regression (lbfgs)",
            "max_iter": PROBE_MAX_ITER,
            "unconverged_fits": unconverged,
        },
    )


# --- few-shot prototypes --------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    support: np.ndarray  # item indices, shape (n_way, k_shot); row r is the episode's class r
    query: np.ndarray  # item indices, shape (n_way, n_query)


def few_shot_episodes(
    codes: np.ndarray, *, n_way: int, k_shot: int, n_query: int, episodes: int, seed: int
) -> list[Episode]:
    """Sample episodes: n_way distinct eligible classes, then for each class k_shot support
    and n_query query items drawn together without replacement (so they never overlap)."""
    rng = np.random.default_rng(seed)
    per_episode = k_shot + n_query
    members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    eligible = np.array([c for c, m in enumerate(members) if len(m) >= per_episode])
    if len(eligible) < n_way:
        raise MetricError(
            f"{n_way}-way episodes with {k_shot} support and {n_query} query stimuli need "
            f"{n_way} classes of at least {per_episode} stimuli each; only "
            f"{len(eligible)} of the {len(members)} classes have that many."
        )
    sampled = []
    for _ in range(episodes):
        ways = rng.choice(eligible, size=n_way, replace=False)
        picks = np.stack([rng.choice(members[c], size=per_episode, replace=False) for c in ways])
        sampled.append(Episode(support=picks[:, :k_shot], query=picks[:, k_shot:]))
    return sampled


def _episode_accuracy(x_normalized: np.ndarray, episode: Episode) -> float:
    prototypes = normalize_rows(x_normalized[episode.support].mean(axis=1))
    n_way, n_query = episode.query.shape
    similarity = x_normalized[episode.query.ravel()] @ prototypes.T
    truth = np.repeat(np.arange(n_way), n_query)
    return float((similarity.argmax(axis=1) == truth).mean())


def few_shot_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> MetricResult:
    """Mean accuracy of a prototype classifier over sampled n-way k-shot episodes.

    The prototype of a class is the mean of its L2-normalised support embeddings; each query
    goes to the prototype with the highest cosine. Classes with fewer than k_shot + n_query
    items cannot fill an episode and are left out (listed in details). The interval is a
    Student-t interval over episode accuracies, clipped to [0, 1].
    """
    data = labelled_embeddings(embeddings, labels, what="Few-shot accuracy")
    for name, value, least in (
        ("n_way", n_way, 2),
        ("k_shot", k_shot, 1),
        ("n_query", n_query, 1),
        ("episodes", episodes, 2),
    ):
        at_least(value, least, name=name)
    x = normalize_rows(data.x)
    sampled = few_shot_episodes(
        data.codes, n_way=n_way, k_shot=k_shot, n_query=n_query, episodes=episodes, seed=seed
    )
    accuracies = np.array([_episode_accuracy(x, episode) for episode in sampled])
    eligible = np.bincount(data.codes, minlength=data.n_classes) >= k_shot + n_query
    low, high = t_interval(accuracies)
    return MetricResult(
        value=float(accuracies.mean()),
        ci_low=max(0.0, low),
        ci_high=min(1.0, high),
        n=episodes,
        details={
            "n_way": n_way,
            "k_shot": k_shot,
            "n_query": n_query,
            "episodes": episodes,
            "seed": seed,
            "classifier": "cosine to the mean of normalised support embeddings",
            "ci_method": "student-t-95 over episodes",
            "chance": 1.0 / n_way,
            "eligible_classes": int(eligible.sum()),
            "excluded_classes": [str(c) for c in data.classes[~eligible]],
            "episode_accuracies": accuracies.tolist(),
        },
    )
