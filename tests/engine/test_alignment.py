"""Cross-model linear alignment must score a linear relation near 1 and independent data
near 0, and equal scikit-learn's own cross-validation (same folds, same ridge, same R^2)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import make_scorer, r2_score
from sklearn.model_selection import KFold, cross_val_score

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.alignment import linear_alignment
from evaluation.engine.metrics.intervals import t_interval

VARIANCE_WEIGHTED_R2 = make_scorer(r2_score, multioutput="variance_weighted")


@pytest.fixture(scope="module")
def digit_pixels() -> np.ndarray:
    return load_digits().data[:400].astype(np.float64)


def sklearn_scores(estimator, x, y, *, n_folds=5, seed=0) -> np.ndarray:
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return cross_val_score(estimator, x, y, cv=folds, scoring=VARIANCE_WEIGHTED_R2)


def test_a_linear_map_plus_tiny_noise_aligns_almost_perfectly():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 20))
    target = source @ rng.normal(size=(20, 35)) + 3.0 + 0.01 * rng.normal(size=(300, 35))
    result = linear_alignment(source, target)
    assert result.value > 0.999
    assert result.ci_low <= result.value <= result.ci_high
    assert result.n == 300


def test_independent_representations_do_not_align():
    rng = np.random.default_rng(1)
    result = linear_alignment(rng.normal(size=(200, 30)), rng.normal(size=(200, 10)))
    assert -0.1 < result.value < 0.03
    assert result.ci_low < 0.0  # indistinguishable from no alignment


def test_equals_sklearn_cross_validation_with_a_fixed_penalty(digit_pixels):
    rng = np.random.default_rng(2)
    target = np.tanh(digit_pixels @ rng.normal(size=(64, 16)) / 40) + 0.1 * rng.normal(
        size=(400, 16)
    )
    result = linear_alignment(digit_pixels, target, alphas=[3.0], seed=4)
    expected = sklearn_scores(Ridge(alpha=3.0), digit_pixels, target, seed=4)
    assert 0.2 < expected.mean() < 0.99
    np.testing.assert_allclose(
        [fold["r2"] for fold in result.details["folds"]], expected, atol=1e-10
    )
    assert result.value == pytest.approx(expected.mean(), abs=1e-10)
    low, high = t_interval(expected)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-10)


def test_equals_sklearn_cross_validation_with_a_penalty_grid(digit_pixels):
    rng = np.random.default_rng(3)
    target = digit_pixels[:, ::3] ** 1.5 + rng.normal(size=(400, 22))
    grid = [0.01, 1.0, 100.0, 1e4]
    result = linear_alignment(digit_pixels, target, alphas=grid, n_folds=4)
    expected = sklearn_scores(RidgeCV(alphas=grid), digit_pixels, target, n_folds=4)
    np.testing.assert_allclose(
        [fold["r2"] for fold in result.details["folds"]], expected, atol=1e-10
    )
    assert {fold["alpha"] for fold in result.details["folds"]} <= set(grid)


def test_real_images_map_onto_their_pooled_version_but_not_back(digit_pixels):
    # Pooled pixels are a linear function of the pixels; the pixels are not of the pooled.
    pooled = digit_pixels.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(digit_pixels), -1)
    forward = linear_alignment(digit_pixels, pooled)
    backward = linear_alignment(pooled, digit_pixels)
    assert forward.value > 0.999
    assert 0.3 < backward.value < 0.95


def test_default_penalties_follow_the_scale_of_the_source(digit_pixels):
    # The relative grid makes the score independent of the embeddings' units.
    rng = np.random.default_rng(5)
    target = digit_pixels @ rng.normal(size=(64, 8)) + 40 * rng.normal(size=(400, 8))
    small = linear_alignment(digit_pixels / 1000.0, target)
    large = linear_alignment(digit_pixels * 1000.0, target)
    assert small.value == pytest.approx(large.value, abs=1e-6)
    assert 0.1 < small.value < 0.95


def test_details_describe_every_fold():
    rng = np.random.default_rng(6)
    result = linear_alignment(rng.normal(size=(53, 4)), rng.normal(size=(53, 3)), n_folds=3)
    folds = result.details["folds"]
    assert [fold["fold"] for fold in folds] == [0, 1, 2]
    assert sum(fold["n_test"] for fold in folds) == 53
    assert all(fold["n_train"] + fold["n_test"] == 53 for fold in folds)
    assert result.value == pytest.approx(np.mean([fold["r2"] for fold in folds]))
    assert result.details["source_dim"] == 4 and result.details["target_dim"] == 3


def test_bad_inputs_are_explained():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 4))
    with pytest.raises(MetricError, match="same stimuli"):
        linear_alignment(x, y[:20])
    with pytest.raises(MetricError, match="at least 3"):
        linear_alignment(x[:2], y[:2])
    with pytest.raises(MetricError, match="too few for 5-fold"):
        linear_alignment(x[:9], y[:9])
    with pytest.raises(MetricError, match="at least 2 folds"):
        linear_alignment(x, y, n_folds=1)
    with pytest.raises(MetricError, match="identical for every stimulus"):
        linear_alignment(x, np.ones((30, 4)))
    with pytest.raises(MetricError, match="positive"):
        linear_alignment(x, y, alphas=[0.0, 1.0])
    broken = x.copy()
    broken[4, 0] = np.inf
    with pytest.raises(MetricError, match="NaN or infinite"):
        linear_alignment(broken, y)
