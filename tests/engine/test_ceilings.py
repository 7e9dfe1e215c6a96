"""Nili et al. noise-ceiling bounds against independent references: rsatoolbox's
boot_noise_ceiling on complete data, the definitions spelled out in plain Python on partial
data, and the THINGS odd-one-out test set counted by hand."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest
import rsatoolbox
from rsatoolbox.inference.noise_ceiling import boot_noise_ceiling
from scipy.stats import pearsonr, rankdata, spearmanr

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import ceilings
from evaluation.engine.metrics.ceilings import choice_bounds, nili_bounds
from evaluation.engine.metrics.human import leave_one_out_agreement
from tests.conftest import SHARED_DATA


# --- Pair ratings: complete data against rsatoolbox -----------------------------------------------
def complete_ratings(seed: int, *, likert: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratings of every pair of 12 stimuli by 9 participants of differing noise: (participant
    x pair matrix, pair stimuli i, j)."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(12, k=1)
    truth = rng.normal(size=len(i))
    noise = rng.uniform(0.5, 2.0, size=(9, 1))
    ratings = truth + rng.normal(size=(9, len(i))) * noise
    if likert:  # a 1-7 scale: many ties within a participant
        ratings = np.clip(np.round(ratings * 1.5 + 4), 1, 7)
    return ratings, i, j


def as_rows(ratings: np.ndarray, i: np.ndarray, j: np.ndarray, seed: int):
    """Long format, shuffled, with every other row's pair written the other way round and a
    catch trial (a stimulus with itself, rated at the top) per participant."""
    rng = np.random.default_rng(seed)
    rows = [
        (a, b, value, f"s{p}") if k % 2 else (b, a, value, f"s{p}")
        for p, row in enumerate(ratings)
        for k, (a, b, value) in enumerate(zip(i, j, row, strict=True))
    ]
    rows += [(3, 3, 99.0, f"s{p}") for p in range(len(ratings))]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    a, b, values, who = zip(*rows, strict=True)
    return list(a), list(b), list(values), list(who)


@pytest.mark.parametrize("likert", [False, True])
@pytest.mark.parametrize(
    ("correlation", "rsa_method"), [("pearson", "corr"), ("spearman", "spearman")]
)
def test_complete_data_bounds_equal_rsatoolbox_boot_noise_ceiling(likert, correlation, rsa_method):
    ratings, i, j = complete_ratings(3, likert=likert)
    rdms = rsatoolbox.rdm.RDMs(ratings, rdm_descriptors={"index": np.arange(len(ratings))})
    expected_lower, expected_upper = boot_noise_ceiling(rdms, method=rsa_method)
    result = nili_bounds(*as_rows(ratings, i, j, seed=4), correlation=correlation, n_boot=200)
    assert result["lower"] == pytest.approx(expected_lower, abs=1e-12)
    assert result["upper"] == pytest.approx(expected_upper, abs=1e-12)
    assert result["lower"] < result["upper"]
    assert result["participants"] == 9 and result["pairs"] == len(i)
    assert result["correlation"] == correlation and result["n_boot"] == 200
    assert "over participants" in result["ci_method"]


# --- Pair ratings: partial data against the definitions in plain Python --------------------------
def mean(values: list) -> float:
    return float(sum(values) / len(values))


def plain_bounds(rows, correlation: str) -> tuple[float, float, int]:
    """The definitions of nili_bounds' docstring, one participant and pair at a time."""
    ratings: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for a, b, value, who in rows:
        if a != b and who:
            ratings[who][(min(a, b), max(a, b))].append(value)
    means = {
        who: {pair: sum(v) / len(v) for pair, v in pairs.items()} for who, pairs in ratings.items()
    }
    means = {who: m for who, m in means.items() if len(set(m.values())) > 1}
    scaled = {}
    for who, m in means.items():
        pairs, values = list(m), np.array(list(m.values()))
        if correlation == "spearman":  # exact fractions: equal means of ranks stay tied
            common = [(Fraction(r) - Fraction(1, 2)) / len(values) for r in rankdata(values)]
        else:
            common = (values - values.mean()) / values.std()
        scaled[who] = dict(zip(pairs, common, strict=True))
    lower, upper = [], []
    for who, m in means.items():
        shared = [p for p in m if any(p in scaled[o] for o in scaled if o != who)]
        if len(shared) < 3:
            continue
        own = [m[p] for p in shared]
        everyone = [mean([scaled[o][p] for o in scaled if p in scaled[o]]) for p in shared]
        others = [
            mean([scaled[o][p] for o in scaled if o != who and p in scaled[o]]) for p in shared
        ]
        measure = spearmanr if correlation == "spearman" else pearsonr
        r_upper, r_lower = measure(own, everyone).statistic, measure(own, others).statistic
        if np.isfinite(r_upper) and np.isfinite(r_lower):
            upper.append(r_upper)
            lower.append(r_lower)
    return float(np.mean(lower)), float(np.mean(upper)), len(lower)


