"""Executing a run's steps (called by the workers): extract, then score.

Each transition is a conditional UPDATE (the claim), so a duplicated or redelivered task
message finds nothing to do, and Score rows are upserted on their unique key, so repeating
a step never duplicates results.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from core.ending import worker_ending
from evaluation import metrics as metric_registry
from evaluation.engine.errors import EngineError, StorageError
from evaluation.engine.extraction import ExtractionCancelled
from evaluation.judgments import target_data
from evaluation.models import (
    FINISHED_STEP_STATUSES,
    Dataset,
    EmbeddingSet,
    RunStatus,
    RunStep,
    Score,
    StepStatus,
    Target,
    metric_key,
    resamples_to_bytes,
)
from evaluation.provenance import resampling_name, score_provenance
from evaluation.services.embeddings import embeddings_for
from evaluation.services.failures import internal_error
from evaluation.services.queue import send
from evaluation.services.runs import run_refresh_status

logger = logging.getLogger(__name__)


def step_extract(*, step_id: int, worker: str) -> None:
    """Extract (or reuse) the step's embeddings, then queue its scoring."""
    if not _claim(step_id, StepStatus.QUEUED, StepStatus.EXTRACTING, worker):
        return
    step = RunStep.objects.select_related("run__dataset", "model").get(pk=step_id)
    run_refresh_status(run_id=step.run_id)
    started = time.perf_counter()
    try:
        embedding_sets, reused = embeddings_for(step, worker)
    except ExtractionCancelled:
        if worker_ending():
            step_hand_back(step_id=step_id, worker=worker)
        return  # else the run was cancelled, or another worker took the step over
    except Exception as exc:
        if not worker_ending():
            _fail_extraction(step_id, worker, exc)
            return
        # SLURM signals every process of the job: a data-loader process that died of
        # it fails the extraction, which is the signal's doing, not the step's.
        logger.warning("Extraction of step %s stopped as the worker ends (%s)", step_id, exc)
        step_hand_back(step_id=step_id, worker=worker)
        return
    with transaction.atomic():
        moved = RunStep.objects.filter(
            pk=step_id, status=StepStatus.EXTRACTING, claimed_by=worker
        ).update(
            status=StepStatus.EXTRACTED,
            reused_embeddings=reused,
            processed=embedding_sets[0].count,
            extract_seconds=time.perf_counter() - started,
            claimed_by="",
            extracted_by=worker,
            heartbeat_at=timezone.now(),
            attempts=0,  # attempts count per phase: scoring starts afresh
        )
        if moved:
            step.embedding_sets.set(embedding_sets)
            # A broker away now leaves the step extracted with no message: the sweep sends it.
            transaction.on_commit(lambda: send("evaluation.score_embeddings", step_id))


def _fail_extraction(step_id: int, worker: str, exc: Exception) -> None:
    if isinstance(exc, EngineError):
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Extraction of step %s stopped: %s", step_id, exc)
        step_fail(step_id=step_id, message=str(exc), worker=worker)
        return
    logger.error("Extraction of step %s failed", step_id, exc_info=exc)
    step_fail(step_id=step_id, message=internal_error("extracting embeddings", exc), worker=worker)


def step_hand_back(*, step_id: int, worker: str) -> bool:
    """This worker is ending (a SLURM time limit, preemption or scancel): put
    the step it is extracting back in the queue at once and send its task again, so another
    worker resumes it from the saved chunks. The claim is not counted as an attempt: the
    step did nothing wrong. Returns whether the step was this worker's to give back."""
    with transaction.atomic():
        handed = RunStep.objects.filter(
            pk=step_id, status=StepStatus.EXTRACTING, claimed_by=worker
        ).update(
            status=StepStatus.QUEUED,
            claimed_by="",
            heartbeat_at=timezone.now(),
            attempts=Greatest(F("attempts") - 1, 0),
        )
        if handed:
            logger.warning("Worker %s is ending: step %s goes back to the queue", worker, step_id)
            transaction.on_commit(lambda: send("evaluation.extract_embeddings", step_id))
    return bool(handed)


