"""Learned reweighting (Peterson et al. 2018): scored only on held-out stimuli."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import aggregate_pairs, model_pair_similarity
from evaluation.engine.metrics.reweighting import (
    fold_masks,
    reweighted_pair_alignment,
    stimulus_folds,
)


@pytest.fixture
def planted():
    """Human similarity is a weighted inner product that plain cosine gets only partly."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 16))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    weights = np.r_[np.full(4, 5.0), np.zeros(12)]  # people attend to 4 dimensions only
    i, j = np.triu_indices(len(x), k=1)
    human = (unit[i] * unit[j]) @ weights + 0.05 * rng.normal(size=len(i))
    return x, aggregate_pairs(i, j, human)


def test_held_out_stimuli_never_appear_in_training_pairs(planted):
    x, pairs = planted
    fold = stimulus_folds(len(x), 5, seed=0)
    for k in range(5):
        train, test = fold_masks(fold[pairs.i], fold[pairs.j], k)
        train_stimuli = set(pairs.i[train]) | set(pairs.j[train])
        test_stimuli = set(pairs.i[test]) | set(pairs.j[test])
        assert test.any() and train.any()
        assert not train_stimuli & test_stimuli


def test_reweighting_recovers_planted_weights_beyond_plain_cosine(planted):
    x, pairs = planted
    plain = pearsonr(model_pair_similarity(x, pairs.i, pairs.j), pairs.mean).statistic
    result = reweighted_pair_alignment(x, pairs, n_boot=200)
    assert result.value > 0.9 > plain + 0.2
    assert result.ci_low < result.value < result.ci_high
    assert result.details["held_out_pairs"] < len(pairs.mean)  # straddling pairs left out


def test_unstructured_human_data_gains_nothing(planted):
    x, pairs = planted
    noise = type(pairs)(
        pairs.i, pairs.j, np.random.default_rng(1).normal(size=len(pairs.mean)), pairs.count, 0
    )
    assert abs(reweighted_pair_alignment(x, noise, n_boot=100).value) < 0.15


def test_too_few_pairs_per_fold_is_explained():
    x = np.random.default_rng(2).normal(size=(12, 4))
    pairs = aggregate_pairs([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], np.arange(6.0))
    with pytest.raises(MetricError, match="too few pairs per stimulus fold"):
        reweighted_pair_alignment(x, pairs)
