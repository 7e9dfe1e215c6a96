"""The compiled stimulus-bootstrap Spearman (issue 20) against two independent references:
scipy's spearmanr on the multiset expanded pair by pair, and the previous exact numpy route
(every resample re-ranked with argsort-ordered cumulative sums, then a weighted Pearson),
copied here as it was, on every resample."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import ConstantInputWarning, spearmanr

from evaluation.engine.metrics import human
from tests.conftest import SHARED_DATA

SIMLEX = SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt"
TOLERANCE = 1e-10


# --- The previous implementation: the engine's row-wise re-ranking, kept as the reference --
def multiplicities(counts: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """c_i * c_j per pair, c_i for a stimulus with itself (written out, not the engine's)."""
    return np.where(i == j, counts[:, i], counts[:, i] * counts[:, j]).astype(np.float64)


def previous_spearman(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    weights = multiplicities(counts, i, j)
    rx = human._weighted_ranks_rows(x, weights)
    ry = human._weighted_ranks_rows(y, weights)
    return human._weighted_pearson(rx, ry, weights)


def expanded_spearman(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, counts_row: np.ndarray
) -> float:
    times = multiplicities(counts_row[None, :], i, j)[0].astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # a tied resample: NaN, expected
        return float(spearmanr(np.repeat(x, times), np.repeat(y, times)).statistic)


def assert_same_resamples(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    defined = ~np.isnan(reference)
    assert np.abs(ours[defined] - reference[defined]).max() <= TOLERANCE


def check_against_both_references(
    i: np.ndarray, j: np.ndarray, x: np.ndarray, y: np.ndarray, n_stimuli: int, n_boot: int
) -> np.ndarray:
    ours = human.bootstrap_pair_correlations(
        i, j, x, y, correlation="spearman", n_boot=n_boot, seed=7, n_stimuli=n_stimuli
    )
    counts = human._resample_counts(n_stimuli, n_boot, 7)
    assert_same_resamples(ours, previous_spearman(i, j, x, y, counts))
    for b in range(5):
        expected = expanded_spearman(i, j, x, y, counts[b])
        assert ours[b] == pytest.approx(expected, abs=TOLERANCE, nan_ok=True), b
    return ours


# --- Equality --------------------------------------------------------------------------------
def test_heavy_ties_and_self_pairs_equal_scipy_and_the_previous_implementation():
    rng = np.random.default_rng(3)
    n = 40
    i, j = np.triu_indices(n)  # with every self-pair
    extra = rng.integers(0, len(i), 150)
    i, j = np.r_[i, i[extra]], np.r_[j, j[extra]]  # repeated rows, as row-level data has
    x = np.round(rng.normal(size=len(i)), 1)  # ~60 tie groups: x is walked, y looked up
    y = rng.integers(0, 5, len(i)).astype(np.float64) + (x > 0)  # six ratings, correlated
    assert (i == j).sum() == n + (i[len(i) - 150 :] == j[len(i) - 150 :]).sum()
    ours = check_against_both_references(i, j, x, y, n, n_boot=300)
    assert np.isfinite(ours).all()


def test_continuous_model_against_rounded_ratings_keeps_its_precision():
    # Nearly every model value its own tie group: the ranks run to the total multiplicity,
    # where a closed-form sum of squares would lose digits.
    rng = np.random.default_rng(4)
    n = 300
    features = rng.normal(size=(n, 8))
    i, j = np.triu_indices(n, k=1)
    x = np.linalg.norm(features[i] - features[j], axis=1)
    y = np.round(x + rng.normal(size=len(x)), 1)
    check_against_both_references(i, j, x, y, n, n_boot=40)


@pytest.mark.skipif(not SIMLEX.is_file(), reason=f"{SIMLEX} is absent (public data)")
def test_simlex_words_as_stimuli_equal_scipy_and_the_previous_implementation():
    rows = [line.split("\t") for line in SIMLEX.read_text(encoding="utf-8").splitlines() if line]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    i = np.array([index[a] for a, _, _ in rows])
    j = np.array([index[b] for _, b, _ in rows])
    human_score = np.array([float(s) for _, _, s in rows])  # ~hundreds of distinct scores
    # A deterministic model with ties: length difference and a shared first letter.
    model = np.array(
        [-abs(len(a) - len(b)) + 2.0 * (a[0] == b[0]) + (a[-1] == b[-1]) for a, b, _ in rows]
    )
    assert len(np.unique(model)) < 30 < len(np.unique(human_score))  # the ratings are walked
    ours = check_against_both_references(i, j, model, human_score, len(words), n_boot=200)
    assert np.isfinite(ours).mean() > 0.9


# --- Undefined resamples -----------------------------------------------------------------------
def test_undefined_resamples_are_nan_where_the_previous_implementation_is():
    # Every pair within stimuli 0-3 ties in the model; only pairs with stimulus 4 differ.
    # A resample without stimulus 4 has one model tie group: 0 / 0.
    i, j = np.triu_indices(5, k=1)
    x = np.where(j == 4, i + 2.0, 1.0)
    y = np.arange(len(i), dtype=np.float64) % 3
    ours = check_against_both_references(i, j, x, y, 5, n_boot=200)
    assert 0 < np.isnan(ours).sum() < len(ours)


def test_hand_drawn_resamples_without_weight_or_with_one_tie_group_are_nan():
    i = np.array([0, 0, 1, 2, 3])
    j = np.array([1, 2, 2, 3, 3])  # (3, 3): a self-pair
    x = np.array([1.0, 1.0, 1.0, 2.0, 3.0])
    y = np.array([5.0, 4.0, 4.0, 4.0, 4.0])
    counts = np.array(
        [
            [1, 1, 1, 1],  # every pair once: defined
            [2, 0, 1, 0],  # only pair (0, 2), twice: one tie group
            [1, 1, 1, 0],  # the pairs among 0, 1 and 2: the model ties them all
            [0, 1, 1, 1],  # (1, 2), (2, 3) and (3, 3): the ratings tie them all
            [0, 0, 0, 0],  # nothing drawn: no weight
            [0, 0, 0, 1],  # only a stimulus with itself: one pair
            [2, 1, 0, 1],  # (0, 1) twice and (3, 3) once: two groups each, rho = -1
        ],
        dtype=np.int32,
    )
    ours = human._spearman_bootstrap(i, j, x, y, counts)
    reference = previous_spearman(i, j, x, y, counts)
    assert_same_resamples(ours, reference)
    np.testing.assert_array_equal(np.isnan(ours), [False, True, True, True, True, True, False])
    assert ours[-1] == pytest.approx(-1.0, abs=TOLERANCE)
    for b in range(len(counts)):
        expected = expanded_spearman(i, j, x, y, counts[b])
        assert ours[b] == pytest.approx(expected, abs=TOLERANCE, nan_ok=True), b


def test_no_pairs_leave_every_resample_undefined():
    empty = np.array([], dtype=np.int64)
    ours = human.bootstrap_pair_correlations(
        empty, empty, empty.astype(float), empty.astype(float),
        correlation="spearman", n_boot=12, seed=0, n_stimuli=3,
    )  # fmt: skip
    assert ours.shape == (12,)
    assert np.isnan(ours).all()
