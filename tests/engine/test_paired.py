"""Paired comparisons on shared bootstrap resamples, against computations written here with
scipy/numpy, on SimLex-999 ratings; a planted difference is found, a copy is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import (
    _resample_counts,
    aggregate_pairs,
    model_pair_similarity,
    pair_alignment,
    pair_weights,
)
from evaluation.engine.metrics.paired import (
    holm,
    paired_difference,
    pairwise_table,
    rank_intervals,
    tie_groups,
)

SIMLEX = (
    Path(__file__).resolve().parents[2].parent / "shared/data/simlex999/EN-SIMLEX-999.faruqui.txt"
)


def simlex() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rows = [line.split("\t") for line in SIMLEX.read_text().splitlines() if line.strip()]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    a = np.array([index[r[0]] for r in rows])
    b = np.array([index[r[1]] for r in rows])
    return words, a, b, np.array([float(r[2]) for r in rows])


def char_ngrams(words: list[str], n: int) -> np.ndarray:
    """A bag of character n-grams per word: a crude but deterministic 'model' of the words."""
    grams = sorted({w[k : k + n] for w in words for k in range(len(w) - n + 1)})
    column = {g: k for k, g in enumerate(grams)}
    x = np.zeros((len(words), len(grams)))
    for row, w in enumerate(words):
        for k in range(len(w) - n + 1):
            x[row, column[w[k : k + n]]] += 1
    return x + 0.01  # no all-zero rows


def reference_resample(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """Spearman of the multiset written out: each pair repeated as often as it is drawn."""
    keep = weights > 0
    xs = np.repeat(x[keep], weights[keep].astype(int))
    ys = np.repeat(y[keep], weights[keep].astype(int))
    return float(scipy.stats.spearmanr(xs, ys).statistic)


def test_paired_bootstrap_equals_an_independent_computation_on_simlex():
    words, a, b, ratings = simlex()
    pairs = aggregate_pairs(a, b, ratings)
    n_boot = 200
    bigrams, unigrams = char_ngrams(words, 2), char_ngrams(words, 1)
    one = pair_alignment(bigrams, pairs, correlation="spearman", n_boot=n_boot, seed=3)
    two = pair_alignment(unigrams, pairs, correlation="spearman", n_boot=n_boot, seed=3)
    assert one.resampling == two.resampling  # same stimuli drawn in every resample

    # Independently: draw the same stimuli, write each resample out, correlate with scipy.
    # (The model's similarities are the engine's own: the n-gram bags tie often, and a tie
    # must stay a tie, not become two values a rounding error apart.)
    def cosine(x: np.ndarray) -> np.ndarray:
        return model_pair_similarity(x, pairs.i, pairs.j)

    counts = _resample_counts(len(words), n_boot, 3)
    weights = pair_weights(counts, pairs.i, pairs.j)
    diffs = np.array(
        [
            reference_resample(cosine(bigrams), pairs.mean, w)
            - reference_resample(cosine(unigrams), pairs.mean, w)
            for w in weights
        ]
    )
    ours = paired_difference(one.resamples, two.resamples, one.value, two.value)
    assert np.allclose(one.resamples - two.resamples, diffs, atol=1e-10)
    assert ours.difference == pytest.approx(
        scipy.stats.spearmanr(cosine(bigrams), pairs.mean).statistic
        - scipy.stats.spearmanr(cosine(unigrams), pairs.mean).statistic,
        abs=1e-12,
    )
    assert (ours.ci_low, ours.ci_high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))
    standard_error = np.std(diffs, ddof=1)
    z = abs(ours.difference) / standard_error
    assert ours.p_value == pytest.approx(2 * scipy.stats.norm.sf(z), rel=1e-9)
    assert ours.resamples == n_boot


def planted(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(400, 16))
    people = latent + rng.normal(size=latent.shape)
    return latent + noise * rng.normal(size=latent.shape), people


def test_a_planted_difference_is_separated_and_a_copy_is_not():
    better, people = planted(0.3)
    worse = better + 1.2 * np.random.default_rng(9).normal(size=better.shape)
    i, j = np.triu_indices(len(people), k=1)
    unit = people / np.linalg.norm(people, axis=1, keepdims=True)
    pairs = aggregate_pairs(i, j, np.einsum("ij,ij->i", unit[i], unit[j]))
    good = pair_alignment(better, pairs, n_boot=200)
    bad = pair_alignment(worse, pairs, n_boot=200)
    copy = pair_alignment(better.copy(), pairs, n_boot=200)
    gap = good.value - bad.value
    assert gap > 0.05  # the planted amount: noise added to one model's embedding
    found = paired_difference(good.resamples, bad.resamples, good.value, bad.value)
    assert found.difference == pytest.approx(gap)
    assert found.p_value < 0.01 and found.ci_low > 0 and found.ci_low < gap < found.ci_high
    same = paired_difference(good.resamples, copy.resamples, good.value, copy.value)
    assert same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0


def test_overlapping_intervals_can_hide_a_clear_paired_difference():
    """Two models sharing most of their error: marginal intervals overlap, the paired test
    separates them (the reason the leaderboard stopped using overlap)."""
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(5, 2000))
    a = shared[0] + 0.02
    b = shared[0] + 0.005 * rng.normal(size=2000)
    assert np.percentile(a, 2.5) < np.percentile(b, 97.5)  # intervals overlap
    assert paired_difference(a, b, float(a.mean()), float(b.mean())).p_value < 0.01


def test_holm_matches_the_step_down_procedure():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])
    with_gap = holm(np.array([0.01, np.nan, 0.04]))  # a comparison that could not be made
    assert np.isnan(with_gap[1]) and with_gap[[0, 2]] == pytest.approx([0.02, 0.04])
    rng = np.random.default_rng(0)
    many = rng.random(30) ** 3
    adjusted = holm(many)
    for alpha in (0.01, 0.05, 0.2):  # rejections equal the textbook sequential rule
        order = np.argsort(many)
        rejected = np.zeros(30, bool)
        for k, idx in enumerate(order):
            if many[idx] > alpha / (30 - k):
                break
            rejected[idx] = True
        assert ((adjusted <= alpha) == rejected).all()


def test_rank_intervals_and_tie_groups():
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.01, size=(4, 500))
    samples = np.array([[0.9], [0.5], [0.49], [0.1]]) + noise
    intervals = rank_intervals(samples)
    assert intervals is not None
    assert intervals[0] == (1, 1) and intervals[3] == (4, 4)
    assert intervals[1] == (2, 3) and intervals[2] == (2, 3)
    assert rank_intervals(-samples, higher_is_better=False) == intervals
    values = samples.mean(axis=1)
    assert tie_groups(samples, values) == [1, 2, 2, 3]
    assert tie_groups(samples, values, limit=2) == [1, 2]
    adjusted = pairwise_table(samples, values).adjusted
    assert adjusted[1, 2] > 0.05 and adjusted[0, 1] < 0.05 and adjusted[2, 3] < 0.05
    # A group runs from its head to the first model the head is separated from, even when a
    # later model (very uncertain) is not: groups stay contiguous in score order.
    wide = np.random.default_rng(2).normal(scale=0.5, size=500)
    spread = np.stack([samples[0], samples[1], samples[3] + wide])
    assert tie_groups(spread, np.array([0.9, 0.5, 0.1])) == [1, 2, 2]
    table = pairwise_table(samples, samples.mean(axis=1))
    assert table.differences[0, 1] == pytest.approx(-table.differences[1, 0])
    assert table.ci_low[1, 0] == pytest.approx(-table.ci_high[0, 1])


def test_undefined_resamples_are_left_out_and_too_few_are_refused():
    a = np.r_[np.full(20, np.nan), np.linspace(0.4, 0.6, 30)]
    b = np.r_[np.linspace(0.1, 0.2, 20), np.linspace(0.3, 0.5, 30)]
    assert paired_difference(a, b, 0.5, 0.4).resamples == 30
    with pytest.raises(MetricError, match="Only 5 resamples define both"):
        paired_difference(a[15:25], b[15:25], 0.5, 0.4)
    assert rank_intervals(np.stack([a[:25], b[:25]])) is None  # 5 resamples define both
