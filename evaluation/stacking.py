"""Stacked approximations of human similarity: a language-based model's embeddings
concatenated with those of the best DNNs (each block L2-normalised), the language block
scaled by one weight tuned on a small calibration subset of stimuli, and scored only on the
pairs that touch none of them (Marjieh et al. 2023 found stacking best of all).

The result is stored as a derived model ("stacked: ...") with one score on the target, so it
ranks on the leaderboard next to the models it is made of; the score's details keep the
calibration (stimuli, weight), and each component's score and the gain over it, on the same
held-out pairs, with paired bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.fields import max_length
from evaluation import metrics as metric_registry
from evaluation.engine.errors import EngineError
from evaluation.engine.language import DEFAULT_CALIBRATION_SIZE, calibration_split, stacked_gain
from evaluation.judgments import target_data
from evaluation.models import (
    EmbeddingSet,
    ModelSource,
    PretrainedModel,
    Run,
    RunStatus,
    Score,
    Stimulus,
    Target,
    TargetKind,
    metric_key,
)
from evaluation.provenance import stacked_provenance

MAX_DNNS = 8
NAME_LIMIT = max_length(PretrainedModel, "name")


def stacked_create(
    *,
    target: Target,
    language: PretrainedModel,
    dnns: Sequence[PretrainedModel],
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
    correlation: str = "spearman",
    created_by: Any = None,
) -> Score:
    """Stack ``language`` with ``dnns`` on ``target`` (pair ratings) and store the score."""
    _check_inputs(target, language, dnns, calibration_size)
    embeddings = {model.pk: _cached_embeddings(target, model) for model in [language, *dnns]}
    data = target_data(target)
    assert isinstance(data, metric_registry.PairsData)
    ratings = data.ratings
    calibration = calibration_split(len(embeddings[language.pk]), calibration_size, seed)
    try:
        result = stacked_gain(
            embeddings[language.pk],
            {model.name: embeddings[model.pk] for model in dnns},
            ratings.i,
            ratings.j,
            ratings.mean,
            calibration,
            correlation=correlation,
            seed=seed,
        )
    except EngineError as exc:
        raise ValidationError(str(exc)) from None
    orders = dict(Stimulus.objects.filter(dataset=target.dataset).values_list("order", "pk"))
    details = {
        "language": language.name,
        "dnns": [model.name for model in dnns],
        "language_weight": result.calibration.weight,
        "calibration_stimuli": [orders[int(i)] for i in calibration],
        "calibration_pairs": result.calibration.n_pairs,
        "weights_tried": [list(pair) for pair in result.calibration.scores],
        "components": {name: vars(e) for name, e in result.components.items()},
        "gains": {name: vars(e) for name, e in result.gains.items()},
        "scored_stimuli": result.n_stimuli,
        "scored_on": "pairs touching no calibration stimulus",
    }
    params = {"correlation": correlation}
    with transaction.atomic():
        model = _derived_model(target, language, dnns, calibration_size, created_by)
        now = timezone.now()
        run = Run.objects.create(
            dataset=target.dataset,
            metrics=[{"name": "pair_alignment", "params": params}],
            status=RunStatus.SUCCEEDED,
            created_by=created_by,
            started_at=now,
            finished_at=now,
        )
        run.targets.set([target])
        return Score.objects.create(
            run=run,
            model=model,
            target=target,
            layer="stacked",
            metric="pair_alignment",
            metric_key=metric_key("pair_alignment", params),
            params=params,
            value=result.stacked.value,
            ci_low=result.stacked.ci_low,
            ci_high=result.stacked.ci_high,
            ceiling=data.ceiling,
            n=result.stacked.n_pairs,
            details=details,
            provenance=stacked_provenance(target=target, model=model, params=params),
        )


def _check_inputs(
    target: Target, language: PretrainedModel, dnns: Sequence[PretrainedModel], size: int
) -> None:
    if target.kind != TargetKind.PAIRS:
        raise ValidationError("Stacking is scored against pair ratings; this target has none.")
    if language.source != ModelSource.LANGUAGE:
        raise ValidationError(f"{language.name} is not a language-based model.")
    if not dnns or len(dnns) > MAX_DNNS:
        raise ValidationError(f"Stack the language model with 1 to {MAX_DNNS} other models.")
    derived = [m.name for m in dnns if m.source in (ModelSource.LANGUAGE, ModelSource.STACKED)]
    if derived or len({m.pk for m in dnns}) != len(dnns):
        raise ValidationError(
            "Stack distinct models that embed the stimuli themselves"
            + (f", not {', '.join(derived)}." if derived else ".")
        )
    if size < 5:
        raise ValidationError("The calibration subset needs at least 5 stimuli.")


def _cached_embeddings(target: Target, model: PretrainedModel) -> Any:
    """The model's embeddings of the target's stimuli at its default layer, from the cache."""
    found = (
        EmbeddingSet.objects.filter(model=model, dataset=target.dataset, layer=model.default_layer)
        .order_by("-created_at")
        .first()
    )
    if found is None or not found.is_stored():
        raise ValidationError(
            f"{model.name} has no cached embeddings of {target.dataset.name} at its default "
            f"layer; run it on this dataset first."
        )
    return found.load()


def _derived_model(
    target: Target,
    language: PretrainedModel,
    dnns: Sequence[PretrainedModel],
    size: int,
    created_by: Any,
) -> PretrainedModel:
    inputs = f"{language.name} + {' + '.join(m.name for m in dnns)}"
    identifier = f"{inputs}; language weight tuned on {size} held-out stimuli"
    name = f"stacked: {inputs}"
    if len(name) > NAME_LIMIT:
        name = f"{name[: NAME_LIMIT - 12]}... ({len(dnns)})"
    model, _ = PretrainedModel.objects.get_or_create(
        name=name,
        defaults={
            "source": ModelSource.STACKED,
            "identifier": identifier[:500],
            "weights": "pretrained",
            "modality": target.dataset.modality,
            "default_layer": "stacked",
            "description": "Derived: the language-based model's embedding concatenated with "
            "the DNNs' (each L2-normalised), the language part scaled by one weight tuned on "
            "the calibration stimuli; scored only on pairs touching none of them.",
            "created_by": created_by,
        },
    )
    return model
