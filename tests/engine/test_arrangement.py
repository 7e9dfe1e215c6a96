"""Multi-arrangement (evaluation.engine.arrangement): recovery of a known dissimilarity
matrix from simulated sessions at the app's settings (all items first, then lift-the-weakest
subsets of half the session, the studies' default evidence threshold, at most 20 trials),
the estimate against rsatoolbox's own implementation of the method, its invariances, and
bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr

from evaluation.engine import arrangement
from evaluation.engine.arrangement import (
    DEFAULT_EVIDENCE_THRESHOLD,
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


# The app's settings (annotation.models.Study defaults, annotation.services.arrangements):
# a session arranges up to 40 items, later trials show at most half of them, and a session
# has at most 20 trials.
APP_TRIALS = 20


def app_subset_size(n_items: int) -> int:
    """annotation.services.arrangements.subset_size, copied: the engine may not import it."""
    return min(n_items, max(3, math.ceil(n_items / 2)))


def adaptive_session(
    truth: np.ndarray,
    noise: float,
    seed: int,
    *,
    max_items: int | None = None,
    threshold: float = DEFAULT_EVIDENCE_THRESHOLD,
    max_trials: int = APP_TRIALS,
) -> list[tuple[list[int], np.ndarray]]:
    """A simulated participant: all items first, then lift-the-weakest subsets (at most
    ``max_items``, by default the app's half of the session) until every pair has
    ``threshold`` evidence or ``max_trials`` trials are done."""
    rng = np.random.default_rng(1000 + seed)
    size = max_items or app_subset_size(len(truth))
    everything = list(range(len(truth)))
    trials = [(everything, simulate_arrangement(truth, everything, noise, rng))]
    while len(trials) < max_trials:
        evidence = pair_evidence(len(truth), trials)
        if evidence_sufficient(evidence, threshold):
            break
        subset = next_subset(evidence, max_items=size, threshold=threshold)
        trials.append((subset, simulate_arrangement(truth, subset, noise, rng)))
    return trials


def recovery(n_items: int, noise: float, seed: int) -> tuple[float, int]:
    """Pearson r of an app-settings session's estimate with the truth, and its trials."""
    truth = truth_matrix(seed, n_items)
    trials = adaptive_session(truth, noise, seed)
    estimate = estimate_dissimilarities(n_items, trials)
    assert not np.isnan(estimate.dissimilarities).any()
    return float(pearsonr(upper(estimate.dissimilarities), upper(truth))[0]), len(trials)


@pytest.mark.parametrize("n_items", [20, 40])
def test_recovery_at_the_apps_settings_is_high_at_moderate_noise_and_falls_with_noise(
    n_items: int,
) -> None:
    seeds = range(3)
    results = {
        noise: [recovery(n_items, noise, seed) for seed in seeds] for noise in (0.1, 0.3, 0.6)
    }
    mean_correlation = {noise: np.mean([r for r, _ in runs]) for noise, runs in results.items()}
    print(f"{n_items} items, mean Pearson r per noise level:", mean_correlation)
    print("trials used:", {noise: [t for _, t in runs] for noise, runs in results.items()})
    assert all(t <= APP_TRIALS for runs in results.values() for _, t in runs)
    assert mean_correlation[0.1] > 0.95
    assert mean_correlation[0.1] > mean_correlation[0.3] > mean_correlation[0.6]
    # The later trials are worth it: the first trial alone recovers much less.
    first_only = np.mean(
        [
            pearsonr(
                upper(
                    estimate_dissimilarities(
                        n_items, adaptive_session(truth_matrix(s, n_items), 0.1, s, max_trials=1)
                    ).dissimilarities
                ),
                upper(truth_matrix(s, n_items)),
            )[0]
            for s in seeds
        ]
    )
    assert first_only < mean_correlation[0.1] - 0.05


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


def rsatoolbox_estimate(n_items: int, trials: list[tuple[list[int], np.ndarray]]) -> np.ndarray:
    """The rsagroup's implementation: each trial's RDM of on-screen distances in arena
    diameters, made full-size with NaN (from_partials), rescaled with evidence weights, and
    the evidence-weighted mean. Upper triangle, NaN for pairs never seen."""
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.rdm.combine import from_partials, rescale

    partials = [
        RDMs(pdist(np.asarray(xy) / 2)[None, :], pattern_descriptors={"conds": list(items)})
        for items, xy in trials
    ]
    rdms = from_partials(partials, all_patterns=list(range(n_items)))
    aligned = rescale(rdms, method="evidence", threshold=1e-26)
    mean = aligned.mean(weights="rescalingWeights").dissimilarities[0]
    # rsatoolbox's condensed order is scipy's: row-major upper triangle, as ``upper``.
    return np.asarray(mean)


def at_rms_one(values: np.ndarray) -> np.ndarray:
    return values / math.sqrt(np.nanmean(values**2))


def random_session(seed: int, n_items: int) -> list[tuple[list[int], np.ndarray]]:
    """All items, then random subsets of 3 to n_items - 1 items (some pairs may stay unseen
    if the first trial is left out), placed with noise."""
    rng = np.random.default_rng(seed)
    truth = truth_matrix(seed, n_items)
    subsets = [list(range(n_items))] + [
        [int(i) for i in rng.choice(n_items, size=int(rng.integers(3, n_items)), replace=False)]
        for _ in range(int(rng.integers(3, 9)))
    ]
    return [
        (s, simulate_arrangement(truth, s, float(rng.uniform(0.05, 0.5)), rng)) for s in subsets
    ]


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.parametrize("seed", range(5))  # rsatoolbox's mean divides 0/0 for unseen pairs
@pytest.mark.parametrize("first_trial", [True, False], ids=["all-items-first", "subsets-only"])
def test_estimate_equals_rsatoolbox_up_to_scale(seed: int, first_trial: bool) -> None:
    n_items = 8 + seed
    trials = random_session(seed, n_items)
    if not first_trial:
        trials = trials[1:]
    estimate = estimate_dissimilarities(n_items, trials, tolerance=1e-13)
    expected = rsatoolbox_estimate(n_items, trials)
    ours = upper(estimate.dissimilarities)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(at_rms_one(ours), at_rms_one(expected), rtol=0, atol=1e-11)
    np.testing.assert_allclose(pair_evidence(n_items, trials), estimate.evidence, atol=1e-12)
    assert estimate.iterations > 1  # the rescaling did something to converge


def test_evidence_is_the_squared_distance_in_arena_diameters_clipped_at_point_two() -> None:
    # Arena radii: 1, 0.2 and sqrt(1.04) apart; in diameters 0.5, 0.1 and sqrt(0.26).
    positions = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.2]])
    evidence = pair_evidence(3, [([0, 1, 2], positions)])
    np.testing.assert_allclose(evidence[0, 1], 0.25)
    np.testing.assert_allclose(evidence[0, 2], 0.04)  # 0.1**2 = 0.01, clipped to 0.2**2
    np.testing.assert_allclose(evidence[1, 2], 0.26)
    twice = pair_evidence(3, [([0, 1, 2], positions), ([2, 1, 0], positions[::-1] / 2)])
    np.testing.assert_allclose(twice[0, 1], 0.25 + 0.0625)
    np.testing.assert_allclose(twice[0, 2], 0.04 + 0.04)
    # One trial alone: its distances, at RMS 1 (the clip touches only the weights).
    estimate = estimate_dissimilarities(3, [([0, 1, 2], positions)])
    distances = np.array([0.5, 0.1, math.sqrt(0.26)])
    np.testing.assert_allclose(upper(estimate.dissimilarities), at_rms_one(distances), atol=1e-12)


def test_the_same_arrangement_zoomed_in_weighs_more() -> None:
    """Two trials disagree about the pair (0, 1); the one drawn larger on screen pulls the
    estimate its way, since its weights are larger."""
    small = np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.3]])
    other = np.array([[0.0, 0.0], [0.15, 0.0], [0.0, 0.3]])
    estimates = []
    for zoom in (1.0, 3.0):
        trials = [([0, 1, 2], small), ([0, 1, 2], other * zoom)]
        estimates.append(estimate_dissimilarities(3, trials).dissimilarities)
    assert estimates[1][0, 1] < estimates[0][0, 1]


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
        pytest.param(lambda xy: xy + np.array([400.0, -120.0]), id="translate"),
        pytest.param(lambda xy: rotate(xy, 1.1), id="rotate"),
        pytest.param(lambda xy: xy * np.array([-1.0, 1.0]), id="mirror"),
    ],
)
def test_each_trial_is_known_only_up_to_rigid_motions(transform) -> None:
    """Moving, turning or mirroring a trial changes nothing. (Its size does: the weights
    are on-screen distances, test_the_same_arrangement_zoomed_in_weighs_more.)"""
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
        (
            [0, 1, 2],
            np.array([[0.0, 0.0], [1e-200, 0.0], [0.0, 0.0]]),
            "too close together to measure",
        ),
        ([0, 1, 2], GOOD * 1e200, "too far apart to measure"),
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


def test_next_subset_shows_at_least_three_items_even_when_no_other_is_weak() -> None:
    evidence = np.full((6, 6), 5.0)
    np.fill_diagonal(evidence, 0.0)
    evidence[0, 1] = evidence[1, 0] = 0.1
    subset = next_subset(evidence, max_items=3, threshold=0.5)
    assert len(subset) == 3 and {0, 1} <= set(subset)
    assert subset == [0, 1, 2]  # ties: the lowest index
    # Room for more, but no other item is weak with the chosen: three, not more.
    assert next_subset(evidence, max_items=6, threshold=0.5) == [0, 1, 2]
    evidence[3, 1] = evidence[1, 3] = 4.0  # the best-scoring third: least evidence with them
    assert next_subset(evidence, max_items=3, threshold=0.5) == [0, 1, 3]
    two = np.array([[0.0, 0.1], [0.1, 0.0]])
    assert next_subset(two, max_items=2) == [0, 1]  # only two items: a 2-item trial


