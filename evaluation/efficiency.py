"""Judgment-efficiency curves: how good a language-based model gets with k descriptions per
stimulus, next to the reliability that direct pair ratings reach with m ratings per pair, both
against the human judgments consumed (a tag or caption counts as one, a rating as one), so a
researcher sees the cheapest route to a target accuracy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from django.core.exceptions import ValidationError

from evaluation import metrics as metric_registry
from evaluation.engine import adapters
from evaluation.engine.adapters.language_adapter import parse_language
from evaluation.engine.errors import EngineError
from evaluation.engine.language import (
    EfficiencyCurve,
    efficiency_curve_descriptions,
    efficiency_curve_ratings,
)
from evaluation.engine.specs import StimulusInput
from evaluation.judgments import target_data
from evaluation.models import (
    Description,
    ModelSource,
    PretrainedModel,
    Stimulus,
    Target,
    TargetKind,
)


@dataclass(frozen=True)
class EfficiencyCurves:
    descriptions: EfficiencyCurve  # the language model's score with k descriptions each
    # Split-half reliability (Spearman-Brown) with m ratings a pair; None where the target
    # holds one value per pair (published means), with the reason.
    ratings: EfficiencyCurve | None
    ratings_problem: str = ""


def efficiency_curves(
    *, target: Target, language: PretrainedModel, n_draws: int = 20, seed: int = 0
) -> EfficiencyCurves:
    if target.kind != TargetKind.PAIRS:
        raise ValidationError(
            "Efficiency curves compare against pair ratings; this target has none."
        )
    if language.source != ModelSource.LANGUAGE:
        raise ValidationError(f"{language.name} is not a language-based model.")
    origin, text_spec = parse_language(language.identifier)
    if text_spec is None:
        raise ValidationError(
            "The TF-IDF baseline has no embedding per description; pick a text model."
        )
    stimuli = list(
        Stimulus.objects.filter(dataset=target.dataset)
        .order_by("order")
        .values_list("pk", flat=True)
    )
    row_of = {pk: row for row, pk in enumerate(stimuli)}
    texts: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for stimulus_id, text, weight in (
        Description.objects.filter(origin=origin, stimulus__dataset=target.dataset)
        .order_by("id")
        .values_list("stimulus_id", "text", "weight")
    ):
        texts[stimulus_id].append((text, weight))
    missing = [pk for pk in stimuli if pk not in texts]
    if missing:
        raise ValidationError(f"{len(missing)} stimuli have no description in {origin!r}.")
    data = target_data(target)
    assert isinstance(data, metric_registry.PairsData)
    try:
        embeddings = _embed_descriptions(text_spec, [texts[pk] for pk in stimuli])
        described = efficiency_curve_descriptions(
            embeddings, data.ratings.i, data.ratings.j, data.ratings.mean,
            tag_weights=[[w for _, w in texts[pk]] for pk in stimuli], n_draws=n_draws, seed=seed,
        )  # fmt: skip
    except EngineError as exc:
        raise ValidationError(str(exc)) from None
    a, b, values, participants = _ratings(target, row_of)
    try:
        rated = efficiency_curve_ratings(a, b, values, participants, n_draws=n_draws, seed=seed)
    except EngineError as exc:  # e.g. one rating per pair: no curve to draw, say why
        return EfficiencyCurves(described, None, str(exc))
    return EfficiencyCurves(described, rated)


def _embed_descriptions(
    text_spec: Any, per_stimulus: list[list[tuple[str, float]]]
) -> list[np.ndarray]:
    """Each description's embedding by the text model, grouped per stimulus."""
    model = adapters.load_adapter(text_spec)
    unique = list(dict.fromkeys(text for described in per_stimulus for text, _ in described))
    vectors: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(unique), 64):
            batch = unique[start : start + 64]
            inputs = model.collate([model.load_input(StimulusInput(text=t)) for t in batch])
            embedded = model.embed(inputs, layers=[model.default_layer])[model.default_layer]
            vectors.update(zip(batch, embedded, strict=True))
    return [np.stack([vectors[text] for text, _ in described]) for described in per_stimulus]


def _ratings(
    target: Target, row_of: dict[int, int]
) -> tuple[list[int], list[int], list[float], list[str] | None]:
    assert target.judgments is not None
    rows = list(target.judgments.rows.values_list("a", "b", "value", "participant"))
    participants = [p for *_, p in rows]
    return (
        [row_of[a] for a, *_ in rows],
        [row_of[b] for _, b, *_ in rows],
        [_rating(v) for _, _, v, _ in rows],
        participants if all(participants) else None,
    )


def _rating(value: float | None) -> float:
    assert value is not None  # a pair judgment always holds its rating
    return float(value)