def partial_rows(seed: int) -> list[tuple[int, int, float, str]]:
    """20 participants, each rating a random 25 of the 105 pairs of 15 stimuli on a 1-7 scale;
    some pairs twice, a catch trial each, one participant who rates everything 4, one who
    shares only two pairs with the others, and rows without a participant id."""
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(15) for b in range(a + 1, 15)]
    truth = rng.normal(size=len(pairs))
    rows = []
    for p in range(20):
        picked = rng.choice(len(pairs), size=25, replace=False)
        noise = rng.uniform(0.5, 2.0)
        for k in picked:
            value = float(np.clip(np.round(truth[k] * 1.5 + 4 + rng.normal() * noise), 1, 7))
            a, b = pairs[k] if rng.random() < 0.5 else pairs[k][::-1]
            rows.append((a, b, value, f"p{p}"))
        for k in picked[:3]:  # planned repeats: averaged per participant
            rows.append((*pairs[k], float(rng.integers(1, 8)), f"p{p}"))
        rows.append((5, 5, 7.0, f"p{p}"))
    rows += [(*pairs[k], 4.0, "flat") for k in range(30)]
    rows += [(0, 1, 2.0, "loner"), (2, 0, 5.0, "loner")]
    rows += [(100, 101, 1.0, "loner"), (100, 102, 6.0, "loner")]  # pairs no one else rated
    rows += [(*pairs[k], 7.0, "") for k in range(10)]
    return rows


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_partial_data_bounds_follow_the_definitions(correlation):
    rows = partial_rows(7)
    expected_lower, expected_upper, used = plain_bounds(rows, correlation)
    a, b, values, who = zip(*rows, strict=True)
    result = nili_bounds(a, b, values, who, correlation=correlation, n_boot=300)
    assert result["lower"] == pytest.approx(expected_lower, abs=1e-12)
    assert result["upper"] == pytest.approx(expected_upper, abs=1e-12)
    assert result["participants"] == used == 20
    # The constant rater and the one with two shared pairs are named, not silently dropped.
    assert result["participants_skipped"] == {"constant_ratings": 1, "too_few_shared_pairs": 1}
    assert expected_lower < expected_upper


def test_intervals_resample_participants_and_hold_the_estimates():
    rows = partial_rows(8)
    a, b, values, who = zip(*rows, strict=True)
    result = nili_bounds(a, b, values, who, n_boot=1000, seed=3)
    for bound in ("lower", "upper"):
        low, high = result[f"{bound}_ci"]
        assert low < result[bound] < high
    assert result == nili_bounds(a, b, values, who, n_boot=1000, seed=3)
    assert result["lower_ci"] != nili_bounds(a, b, values, who, n_boot=1000, seed=4)["lower_ci"]
    # More participants, the same people's noise: narrower intervals.
    wide = nili_bounds(*zip(*partial_rows(8)[:200], strict=True), n_boot=1000)
    assert np.diff(wide["lower_ci"]) > np.diff(result["lower_ci"])


def test_grouped_ranks_equal_scipy_within_each_group():
    rng = np.random.default_rng(0)
    group = np.sort(rng.integers(0, 6, 200))
    values = rng.integers(0, 5, 200).astype(float)  # many ties
    ranks = ceilings._grouped_ranks(values, group)
    for g in np.unique(group):
        np.testing.assert_allclose(ranks[group == g], rankdata(values[group == g]))


def test_pair_bounds_say_why_they_cannot_be_computed():
    a, b, values = [0, 0, 1, 0, 0, 1], [1, 2, 2, 1, 2, 2], [1.0, 2.0, 3.0, 2.0, 1.0, 3.0]
    assert "name no participants" in nili_bounds(a, b, values, None)["reason"]
    assert "name no participants" in nili_bounds(a, b, values, [""] * 6)["reason"]
    two = nili_bounds(a, b, values, ["x", "x", "x", "y", "y", "y"])
    assert two["lower"] is None and two["upper"] is None and "at least 3" in two["reason"]
    # Three participants, but none rated three pairs that another rated too.
    apart = nili_bounds(
        [0, 0, 0, 1, 3, 3, 3, 4, 6, 6, 6, 7],
        [1, 2, 5, 2, 4, 5, 8, 5, 7, 8, 9, 8],
        [1.0, 2.0, 3.0, 4.0] * 3,
        ["x"] * 4 + ["y"] * 4 + ["z"] * 4,
    )
    assert apart["lower"] is None and "only 0 participant(s) rated 3" in apart["reason"]
    with pytest.raises(MetricError, match="Unknown correlation"):
        nili_bounds(a, b, values, ["x"] * 6, correlation="kendall")
    with pytest.raises(MetricError, match="n_boot must be at least 10"):
        nili_bounds(a, b, values, ["x"] * 6, n_boot=5)
    with pytest.raises(MetricError, match="participants has 5"):
        nili_bounds(a, b, values, ["x"] * 5)
    with pytest.raises(MetricError, match="NaN"):
        nili_bounds(a, b, [np.nan, *values[1:]], ["x"] * 6)


