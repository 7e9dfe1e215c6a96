"""A board's layer choice, cross-validated: for each model scored at two or more layers on
the board's sort metric, the layer chosen on half the stimuli and scored on the other half
(evaluation.engine.metrics.layer_choice), from the embeddings the scores were computed on.

Human targets scored by plain correlation with pair ratings, odd-one-out or 2AFC agreement
(a function of per-judgment numbers a half of the stimuli can be cut from), and label targets
scored by leave-one-out k-NN accuracy (neighbours looked for within each half).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
from celery import current_app
from django.conf import settings
from django.core.cache import cache

from evaluation import judgments as target_reading
from evaluation import metrics as metric_registry
from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import layer_choice as engine
from evaluation.leaderboards import archived_models_stamp, metric_versions, scores_version
from evaluation.models import Score, Target
from evaluation.services.queue import BROKER_ERRORS

logger = logging.getLogger(__name__)

CACHE_SECONDS = 3600
# The metrics a half of the stimuli can be scored on here (the main human ones, and k-NN
# accuracy leave-one-out within each half).
HUMAN_METRICS = ("pair_alignment", "odd_one_out", "two_afc")
CROSS_VALIDATED = (*HUMAN_METRICS, "knn")
# Seconds a sent computation is waited for before a later visit sends it again (a worker
# that died drops it).
SENT_SECONDS = 300
CHOICE_TASK = "evaluation.layer_choice"
FLOOR_TASK = "evaluation.random_floor"
# Cached for a floor random embeddings give no defined score (None is "not computed").
UNDEFINED_FLOOR = "undefined"


@dataclass(frozen=True)
class ModelLayerChoice:
    model_id: int
    model_name: str
    choice: engine.LayerChoice | None
    problem: str = ""  # why there is none (embeddings no longer stored, too few judgments)
    precision: str = "fp32"  # the board's best layer is per (model, precision)


def choices_key(target: Target, metric_key: str) -> str:
    """What the layer choice depends on, and nothing a visitor can vary (a board's filters,
    sort or page are not part of it): the target's scores, the metrics' code, the archived
    models, the metric."""
    return (
        f"layer-choice:v2:{target.pk}:{scores_version(target)}:{metric_versions()}:"
        f"{archived_models_stamp()}:{metric_key}"
    )


def board_layer_choices(
    *, target: Target, metric_key: str, partial: bool = False
) -> list[ModelLayerChoice] | None:
    """Each model with two or more layers scored on ``metric_key``: its cross-validated layer
    choice, or None while a worker computes it (on a 1,000-stimulus target with all pairs
    it takes tens of seconds: not on a page request). Where the cache is each process's own
    (no CACHE_URL: one web process, e.g. ``make run``), a worker's result would not be seen:
    the page's own htmx request (``partial``) computes it instead."""
    if not cross_validates(metric_key):
        return []
    key = choices_key(target, metric_key)
    choices = cache.get(key)
    if choices is None:
        if cache_is_shared():
            _send_once(key, CHOICE_TASK, target.pk, metric_key)
            return None
        if not partial:
            return None
        choices = _compute(target, metric_key)
        cache.set(key, choices, CACHE_SECONDS)
    return list(choices)


def cache_is_shared() -> bool:
    """Whether the workers and the web processes share the cache (CACHE_URL is set)."""
    return not settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")


def layer_choices_compute(target_id: int, metric_key: str) -> None:
    """The worker's side: compute a target's layer choice and cache it."""
    target = Target.objects.select_related("dataset").get(pk=target_id)
    key = choices_key(target, metric_key)
    cache.set(key, _compute(target, metric_key), CACHE_SECONDS)


def _send_once(key: str, task: str, target_id: int, metric_key: str) -> None:
    """Send the computation unless one was sent lately (many visitors, one computation)."""
    if not cache.add(f"{key}:sent", True, SENT_SECONDS):
        return
    try:
        current_app.send_task(task, args=[target_id, metric_key])
    except BROKER_ERRORS as exc:
        cache.delete(f"{key}:sent")  # the next visit tries again
        logger.warning("The task queue is unreachable (%s); %s was not sent.", exc, task)


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
    # Per (model, precision), as the board's best layer is; archived models are off boards.
    latest: dict[tuple[int, str], dict[str, Score]] = defaultdict(dict)
    for score in (
        Score.objects.filter(target=target, metric_key=metric_key, model__archived_at__isnull=True)
        .select_related("model", "embedding_set")
        .order_by("created_at", "id")
    ):
        precision = score.embedding_set.precision if score.embedding_set else "fp32"
        latest[score.model_id, precision][score.layer] = score  # later scores replace earlier
    out = []
    for (_, precision), model_scores in latest.items():
        if len(model_scores) < 2:
            continue
        model = next(iter(model_scores.values())).model
        choice = _model_choice(model.pk, model.name, model_scores, scorer, target)
        out.append(replace(choice, precision=precision))
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
                model_id, name, None, f"the embeddings of layer {layer} are no longer stored."
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
    """The random-embedding floor of a human target's metric: None for other metrics, where
    random embeddings give no defined score, and while a worker computes it (100 seeds take
    tens of seconds on all pairs of 1,000 stimuli: never on a request)."""
    key = _floor_key(target, metric_key)
    if key is None:
        return None
    floor = cache.get(key)
    if floor is None and not cache_is_shared():
        # One process with its own cache: no worker's result would reach it. Computed here
        # once (cached for good); with CACHE_URL set, a worker computes it.
        random_floor_compute(target.pk, metric_key)
        floor = cache.get(key)
    if floor is None:
        _send_once(key, FLOOR_TASK, target.pk, metric_key)
        return None
    return None if floor == UNDEFINED_FLOOR else floor


def random_floor_compute(target_id: int, metric_key: str) -> None:
    """The worker's side: the floor, cached for good (judgments never change), an undefined
    one as UNDEFINED_FLOOR so that it is not computed again."""
    target = Target.objects.select_related("dataset").get(pk=target_id)
    key = _floor_key(target, metric_key)
    if key is None:
        return
    params = metric_registry.parse_metric_key(metric_key)[1]
    try:
        floor: engine.RandomFloor | str = engine.random_embedding_floor(
            _scorer(target, params), n_stimuli=target.dataset.stimulus_count
        )
    except MetricError:
        floor = UNDEFINED_FLOOR
    cache.set(key, floor, None)


def _floor_key(target: Target, metric_key: str) -> str | None:
    name = metric_registry.parse_metric_key(metric_key)[0]
    if name not in HUMAN_METRICS or target.judgments_id is None:
        return None
    return f"random-floor:v2:{target.judgments_id}:{target.dataset.content_hash}:{metric_key}"
