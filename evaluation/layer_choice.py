"""A board's layer choice, cross-validated: for each model scored at two or more layers on
the board's sort metric, the layer chosen on half the stimuli and scored on the other half
(evaluation.engine.metrics.layer_choice), from the embeddings the scores were computed on.

Human targets scored by plain correlation with pair ratings, odd-one-out or 2AFC agreement
(a function of per-judgment numbers a half of the stimuli can be cut from), and label targets
scored by leave-one-out k-NN accuracy (neighbours looked for within each half).
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
# The metrics a half of the stimuli can be scored on here (the main human ones, and k-NN
# accuracy leave-one-out within each half).
HUMAN_METRICS = ("pair_alignment", "odd_one_out", "two_afc")
CROSS_VALIDATED = (*HUMAN_METRICS, "knn")


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


def cross_validates(metric_key: str) -> bool:
    """Whether a board sorted by this metric has a cross-validated layer choice here (k-NN
    only leave-one-out: a held-out split is a split of its own)."""
    name, params = metric_registry.parse_metric_key(metric_key)
    return name in CROSS_VALIDATED and not (name == "knn" and params.get("split") == "holdout")


def _compute(target: Target, metric_key: str) -> list[ModelLayerChoice]:
    if not cross_validates(metric_key):
        return []
    params = metric_registry.parse_metric_key(metric_key)[1]
    scorer = _scorer(target, params)
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


def _scorer(target: Target, params: dict[str, str]) -> engine.HalfScorer:
    data = target_reading.target_data(target)
    if isinstance(data, metric_registry.LabelsData):
        labels = np.array([s.label for s in data.stimuli], dtype=object).astype(str)
        return engine.knn_scorer(labels, k=int(params.get("k", 5)))
    if isinstance(data, metric_registry.PairsData):
        return engine.pairs_scorer(data.ratings, correlation=params.get("correlation", "spearman"))
    if isinstance(data, metric_registry.TripletsData):
        return engine.triplets_scorer(data.triplets, data.chosen)
    if isinstance(data, metric_registry.TwoAfcData):
        return engine.two_afc_scorer(data.reference, data.first, data.second, data.share_first)
    raise MetricError("This target has no cross-validated layer choice.")


def random_floor(target: Target, metric_key: str) -> engine.RandomFloor | None:
    """The random-embedding floor of a human target's metric (None for other metrics, or
    where random embeddings give no defined score); judgments never change: cached for good."""
    name, params = metric_registry.parse_metric_key(metric_key)
    if name not in HUMAN_METRICS or target.judgments_id is None:
        return None

    def compute() -> engine.RandomFloor | None:
        scorer = _scorer(target, params)
        try:
            return engine.random_embedding_floor(scorer, n_stimuli=target.dataset.stimulus_count)
        except MetricError:
            return None

    key = f"random-floor:v1:{target.judgments_id}:{target.dataset.content_hash}:{metric_key}"
    floor: engine.RandomFloor | None = cache.get_or_set(key, compute, None)
    return floor
