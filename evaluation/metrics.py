"""The metrics a run can ask for: their names, parameters, validation and computation.

Each metric is computed by the engine; this module turns a run's stored metric entry
(``{"name": ..., "params": {...}}``) and a target into engine calls and Score values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.clustering import clustering_scores
from evaluation.engine.metrics.human import (
    CORRELATIONS,
    PairRatings,
    pair_alignment,
    triplet_accuracy,
    two_afc_accuracy,
)
from evaluation.engine.metrics.knn import knn_accuracy
from evaluation.engine.metrics.probes import (
    few_shot_accuracy,
    linear_probe_accuracy,
    nearest_class_mean_accuracy,
    weighted_knn_accuracy,
)
from evaluation.engine.metrics.results import MetricResult
from evaluation.engine.metrics.retrieval import retrieval_scores
from evaluation.engine.metrics.reweighting import reweighted_pair_alignment

HOLDOUT_TEST_FRACTION = 0.25
HOLDOUT_SEED = 0


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    target_kinds: tuple[str, ...]
    description: str
    higher_is_better: bool = True


METRICS: dict[str, MetricInfo] = {
    "knn": MetricInfo(
        name="knn",
        label="k-NN accuracy",
        target_kinds=("labels",),
        description="Cosine k-nearest-neighbour classification accuracy (Wilson 95% CI).",
    ),
    "weighted_knn": MetricInfo(
        name="weighted_knn",
        label="Weighted k-NN accuracy (DINO)",
        target_kinds=("labels",),
        description="k=20 cosine neighbours voting with weight exp(sim / 0.07), leave-one-out.",
    ),
    "nearest_class_mean": MetricInfo(
        name="nearest_class_mean",
        label="Nearest-class-mean accuracy",
        target_kinds=("labels",),
        description="Cosine distance to class means, leave-one-out (Wilson 95% CI).",
    ),
    "linear_probe": MetricInfo(
        name="linear_probe",
        label="Linear probe accuracy",
        target_kinds=("labels",),
        description="Logistic regression on standardised features, C by inner CV, 5-fold outer CV.",
    ),
    "few_shot": MetricInfo(
        name="few_shot",
        label="Few-shot accuracy",
        target_kinds=("labels",),
        description="n-way k-shot prototype episodes (mean and t-interval over 600 episodes).",
    ),
    "retrieval_map": MetricInfo(
        name="retrieval_map",
        label="Retrieval mAP",
        target_kinds=("labels",),
        description="Same-label retrieval by cosine similarity; recall@k in details.",
    ),
    "kmeans_nmi": MetricInfo(
        name="kmeans_nmi",
        label="k-means NMI",
        target_kinds=("labels",),
        description="NMI of k-means clusters (k = number of labels) with the labels; ARI in details.",
    ),
    "pair_alignment": MetricInfo(
        name="pair_alignment",
        label="Correlation with human pair ratings",
        target_kinds=("pairs",),
        description="Correlation of cosine similarity with the mean rating per pair "
        "(bootstrap CI over stimuli; ceiling: split-half reliability).",
    ),
    "reweighted_pair_alignment": MetricInfo(
        name="reweighted_pair_alignment",
        label="Reweighted correlation with pair ratings",
        target_kinds=("pairs",),
        description="Peterson et al. 2018: ridge-fitted weights per dimension, scored on "
        "held-out stimuli (5 stimulus folds); bootstrap CI over stimuli.",
    ),
    "odd_one_out": MetricInfo(
        name="odd_one_out",
        label="Odd-one-out agreement",
        target_kinds=("triplets",),
        description="Share of human odd-one-out responses the model agrees with "
        "(bootstrap CI over stimuli; ceiling: leave-one-out agreement).",
    ),
    "two_afc": MetricInfo(
        name="two_afc",
        label="2AFC agreement",
        target_kinds=("2afc",),
        description="Mean human vote share of the model's choice, ties 0.5 "
        "(bootstrap CI over stimuli; ceiling: leave-one-out agreement).",
    ),
}

KNN_SPLITS = {
    "loo": "leave-one-out",
    "holdout": "train/test split (the dataset's, else a stratified 25% test split)",
}
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class StimulusFacts:
    label: str
    split: str


@dataclass(frozen=True)
class LabelsData:
    stimuli: Sequence[StimulusFacts]


@dataclass(frozen=True)
class PairsData:
    ratings: PairRatings
    ceiling: float | None


@dataclass(frozen=True)
class TripletsData:
    triplets: np.ndarray  # (n, 3) stimulus rows
    chosen: np.ndarray  # the stimulus row picked as odd one out, per response
    ceiling: float | None


@dataclass(frozen=True)
class TwoAfcData:
    reference: np.ndarray
    first: np.ndarray
    second: np.ndarray
    share_first: np.ndarray  # human vote share of ``first`` per item
    ceiling: float | None


TargetData = LabelsData | PairsData | TripletsData | TwoAfcData


def knn_entry(*, k: int, split: str) -> dict[str, Any]:
    if k < 1:
        raise MetricError("k must be at least 1.")
    if split not in KNN_SPLITS:
        raise MetricError(f"Unknown split {split!r}; choose one of {', '.join(KNN_SPLITS)}.")
    return {"name": "knn", "params": {"k": int(k), "split": split}}


def pair_alignment_entry(*, correlation: str = "spearman") -> dict[str, Any]:
    if correlation not in CORRELATIONS:
        raise MetricError(f"Unknown correlation {correlation!r}; use pearson or spearman.")
    return {"name": "pair_alignment", "params": {"correlation": correlation}}


def reweighted_pair_alignment_entry(*, correlation: str = "pearson") -> dict[str, Any]:
    if correlation not in CORRELATIONS:
        raise MetricError(f"Unknown correlation {correlation!r}; use pearson or spearman.")
    return {"name": "reweighted_pair_alignment", "params": {"correlation": correlation}}


def odd_one_out_entry() -> dict[str, Any]:
    return {"name": "odd_one_out", "params": {}}


def two_afc_entry() -> dict[str, Any]:
    return {"name": "two_afc", "params": {}}


def compute(entry: dict[str, Any], embeddings: np.ndarray, data: TargetData) -> MetricResult:
    name, params = entry["name"], entry["params"]
    if name == "knn" and isinstance(data, LabelsData):
        return _knn(embeddings, data.stimuli, **params)
    if isinstance(data, LabelsData) and name in LABEL_PROBES:
        return _labelled(embeddings, data.stimuli, LABEL_PROBES[name], params)
    if name == "pair_alignment" and isinstance(data, PairsData):
        return pair_alignment(
            embeddings,
            data.ratings,
            correlation=params["correlation"],
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    if name == "reweighted_pair_alignment" and isinstance(data, PairsData):
        return reweighted_pair_alignment(
            embeddings,
            data.ratings,
            correlation=params["correlation"],
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    if name == "odd_one_out" and isinstance(data, TripletsData):
        return triplet_accuracy(
            embeddings, data.triplets, data.chosen, n_boot=BOOTSTRAP_RESAMPLES, ceiling=data.ceiling
        )
    if name == "two_afc" and isinstance(data, TwoAfcData):
        return two_afc_accuracy(
            embeddings,
            data.reference,
            data.first,
            data.second,
            data.share_first,
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    raise MetricError(f"The metric {name!r} does not apply to this target.")


def _labelled(
    embeddings: np.ndarray,
    stimuli: Sequence[StimulusFacts],
    probe: Callable[..., MetricResult],
    params: dict[str, Any],
) -> MetricResult:
    """Run a label probe on the labelled stimuli (unlabelled ones are left out)."""
    labels = np.array([s.label for s in stimuli], dtype=object)
    labelled = labels != ""
    if not labelled.any():
        raise MetricError("The dataset has no labels.")
    return probe(np.asarray(embeddings)[labelled], labels[labelled].astype(str), **params)


def _retrieval_map(embeddings: np.ndarray, labels: np.ndarray) -> MetricResult:
    scores = retrieval_scores(embeddings, labels)
    result = scores["map"]
    recall = {key: value.value for key, value in scores.items() if key != "map"}
    return replace(result, details={**result.details, **recall})


def _kmeans_nmi(embeddings: np.ndarray, labels: np.ndarray) -> MetricResult:
    scores = clustering_scores(embeddings, labels)
    ari = scores["ari"]
    return replace(
        scores["nmi"],
        details={**scores["nmi"].details, "ari": ari.value, "ari_ci": [ari.ci_low, ari.ci_high]},
    )


LABEL_PROBES: dict[str, Callable[..., MetricResult]] = {
    "weighted_knn": weighted_knn_accuracy,
    "nearest_class_mean": nearest_class_mean_accuracy,
    "linear_probe": linear_probe_accuracy,
    "few_shot": few_shot_accuracy,
    "retrieval_map": _retrieval_map,
    "kmeans_nmi": _kmeans_nmi,
}


def probe_entry(name: str, **params: Any) -> dict[str, Any]:
    if name not in LABEL_PROBES:
        raise MetricError(f"Unknown label metric {name!r}.")
    return {"name": name, "params": params}


def _knn(
    embeddings: np.ndarray, stimuli: Sequence[StimulusFacts], *, k: int, split: str
) -> MetricResult:
    labels = np.array([s.label for s in stimuli], dtype=object)
    labelled = labels != ""
    if not labelled.any():
        raise MetricError("The dataset has no labels, so k-NN accuracy cannot be computed.")
    notes: dict[str, Any] = {"unlabelled_excluded": int((~labelled).sum())}
    if split == "loo":
        x, y, test_mask = embeddings[labelled], labels[labelled], None
    else:
        x, y, test_mask, notes["split_source"] = _holdout(embeddings, labels, stimuli, labelled)
    result = knn_accuracy(np.asarray(x), y.astype(str), k=k, test_mask=test_mask)
    return MetricResult(
        value=result.accuracy,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        n=result.n_test,
        details={**result.details, **notes, "n_train": result.n_train, "correct": result.correct},
    )


def _holdout(
    embeddings: np.ndarray,
    labels: np.ndarray,
    stimuli: Sequence[StimulusFacts],
    labelled: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    splits = np.array([s.split for s in stimuli], dtype=object)
    if (splits[labelled] == "test").any():
        keep = labelled & np.isin(splits, ["train", "test"])
        if not (splits[keep] == "train").any():
            raise MetricError("The dataset has a test split but no train split.")
        return embeddings[keep], labels[keep], splits[keep] == "test", "dataset"
    indices = np.flatnonzero(labelled)
    try:
        _, test_indices = train_test_split(
            indices,
            test_size=HOLDOUT_TEST_FRACTION,
            random_state=HOLDOUT_SEED,
            stratify=labels[indices],
        )
    except ValueError as exc:
        raise MetricError(f"Cannot make a stratified train/test split: {exc}") from None
    test_mask = np.isin(indices, test_indices)
    source = f"stratified random {int(HOLDOUT_TEST_FRACTION * 100)}% test, seed {HOLDOUT_SEED}"
    return embeddings[indices], labels[indices], test_mask, source
