"""Cross-model linear alignment: how well one model's embeddings predict another's.

As in Text-to-Concept (Moayeri et al. 2023), model A's space is mapped into model B's by a
linear map with a bias, here fitted by ridge regression; the score is the R^2 of the
mapped embeddings on stimuli the map never saw. Stimuli are split into K folds (shuffled,
seeded); on each training part scikit-learn's RidgeCV picks the penalty from a grid by
efficient leave-one-out and fits the map, which is then scored on the held-out fold.

R^2 is variance-weighted over B's dimensions (1 - total residual / total variance, the
held-out fold's own mean as baseline), so dimensions B barely uses cannot dominate. The
value is the mean over folds, with a t interval over folds: folds share training stimuli,
so the interval is a rough guide, not an exact coverage guarantee. R^2 is directional:
A -> B and B -> A differ, and 0 means no better than predicting B's mean.

The default penalty grid is relative to the scale of A's embeddings (multiples of the mean
eigenvalue of the training covariance), so it suits unit-normalised and raw embeddings
alike; explicit ``alphas`` are absolute, as scikit-learn takes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.intervals import t_interval
from evaluation.engine.metrics.results import MetricResult
from evaluation.engine.metrics.validation import embedding_matrix

RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 3, 19))


def _relative_alphas(train_x: np.ndarray) -> np.ndarray:
    centred = train_x - train_x.mean(axis=0)
    rank_bound = max(1, min(len(train_x) - 1, train_x.shape[1]))
    mean_eigenvalue = float(np.einsum("ij,ij->", centred, centred)) / rank_bound
    # A constant source leaves nothing to penalise; any positive grid then gives the same
    # (intercept-only) fit.
    return np.asarray(RELATIVE_ALPHAS) * (mean_eigenvalue if mean_eigenvalue > 0 else 1.0)


def _check_inputs(source: np.ndarray, target: np.ndarray, n_folds: int) -> None:
    if len(source) != len(target):
        raise MetricError(
            f"The source has {len(source)} stimuli and the target {len(target)}; alignment "
            "needs both models' embeddings of the same stimuli, in the same order."
        )
    if n_folds < 2:
        raise MetricError(f"Cross-validation needs at least 2 folds; got {n_folds}.")
    if len(source) < 2 * n_folds:
        raise MetricError(
            f"{len(source)} stimuli are too few for {n_folds}-fold cross-validation: each "
            f"held-out fold needs at least 2 (so at least {2 * n_folds} stimuli)."
        )
    if np.all(target.max(axis=0) == target.min(axis=0)):
        raise MetricError(
            "The target embeddings are identical for every stimulus: R^2 is undefined."
        )


def linear_alignment(
    source: np.ndarray,
    target: np.ndarray,
    *,
    n_folds: int = 5,
    alphas: Sequence[float] | None = None,
    seed: int = 0,
) -> MetricResult:
    """Held-out R^2 of a ridge map from ``source`` (model A) to ``target`` (model B)."""
    x = embedding_matrix(source, name="source", min_rows=3)
    y = embedding_matrix(target, name="target", min_rows=3)
    _check_inputs(x, y, n_folds)
    if alphas is not None and (
        len(alphas) == 0 or not all(np.isfinite(a) and a > 0 for a in alphas)
    ):
        raise MetricError("Ridge penalties (alphas) must be a non-empty list of positive numbers.")
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores: list[float] = []
    per_fold: list[dict[str, float | int]] = []
    for index, (train, test) in enumerate(folds.split(x)):
        grid = (
            np.asarray(alphas, dtype=np.float64)
            if alphas is not None
            else _relative_alphas(x[train])
        )
        model = RidgeCV(alphas=grid).fit(x[train], y[train])
        score = float(r2_score(y[test], model.predict(x[test]), multioutput="variance_weighted"))
        scores.append(score)
        per_fold.append(
            {
                "fold": index,
                "n_train": len(train),
                "n_test": len(test),
                "r2": score,
                "alpha": float(model.alpha_),
            }
        )
    low, high = t_interval(np.asarray(scores))
    return MetricResult(
        value=float(np.mean(scores)),
        ci_low=low,
        ci_high=high,
        n=len(x),
        details={
            "method": "ridge regression, penalty chosen by leave-one-out within each training part",
            "score": "held-out R^2, variance-weighted over target dimensions",
            "n_folds": n_folds,
            "seed": seed,
            "alpha_grid": (
                f"{len(RELATIVE_ALPHAS)} values from {RELATIVE_ALPHAS[0]:g} to "
                f"{RELATIVE_ALPHAS[-1]:g} x the mean eigenvalue of the training covariance"
                if alphas is None
                else [float(a) for a in alphas]
            ),
            "source_dim": int(x.shape[1]),
            "target_dim": int(y.shape[1]),
            "ci_method": "t-95 over folds",
            "folds": per_fold,
        },
    )
