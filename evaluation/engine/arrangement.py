"""Multi-arrangement: dissimilarities from items dragged around a circular arena.

The method of Kriegeskorte & Mur (2012), "Inverse MDS: inferring dissimilarity structure
from multiple item arrangements", Front. Psychol. 3:245. A participant places items on a
2-D arena so that distances reflect dissimilarity; the first trial shows all items, later
trials show subsets chosen where the evidence is weakest.

- ``estimate_dissimilarities``: the inverse-MDS estimate. Each trial's on-screen distances
  are known only up to a scale (a participant uses the arena for whatever subset is shown),
  so the trials are put on a common scale by iterative scaling and averaged with evidence
  weights.
- ``next_subset`` and ``evidence_sufficient``: the "lift-the-weakest" choice of the next
  trial's items, and the rule that says when to stop.
- ``simulate_arrangement``: a participant simulated from a known dissimilarity matrix
  (classical MDS of the subset plus Gaussian placement noise), for tests and bots.

Evidence weights. The paper weights a pair's distance in a trial by its squared on-screen
distance: placement error is roughly constant in screen units, so a pair drawn far apart is
measured with a better signal-to-noise ratio, and a subset of similar items spread over the
whole arena ("zoomed in") gives more evidence about their small dissimilarities than the
first, crowded trial did. Here the on-screen distance is taken in units of that trial's RMS
on-screen distance (the distances "scaled to a common RMS"), and the weight is its square.
When participants fill the arena, as they are told to, the trial's RMS distance is a fixed
fraction of the arena and these weights equal the paper's up to one constant factor, which
cancels in the weighted averages. Unlike raw screen units they make the estimate
independent of the coordinates' unit (pixels, arena fractions) and of each trial's own
scale, and they stay fixed while the iteration rescales the trials, as in the paper. The
evidence of a pair is the sum of its weights over the trials that showed it.

Rescaling. Each iteration scales a trial's distances by the least-squares factor against
the current estimate over that trial's pairs. The published procedure may instead match
the RMS of the two (as remembered, not checked against the paper's text); both fix the
same scale when the trial agrees with the estimate, and differ only with noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from evaluation.engine.errors import MetricError

DEFAULT_TOLERANCE = 1e-10  # largest change of any estimated dissimilarity (RMS 1) to stop
DEFAULT_MAX_ITERATIONS = 1000
DEFAULT_EVIDENCE_THRESHOLD = 0.5  # in squared units of a trial's RMS on-screen distance


class ArrangementError(MetricError, ValueError):
    """Arrangements (or the evidence, or the truth to simulate from) that cannot be used;
    the message names the trial and what is wrong with it."""


@dataclass(frozen=True)
class Trial:
    """One arrangement: the item indices shown and where each was placed (x, y)."""

    items: tuple[int, ...]
    positions: np.ndarray  # (len(items), 2), float64


@dataclass(frozen=True)
class Estimate:
    """The estimated dissimilarity matrix (RMS 1 over the pairs seen; NaN for pairs never
    on screen together, 0 on the diagonal), each pair's total evidence weight (0 when
    never seen) and the number of scaling iterations it took."""

    dissimilarities: np.ndarray
    evidence: np.ndarray
    iterations: int


def check_trials(n_items: int, trials: Sequence[tuple[Sequence[int], ArrayLike]]) -> list[Trial]:
    """The trials as ``Trial`` objects, each checked: at least 2 items, indices in
    ``range(n_items)`` without duplicates, one finite (x, y) per item, not all at one spot."""
    if n_items < 2:
        raise ArrangementError(f"Multi-arrangement needs at least 2 items; got {n_items}.")
    if len(trials) == 0:
        raise ArrangementError("No arrangements to estimate dissimilarities from.")
    return [
        _check_trial(number, n_items, items, positions)
        for number, (items, positions) in enumerate(trials)
    ]


def _check_trial(number: int, n_items: int, items: Sequence[int], positions: ArrayLike) -> Trial:
    indices = np.asarray(_check_items(number, n_items, items))
    xy = np.asarray(positions, dtype=np.float64)
    if xy.shape != (indices.size, 2):
        raise ArrangementError(
            f"Trial {number}: expected one (x, y) position per item, shape ({indices.size}, 2); got "
            f"shape {xy.shape}."
        )
    if not np.isfinite(xy).all():
        bad = sorted({int(indices[row]) for row in np.argwhere(~np.isfinite(xy))[:, 0]})
        raise ArrangementError(
            f"Trial {number}: items {bad} have non-finite (NaN or infinite) coordinates."
        )
    if not (xy != xy[0]).any():
        raise ArrangementError(
            f"Trial {number}: all items are at the same position, so the arrangement shows no distances."
        )
    return Trial(items=tuple(int(i) for i in indices), positions=xy)


def _check_items(number: int, n_items: int, items: Sequence[int]) -> tuple[int, ...]:
    """The item indices of trial ``number``: at least 2, in range, no duplicates."""
    indices = np.asarray(items)
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ArrangementError(
            f"Trial {number}: the items must be a list of integer indices; got {items!r}."
        )
    if indices.size < 2:
        raise ArrangementError(
            f"Trial {number}: an arrangement needs at least 2 items to give a distance; got {indices.size}."
        )
    outside = [int(i) for i in indices if not 0 <= i < n_items]
    if outside:
        raise ArrangementError(
            f"Trial {number}: item indices {outside} are out of range 0..{n_items - 1}."
        )
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise ArrangementError(
            f"Trial {number}: items {values[counts > 1].tolist()} appear more than once; each item is "
            "placed once per arrangement."
        )
    return tuple(int(i) for i in indices)


def _pair_distances(trial: Trial) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns (item indices, row < column) and on-screen distances of a trial's pairs."""
    order = np.argsort(trial.items)
    items = np.asarray(trial.items)[order]
    xy = trial.positions[order]
    upper_a, upper_b = np.triu_indices(len(items), k=1)
    distances = np.linalg.norm(xy[upper_a] - xy[upper_b], axis=1)
    return items[upper_a], items[upper_b], distances


