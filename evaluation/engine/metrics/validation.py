"""Checks on the inputs of every public metric function: the engine's contract.

The upload checks catch most bad data before it reaches a metric, but the metrics are also
called directly (API, CLI, notebooks, other services), so each public function checks its
own arguments here and refuses what it cannot score with a MetricError that names the
argument and the problem ("embeddings: 3 NaN or infinite values (rows 4, 17, 18)"),
never a numpy IndexError, a silently wrapped index -1 or a NaN ranked highest.

Each helper returns the argument as the array the metric computes with (float64 or int64),
so a metric checks and converts in one step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from evaluation.engine.errors import MetricError

ROWS_SHOWN = 5

# One entry per judgment, as callers pass it: a list or an array (the checks below convert it).
IndexLike: TypeAlias = "np.ndarray | Sequence[int]"
ValueLike: TypeAlias = "np.ndarray | Sequence[float]"


def _rows(positions: np.ndarray, word: str = "row", plural: str = "rows") -> str:
    """'row 4' or 'rows 4, 17, 18' (the first few, then how many more)."""
    shown = ", ".join(str(int(p)) for p in positions[:ROWS_SHOWN])
    more = f" and {len(positions) - ROWS_SHOWN} more" if len(positions) > ROWS_SHOWN else ""
    return f"{plural if len(positions) > 1 else word} {shown}{more}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def embedding_matrix(x: object, *, name: str = "embeddings", min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite 2-D float64 array (stimuli x features), at least ``min_rows`` rows."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricError(f"{name} must be an array of numbers ({error}).") from None
    if array.ndim != 2:
        raise MetricError(
            f"{name} must be a 2-D array (stimuli x features); got shape {array.shape}."
        )
    if array.shape[0] < min_rows:
        raise MetricError(f"{name} has {array.shape[0]} stimuli; at least {min_rows} are needed.")
    if array.shape[1] == 0:
        raise MetricError(f"{name} has no features (shape {array.shape}).")
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise MetricError(
            f"{name}: {_count(int((~finite).sum()), 'NaN or infinite value')} "
            f"({_rows(bad_rows)}); "
            "re-extract those stimuli or leave them out."
        )
    return array


def finite_values(values: object, *, name: str) -> np.ndarray:
    """``values`` as a finite 1-D float64 array (ratings, dissimilarities)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricError(f"{name} must be numbers ({error}).") from None
    if array.ndim != 1:
        raise MetricError(f"{name} must be a 1-D list of numbers; got shape {array.shape}.")
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise MetricError(
            f"{name}: {_count(len(bad), 'NaN or infinite value')} "
            f"({_rows(bad, 'entry', 'entries')})."
        )
    return array


def proportions(values: object, *, name: str) -> np.ndarray:
    """Finite shares in [0, 1] (vote shares), as a 1-D float64 array."""
    array = finite_values(values, name=name)
    outside = np.flatnonzero((array < 0.0) | (array > 1.0))
    if len(outside):
        raise MetricError(
            f"{name}: {_count(len(outside), 'value')} outside [0, 1] "
            f"({_rows(outside, 'entry', 'entries')}, first "
            f"{array[outside[0]]:g}); these are shares of the votes, between 0 and 1."
        )
    return array


def stimulus_indices(
    values: object, *, name: str, n_stimuli: int | None = None, ndim: int = 1
) -> np.ndarray:
    """Whole-number stimulus indices as int64, each in 0..n_stimuli-1 (or >= 0 if unknown).

    ``ndim`` 2 for one row of indices per judgment (triplets). Negative indices are refused
    rather than counted from the end as numpy would, and 2.5 rather than truncated to 2.
    """
    array = np.asarray(values)
    if array.size == 0 and array.dtype.kind not in "iu":
        array = array.astype(np.int64)
    if array.ndim != ndim:
        raise MetricError(f"{name} must be a {ndim}-D array of indices; got shape {array.shape}.")
    if array.dtype.kind not in "iu":
        whole = (
            array.dtype.kind == "f"
            and bool(np.isfinite(array).all())
            and bool((array == np.round(array)).all())
        )
        if not whole:
            raise MetricError(
                f"{name} must be stimulus indices (whole numbers); got {array.dtype} values."
            )
    rows = array if ndim == 2 else array[:, np.newaxis]
    outside = rows < 0
    if n_stimuli is not None:
        outside |= rows >= n_stimuli
    bad = np.flatnonzero(outside.any(axis=1))
    if len(bad):
        value = rows[bad[0]][outside[bad[0]]][0]
        upper = "" if n_stimuli is None else f"{n_stimuli - 1}"
        raise MetricError(
            f"{name} holds index {value:g} ({_rows(bad, 'at entry', 'at entries')}), out of "
            f"range 0..{upper}: "
            "indices count the stimuli from 0, in the order of the embeddings' rows."
        )
    return array.astype(np.int64)