def test_next_subset_after_the_first_trial_lifts_its_weakest_pairs() -> None:
    truth = truth_matrix(5)
    rng = np.random.default_rng(5)
    everything = list(range(N_ITEMS))
    evidence = pair_evidence(
        N_ITEMS, [(everything, simulate_arrangement(truth, everything, 0.1, rng))]
    )
    subset = next_subset(evidence, max_items=6)
    weakest = np.unravel_index(np.argmin(evidence + np.eye(N_ITEMS) * 1e9), evidence.shape)
    assert set(map(int, weakest)) <= set(subset)
    assert 3 <= len(subset) <= 6 and len(set(subset)) == len(subset)
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
    trials = adaptive_session(truth, 0.2, seed=2, max_items=4, threshold=0.5, max_trials=150)
    assert len(trials) < 150
    evidence = pair_evidence(10, trials)
    assert evidence_sufficient(evidence, 0.5)
    assert not evidence_sufficient(pair_evidence(10, trials[:-1]), 0.5)
    assert all(3 <= len(items) <= 4 for items, _ in trials[1:])


def test_bad_evidence_and_settings_for_next_subset_are_refused() -> None:
    with pytest.raises(ArrangementError, match="square matrix"):
        next_subset(np.zeros((3, 2)), max_items=3)
    with pytest.raises(ArrangementError, match="finite and non-negative"):
        next_subset(np.array([[0.0, np.nan], [np.nan, 0.0]]), max_items=2)
    with pytest.raises(ArrangementError, match="at least 3 items .*; max_items is 2"):
        next_subset(np.zeros((3, 3)), max_items=2)
    with pytest.raises(ArrangementError, match="at least 2 items .*; max_items is 1"):
        next_subset(np.zeros((2, 2)), max_items=1)


def radii(positions: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(positions**2, axis=1))


def test_simulated_arrangement_is_mds_of_the_subset_fitted_into_the_arena() -> None:
    points = np.random.default_rng(4).normal(size=(6, 2))
    truth = squareform(pdist(points))
    subset = [5, 0, 3, 2]
    exact = simulate_arrangement(truth, subset, 0.0, np.random.default_rng(0))
    assert exact.shape == (4, 2)
    np.testing.assert_allclose(exact.mean(axis=0), 0.0, atol=1e-12)  # centred
    assert math.isclose(radii(exact).max(), 0.9)  # the farthest item at the default fill
    distances = pdist(points[subset])
    np.testing.assert_allclose(pdist(exact), distances * (pdist(exact)[0] / distances[0]))
    half = simulate_arrangement(truth, subset, 0.0, np.random.default_rng(0), fill=0.5)
    np.testing.assert_allclose(half, exact * 0.5 / 0.9, atol=1e-12)
    # The truth's unit does not matter: the arrangement fills the arena either way.
    np.testing.assert_allclose(
        simulate_arrangement(truth * 100, subset, 0.0, np.random.default_rng(0)), exact, atol=1e-12
    )


def test_simulated_noise_is_relative_to_the_spread_and_added_before_fitting() -> None:
    points = np.random.default_rng(4).normal(size=(6, 2))
    truth = squareform(pdist(points))
    subset = [5, 0, 3, 2]
    mds = arrangement.classical_mds(truth[np.ix_(subset, subset)])
    spread = math.sqrt(np.mean(np.sum(mds**2, axis=1)))
    placed = mds + np.random.default_rng(0).normal(scale=0.1 * spread, size=(4, 2))
    centred = placed - placed.mean(axis=0)
    noisy = simulate_arrangement(truth, subset, 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(noisy, centred * (0.9 / radii(centred).max()), atol=1e-12)
    noisy_big = simulate_arrangement(truth * 100, subset, 0.1, np.random.default_rng(0))
    np.testing.assert_allclose(noisy_big, noisy, atol=1e-10)  # the same relative noise
    for seed in range(20):  # always inside the arena, however noisy
        wild = simulate_arrangement(truth, subset, 3.0, np.random.default_rng(seed), fill=1.0)
        assert radii(wild).max() <= 1 + 1e-12


def test_identical_items_are_simulated_at_the_centre() -> None:
    placed = simulate_arrangement(np.zeros((3, 3)), [0, 1, 2], 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(placed, np.zeros((3, 2)))


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
    for fill in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ArrangementError, match=r"fill .* in \(0, 1\]"):
            simulate_arrangement(truth, [0, 1], 0.1, rng, fill=fill)


def test_classical_mds_reproduces_planar_distances() -> None:
    points = np.random.default_rng(9).normal(size=(7, 2))
    coordinates = arrangement.classical_mds(squareform(pdist(points)))
    np.testing.assert_allclose(pdist(coordinates), pdist(points), atol=1e-10)
    pair = arrangement.classical_mds(np.array([[0.0, 3.0], [3.0, 0.0]]))
    assert pair.shape == (2, 2) and math.isclose(float(np.linalg.norm(pair[0] - pair[1])), 3.0)
