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


def test_pair_alignment_averages_repeated_pairs_and_keeps_self_pairs():
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.1]])
    a = [0, 1, 0, 0, 2, 1, 3]
    b = [1, 0, 2, 0, 3, 2, 0]  # (0,1) twice in both orders, (0,0) a stimulus with itself
    values = [6.0, 4.0, 3.0, 7.0, 1.0, 5.0, 0.5]
    pairs = human.aggregate_pairs(a, b, values)
    assert pairs.self_pairs == 1
    keys = zip(pairs.i.tolist(), pairs.j.tolist(), strict=True)
    assert dict(zip(keys, pairs.mean.tolist(), strict=True)) == {
        (0, 0): 7.0,
        (0, 1): 5.0,
        (0, 2): 3.0,
        (1, 2): 5.0,
        (2, 3): 1.0,
        (0, 3): 0.5,
    }
    cos = human.model_pair_similarity(embeddings, pairs.i, pairs.j)
    assert cos[0] == pytest.approx(1.0)  # a stimulus is as similar as can be to itself
    result = human.pair_alignment(embeddings, pairs, correlation="pearson", n_boot=200)
    assert result.value == pytest.approx(pearsonr(cos, pairs.mean).statistic)
    assert result.details["self_pairs"] == 1


def _repeated_and_self_pairs(seed: int = 5) -> tuple[np.ndarray, ...]:
    """60 stimuli, 400 rows: repeated pairs in both orders, 20 self-pairs, tied ratings."""
    rng = np.random.default_rng(seed)
    n = 60
    embeddings = rng.normal(size=(n, 16))
    a = rng.integers(0, n, size=400)
    b = rng.integers(0, n, size=400)
    b[:20] = a[:20]  # self-pairs
    a[300:], b[300:] = b[:100], a[:100]  # the first 100 pairs again, written the other way
    values = np.round(rng.uniform(0, 5, size=400), 1)  # a 0-5 scale in tenths: ties
    return embeddings, a, b, values


@pytest.mark.parametrize("correlation", ["spearman", "pearson"])
def test_row_level_scoring_equals_scipy_over_every_row(correlation):
    embeddings, a, b, values = _repeated_and_self_pairs()
    pairs = human.row_pairs(a, b, values)
    assert len(pairs.mean) == 400 and pairs.self_pairs >= 20
    result = human.pair_alignment(embeddings, pairs, correlation=correlation, n_boot=200)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = np.sum(unit[a] * unit[b], axis=1)  # per row, as MTEB's STS evaluator scores
    cosine[a == b] = 1.0  # by definition (computed, rounding would split the ties)
    reference = (spearmanr if correlation == "spearman" else pearsonr)(cosine, values).statistic
    assert result.value == pytest.approx(reference, abs=1e-9)
    assert result.details["unit"] == "row"


@pytest.mark.parametrize("correlation", ["spearman", "pearson"])
def test_pair_level_scoring_equals_scipy_over_pair_means(correlation):
    embeddings, a, b, values = _repeated_and_self_pairs()
    pairs = human.aggregate_pairs(a, b, values)
    result = human.pair_alignment(embeddings, pairs, correlation=correlation, n_boot=200)
    frame = {}
    for i, j, v in zip(np.minimum(a, b), np.maximum(a, b), values, strict=True):
        frame.setdefault((int(i), int(j)), []).append(v)
    keys = sorted(frame)
    means = np.array([np.mean(frame[k]) for k in keys])
    assert [(int(i), int(j)) for i, j in zip(pairs.i, pairs.j, strict=True)] == keys
    np.testing.assert_allclose(pairs.mean, means, rtol=1e-12)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = np.array([1.0 if i == j else unit[i] @ unit[j] for i, j in keys])
    # Ranked on the metric's own means: a mean summed in another order can differ in its
    # last bit and split a tie that the metric keeps (0.1 + 0.2 != 0.3).
    reference = (spearmanr if correlation == "spearman" else pearsonr)(cosine, pairs.mean)
    reference = reference.statistic
    assert result.value == pytest.approx(reference, abs=1e-9)
    assert len(keys) < 400  # the repeats were averaged


@pytest.mark.parametrize("unit", ["pair", "row"])
def test_the_bootstrap_counts_a_self_pair_once_per_draw_of_its_stimulus(unit):
    """Each resample against a direct computation: the multiset of rows whose stimuli were
    drawn, a pair of two stimuli c_i * c_j times, a self-pair c_i times."""
    embeddings, a, b, values = _repeated_and_self_pairs(seed=8)
    pairs = human.pairs_by_unit(a, b, values, unit=unit)
    model = human.model_pair_similarity(embeddings, pairs.i, pairs.j)
    for correlation in ("spearman", "pearson"):
        samples = human.bootstrap_pair_correlations(
            pairs.i, pairs.j, model, pairs.mean,
            correlation=correlation, n_boot=5, seed=3, n_stimuli=len(embeddings),
        )  # fmt: skip
        counts = human._resample_counts(len(embeddings), 5, 3)
        for k in range(5):
            c = counts[k]
            times = np.where(pairs.i == pairs.j, c[pairs.i], c[pairs.i] * c[pairs.j])
            x, y = np.repeat(model, times), np.repeat(pairs.mean, times)
            reference = (spearmanr if correlation == "spearman" else pearsonr)(x, y).statistic
            assert samples[k] == pytest.approx(reference, abs=1e-9), (correlation, k)


def test_the_dense_bootstrap_counts_repeated_rows_and_self_pairs():
    rng = np.random.default_rng(2)
    n = 12
    i, j = np.triu_indices(n)  # every pair and every self-pair: the dense path
    i, j = np.r_[i, i[:10]], np.r_[j, j[:10]]  # ten pairs twice (row-level data)
    x, y = rng.normal(size=len(i)), rng.normal(size=len(i))
    assert human._dense_is_cheaper(len(i), n)
    dense = human.bootstrap_pair_correlations(
        i, j, x, y, correlation="pearson", n_boot=20, seed=1, n_stimuli=n
    )
    counts = human._resample_counts(n, 20, 1)
    for k in range(20):
        times = human.pair_weights(counts[k : k + 1], i, j)[0].astype(int)
        reference = pearsonr(np.repeat(x, times), np.repeat(y, times)).statistic
        assert dense[k] == pytest.approx(reference, abs=1e-9)


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