# --- Choices ----------------------------------------------------------------------------------------
def read_things() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """THINGS odd-one-out test set: sorted triplets, the chosen item (choice is a 1-based
    position in the row as written), participants."""
    path = SHARED_DATA / "things_odd_one_out" / "test_triplets.csv"
    with open(path, encoding="utf-8") as handle:
        rows = [[int(x) for x in line] for line in csv.reader(handle, delimiter="\t")]
    assert len(rows) == 20000
    triplets = np.array([r[:3] for r in rows])
    chosen = np.array([r[r[3] - 1] for r in rows])
    return np.sort(triplets, axis=1), chosen, [str(r[4]) for r in rows]


def plain_majority_agreement(keys: np.ndarray, chosen: np.ndarray, *, include_self: bool):
    votes: dict[tuple[int, ...], Counter] = defaultdict(Counter)
    for key, pick in zip(map(tuple, keys), chosen, strict=True):
        votes[key][pick] += 1
    credits = []
    for key, pick in zip(map(tuple, keys), chosen, strict=True):
        counts = Counter(votes[key])
        if not include_self:
            counts[pick] -= 1
        if sum(counts.values()) == 0:
            continue  # an item with one response
        top = max(counts.values())
        modes = [option for option, n in counts.items() if n == top]
        credits.append(1 / len(modes) if pick in modes else 0.0)
    return sum(credits) / len(credits)


def test_things_choice_bounds_reproduce_the_published_agreement():
    keys, chosen, who = read_things()
    result = choice_bounds(keys, chosen, who)
    assert result["lower"] == pytest.approx(0.6438, abs=5e-5)  # SOURCES.md: 64.38%
    assert result["lower"] == leave_one_out_agreement(keys, chosen)["mean"]
    expected_upper = plain_majority_agreement(keys, chosen, include_self=True)
    assert result["upper"] == pytest.approx(expected_upper, abs=1e-12)
    assert result["upper"] == pytest.approx(0.672, abs=5e-4)  # SOURCES.md: 67.2%
    assert result["upper"] >= result["lower"]
    assert result["responses"] == 20000 and result["items"] == 1000
    assert result["participants"] == 325 and "over participants" in result["ci_method"]
    for bound in ("lower", "upper"):
        low, high = result[f"{bound}_ci"]
        assert low < result[bound] < high and high - low < 0.06
    by_items = choice_bounds(keys, chosen)
    assert "over items" in by_items["ci_method"] and "participants" not in by_items
    assert (by_items["lower"], by_items["upper"]) == (result["lower"], result["upper"])


def test_choice_bounds_share_credit_among_tied_majorities():
    # Item A: picks x, x, y, y; item B: x, x, x; item C: one response, left out.
    keys = np.array([[0, 1, 2]] * 4 + [[3, 4, 5]] * 3 + [[6, 7, 8]])
    chosen = np.array([0, 0, 1, 1, 3, 3, 3, 6])
    result = choice_bounds(keys, chosen, n_boot=50)
    # Leaving one x out of A leaves y the majority: A earns 0; all of A ties: 1/2 each.
    assert result["lower"] == pytest.approx((0 * 4 + 1 * 3) / 7)
    assert result["upper"] == pytest.approx((0.5 * 4 + 1 * 3) / 7)
    assert result["lower"] == pytest.approx(
        plain_majority_agreement(keys, chosen, include_self=False)
    )
    assert result["responses"] == 7 and result["items"] == 2


def test_two_afc_items_keep_the_reference_apart():
    # The same three stimuli with different references are different items.
    keys = np.array([[0, 1, 2], [0, 1, 2], [1, 0, 2], [1, 0, 2]])
    chosen = np.array([1, 1, 0, 2])
    result = choice_bounds(keys, chosen, n_boot=20)
    assert result["items"] == 2
    assert result["lower"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert result["upper"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)


def test_choice_bounds_say_why_they_cannot_be_computed():
    keys = np.array([[0, 1, 2], [3, 4, 5]])
    result = choice_bounds(keys, np.array([0, 3]), ["p", "q"])
    assert result["lower"] is None and "no item has two or more responses" in result["reason"]
    assert "no item" in choice_bounds(np.zeros((0, 3)), np.zeros(0))["reason"]
    with pytest.raises(MetricError, match="one choice per response"):
        choice_bounds(keys, np.array([[0], [3]]))
    with pytest.raises(MetricError, match="n_boot must be at least 10"):
        choice_bounds(keys, np.array([0, 3]), n_boot=1)
    # Participant ids on only some responses: the intervals resample items instead.
    keys = np.array([[0, 1, 2]] * 6)
    partly = choice_bounds(keys, np.array([0, 0, 1, 0, 2, 0]), ["a", "b", "c", "", "d", "e"])
    assert "over items" in partly["ci_method"]