def same_lengths(**arrays: object) -> int:
    """The common length of named 1-D arguments; a MetricError names the two that differ."""
    lengths = {name: len(value) for name, value in arrays.items()}  # type: ignore[arg-type]
    (first, expected), *rest = lengths.items()
    for name, length in rest:
        if length != expected:
            raise MetricError(
                f"{first} has {expected} entries but {name} has {length}; they describe the "
                "same judgments, one entry each."
            )
    return expected


def condensed_stimuli(length: int, *, name: str) -> int:
    """The number of stimuli n of a condensed RDM of ``length`` = n (n - 1) / 2 entries."""
    n = round((1 + np.sqrt(1 + 8 * length)) / 2)
    if n * (n - 1) // 2 != length:
        below = int((1 + np.sqrt(1 + 8 * length)) // 2)
        raise MetricError(
            f"{name} has {length} dissimilarities, which is not n(n-1)/2 for any number of "
            f"stimuli n ({below} stimuli give {below * (below - 1) // 2}, {below + 1} give "
            f"{(below + 1) * below // 2}); pass the condensed upper triangle (scipy's pdist "
            "order)."
        )
    return n


def one_of(value: str, allowed: tuple[str, ...], *, name: str) -> str:
    """A parameter that names one of a few methods."""
    if value not in allowed:
        raise MetricError(f"Unknown {name} {value!r}; choose one of {', '.join(allowed)}.")
    return value


def at_least(value: int, minimum: int, *, name: str) -> int:
    """An integer parameter with a lower bound (k, folds, resamples, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise MetricError(f"{name} must be a whole number; got {value!r}.")
    if value < minimum:
        raise MetricError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


# --- Labelled embeddings (k-NN, probes, retrieval, clustering) ---------------------------------


@dataclass(frozen=True)
class LabelledEmbeddings:
    x: np.ndarray  # float64, shape (n, d), finite
    classes: np.ndarray  # sorted distinct labels
    codes: np.ndarray  # int64 index into classes, shape (n,)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def labelled_embeddings(embeddings: object, labels: object, *, what: str) -> LabelledEmbeddings:
    """Embeddings as finite float64 rows and labels as class codes; at least two classes."""
    x = embedding_matrix(embeddings, name="embeddings")
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise MetricError(
            f"{what} needs one label per stimulus; got labels of shape {label_array.shape}."
        )
    if len(label_array) != len(x):
        raise MetricError(f"{len(x)} embeddings but {len(label_array)} labels.")
    if label_array.dtype.kind == "f":
        missing = np.flatnonzero(np.isnan(label_array))
        if len(missing):
            raise MetricError(
                f"labels: {len(missing)} stimuli have no label (NaN; {_rows(missing)})."
            )
    classes, codes = np.unique(label_array, return_inverse=True)
    if len(classes) < 2:
        raise MetricError(
            f"{what} needs labels of at least two classes; this dataset has {len(classes)}."
        )
    return LabelledEmbeddings(x=x, classes=classes, codes=codes.astype(np.int64))


def split_mask(test_mask: object, n: int) -> np.ndarray:
    """A boolean test mask of length n with stimuli on both sides of the split."""
    mask = np.asarray(test_mask)
    if mask.shape != (n,):
        raise MetricError(
            f"test_mask has shape {mask.shape}; expected one entry per stimulus ({n})."
        )
    if mask.dtype.kind != "b" and not np.isin(mask, (0, 1)).all():
        raise MetricError("test_mask must be True/False (or 1/0) per stimulus.")
    mask = mask.astype(bool)
    if not mask.any():
        raise MetricError("The test split is empty: nothing to classify.")
    if mask.all():
        raise MetricError("Every stimulus is in the test split: nothing to train on.")
    return mask


def classifier_inputs(
    train_x: object,
    train_codes: object,
    query_x: object,
    *,
    n_classes: int,
    exclude_self: bool,
    k: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, their class codes (0..n_classes-1) and query rows of the same width."""
    train = embedding_matrix(train_x, name="train_x")
    query = embedding_matrix(query_x, name="query_x", min_rows=0)
    codes = stimulus_indices(train_codes, name="train_codes", n_stimuli=n_classes)
    if len(codes) != len(train):
        raise MetricError(f"train_x has {len(train)} rows but train_codes {len(codes)}.")
    if query.shape[1] != train.shape[1]:
        raise MetricError(
            f"query_x has {query.shape[1]} features but train_x {train.shape[1]}; both must "
            "be embeddings of the same space."
        )
    if exclude_self and len(query) != len(train):
        raise MetricError(
            "exclude_self (leave-one-out) needs the queries to be the training items: "
            f"got {len(query)} queries for {len(train)} training items."
        )
    if k is not None:
        available = len(train) - 1 if exclude_self else len(train)
        at_least(k, 1, name="k")
        if k > available:
            raise MetricError(f"k={k} is larger than the {available} training stimuli available.")
    return train, codes, query