def _unit_distances(trial: Trial) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trial's pairs (rows, columns) and distances in units of its RMS distance."""
    rows, cols, distances = _pair_distances(trial)
    return rows, cols, distances / math.sqrt(np.mean(distances**2))


def pair_evidence(n_items: int, trials: Sequence[tuple[Sequence[int], ArrayLike]]) -> np.ndarray:
    """Each pair's total evidence from ``trials`` (symmetric, 0 on the diagonal and for
    pairs never shown together): the sum of its squared distances in units of each trial's
    RMS distance. What ``next_subset`` and ``evidence_sufficient`` need, without the
    iterative estimate; equal to ``estimate_dissimilarities(...).evidence``."""
    evidence = np.zeros((n_items, n_items))
    for rows, cols, unit in map(_unit_distances, check_trials(n_items, trials)):
        np.add.at(evidence, (rows, cols), unit**2)
    return evidence + evidence.T


def estimate_dissimilarities(
    n_items: int,
    trials: Sequence[tuple[Sequence[int], ArrayLike]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Estimate:
    """The inverse-MDS estimate of the dissimilarities of ``n_items`` items from ``trials``,
    each an (item indices, (k, 2) positions) pair.

    Start: each trial's distances scaled to RMS 1, averaged per pair with evidence weights
    (see the module docstring), the average scaled to RMS 1. Then repeat: scale each trial's
    distances by the least-squares factor that matches them to the current estimate over
    that trial's pairs, re-average with the same weights, rescale to RMS 1; until no
    dissimilarity changes by more than ``tolerance``. Raises ``ArrangementError`` if that
    takes more than ``max_iterations`` (never seen with arrangements that share items).
    """
    if max_iterations < 1 or not tolerance > 0:
        raise ArrangementError(
            f"max_iterations must be at least 1 and tolerance positive; got {max_iterations} and {tolerance}."
        )
    checked = check_trials(n_items, trials)
    pairs = [_unit_distances(trial) for trial in checked]
    unit = [d for _, _, d in pairs]  # each trial at RMS 1
    weights = [d**2 for d in unit]
    evidence = np.zeros((n_items, n_items))
    seen = np.zeros((n_items, n_items), dtype=bool)
    for (rows, cols, _), weight in zip(pairs, weights, strict=True):
        np.add.at(evidence, (rows, cols), weight)
        seen[rows, cols] = True
    scales = np.ones(len(checked))
    estimate = _weighted_average(n_items, pairs, unit, weights, scales, evidence, seen)
    for iteration in range(1, max_iterations + 1):
        scales = np.array(
            [
                _least_squares_scale(d, estimate[rows, cols])
                for (rows, cols, _), d in zip(pairs, unit, strict=True)
            ]
        )
        updated = _weighted_average(n_items, pairs, unit, weights, scales, evidence, seen)
        change = np.nanmax(np.abs(updated - estimate))
        estimate = updated
        if change <= tolerance:
            return Estimate(
                _symmetric(estimate, seen), _symmetric(evidence, seen, missing=0.0), iteration
            )
    raise ArrangementError(
        f"The dissimilarity estimate did not converge to {tolerance:g} in {max_iterations} iterations "
        f"(last change {change:.3g}); the arrangements may not share enough items to be put on one scale."
    )


def _least_squares_scale(distances: np.ndarray, reference: np.ndarray) -> float:
    """The factor s minimising sum (s * distances - reference)^2."""
    return float(distances @ reference / (distances @ distances))


def _weighted_average(
    n_items: int,
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    unit: list[np.ndarray],
    weights: list[np.ndarray],
    scales: np.ndarray,
    evidence: np.ndarray,
    seen: np.ndarray,
) -> np.ndarray:
    """Upper triangle of the evidence-weighted mean of the scaled distances, RMS 1 over the
    pairs seen, NaN elsewhere. A pair seen only at distance 0 (no evidence) estimates 0."""
    total = np.zeros((n_items, n_items))
    for (rows, cols, _), d, weight, scale in zip(pairs, unit, weights, scales, strict=True):
        np.add.at(total, (rows, cols), weight * scale * d)
    mean = np.full((n_items, n_items), np.nan)
    mean[seen] = 0.0
    has_evidence = evidence > 0
    mean[has_evidence] = total[has_evidence] / evidence[has_evidence]
    rms = math.sqrt(np.mean(mean[seen] ** 2))
    return mean / rms


def _symmetric(upper: np.ndarray, seen: np.ndarray, missing: float = np.nan) -> np.ndarray:
    full = np.where(seen, upper, missing)
    full = np.where(seen.T, full.T, full)
    np.fill_diagonal(full, 0.0)
    return full


def evidence_sufficient(evidence: ArrayLike, threshold: float = DEFAULT_EVIDENCE_THRESHOLD) -> bool:
    """The stopping rule: every pair of distinct items has evidence of at least ``threshold``."""
    matrix = _check_evidence(evidence)
    off_diagonal = ~np.eye(len(matrix), dtype=bool)
    return bool((matrix[off_diagonal] >= threshold).all())


def next_subset(
    evidence: ArrayLike,
    *,
    max_items: int,
    threshold: float = DEFAULT_EVIDENCE_THRESHOLD,
) -> list[int]:
    """The items of the next trial, by "lift the weakest": the pair with the least evidence
    (ties: lowest indices), then, one at a time, the item whose pairs with those already
    chosen are weakest, until ``max_items`` items or until no candidate has a pair below
    ``threshold`` with the chosen items (more items would crowd the arena for pairs already
    known well enough). The weakness of a pair is exp(-evidence / threshold), the marginal
    value of more evidence when its utility is 1 - exp(-evidence / threshold) (the paper's
    saturating evidence utility). Returns sorted item indices.
    """
    matrix = _check_evidence(evidence)
    n_items = len(matrix)
    if max_items < 2:
        raise ArrangementError(f"A trial needs at least 2 items; max_items is {max_items}.")
    if threshold <= 0:
        raise ArrangementError(f"The evidence threshold must be positive; got {threshold}.")
    masked = matrix + np.diag(np.full(n_items, np.inf))
    first, second = np.unravel_index(np.argmin(masked), masked.shape)
    chosen = [int(first), int(second)]
    weakness = np.exp(-masked / threshold)
    while len(chosen) < min(max_items, n_items):
        others = np.setdiff1d(np.arange(n_items), chosen)
        weak_with_chosen = (masked[np.ix_(others, np.asarray(chosen))] < threshold).any(axis=1)
        candidates = others[weak_with_chosen]
        if candidates.size == 0:
            break
        gains = weakness[np.ix_(candidates, np.asarray(chosen))].sum(axis=1)
        best = int(np.argmax(gains))  # first maximum: the lowest index among ties
        chosen.append(int(candidates[best]))
    return sorted(chosen)


def _check_evidence(evidence: ArrayLike) -> np.ndarray:
    matrix = np.asarray(evidence, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ArrangementError(
            f"The evidence must be a square matrix of at least 2 items; got shape {matrix.shape}."
        )
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ArrangementError("The evidence must be finite and non-negative.")
    return matrix


def simulate_arrangement(
    truth: ArrayLike,
    subset: Sequence[int],
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Where a simulated participant places the items ``subset`` of the dissimilarity matrix
    ``truth``: the classical (Torgerson) MDS of the subset in 2-D, plus independent Gaussian
    noise on each coordinate with standard deviation ``noise`` times the arrangement's
    spread (the RMS distance of its items from their centroid). Returns (len(subset), 2)."""
    matrix = np.asarray(truth, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ArrangementError(
            f"The true dissimilarities must be a square matrix; got shape {matrix.shape}."
        )
    if not np.isfinite(matrix).all():
        raise ArrangementError("The true dissimilarities have NaN or infinite values.")
    if noise < 0 or not math.isfinite(noise):
        raise ArrangementError(f"The placement noise must be a finite number >= 0; got {noise}.")
    items = _check_items(0, len(matrix), subset)
    positions = classical_mds(matrix[np.ix_(items, items)])
    spread = math.sqrt(np.mean(np.sum(positions**2, axis=1)))
    return positions + rng.normal(scale=noise * spread, size=positions.shape)


def classical_mds(dissimilarities: np.ndarray, dimensions: int = 2) -> np.ndarray:
    """Torgerson's classical MDS: coordinates (centred) whose distances best match the
    dissimilarities, from the top eigenvectors of the double-centred squared matrix
    (negative eigenvalues, from non-Euclidean dissimilarities, count as 0)."""
    n = len(dissimilarities)
    centring = np.eye(n) - 1.0 / n
    gram = -0.5 * centring @ (dissimilarities**2) @ centring
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    top = np.argsort(values)[::-1][:dimensions]
    coordinates = vectors[:, top] * np.sqrt(np.clip(values[top], 0.0, None))
    if coordinates.shape[1] < dimensions:  # fewer items than dimensions
        coordinates = np.pad(coordinates, ((0, 0), (0, dimensions - coordinates.shape[1])))
    return coordinates
