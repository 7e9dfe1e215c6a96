"""The value every metric returns: a number with its uncertainty and how it was obtained."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MetricResult:
    value: float
    ci_low: float
    ci_high: float
    n: int  # the number of independent items behind the value (stimuli, queries, episodes)
    ceiling: float | None = None  # the target's reliability ceiling, where it has one
    details: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, for plots
    # The value in each bootstrap resample (NaN where undefined), kept so that two models
    # scored on the same resamples can be compared pairwise; None where the interval is not
    # a bootstrap. ``resampling`` names the resamples: equal names, equal draws.
    resamples: np.ndarray | None = field(default=None, repr=False, compare=False)
    resampling: str = ""

    @property
    def normalized(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None


def stimulus_resampling(n_stimuli: int, n_boot: int, seed: int) -> str:
    """The name of the stimulus bootstrap ``_resample_counts(n_stimuli, n_boot, seed)`` draws."""
    return f"stimuli(n={n_stimuli},resamples={n_boot},seed={seed})"


def item_resampling(n_items: int, n_boot: int, seed: int) -> str:
    """The name of a bootstrap over ``n_items`` items (queries, test stimuli)."""
    return f"items(n={n_items},resamples={n_boot},seed={seed})"


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with true class along rows and predicted class along columns (for details)."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix
