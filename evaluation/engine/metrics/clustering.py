"""How well unsupervised k-means clusters of the embeddings recover the dataset's labels.

k-means (scikit-learn) runs once on the embeddings, L2-normalised by default so that it
groups by direction as the cosine metrics do; the assignment is then compared with the
labels by normalised mutual information (arithmetic mean normalisation) and the adjusted
Rand index, both from scikit-learn.

The intervals resample stimuli with the clustering held fixed: they say how much the
agreement depends on which stimuli were drawn, not how stable k-means is. Resampling with
replacement duplicates items, which biases NMI upward (a percentile interval can then lie
wholly above the estimate), so the percentile interval is shifted by the bootstrap estimate
of that bias (mean of the resamples minus the estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.knn import normalize_rows
from evaluation.engine.metrics.results import MetricResult
from evaluation.engine.metrics.validation import labelled_embeddings

Agreement = Callable[[np.ndarray, np.ndarray], float]

AGREEMENTS: dict[str, Agreement] = {
    "nmi": lambda truth, clusters: float(normalized_mutual_info_score(truth, clusters)),
    "ari": lambda truth, clusters: float(adjusted_rand_score(truth, clusters)),
}


def kmeans_assignment(
    x: np.ndarray, *, n_clusters: int, seed: int, n_init: int, normalize: bool
) -> tuple[np.ndarray, float]:
    """Cluster index per stimulus and the k-means inertia."""
    data = normalize_rows(x) if normalize else x
    kmeans = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(data)
    return kmeans.labels_.astype(np.int64), float(kmeans.inertia_)


def _bootstrap_interval(
    agreement: Agreement,
    truth: np.ndarray,
    clusters: np.ndarray,
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Percentile interval of the resampled agreement, and its bias (mean - estimate)."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    values = np.empty(n_resamples)
    for r in range(n_resamples):  # one resample at a time: memory stays O(n)
        picks = rng.integers(0, n, size=n)
        values[r] = agreement(truth[picks], clusters[picks])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    bias = float(values.mean() - agreement(truth, clusters))
    return float(low), float(high), bias


def clustering_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    n_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    normalize: bool = True,
    n_resamples: int = 1000,
) -> dict[str, MetricResult]:
    """NMI and ARI between a k-means clustering of the embeddings and the labels.

    Returns ``{"nmi": ..., "ari": ...}``. ``n_clusters`` defaults to the number of label
    classes. Intervals: percentile bootstrap over stimuli of the fixed assignment, the same
    ``n_resamples`` index draws (from ``seed``) for both scores.
    """
    data = labelled_embeddings(embeddings, labels, what="Clustering agreement")
    n = len(data.x)
    clusters_wanted = data.n_classes if n_clusters is None else int(n_clusters)
    if not 2 <= clusters_wanted <= n:
        raise MetricError(
            f"k-means needs between 2 and {n} (the number of stimuli) clusters, "
            f"got {clusters_wanted}."
        )
    if n_init < 1:
        raise MetricError(f"n_init must be at least 1, got {n_init}.")
    if n_resamples < 1:
        raise MetricError(f"The bootstrap needs at least one resample, got {n_resamples}.")
    clusters, inertia = kmeans_assignment(
        data.x, n_clusters=clusters_wanted, seed=seed, n_init=n_init, normalize=normalize
    )
    contingency = np.zeros((data.n_classes, clusters_wanted), dtype=np.int64)
    np.add.at(contingency, (data.codes, clusters), 1)
    details: dict[str, Any] = {
        "n_clusters": clusters_wanted,
        "clusters_found": len(np.unique(clusters)),
        "normalized": normalize,
        "n_init": n_init,
        "seed": seed,
        "inertia": inertia,
        "classes": [str(c) for c in data.classes],
        "contingency": contingency.tolist(),  # classes along rows, clusters along columns
        "ci_method": "bias-shifted percentile bootstrap 95% over stimuli, assignment fixed",
        "n_resamples": n_resamples,
    }
    results = {}
    for name, agreement in AGREEMENTS.items():
        q_low, q_high, bias = _bootstrap_interval(
            agreement, data.codes, clusters, n_resamples=n_resamples, seed=seed
        )
        value = agreement(data.codes, clusters)
        results[name] = MetricResult(
            value=value,
            ci_low=q_low - bias,
            ci_high=q_high - bias,
            n=n,
            details={**details, "score": name},
        )
    return results
