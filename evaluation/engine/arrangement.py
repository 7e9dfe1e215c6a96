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
  (classical MDS of the subset plus Gaussian placement noise, fitted into the arena), for
  tests and bots.

The reference is the rsagroup's own implementation, rsatoolbox's
``rsatoolbox.rdm.combine.rescale(rdms, method='evidence')``; the estimate here equals its
evidence-weighted mean up to the overall scale (tests/engine/test_arrangement.py checks it
against rsatoolbox itself).

Units. Positions come in arena radii (the arena is the unit circle, as the participant
page stores them); distances are taken in arena diameters (half the distance in radii),
the unit rsatoolbox's weights assume.

Evidence weights. A pair's distance in a trial is weighted by its squared on-screen
distance in arena diameters, clipped below at 0.2**2 = 0.04 (rsatoolbox's clip, so that a
pair placed together still counts for something). Placement error is roughly constant in
screen units, so a pair drawn far apart is measured with a better signal-to-noise ratio,
and a subset of similar items spread over the whole arena ("zoomed in") gives more evidence
about their small dissimilarities than the first, crowded trial did. The weights are
computed once from the raw on-screen distances and stay fixed while the iteration rescales
the trials. The evidence of a pair is the sum of its weights over the trials that showed it
(squared arena diameters); every pair a trial shows gets at least 0.04 from it.

Rescaling (as rsatoolbox does it). Start: the unweighted mean of each pair's raw distances
over the trials that showed it. Then repeat: scale each trial's distances so that their
root sum of squares equals that of the current estimate over the same pairs (RSS matching),
and take the evidence-weighted mean of the scaled distances per pair; until the estimate
stops changing. The estimate is reported at RMS 1 over the pairs seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from evaluation.engine.errors import MetricError

