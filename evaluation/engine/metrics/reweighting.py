"""Learned reweighting of embedding dimensions to predict human similarity (Peterson,
Abbott & Griffiths 2018, "Evaluating (and improving) the correspondence between deep neural
networks and human representations").

Human similarity of a pair is modelled as a weighted inner product of the two embeddings,
s_ij ~ sum_k w_k x_ik x_jk + b: ridge regression on the elementwise products of the pair's
(L2-normalised) embeddings. It is scored only on held-out stimuli: stimuli are split into
folds; a fold's test pairs have both stimuli in the fold, its training pairs have both
stimuli outside it, and pairs that straddle are left out, so no test pair shares a stimulus
with the pairs the weights were fitted on. The score is the correlation between the pooled
held-out predictions and the mean human ratings, with a stimulus bootstrap interval.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import (
    CORRELATIONS,
    MIN_BOOT,
    PairRatings,
    bootstrap_pair_correlations,
    checked_pairs,
    percentile_interval,
    unit_rows,
    weighted_correlation,
)
from evaluation.engine.metrics.results import MetricResult, stimulus_resampling
from evaluation.engine.metrics.validation import at_least, one_of

DEFAULT_ALPHAS = tuple(10.0**p for p in range(-3, 5))


def stimulus_folds(n_stimuli: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of each stimulus (a random, balanced assignment)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n_stimuli) % n_folds)


def fold_masks(fold_i: np.ndarray, fold_j: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (both stimuli outside fold k) and test pairs (both inside it)."""
    return (fold_i != k) & (fold_j != k), (fold_i == k) & (fold_j == k)


def reweighted_pair_alignment(
    embeddings: np.ndarray,
    pairs: PairRatings,
    *,
    correlation: str = "pearson",
    n_folds: int = 5,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    n_boot: int = 1000,
    seed: int = 0,
    ceiling: float | None = None,
) -> MetricResult:
    one_of(correlation, CORRELATIONS, name="correlation")
    at_least(n_folds, 2, name="n_folds")
    at_least(n_boot, MIN_BOOT, name="n_boot")
    if len(alphas) == 0 or not all(np.isfinite(a) and a > 0 for a in alphas):
        raise MetricError(f"alphas (ridge penalties) must be positive numbers, got {alphas}.")
    x = unit_rows(embeddings)
    pairs = checked_pairs(pairs, len(x))
    fold = stimulus_folds(len(x), n_folds, seed)
    fold_i, fold_j = fold[pairs.i], fold[pairs.j]
    predictions = np.full(len(pairs.mean), np.nan)
    chosen_alphas = []
    for k in range(n_folds):
        train, test = fold_masks(fold_i, fold_j, k)
        if test.sum() < 3 or train.sum() < 10:
            raise MetricError(
                f"Fold {k + 1} of {n_folds} has {int(test.sum())} held-out and {int(train.sum())} "
                "training pairs: too few pairs per stimulus fold for learned reweighting."
            )
        model = RidgeCV(alphas=alphas).fit(_pair_features(x, pairs, train), pairs.mean[train])
        predictions[test] = model.predict(_pair_features(x, pairs, test))
        chosen_alphas.append(float(model.alpha_))
    held_out = np.isfinite(predictions)
    i, j, human = pairs.i[held_out], pairs.j[held_out], pairs.mean[held_out]
    value = weighted_correlation(predictions[held_out], human, np.ones(held_out.sum()), correlation)
    samples = bootstrap_pair_correlations(
        i,
        j,
        predictions[held_out],
        human,
        correlation=correlation,
        n_boot=n_boot,
        seed=seed,
        n_stimuli=len(x),
    )
    low, high = percentile_interval(samples)
    return MetricResult(
        value=float(value),
        ci_low=low,
        ci_high=high,
        n=len(np.union1d(i, j)),
        ceiling=ceiling,
        details={
            "correlation": correlation,
            "folds": n_folds,
            "held_out_pairs": int(held_out.sum()),
            "pairs": len(pairs.mean),
            "ridge_alphas": chosen_alphas,
            "split": "stimuli in folds; test pairs within a fold, training pairs outside it",
            "ci_method": "bootstrap over stimuli of held-out pairs, 95% percentile",
        },
        resamples=samples,
        resampling=stimulus_resampling(len(x), n_boot, seed),
    )


def _pair_features(x: np.ndarray, pairs: PairRatings, mask: np.ndarray) -> np.ndarray:
    return x[pairs.i[mask]] * x[pairs.j[mask]]
