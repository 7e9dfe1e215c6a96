"""The metrics a run can ask for: their names, parameters, validation and computation.

Each metric is computed by the engine; this module turns a run's stored metric entry
(``{"name": ..., "params": {...}}``) and a target into engine calls and Score values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.knn import knn_accuracy

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
}

KNN_SPLITS = {
    "loo": "leave-one-out",
    "holdout": "train/test split (the dataset's, else a stratified 25% test split)",
}


@dataclass(frozen=True)
class StimulusFacts:
    label: str
    split: str


@dataclass(frozen=True)
class ScoreValues:
    value: float
    ci_low: float
    ci_high: float
    n: int
    ceiling: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def knn_entry(*, k: int, split: str) -> dict[str, Any]:
    if k < 1:
        raise MetricError("k must be at least 1.")
    if split not in KNN_SPLITS:
        raise MetricError(f"Unknown split {split!r}; choose one of {', '.join(KNN_SPLITS)}.")
    return {"name": "knn", "params": {"k": int(k), "split": split}}


def compute(
    entry: dict[str, Any], embeddings: np.ndarray, stimuli: Sequence[StimulusFacts]
) -> ScoreValues:
    if entry["name"] == "knn":
        return _knn(embeddings, stimuli, **entry["params"])
    raise MetricError(f"Unknown metric {entry['name']!r}.")


def _knn(
    embeddings: np.ndarray, stimuli: Sequence[StimulusFacts], *, k: int, split: str
) -> ScoreValues:
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
    return ScoreValues(
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
