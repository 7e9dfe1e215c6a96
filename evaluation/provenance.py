"""What determined a score, and whether it still holds.

Every score records its inputs when it is computed (``score_provenance``): the model's
revision (``PretrainedModel.revision_key``) and the content hash of its weights, the
dataset's content hash, the judgments' version, the metric with its parameters and the
version of the metric's code (``MetricInfo.version``). A score is stale when what it would
be computed from now differs from what it recorded (``stale_reasons``); judgments versions
never change once stored (new data make a new version with its own target), so they are
recorded for export but cannot make a score stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.metrics import METRICS
from evaluation.models import (
    REVISION_FIELDS,
    Dataset,
    EmbeddingSet,
    PretrainedModel,
    Score,
    Target,
)


def score_provenance(
    *,
    model: PretrainedModel,
    embedding_set: EmbeddingSet,
    dataset: Dataset,
    target: Target,
    entry: dict[str, Any],
) -> dict[str, Any]:
    return {
        **_inputs(model, dataset, target, entry["name"], entry["params"]),
        "weights_id": embedding_set.weights_id,
        "embeddings": embedding_set.fingerprint,
    }


def stacked_provenance(
    *, target: Target, model: PretrainedModel, params: dict[str, Any]
) -> dict[str, Any]:
    """A stacked score's record: its components are in the stacked model's identifier and
    the score's details; it is re-made by stacking again, not by a run."""
    return _inputs(model, target.dataset, target, "pair_alignment", params)


def _inputs(
    model: PretrainedModel,
    dataset: Dataset,
    target: Target,
    metric: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """What every score's record holds, however it was computed."""
    judgments = target.judgments
    return {
        "model_revision": model.revision_key,
        "model": {name: getattr(model, name) for name in REVISION_FIELDS},
        "dataset_hash": dataset.content_hash,
        "judgments": (
            {"id": judgments.pk, "name": judgments.name, "version": judgments.version}
            if judgments is not None
            else None
        ),
        "metric": metric,
        "params": params,
        "code_version": METRICS[metric].version,
    }


def resampling_name(resampling: str, *, metric: str) -> str:
    """The stored name of a score's resamples: the engine's (what was drawn) and the metric's
    code version, so that scores of two code versions, which may draw differently, are
    never paired."""
    return f"{resampling};v{METRICS[metric].version}" if resampling else ""


@dataclass(frozen=True)
class Recorded:
    """The parts of a score's provenance that can go out of date (plain values, as a
    leaderboard reads them with the score)."""

    code_version: int | str | None
    dataset_hash: str | None
    model_revision: str | None


NOT_RECORDED = "computed before Likeness recorded what determines a score"


def stale_reasons(
    recorded: Recorded, *, metric: str, dataset_hash: str, model_revision: str
) -> tuple[str, ...]:
    """Why a score no longer holds (empty when it does)."""
    if recorded.code_version in (None, ""):
        return (NOT_RECORDED,)
    reasons = []
    info = METRICS.get(metric)
    if info is not None and int(recorded.code_version) != info.version:
        reasons.append(
            f"{info.label}: the metric's code is now version {info.version}, the score was "
            f"computed by version {recorded.code_version}"
        )
    if recorded.dataset_hash != dataset_hash:
        reasons.append("the dataset's stimuli changed")
    if recorded.model_revision != model_revision:
        reasons.append("the model's source, weights, revision or pooling changed")
    return tuple(reasons)


def score_stale_reasons(score: Score) -> tuple[str, ...]:
    """``stale_reasons`` of a Score row (with its model and target's dataset loaded)."""
    recorded = score.provenance or {}
    return stale_reasons(
        Recorded(
            recorded.get("code_version"),
            recorded.get("dataset_hash"),
            recorded.get("model_revision"),
        ),
        metric=score.metric,
        dataset_hash=score.target.dataset.content_hash,
        model_revision=score.model.revision_key,
    )
