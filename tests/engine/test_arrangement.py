"""Multi-arrangement (evaluation.engine.arrangement): recovery of a known dissimilarity
matrix from simulated arrangements chosen by lift-the-weakest, the estimate against a
plain-loop implementation of the inverse-MDS iteration, its invariances, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr

from evaluation.engine import arrangement
from evaluation.engine.arrangement import (
    ArrangementError,
    estimate_dissimilarities,
    evidence_sufficient,
    next_subset,
    pair_evidence,
    simulate_arrangement,
)
from evaluation.engine.errors import EngineError

N_ITEMS = 20


def truth_matrix(seed: int, n_items: int = N_ITEMS, dimensions: int = 5) -> np.ndarray:
    points = np.random.default_rng(seed).normal(size=(n_items, dimensions))
    return squareform(pdist(points))


def upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(len(matrix), k=1)]


def adaptive_session(
    truth: np.ndarray, noise: float, seed: int, max_items: int = 5, threshold: float = 3.0
) -> list[tuple[list[int], np.ndarray]]:
    """A simulated participant: all items first, then lift-the-weakest subsets until every
    pair has ``threshold`` evidence (at most 150 trials)."""
    rng = np.random.default_rng(1000 + seed)
    everything = list(range(len(truth)))
    trials = [(everything, simulate_arrangement(truth, everything, noise, rng))]
    while not evidence_sufficient(pair_evidence(len(truth), trials), threshold):
        assert len(trials) < 150, "lift-the-weakest did not reach the threshold"
        subset = next_subset(
            pair_evidence(len(truth), trials), max_items=max_items, threshold=threshold
        )
        trials.append((subset, simulate_arrangement(truth, subset, noise, rng)))
    return trials


def recovery(noise: float, seed: int) -> float:
    truth = truth_matrix(seed)
    estimate = estimate_dissimilarities(N_ITEMS, adaptive_session(truth, noise, seed))
    assert not np.isnan(estimate.dissimilarities).any()
    return float(pearsonr(upper(estimate.dissimilarities), upper(truth))[0])


def test_recovery_is_high_at_moderate_noise_and_falls_as_noise_grows() -> None:
    seeds = range(3)
    mean_correlation = {
        noise: np.mean([recovery(noise, seed) for seed in seeds]) for noise in (0.1, 0.3, 0.6)
    }
    print("mean Pearson r with the truth per noise level:", mean_correlation)
    assert mean_correlation[0.1] > 0.95
    assert mean_correlation[0.1] > mean_correlation[0.3] > mean_correlation[0.6]


def test_noiseless_arrangements_of_two_dimensional_truth_are_recovered_exactly() -> None:
    points = np.random.default_rng(3).normal(size=(8, 2))
    truth = squareform(pdist(points))
    rng = np.random.default_rng(0)
    trials = [
        (subset, simulate_arrangement(truth, subset, 0.0, rng))
        for subset in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2], [2, 5, 6, 7], [1, 3])
    ]
    estimate = estimate_dissimilarities(8, trials).dissimilarities
    scaled_truth = truth / math.sqrt(np.mean(upper(truth) ** 2))
    np.testing.assert_allclose(estimate, scaled_truth, atol=1e-9)


def reference_estimate(
    n_items: int, trials: list[tuple[list[int], np.ndarray]], tolerance: float, max_iterations: int
) -> tuple[list[list[float]], list[list[float]]]:
    """The inverse-MDS iteration written out with loops and dicts, sharing nothing with the
    module: per-trial RMS normalisation, squared normalised distances as weights, weighted
    mean, RMS 1, then least-squares rescaling of each trial until nothing moves."""
    normalised = []  # per trial: {(i, j): distance in units of the trial's RMS distance}
    for items, positions in trials:
        distances = {}
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                dx = positions[a][0] - positions[b][0]
                dy = positions[a][1] - positions[b][1]
                key = (min(items[a], items[b]), max(items[a], items[b]))
                distances[key] = math.sqrt(dx * dx + dy * dy)
        rms = math.sqrt(sum(d * d for d in distances.values()) / len(distances))
        normalised.append({key: d / rms for key, d in distances.items()})

    def average(scales: list[float]) -> dict[tuple[int, int], float]:
        sums: dict[tuple[int, int], float] = {}
        weights: dict[tuple[int, int], float] = {}
        for scale, distances in zip(scales, normalised, strict=True):
            for key, d in distances.items():
                sums[key] = sums.get(key, 0.0) + d * d * scale * d
                weights[key] = weights.get(key, 0.0) + d * d
        mean = {key: sums[key] / weights[key] for key in sums}
        rms = math.sqrt(sum(v * v for v in mean.values()) / len(mean))
        return {key: v / rms for key, v in mean.items()}

    current = average([1.0] * len(trials))
    for _ in range(max_iterations):
        scales = []
        for distances in normalised:
            numerator = sum(d * current[key] for key, d in distances.items())
            denominator = sum(d * d for d in distances.values())
            scales.append(numerator / denominator)
        updated = average(scales)
        change = max(abs(updated[key] - current[key]) for key in current)
        current = updated
        if change <= tolerance:
            break
    else:
        raise AssertionError("the reference did not converge")
    matrix = [[math.nan] * n_items for _ in range(n_items)]
    evidence = [[0.0] * n_items for _ in range(n_items)]
    for i in range(n_items):
        matrix[i][i] = 0.0
    for (i, j), value in current.items():
        matrix[i][j] = matrix[j][i] = value
    for distances in normalised:
        for (i, j), d in distances.items():
            evidence[i][j] += d * d
            evidence[j][i] += d * d
    return matrix, evidence


def test_estimate_equals_a_plain_loop_implementation() -> None:
    truth = truth_matrix(7, n_items=9)
    rng = np.random.default_rng(7)
    subsets = [list(range(9)), [3, 0, 5], [8, 1, 2, 6], [4, 7], [0, 8, 4, 1, 3]]
    trials = [(s, simulate_arrangement(truth, s, 0.3, rng) * 300 + 50) for s in subsets]
    trials.append(([0, 1, 2], rng.uniform(-1, 1, size=(3, 2))))  # unrelated to the truth
    estimate = estimate_dissimilarities(9, trials, tolerance=1e-13)
    expected, expected_evidence = reference_estimate(9, trials, 1e-13, 10_000)
    np.testing.assert_allclose(estimate.dissimilarities, np.array(expected), rtol=0, atol=1e-8)
    np.testing.assert_allclose(estimate.evidence, np.array(expected_evidence), atol=1e-12)
    np.testing.assert_allclose(pair_evidence(9, trials), estimate.evidence, atol=1e-12)
    assert estimate.iterations > 1  # the rescaling did something to converge


def test_pairs_never_shown_together_are_nan_with_no_evidence() -> None:
    trials = [
        ([0, 1, 2], np.array([[0, 0], [1, 0], [0, 2.0]])),
        ([2, 3], np.array([[0, 0], [1, 1.0]])),
    ]
    estimate = estimate_dissimilarities(5, trials)
    assert np.isnan(estimate.dissimilarities[0, 3]) and np.isnan(estimate.dissimilarities[3, 0])
    assert np.isnan(estimate.dissimilarities[4, :4]).all()
    assert estimate.evidence[0, 3] == 0 and estimate.evidence[4].sum() == 0
    np.testing.assert_array_equal(np.diag(estimate.dissimilarities), 0.0)
    np.testing.assert_array_equal(estimate.dissimilarities, estimate.dissimilarities.T)
    seen = upper(estimate.dissimilarities)[~np.isnan(upper(estimate.dissimilarities))]
    assert math.isclose(math.sqrt(np.mean(seen**2)), 1.0)


def some_trials(seed: int = 11) -> list[tuple[list[int], np.ndarray]]:
    truth = truth_matrix(seed, n_items=10)
    rng = np.random.default_rng(seed)
    subsets = [list(range(10)), [0, 4, 9], [1, 2, 3, 5], [6, 7, 8, 0, 2], [3, 9]]
    return [(s, simulate_arrangement(truth, s, 0.2, rng)) for s in subsets]


def rotate(positions: np.ndarray, angle: float) -> np.ndarray:
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return positions @ rotation.T


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda xy: xy * 37.5, id="scale"),
        pytest.param(lambda xy: xy + np.array([400.0, -120.0]), id="translate"),
        pytest.param(lambda xy: rotate(xy, 1.1), id="rotate"),
        pytest.param(lambda xy: xy * np.array([-1.0, 1.0]), id="mirror"),
    ],
)
def test_each_trial_is_known_only_up_to_similarity_transforms(transform) -> None:
    trials = some_trials()
    baseline = estimate_dissimilarities(10, trials, tolerance=1e-13)
    for changed in range(len(trials)):  # one trial at a time: its scale is its own
        moved = [
            (items, transform(xy) if t == changed else xy) for t, (items, xy) in enumerate(trials)
        ]
        estimate = estimate_dissimilarities(10, moved, tolerance=1e-13)
        np.testing.assert_allclose(estimate.dissimilarities, baseline.dissimilarities, atol=1e-9)
        np.testing.assert_allclose(estimate.evidence, baseline.evidence, atol=1e-9)


def test_the_order_items_are_listed_in_does_not_matter() -> None:
    trials = some_trials()
    shuffled = []
    for items, xy in trials:
        order = np.random.default_rng(len(items)).permutation(len(items))
        shuffled.append(([items[k] for k in order], xy[order]))
    np.testing.assert_allclose(
        estimate_dissimilarities(10, shuffled).dissimilarities,
        estimate_dissimilarities(10, trials).dissimilarities,
        atol=1e-12,
    )


GOOD = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("items", "positions", "message"),
    [
        (
            [0, 1, 2],
            np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, 1.0]]),
            r"items \[1\] have non-finite",
        ),
        (
            [0, 1, 2],
            np.array([[0.0, 0.0], [1.0, np.inf], [0.0, 1.0]]),
            r"items \[1\] have non-finite",
        ),
        ([0, 1, 5], GOOD, r"indices \[5\] are out of range 0\.\.4"),
        ([0, -1, 2], GOOD, r"indices \[-1\] are out of range"),
        ([0, 2, 2], GOOD, r"items \[2\] appear more than once"),
        ([3], np.array([[0.0, 0.0]]), "at least 2 items"),
        ([0, 1, 2], GOOD[:2], r"one \(x, y\) position per item"),
        ([0, 1.5, 2], GOOD, "integer indices"),
        ([0, 1, 2], np.ones((3, 2)), "all items are at the same position"),
    ],
)
def test_bad_trials_are_refused_with_the_trial_named(items, positions, message) -> None:
    trials = [([0, 1, 2, 3, 4], np.arange(10.0).reshape(5, 2) ** 2), (items, positions)]
    with pytest.raises(ArrangementError, match=message) as raised:
        estimate_dissimilarities(5, trials)
    assert str(raised.value).startswith("Trial 1:")
    assert isinstance(raised.value, EngineError) and isinstance(raised.value, ValueError)
    with pytest.raises(ArrangementError, match=message):
        pair_evidence(5, trials)


def test_no_trials_and_bad_settings_are_refused() -> None:
    with pytest.raises(ArrangementError, match="No arrangements"):
        estimate_dissimilarities(5, [])
    with pytest.raises(ArrangementError, match="max_iterations"):
        estimate_dissimilarities(3, [([0, 1, 2], GOOD)], max_iterations=0)


def test_a_cap_on_iterations_that_is_too_low_is_an_error_not_a_silent_result() -> None:
    with pytest.raises(ArrangementError, match="did not converge"):
        estimate_dissimilarities(10, some_trials(), tolerance=1e-15, max_iterations=2)


def test_next_subset_puts_the_weakest_pair_on_screen() -> None:
    evidence = np.full((8, 8), 5.0)
    np.fill_diagonal(evidence, 0.0)
    evidence[2, 6] = evidence[6, 2] = 0.1  # the weakest pair
    evidence[6, 4] = evidence[4, 6] = evidence[2, 4] = evidence[4, 2] = 0.3  # 4 is weak with both
    evidence[1, 2] = evidence[2, 1] = 0.4
    subset = next_subset(evidence, max_items=3, threshold=1.0)
    assert subset == [2, 4, 6]
    # Room for more: item 1 is still weak with item 2; the others are known well, so stop.
    assert next_subset(evidence, max_items=8, threshold=1.0) == [1, 2, 4, 6]
    assert next_subset(evidence, max_items=2, threshold=1.0) == [2, 6]


def test_next_subset_after_the_first_trial_lifts_its_weakest_pairs() -> None:
    truth = truth_matrix(5)
    rng = np.random.default_rng(5)
    everything = list(range(N_ITEMS))
    evidence = pair_evidence(
        N_ITEMS, [(everything, simulate_arrangement(truth, everything, 0.1, rng))]
    )
    subset = next_subset(evidence, max_items=6, threshold=3.0)
    weakest = np.unravel_index(np.argmin(evidence + np.eye(N_ITEMS) * 1e9), evidence.shape)
    assert set(map(int, weakest)) <= set(subset)
    assert 2 <= len(subset) <= 6 and len(set(subset)) == len(subset)
    # Shown again, alone, that pair is spread over the arena: its evidence rises.
    pair = sorted(map(int, weakest))
    after = pair_evidence(
        N_ITEMS,
        [(everything, simulate_arrangement(truth, everything, 0.1, rng)), (pair, GOOD[:2])],
    )
    assert after[pair[0], pair[1]] > evidence[pair[0], pair[1]]


def test_stopping_rule_needs_every_pair_above_the_threshold() -> None:
    evidence = np.full((4, 4), 2.0)
    np.fill_diagonal(evidence, 0.0)  # the diagonal never counts
    assert evidence_sufficient(evidence, threshold=2.0)
    evidence[0, 3] = evidence[3, 0] = 1.999
    assert not evidence_sufficient(evidence, threshold=2.0)
    assert evidence_sufficient(evidence, threshold=1.5)
    evidence[1, 2] = evidence[2, 1] = 0.0  # never shown together
    assert not evidence_sufficient(evidence, threshold=1e-9)


def test_adaptive_session_stops_once_every_pair_has_enough_evidence() -> None:
    truth = truth_matrix(2, n_items=10)
    trials = adaptive_session(truth, 0.2, seed=2, max_items=4, threshold=1.0)
    evidence = pair_evidence(10, trials)
    assert evidence_sufficient(evidence, 1.0)
    assert not evidence_sufficient(pair_evidence(10, trials[:-1]), 1.0)
    assert all(2 <= len(items) <= 4 for items, _ in trials[1:])


def test_bad_evidence_and_settings_for_next_subset_are_refused() -> None:
    with pytest.raises(ArrangementError, match="square matrix"):
        next_subset(np.zeros((3, 2)), max_items=3)
    with pytest.raises(ArrangementError, match="finite and non-negative"):
        next_subset(np.array([[0.0, np.nan], [np.nan, 0.0]]), max_items=2)
    with pytest.raises(ArrangementError, match="at least 2 items; max_items is 1"):
        next_subset(np.zeros((3, 3)), max_items=1)


def test_simulated_arrangement_is_mds_of_the_subset_plus_scaled_noise() -> None:
    points = np.random.default_rng(4).normal(size=(6, 2))
    truth = squareform(pdist(points))
    subset = [5, 0, 3, 2]
    exact = simulate_arrangement(truth, subset, 0.0, np.random.default_rng(0))
    assert exact.shape == (4, 2)
    np.testing.assert_allclose(pdist(exact), pdist(points[subset]), atol=1e-10)
    # Noise scales with the spread: the same relative noise at 100 times the size.
    spread = math.sqrt(np.mean(np.sum(exact**2, axis=1)))
    noisy = simulate_arrangement(truth, subset, 0.1, np.random.default_rng(0))
    noisy_big = simulate_arrangement(truth * 100, subset, 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(noisy_big, noisy * 100, atol=1e-8)
    deviation = noisy - exact
    expected = np.random.default_rng(0).normal(scale=0.1 * spread, size=(4, 2))
    np.testing.assert_allclose(deviation, expected, atol=1e-12)


def test_simulate_refuses_bad_truth_subset_or_noise() -> None:
    truth = truth_matrix(0, n_items=4)
    rng = np.random.default_rng(0)
    with pytest.raises(ArrangementError, match="square matrix"):
        simulate_arrangement(truth[:3], [0, 1], 0.1, rng)
    with pytest.raises(ArrangementError, match="NaN or infinite"):
        simulate_arrangement(np.full((3, 3), np.nan), [0, 1], 0.1, rng)
    with pytest.raises(ArrangementError, match="out of range"):
        simulate_arrangement(truth, [0, 4], 0.1, rng)
    with pytest.raises(ArrangementError, match="noise"):
        simulate_arrangement(truth, [0, 1], -0.1, rng)


def test_classical_mds_reproduces_planar_distances() -> None:
    points = np.random.default_rng(9).normal(size=(7, 2))
    coordinates = arrangement.classical_mds(squareform(pdist(points)))
    np.testing.assert_allclose(pdist(coordinates), pdist(points), atol=1e-10)
    pair = arrangement.classical_mds(np.array([[0.0, 3.0], [3.0, 0.0]]))
    assert pair.shape == (2, 2) and math.isclose(float(np.linalg.norm(pair[0] - pair[1])), 3.0)
