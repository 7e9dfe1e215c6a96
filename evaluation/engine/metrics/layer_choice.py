"""Choosing a model's layer without scoring it on the data it was chosen on.

A board's "best layer per model" takes the layer with the highest score and reports that
score: chosen and scored on the same judgments, so it is optimistic (the maximum of noisy
estimates is biased upwards, more so the more layers were tried). The cross-validated choice
splits the *stimuli* at random in two halves (a judgment belongs to a half when all its
stimuli do), chooses the layer on one half, scores it on the other, and the reverse; over
``splits`` seeded random halvings the estimate is the mean held-out score. Beside it, the
optimistic choice on the same halves (chosen and scored on the held-out half), so the two are
compared on the same judgments: by construction the cross-validated one is never above it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import (
    PairRatings,
    pair_cosines,
    triplet_credit,
    two_afc_credit,
    unit_rows,
)

CV_SPLITS = 20
CV_SEED = 0
MIN_HALF_ITEMS = 10  # judgments a half needs for a score worth choosing on


@dataclass(frozen=True)
class HalfScorer:
    """How a kind of judgment is scored on a subset of its items: ``per_item`` turns a
    layer's embeddings into one number per item (a similarity, a credit), ``aggregate`` turns
    those of the chosen items into the score. ``counted``: the items a half's size counts
    (k-NN: the labelled stimuli; None: every item)."""

    stimuli: np.ndarray  # (items, k) the stimulus rows each item shows
    per_item: Callable[[np.ndarray], np.ndarray]
    aggregate: Callable[[np.ndarray, np.ndarray], float]  # (values, item mask) -> score
    counted: np.ndarray | None = None


# The per-item numbers are those of the metrics themselves (human.pair_cosines,
# triplet_credit, two_afc_credit): one home for the self-pair and tie rules.
def pairs_scorer(pairs: PairRatings, *, correlation: str = "spearman") -> HalfScorer:
    correlate = stats.spearmanr if correlation == "spearman" else stats.pearsonr

    def aggregate(similarity: np.ndarray, mask: np.ndarray) -> float:
        return float(correlate(similarity[mask], pairs.mean[mask])[0])

    return HalfScorer(
        np.stack([pairs.i, pairs.j], axis=1),
        lambda x: pair_cosines(unit_rows(x), pairs.i, pairs.j),
        aggregate,
    )


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def triplets_scorer(triplets: np.ndarray, chosen: np.ndarray) -> HalfScorer:
    return HalfScorer(triplets, lambda x: triplet_credit(unit_rows(x), triplets, chosen), _mean)


def two_afc_scorer(
    reference: np.ndarray, first: np.ndarray, second: np.ndarray, share_first: np.ndarray
) -> HalfScorer:
    items = np.stack([reference, first, second], axis=1)
    return HalfScorer(items, lambda x: two_afc_credit(unit_rows(x), items, share_first), _mean)


def knn_scorer(labels: np.ndarray, *, k: int) -> HalfScorer:
    """Leave-one-out k-NN accuracy among the stimuli of a half: each stimulus is an item, and
    its neighbours are looked for in its own half only (the other half is unseen)."""
    from evaluation.engine.metrics.knn import knn_accuracy

    labelled = labels != ""  # unlabelled stimuli are left out, as the metric leaves them

    def aggregate(x: np.ndarray, mask: np.ndarray) -> float:
        keep = mask & labelled
        try:
            return knn_accuracy(x[keep], labels[keep], k=k).accuracy
        except MetricError:  # a half with fewer than k + 1 stimuli, or one class
            return float("nan")

    return HalfScorer(np.arange(len(labels))[:, None], lambda x: x, aggregate, labelled)


@dataclass(frozen=True)
class LayerChoice:
    layers: tuple[str, ...]
    full: dict[str, float]  # each layer's score on every judgment
    optimistic_layer: str  # the best on every judgment (the board's choice)
    cv_mean: float  # mean held-out score of the layer chosen on the other half
    cv_low: float  # 2.5th and 97.5th percentiles over the random halvings
    cv_high: float
    same_halves_optimistic: float  # mean over the same halves of the best layer's score there
    chosen: dict[str, int]  # how often each layer was chosen (2 per halving)
    splits: int
    seed: int
    items_per_half: float

    @property
    def optimism(self) -> float:
        """How much choosing on the scored data adds, on the same halves."""
        return self.same_halves_optimistic - self.cv_mean


def cross_validated_layer(
    layers: dict[str, np.ndarray],
    scorer: HalfScorer,
    *,
    n_stimuli: int,
    splits: int = CV_SPLITS,
    seed: int = CV_SEED,
) -> LayerChoice:
    """Choose a layer on a random half of the stimuli, score it on the other (both ways), over
    ``splits`` seeded halvings. ``layers``: name -> (n_stimuli, d) embeddings."""
    if len(layers) < 2:
        raise MetricError("A layer choice needs two or more layers.")
    names = tuple(layers)
    values = {name: scorer.per_item(np.asarray(x, dtype=np.float64)) for name, x in layers.items()}
    everything = np.ones(len(scorer.stimuli), dtype=bool)
    full = _defined({name: scorer.aggregate(values[name], everything) for name in names}, "all")
    counted = everything if scorer.counted is None else scorer.counted
    rng = np.random.default_rng(seed)
    held_out, optimistic, sizes, picks = [], [], [], Counter[str]()
    for _ in range(splits):
        in_first = rng.permutation(n_stimuli) < n_stimuli // 2
        side = in_first[scorer.stimuli]
        halves = (side.all(axis=1), (~side).all(axis=1))
        if min(int((h & counted).sum()) for h in halves) < MIN_HALF_ITEMS:
            raise MetricError(
                f"A random half of the {n_stimuli} stimuli keeps fewer than {MIN_HALF_ITEMS} "
                "judgments: too few to choose a layer on."
            )
        scores = [
            _defined({name: scorer.aggregate(values[name], h) for name in names}, "a half of")
            for h in halves
        ]
        means = []
        for choose, score in ((0, 1), (1, 0)):
            pick = _best(scores[choose])
            picks[pick] += 1
            means.append(scores[score][pick])
            optimistic.append(max(scores[score].values()))
        held_out.append(float(np.mean(means)))
        sizes += [int((h & counted).sum()) for h in halves]
    return LayerChoice(
        layers=names,
        full=full,
        optimistic_layer=_best(full),
        cv_mean=float(np.mean(held_out)),
        cv_low=float(np.percentile(held_out, 2.5)),
        cv_high=float(np.percentile(held_out, 97.5)),
        same_halves_optimistic=float(np.mean(optimistic)),
        chosen=dict(picks),
        splits=splits,
        seed=seed,
        items_per_half=float(np.mean(sizes)),
    )


def _best(scores: dict[str, float]) -> str:
    """The layer with the highest score (every score defined: see _defined)."""
    return max(scores, key=scores.__getitem__)


def _defined(scores: dict[str, float], where: str) -> dict[str, float]:
    """Refuse a choice among undefined scores (a constant similarity, a half with one
    class): NaN would make the chosen layer arbitrary and the estimate undefined."""
    undefined = [name for name, value in scores.items() if not np.isfinite(value)]
    if undefined:
        raise MetricError(
            f"A half has no defined score: layer {undefined[0]} scores {scores[undefined[0]]} "
            f"on {where} the judgments (a constant similarity, or too few labelled "
            "stimuli or classes)."
        )
    return scores


# --- The random-embedding floor ------------------------------------------------------------
FLOOR_SEEDS = 100
FLOOR_DIMENSIONS = 64


@dataclass(frozen=True)
class RandomFloor:
    """What embeddings that know nothing of the stimuli score: each stimulus a random
    Gaussian vector, over ``seeds`` seeds; the spread is what chance alone gives a model."""

    mean: float
    low: float  # 2.5th and 97.5th percentiles over the seeds
    high: float
    seeds: int
    dimensions: int


def random_embedding_floor(
    scorer: HalfScorer,
    *,
    n_stimuli: int,
    seeds: int = FLOOR_SEEDS,
    dimensions: int = FLOOR_DIMENSIONS,
) -> RandomFloor:
    everything = np.ones(len(scorer.stimuli), dtype=bool)
    values = [
        scorer.aggregate(
            scorer.per_item(np.random.default_rng(seed).normal(size=(n_stimuli, dimensions))),
            everything,
        )
        for seed in range(seeds)
    ]
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if not len(finite):
        raise MetricError("Random embeddings give no defined score on these judgments.")
    return RandomFloor(
        float(finite.mean()),
        float(np.percentile(finite, 2.5)),
        float(np.percentile(finite, 97.5)),
        seeds,
        dimensions,
    )