DEFAULT_TOLERANCE = 1e-9  # largest change of any estimated dissimilarity (RMS 1) to stop
DEFAULT_MAX_ITERATIONS = 10_000
# In squared arena diameters: the sum over trials of a pair's squared on-screen distance
# (each at least MIN_WEIGHT_DISTANCE**2 = 0.04). A pair placed half an arena diameter apart
# gets 0.25 from that trial.
DEFAULT_EVIDENCE_THRESHOLD = 0.5
ARENA_DIAMETER = 2.0  # in arena radii, the unit positions come in
MIN_WEIGHT_DISTANCE = 0.2  # arena diameters: rsatoolbox's clip of the evidence weights
MIN_TRIAL_ITEMS = 3  # fewer: the one distance carries no information once rescaled
DEFAULT_FILL = 0.9  # simulated participants put the farthest item at this radius


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
    # The rescaling divides by the trial's root sum of squared distances: it must be a
    # positive finite number (coordinates of 1e-200 or 1e200 would give 0 or infinity).
    squared = float(np.sum((xy[:, None, :] - xy[None, :, :]) ** 2))
    if squared == 0:
        raise ArrangementError(
            f"Trial {number}: all items are at the same position (or too close together to "
            "measure), so the arrangement shows no distances."
        )
    if not math.isfinite(squared):
        raise ArrangementError(
            f"Trial {number}: the items are too far apart to measure their distances (coordinates "
            f"up to {np.abs(xy).max():.3g})."
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
    """Rows, columns (item indices, row < column) and on-screen distances (arena diameters)
    of a trial's pairs."""
    order = np.argsort(trial.items)
    items = np.asarray(trial.items)[order]
    xy = trial.positions[order]
    upper_a, upper_b = np.triu_indices(len(items), k=1)
    distances = np.linalg.norm(xy[upper_a] - xy[upper_b], axis=1) / ARENA_DIAMETER
    return items[upper_a], items[upper_b], distances


def _weights(distances: np.ndarray) -> np.ndarray:
    """The evidence weights of a trial's pairs: squared distance in arena diameters, at
    least MIN_WEIGHT_DISTANCE**2 (rsatoolbox's ``(dissim ** 2).clip(0.2 ** 2)``)."""
    return np.maximum(distances**2, MIN_WEIGHT_DISTANCE**2)


def pair_evidence(n_items: int, trials: Sequence[tuple[Sequence[int], ArrayLike]]) -> np.ndarray:
    """Each pair's total evidence from ``trials`` (symmetric, 0 on the diagonal and for
    pairs never shown together): the sum of its evidence weights, squared on-screen
    distances in arena diameters clipped below at 0.04 (module docstring). What
    ``next_subset`` and ``evidence_sufficient`` need, without the iterative estimate; equal
    to ``estimate_dissimilarities(...).evidence``."""
    evidence = np.zeros((n_items, n_items))
    for rows, cols, distances in map(_pair_distances, check_trials(n_items, trials)):
        np.add.at(evidence, (rows, cols), _weights(distances))
    return evidence + evidence.T


def estimate_dissimilarities(
    n_items: int,
    trials: Sequence[tuple[Sequence[int], ArrayLike]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Estimate:
    """The inverse-MDS estimate of the dissimilarities of ``n_items`` items from ``trials``,
    each an (item indices, (k, 2) positions in arena radii) pair; rsatoolbox's
    ``rescale(method='evidence')`` followed by its weighted mean (module docstring).

    Start: each pair's mean raw distance over the trials that showed it, scaled to RMS 1.
    Then repeat: scale each trial's distances to the root sum of squares of the current
    estimate over that trial's pairs, average them per pair with the fixed evidence
    weights, rescale to RMS 1; until no dissimilarity changes by more than ``tolerance``.
    Raises ``ArrangementError`` if that takes more than ``max_iterations``.
    """
    if max_iterations < 1 or not tolerance > 0:
        raise ArrangementError(
            f"max_iterations must be at least 1 and tolerance positive; got {max_iterations} and {tolerance}."
        )
    checked = check_trials(n_items, trials)
    pairs = [_pair_distances(trial) for trial in checked]
    # All trials' pairs in one vector: flat pair index, owning trial, distance, weight.
    flat = np.concatenate([rows * n_items + cols for rows, cols, _ in pairs])
    owner = np.concatenate([np.full(len(d), t) for t, (_, _, d) in enumerate(pairs)])
    distances = np.concatenate([d for _, _, d in pairs])
    weights = _weights(distances)
    size = n_items * n_items
    evidence = np.bincount(flat, weights=weights, minlength=size)
    shows = np.bincount(flat, minlength=size)
    seen = shows > 0
    trial_rss = np.sqrt(np.bincount(owner, weights=distances**2))  # > 0: check_trials

    def at_rms_one(per_pair: np.ndarray) -> np.ndarray:
        return per_pair / math.sqrt(np.mean(per_pair**2))

    estimate = np.full(size, np.nan)
    estimate[seen] = np.bincount(flat, weights=distances, minlength=size)[seen] / shows[seen]
    estimate[seen] = at_rms_one(estimate[seen])  # some distance > 0: check_trials
    for iteration in range(1, max_iterations + 1):
        estimate_rss = np.sqrt(np.bincount(owner, weights=estimate[flat] ** 2))
        aligned = distances * (estimate_rss / trial_rss)[owner]
        updated = np.full(size, np.nan)
        updated[seen] = np.bincount(flat, weights=weights * aligned, minlength=size)[seen]
        updated[seen] /= evidence[seen]
        updated[seen] = at_rms_one(updated[seen])
        change = float(np.max(np.abs(updated[seen] - estimate[seen])))
        if not math.isfinite(change):  # never seen with checked trials; not worth 10,000 rounds
            raise ArrangementError(
                f"The dissimilarity estimate became non-finite in iteration {iteration}."
            )
        estimate = updated
        if change <= tolerance:
            upper = estimate.reshape(n_items, n_items)
            seen_upper = seen.reshape(n_items, n_items)
            return Estimate(
                _symmetric(upper, seen_upper),
                _symmetric(evidence.reshape(n_items, n_items), seen_upper, missing=0.0),
                iteration,
            )
    raise ArrangementError(
        f"The dissimilarity estimate did not converge to {tolerance:g} in {max_iterations} iterations "
        f"(last change {change:.3g}); the arrangements may not share enough items to be put on one scale."
    )


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
    saturating evidence utility). A trial shows at least 3 items when there are 3: the
    rescaling removes the scale of every trial, so a 2-item trial's one distance says
    nothing about the dissimilarity (yet would add evidence); the third is the best-scoring
    other item even if none is weak. Returns sorted item indices.
    """
    matrix = _check_evidence(evidence)
    n_items = len(matrix)
    smallest = min(MIN_TRIAL_ITEMS, n_items)
    if max_items < smallest:
        raise ArrangementError(
            f"A trial needs at least {smallest} items (a 2-item trial's one distance is removed by "
            f"the rescaling and tells nothing); max_items is {max_items}."
        )
    if threshold <= 0:
        raise ArrangementError(f"The evidence threshold must be positive; got {threshold}.")
    masked = matrix + np.diag(np.full(n_items, np.inf))
    first, second = np.unravel_index(np.argmin(masked), masked.shape)
    chosen = [int(first), int(second)]
    weakness = np.exp(-masked / threshold)
    while len(chosen) < min(max_items, n_items):
        others = np.setdiff1d(np.arange(n_items), chosen)
        weak_with_chosen = (masked[np.ix_(others, np.asarray(chosen))] < threshold).any(axis=1)
        candidates = others[weak_with_chosen] if len(chosen) >= smallest else others
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
    *,
    fill: float = DEFAULT_FILL,
) -> np.ndarray:
    """Where a simulated participant places the items ``subset`` of the dissimilarity matrix
    ``truth``, in arena radii: the classical (Torgerson) MDS of the subset in 2-D, plus
    independent Gaussian noise on each coordinate with standard deviation ``noise`` times
    the arrangement's spread (the RMS distance of its items from their centroid); then
    centred and scaled so that the farthest item lies at radius ``fill`` (0 < fill <= 1),
    filling the arena as participants are told to. Items that all coincide stay at the
    centre. Returns (len(subset), 2)."""
    matrix = np.asarray(truth, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ArrangementError(
            f"The true dissimilarities must be a square matrix; got shape {matrix.shape}."
        )
    if not np.isfinite(matrix).all():
        raise ArrangementError("The true dissimilarities have NaN or infinite values.")
    if noise < 0 or not math.isfinite(noise):
        raise ArrangementError(f"The placement noise must be a finite number >= 0; got {noise}.")
    if not 0 < fill <= 1:
        raise ArrangementError(
            f"fill is the radius of the farthest item in the unit arena, in (0, 1]; got {fill}."
        )
    items = _check_items(0, len(matrix), subset)
    positions = classical_mds(matrix[np.ix_(items, items)])
    spread = math.sqrt(np.mean(np.sum(positions**2, axis=1)))
    placed = positions + rng.normal(scale=noise * spread, size=positions.shape)
    centred = placed - placed.mean(axis=0)
    radius = float(np.sqrt(np.sum(centred**2, axis=1)).max())
    return centred * (fill / radius) if radius > 0 else centred


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
