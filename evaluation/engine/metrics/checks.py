"""Input checks shared by the label-based metrics (probes, retrieval, clustering).

Each check raises MetricError with a message a researcher can act on, so a bad dataset
fails with "4 embeddings but 5 labels" rather than a numpy broadcasting error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.engine.errors import MetricError


@dataclass(frozen=True)
class LabelledEmbeddings:
    x: np.ndarray  # float64, shape (n, d), finite
    classes: np.ndarray  # sorted distinct labels
    codes: np.ndarray  # int64 index into classes, shape (n,)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def check_labelled(embeddings: np.ndarray, labels: np.ndarray, *, what: str) -> LabelledEmbeddings:
    """Embeddings as finite float64 rows and labels as class codes; at least two classes."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise MetricError(f"{what} needs one embedding row per stimulus; got shape {x.shape}.")
    if len(x) == 0:
        raise MetricError(f"{what} needs at least one stimulus; the embeddings are empty.")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise MetricError(
            f"{what} needs one label per stimulus; got labels of shape {labels.shape}."
        )
    if len(labels) != len(x):
        raise MetricError(f"{len(x)} embeddings but {len(labels)} labels.")
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad_rows):
        raise MetricError(
            f"{len(bad_rows)} embedding rows contain NaN or infinite values "
            f"(first at row {bad_rows[0]}); re-extract them before scoring."
        )
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise MetricError(f"{int(np.isnan(labels).sum())} stimuli have no label (NaN).")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise MetricError(
            f"{what} needs labels of at least two classes; this dataset has {len(classes)}."
        )
    return LabelledEmbeddings(x=x, classes=classes, codes=codes.astype(np.int64))


def check_test_mask(test_mask: np.ndarray, n: int) -> np.ndarray:
    """A boolean test mask of length n with stimuli on both sides of the split."""
    mask = np.asarray(test_mask)
    if mask.shape != (n,):
        raise MetricError(
            f"The test mask has shape {mask.shape}; expected one entry per stimulus ({n})."
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise MetricError("The test split is empty: nothing to classify.")
    if mask.all():
        raise MetricError("Every stimulus is in the test split: nothing to train on.")
    return mask


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true class along rows and predicted class along columns."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix
