"""Human-alignment metrics against independent references: scipy on expanded data,
rsatoolbox's pattern subsampling, and literal loops."""

from __future__ import annotations

import numpy as np
import pytest
import rsatoolbox
from scipy.stats import pearsonr, spearmanr

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import human


def test_weighted_spearman_equals_scipy_on_the_expanded_multiset():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 80).astype(float)  # many ties
    y = x + rng.normal(size=80)
    w = rng.integers(0, 4, 80).astype(float)
    expected = spearmanr(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))).statistic
    assert human.weighted_correlation(x, y, w, "spearman") == pytest.approx(expected, abs=1e-12)
    expected_p = pearsonr(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int))).statistic
    assert human.weighted_correlation(x, y, w, "pearson") == pytest.approx(expected_p, abs=1e-12)


@pytest.mark.parametrize(("method", "rsa_method"), [("pearson", "corr"), ("spearman", "spearman")])
def test_stimulus_bootstrap_equals_rsatoolbox_pattern_subsampling(method, rsa_method):
    rng = np.random.default_rng(2)
    n = 14
    model = rng.normal(size=(n, 5))
    people = model @ rng.normal(size=(5, 5)) + rng.normal(size=(n, 5))
    i, j = np.triu_indices(n, k=1)
    model_dis = np.linalg.norm(model[i] - model[j], axis=1)
    human_dis = np.round(np.linalg.norm(people[i] - people[j], axis=1), 1)  # ties, as ratings have
    ours = human.bootstrap_pair_correlations(
        i, j, model_dis, human_dis, correlation=method, n_boot=20, seed=5, n_stimuli=n
    )
    draws = np.random.default_rng(5).integers(0, n, size=(20, n))  # the same resamples
    for b, sample in enumerate(draws):
        rdm_model = rsatoolbox.rdm.RDMs(model_dis[None, :])
        rdm_human = rsatoolbox.rdm.RDMs(human_dis[None, :])
        sub_model = rdm_model.subsample_pattern("index", sample)
        sub_human = rdm_human.subsample_pattern("index", sample)
        expected = rsatoolbox.rdm.compare(sub_model, sub_human, method=rsa_method)[0, 0]
        assert ours[b] == pytest.approx(expected, abs=1e-9), b


def test_pair_alignment_averages_repeated_pairs_and_drops_self_pairs():
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.1]])
    a = [0, 1, 0, 0, 2, 1, 3]
    b = [1, 0, 2, 0, 3, 2, 0]  # (0,1) twice in both orders, (0,0) a catch trial
    values = [6.0, 4.0, 3.0, 7.0, 1.0, 5.0, 0.5]
    pairs = human.aggregate_pairs(a, b, values)
    assert pairs.self_pairs_dropped == 1
    keys = zip(pairs.i.tolist(), pairs.j.tolist(), strict=True)
    assert dict(zip(keys, pairs.mean.tolist(), strict=True)) == {
        (0, 1): 5.0,
        (0, 2): 3.0,
        (1, 2): 5.0,
        (2, 3): 1.0,
        (0, 3): 0.5,
    }
    cos = human.model_pair_similarity(embeddings, pairs.i, pairs.j)
    result = human.pair_alignment(embeddings, pairs, correlation="pearson", n_boot=200)
    assert result.value == pytest.approx(pearsonr(cos, pairs.mean).statistic)


def test_split_half_reliability_of_consistent_and_random_raters():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=60)
    a, b = np.arange(60), np.arange(60) + 100
    rows_a = np.tile(a, 10)
    rows_b = np.tile(b, 10)
    participants = np.repeat([f"p{k}" for k in range(10)], 60)
    consistent = np.tile(truth, 10) + 0.01 * rng.normal(size=600)
    noise = rng.normal(size=600)
    high = human.split_half_reliability(rows_a, rows_b, consistent, participants)
    low = human.split_half_reliability(rows_a, rows_b, noise, participants)
    assert high["split_by"] == "participant"
    assert high["mean"] > 0.99
    assert abs(low["mean"]) < 0.35


def test_split_half_applies_spearman_brown():
    # Two raters whose halves correlate at r: the corrected reliability is 2r / (1 + r).
    rng = np.random.default_rng(4)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    pairs = np.arange(200)
    result = human.split_half_reliability(
        np.r_[pairs, pairs],
        np.r_[pairs, pairs] + 1000,
        np.r_[x, y],
        ["p1"] * 200 + ["p2"] * 200,
        correlation="pearson",
        n_splits=10,
    )
    r = pearsonr(x, y).statistic
    assert result["mean"] == pytest.approx(2 * r / (1 + r))


def test_two_afc_credit_is_the_vote_share_of_the_model_choice_ties_half():
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, -1.0]])
    reference, first, second = np.array([0, 0, 2]), np.array([1, 2, 0]), np.array([2, 3, 1])
    share_first = np.array([0.75, 0.4, 0.9])
    result = human.two_afc_accuracy(embeddings, reference, first, second, share_first, n_boot=50)
    # item 1: model picks 1 (share .75); item 2: cos(0,2) = cos(0,3) = 0 -> tie .5;
    # item 3: ref 2 vs 0 (cos 0) and 1 (cos ~.11) -> picks second, share 1 - .9
    assert result.value == pytest.approx((0.75 + 0.5 + 0.1) / 3)


def test_triplet_choices_must_be_among_the_shown_stimuli():
    with pytest.raises(MetricError, match="not one of the three"):
        human.triplet_accuracy(np.eye(4), np.array([[0, 1, 2]]), np.array([3]))


def test_leave_one_out_agreement_ties_share_credit():
    keys = np.array([[0, 1, 2]] * 4 + [[3, 4, 5]])
    choices = np.array([0, 0, 1, 2, 3])
    result = human.leave_one_out_agreement(keys, choices)
    # Response 0: others {0:1, 1:1, 2:1} -> tie of 3, credit 1/3; same for response 1.
    # Response 2 (1): others {0:2, 2:1} -> 0; response 3 (2): others {0:2, 1:1} -> 0.
    assert result["mean"] == pytest.approx((1 / 3 + 1 / 3) / 4)
    assert result["responses"] == 4


def test_dense_and_direct_pearson_bootstraps_agree(monkeypatch):
    rng = np.random.default_rng(6)
    n = 40
    i, j = np.triu_indices(n, k=1)
    keep = rng.random(len(i)) < 0.6  # not every pair judged
    i, j = i[keep], j[keep]
    x, y = rng.normal(size=len(i)), rng.normal(size=len(i)) * 10 + 30
    dense = human.bootstrap_pair_correlations(
        i, j, x, y, correlation="pearson", n_boot=50, seed=1, n_stimuli=n
    )
    monkeypatch.setattr(human, "_dense_is_cheaper", lambda pairs, stimuli: False)
    direct = human.bootstrap_pair_correlations(
        i, j, x, y, correlation="pearson", n_boot=50, seed=1, n_stimuli=n
    )
    np.testing.assert_allclose(dense, direct, rtol=1e-10, atol=1e-12)
