"""A board's layer choice, cross-validated: for each model scored at two or more layers on
the board's sort metric, the layer chosen on half the stimuli and scored on the other half
(evaluation.engine.metrics.layer_choice), from the embeddings the scores were computed on.

Human targets only (pair ratings scored by plain correlation, odd-one-out, 2AFC): their
scores are a function of per-judgment numbers that a half of the stimuli can be cut from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache

from evaluation import judgments as target_reading
from evaluation import metrics as metric_registry
from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import layer_choice as engine
from evaluation.models import Score, Target

CACHE_SECONDS = 3600
# The metrics a half of the stimuli can be scored on here (the main human ones).
CROSS_VALIDATED = ("pair_alignment", "odd_one_out", "two_afc")


@dataclass(frozen=True)
class ModelLayerChoice:
    model_id: int
    model_name: str
    choice: engine.LayerChoice | None
    problem: str = ""  # why there is none (embeddings no longer stored, too few judgments)


def board_layer_choices(*, target: Target, metric_key: str, key: str) -> list[ModelLayerChoice]:
    """Each model with two or more layers scored on ``metric_key``: its cross-validated layer
    choice, cached under the board's ``key`` (it changes with the target's scores)."""
    choices = cache.get_or_set(
        f"{key}:layer-choice:{metric_key}", lambda: _compute(target, metric_key), CACHE_SECONDS
    )
    return list(choices or [])


def _compute(target: Target, metric_key: str) -> list[ModelLayerChoice]:
    name, params = metric_registry.parse_metric_key(metric_key)
    if name not in CROSS_VALIDATED:
        return []
    scorer = _scorer(target, params.get("correlation", "spearman"))
    latest: dict[int, dict[str, Score]] = defaultdict(dict)
    for score in (
        Score.objects.filter(target=target, metric_key=metric_key)
        .select_related("model", "embedding_set")
        .order_by("created_at", "id")
    ):
        latest[score.model_id][score.layer] = score  # later scores replace earlier
    out = []
    for model_scores in latest.values():
        if len(model_scores) < 2:
            continue
        model = next(iter(model_scores.values())).model
        out.append(_model_choice(model.pk, model.name, model_scores, scorer, target))
    return sorted(out, key=lambda c: -(c.choice.cv_mean if c.choice else -np.inf))


def _model_choice(
    model_id: int,
    name: str,
    scores: dict[str, Score],
    scorer: engine.HalfScorer,
    target: Target,
) -> ModelLayerChoice:
    layers = {}
    for layer, score in scores.items():
        embedding_set = score.embedding_set
        if embedding_set is None or not embedding_set.is_stored():
            return ModelLayerChoice(
                model_id, name, None, f"the embeddings of layer {layer} are no longer stored"
            )
        layers[layer] = np.asarray(embedding_set.load())
    try:
        choice = engine.cross_validated_layer(
            layers, scorer, n_stimuli=target.dataset.stimulus_count
        )
    except MetricError as exc:
        return ModelLayerChoice(model_id, name, None, str(exc))
    return ModelLayerChoice(model_id, name, choice)


def _scorer(target: Target, correlation: str) -> engine.HalfScorer:
    data = target_reading.target_data(target)
    if isinstance(data, metric_registry.PairsData):
        return engine.pairs_scorer(data.ratings, correlation=correlation)
    if isinstance(data, metric_registry.TripletsData):
        return engine.triplets_scorer(data.triplets, data.chosen)
    if isinstance(data, metric_registry.TwoAfcData):
        return engine.two_afc_scorer(data.reference, data.first, data.second, data.share_first)
    raise MetricError("Only human targets have a cross-validated layer choice.")


def random_floor(target: Target, metric_key: str) -> engine.RandomFloor | None:
    """The random-embedding floor of a human target's metric (None for other metrics, or
    where random embeddings give no defined score); judgments never change: cached for good."""
    name, params = metric_registry.parse_metric_key(metric_key)
    if name not in CROSS_VALIDATED or target.judgments_id is None:
        return None

    def compute() -> engine.RandomFloor | None:
        scorer = _scorer(target, params.get("correlation", "spearman"))
        try:
            return engine.random_embedding_floor(scorer, n_stimuli=target.dataset.stimulus_count)
        except MetricError:
            return None

    key = f"random-floor:v1:{target.judgments_id}:{target.dataset.content_hash}:{metric_key}"
    floor: engine.RandomFloor | None = cache.get_or_set(key, compute, None)
    return floor