def step_score(*, step_id: int, worker: str) -> None:
    """Compute every metric of the run on the step's embeddings and store the scores."""
    if not _claim(step_id, StepStatus.EXTRACTED, StepStatus.SCORING, worker):
        return
    step = RunStep.objects.select_related("run__dataset", "model").get(pk=step_id)
    started = time.perf_counter()
    try:
        rows = _score_rows(step)
    except EngineError as exc:
        step_fail(step_id=step_id, message=str(exc), worker=worker)
        return
    except Exception as exc:
        logger.exception("Scoring of step %s failed", step_id)
        step_fail(step_id=step_id, message=internal_error("computing metrics", exc), worker=worker)
        return
    with transaction.atomic():
        finished = RunStep.objects.filter(
            pk=step_id, status=StepStatus.SCORING, claimed_by=worker
        ).update(
            status=StepStatus.SUCCEEDED,
            score_seconds=time.perf_counter() - started,
            finished_at=timezone.now(),
            claimed_by="",
            scored_by=worker,
            heartbeat_at=timezone.now(),
        )
        if finished:
            Score.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["run", "model", "layer", "metric_key", "target"],
                update_fields=[
                    "value",
                    "ci_low",
                    "ci_high",
                    "ceiling",
                    "n",
                    "params",
                    "embedding_set",
                    "details",
                    "resamples",
                    "resampling",
                    "provenance",
                    "created_at",
                ],
            )
    run_refresh_status(run_id=step.run_id)


def step_fail(*, step_id: int, message: str, worker: str | None = None) -> None:
    """Fail the step with a message; with ``worker``, only if that worker still holds it
    (a worker that lost its claim to a stall takeover must not fail its successor's work)."""
    steps = RunStep.objects.filter(pk=step_id).exclude(status__in=FINISHED_STEP_STATUSES)
    if worker is not None:
        steps = steps.filter(claimed_by=worker)
    steps.update(
        status=StepStatus.FAILED,
        error_message=message,
        finished_at=timezone.now(),
        claimed_by="",
    )
    step = RunStep.objects.only("run_id").get(pk=step_id)
    run_refresh_status(run_id=step.run_id)


def _claim(step_id: int, from_status: str, to_status: str, worker: str) -> bool:
    """Take the step for this worker; False if another worker has it or it is finished."""
    now = timezone.now()
    return bool(
        RunStep.objects.filter(pk=step_id, status=from_status)
        .exclude(run__status=RunStatus.CANCELLED)
        .update(
            status=to_status,
            claimed_by=worker,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now),
        )
    )


def _score_rows(step: RunStep) -> list[Score]:
    embedding_sets = list(step.embedding_sets.all())
    if not embedding_sets:
        raise EngineError("The step has no embeddings to score; run it again.")
    kinds = {
        kind for e in step.run.metrics for kind in metric_registry.METRICS[e["name"]].target_kinds
    }
    targets = [
        (target, target_data(target))
        for target in step.run.targets.select_related("dataset", "judgments")
        if target.kind in kinds
    ]
    rows = []
    for embedding_set in embedding_sets:
        embeddings = embedding_set.load()
        if len(embeddings) != step.run.dataset.stimulus_count:
            raise EngineError(
                f"The cached embeddings hold {len(embeddings)} rows but the dataset has "
                f"{step.run.dataset.stimulus_count} stimuli; the dataset changed. "
                "Run the evaluation again."
            )
        for target, data in targets:
            rows.extend(_layer_scores(step, embedding_set, embeddings, target, data))
    return rows


def _layer_scores(
    step: RunStep,
    embedding_set: EmbeddingSet,
    embeddings: Any,
    target: Target,
    data: metric_registry.TargetData,
) -> list[Score]:
    rows = []
    now = timezone.now()
    entries = [
        e
        for e in step.run.metrics
        if target.kind in metric_registry.METRICS[e["name"]].target_kinds
    ]
    for entry in entries:
        info = metric_registry.METRICS[entry["name"]]
        try:
            result = metric_registry.compute(entry, embeddings, data)
        except EngineError as exc:
            raise type(exc)(f"{info.label} on {target.name}: {exc}") from None
        rows.append(
            Score(
                run=step.run,
                model=step.model,
                target=target,
                layer=embedding_set.layer,
                metric=entry["name"],
                metric_key=metric_key(entry["name"], entry["params"]),
                params=entry["params"],
                value=result.value,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                ceiling=result.ceiling,
                n=result.n,
                embedding_set=embedding_set,
                details=_with_frames(result.details, embedding_set, step.run.dataset),
                resamples=resamples_to_bytes(result.resamples),
                resampling=resampling_name(result.resampling, metric=entry["name"]),
                provenance=score_provenance(
                    model=step.model,
                    embedding_set=embedding_set,
                    dataset=step.run.dataset,
                    target=target,
                    entry=entry,
                ),
                created_at=now,
            )
        )
    return rows


def _with_frames(
    details: dict[str, Any], embedding_set: EmbeddingSet, dataset: Dataset
) -> dict[str, Any]:
    """A video score says which frames of each clip the model saw: the dataset's sampling,
    in the model's words where it has its own frame count (transformers video models)."""
    if not dataset.frame_sampling:
        return details
    frames = embedding_set.preprocessing.get("frames") or dataset.frame_sampling_label
    return {**details, "frames": frames}
