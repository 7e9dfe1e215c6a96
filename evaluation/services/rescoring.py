"""Re-scoring a target's stale scores in one action.

A score is stale when a metric's code version, the dataset's content or the model's
revision changed since it was computed (``evaluation.provenance``). Re-scoring them is an
ordinary run over the target's dataset: the stale models, at the layers their stale scores
are on, with the stale scores' metrics. Embeddings are looked up by fingerprint as in any
run, so a model whose weights did not change is scored from its cached embeddings with no
forward pass; one whose weights did change is extracted again, as it must be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from evaluation.models import ModelSource, PretrainedModel, Run, Score, Target
from evaluation.provenance import Recorded, stale_reasons
from evaluation.services.runs import run_create


@dataclass(frozen=True)
class StaleScore:
    score_id: int
    model_id: int
    layer: str
    precision: str  # of its embeddings; "" where it has none (stacked scores)
    metric: str
    params: dict[str, Any]
    reasons: tuple[str, ...]


def stale_scores(*, target: Target) -> list[StaleScore]:
    """The target's latest score per model, layer, precision and metric, where stale."""
    models = {m.pk: m for m in PretrainedModel.objects.filter(scores__target=target).distinct()}
    latest: dict[tuple[int, str, str, str], dict[str, Any]] = {}
    for row in (
        Score.objects.filter(target=target)
        .order_by("created_at", "id")
        .values(
            "id", "model_id", "layer", "embedding_set__precision", "metric", "metric_key",
            "params", "provenance__code_version", "provenance__dataset_hash",
            "provenance__model_revision",
        )
    ):  # fmt: skip
        key = (row["model_id"], row["layer"], row["embedding_set__precision"] or "")
        latest[(*key, row["metric_key"])] = dict(row)
    stale = []
    for score in latest.values():
        reasons = stale_reasons(
            Recorded(
                score["provenance__code_version"],
                score["provenance__dataset_hash"],
                score["provenance__model_revision"],
            ),
            metric=score["metric"],
            dataset_hash=target.dataset.content_hash,
            model_revision=models[score["model_id"]].revision_key,
        )
        if reasons:
            stale.append(
                StaleScore(
                    score["id"],
                    score["model_id"],
                    score["layer"],
                    score["embedding_set__precision"] or "",
                    score["metric"],
                    score["params"],
                    reasons,
                )
            )
    return stale


@dataclass(frozen=True)
class Rescoring:
    run: Run
    # Stale scores the run cannot replace: their embeddings are at another precision than
    # this installation extracts at (EXTRACTION_PRECISION), so the run's scores sit beside
    # them. A worker set to that precision re-scores them.
    left: list[StaleScore]


def scores_rescore_stale(*, target: Target, created_by: Any = None) -> Rescoring:
    """One run that re-computes the stale scores on ``target``: the stale models, at the
    layers of their stale scores, with the stale scores' metrics (the run scores every target
    of the dataset those metrics apply to, as any run does; a simulated target is named, as
    no run scores it otherwise). ValidationError when there is
    nothing it can re-score: no stale score, only stacked ones (re-made by stacking), or
    only scores at another extraction precision."""
    stale = stale_scores(target=target)
    models = {m.pk: m for m in PretrainedModel.objects.filter(pk__in={s.model_id for s in stale})}
    stacked = [s for s in stale if models[s.model_id].source == ModelSource.STACKED]
    left = [
        s
        for s in stale
        if s not in stacked and s.precision and s.precision != settings.EXTRACTION_PRECISION
    ]
    runnable = [s for s in stale if s not in stacked and s not in left]
    if not runnable:
        raise ValidationError(
            "No stale score to re-score here."
            if not stale
            else "The stale scores are stacked models': stack them again from this page."
            if not left
            else f"The stale scores' embeddings are at {left[0].precision}, this installation "
            f"extracts at {settings.EXTRACTION_PRECISION}: re-score them from a worker with "
            f"EXTRACTION_PRECISION={left[0].precision}."
        )
    layers: dict[int, list[str]] = {}
    for s in runnable:
        layers.setdefault(s.model_id, []).append(s.layer)
    metrics = list({(s.metric, repr(sorted(s.params.items()))): s for s in runnable}.values())
    run = run_create(
        dataset=target.dataset,
        models=[models[model_id] for model_id in layers],
        metrics=[{"name": s.metric, "params": s.params} for s in metrics],
        layers=layers,
        # A simulated (pilot) target is scored only by a run that names it.
        targets=[target] if target.simulated else None,
        created_by=created_by,
    )
    return Rescoring(run, left)
