"""Runs: creating, cancelling and retrying them, and deriving a run's status from its steps.

Run execution is a small state machine on RunStep rows, driven by Celery tasks that only
pass ids (see ``steps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from evaluation import metrics as metric_registry
from evaluation import selectors
from evaluation.engine.errors import close_names
from evaluation.models import (
    FINISHED_RUN_STATUSES,
    FINISHED_STEP_STATUSES,
    Dataset,
    EmbeddingSet,
    ModelSource,
    PretrainedModel,
    Run,
    RunStatus,
    RunStep,
    StepStatus,
    Target,
    TargetKind,
)
from evaluation.run_checks import cannot_score
from evaluation.services.queue import send_steps


def run_create(
    *,
    dataset: Dataset,
    models: Sequence[PretrainedModel],
    metrics: Sequence[dict[str, Any]],
    layers: dict[int, list[str]] | None = None,
    created_by: Any = None,
    targets: Sequence[Target] | None = None,
) -> Run:
    """Create a run with one step per model and queue the extractions once committed.

    ``layers`` maps a model id to the layers to score (a layer sweep); a model without an
    entry is scored at its default layer. ``targets``: what to score against, targets of
    the dataset; by default every one of them but the simulated (a study pilot's judgments,
    scored only when named here).
    """
    layers = layers or {}
    _check_layers(models, layers)
    if not models:
        raise ValidationError({"models": "Choose at least one model."})
    if not metrics:
        raise ValidationError({"metrics": "Choose at least one metric."})
    stacked = [m.name for m in models if m.source == ModelSource.STACKED]
    if stacked:
        raise ValidationError(
            {
                "models": f"{', '.join(stacked)}: stacked models are made on a leaderboard from "
                "their components' cached embeddings, not run."
            }
        )
    without = [
        m.name
        for m in models
        if m.source == ModelSource.IMPORTED
        and not EmbeddingSet.objects.filter(model=m, dataset=dataset).exists()
    ]
    if without:
        raise ValidationError(
            {
                "models": f"{', '.join(without)}: imported embeddings of other datasets; import "
                f"them for {dataset} to score them here."
            }
        )
    mismatched = [m.display_name for m in models if m.modality not in dataset.model_modalities]
    if mismatched:
        raise ValidationError(
            {
                "models": f"{', '.join(mismatched)} embed{'s' if len(mismatched) == 1 else ''} "
                f"a different modality than the {dataset.modality} stimuli of {dataset}."
            }
        )
    # What the run form and the API say before a run starts (run_checks), said here too so
    # that every caller (the CLI included) gets the same refusal.
    problems = [problem for model in models if (problem := cannot_score(model, dataset))]
    if problems:
        raise ValidationError({"models": problems})
    targets = _targets_for(dataset, metrics, targets)
    with transaction.atomic():
        run = Run.objects.create(dataset=dataset, metrics=list(metrics), created_by=created_by)
        run.targets.set(targets)
        steps = RunStep.objects.bulk_create(
            [
                RunStep(
                    run=run,
                    model=model,
                    layers=list(dict.fromkeys(layers.get(model.pk, []))),
                    total=dataset.stimulus_count,
                    heartbeat_at=timezone.now(),
                )
                for model in models
            ]
        )
        step_ids = [step.pk for step in steps]
        # The run is the user's intent: it is stored even when the broker does not answer,
        # and its unsent steps are sent by the workers' sweep once it does.
        transaction.on_commit(lambda: send_steps("evaluation.extract_embeddings", step_ids))
    return run


def _check_layers(models: Sequence[PretrainedModel], layers: dict[int, list[str]]) -> None:
    """Refuse layers a model does not have (when its layers have been listed already; if
    not, the worker checks them and fails the step with the same message)."""
    for model in models:
        known = model.layer_names
        for layer in layers.get(model.pk, []):
            if known and layer not in known:
                raise ValidationError(
                    {"layers": f"{model.name} has no layer {layer!r}.{close_names(layer, known)}"}
                )


def _targets_for(
    dataset: Dataset, metrics: Sequence[dict[str, Any]], chosen: Sequence[Target] | None = None
) -> list[Target]:
    """The targets a run scores: those ``chosen`` (of this dataset), else the dataset's
    default ones (selectors.targets_scored_by_default: simulated ones are scored only when
    chosen)."""
    if chosen is not None:
        foreign = [t.name for t in chosen if t.dataset_id != dataset.pk]
        if foreign:
            raise ValidationError({"targets": f"Not targets of {dataset}: {', '.join(foreign)}."})
        if not chosen:
            raise ValidationError({"targets": "Choose at least one target."})
        targets = list(dict.fromkeys(chosen))
    else:
        targets = list(selectors.targets_scored_by_default(dataset=dataset))
    for entry in metrics:
        info = metric_registry.METRICS.get(entry.get("name", ""))
        if info is None:
            raise ValidationError({"metrics": f"Unknown metric {entry.get('name')!r}."})
        if not any(t.kind in info.target_kinds for t in targets):
            needed = " or ".join(TargetKind(kind).label.lower() for kind in info.target_kinds)
            lacking = f"{dataset} has none" if chosen is None else "no chosen target is one"
            raise ValidationError({"metrics": f"{info.label} needs {needed}; {lacking}."})
    return targets


def run_cancel(*, run: Run) -> bool:
    """Cancel a run that has not finished; workers stop at their next progress report."""
    with transaction.atomic():
        updated = (
            Run.objects.filter(pk=run.pk)
            .exclude(status__in=FINISHED_RUN_STATUSES)
            .update(status=RunStatus.CANCELLED, finished_at=timezone.now())
        )
        if updated:
            run.steps.exclude(status__in=FINISHED_STEP_STATUSES).update(
                status=StepStatus.CANCELLED, finished_at=timezone.now(), claimed_by=""
            )
    return bool(updated)


def run_retry(*, run: Run) -> int:
    """Queue the failed and cancelled steps of a finished run again; returns how many.

    Embeddings already cached are reused and scores are upserted, so a retry redoes only
    what is missing."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status not in FINISHED_RUN_STATUSES:
            return 0
        step_ids = list(
            locked.steps.filter(status__in=[StepStatus.FAILED, StepStatus.CANCELLED]).values_list(
                "pk", flat=True
            )
        )
        if not step_ids:
            return 0
        RunStep.objects.filter(pk__in=step_ids).update(
            status=StepStatus.QUEUED,
            error_message="",
            claimed_by="",
            attempts=0,
            processed=0,
            started_at=None,
            finished_at=None,
            heartbeat_at=timezone.now(),
            message_sent_at=None,
        )
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED, error_message="", finished_at=None
        )
        transaction.on_commit(lambda: send_steps("evaluation.extract_embeddings", step_ids))
    return len(step_ids)


def run_refresh_status(*, run_id: int) -> None:
    """Derive the run's status and timings from its steps (under a row lock)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.CANCELLED:
            return
        steps = list(
            run.steps.select_related("model").only(
                "status", "error_message", "model__name", "model__weights"
            )
        )
        now = timezone.now()
        fields: dict[str, Any] = {}
        if all(s.status in FINISHED_STEP_STATUSES for s in steps):
            failed = [s for s in steps if s.status == StepStatus.FAILED]
            if not failed:
                fields["status"] = RunStatus.SUCCEEDED
            elif len(failed) == len(steps):
                fields["status"] = RunStatus.FAILED
            else:  # the models that worked keep their (valid) scores
                fields["status"] = RunStatus.PARTLY_FAILED
            fields["finished_at"] = run.finished_at or now
            fields["error_message"] = "\n".join(
                f"{s.model.display_name}: {s.error_message}" for s in failed
            )
        elif any(s.status != StepStatus.QUEUED for s in steps):
            fields["status"] = RunStatus.RUNNING
        if fields.get("status", run.status) != RunStatus.QUEUED and run.started_at is None:
            fields["started_at"] = now
        if fields:
            Run.objects.filter(pk=run_id).update(**fields)
