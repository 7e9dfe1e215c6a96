"""Recovery: steps whose worker died, stalled or dropped them, and messages the broker lost."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from evaluation.models import (
    CLAIMED_STEP_STATUSES,
    FINISHED_RUN_STATUSES,
    NEVER_INSPECTED,
    EmbeddingImport,
    PretrainedModel,
    RunStep,
    StepStatus,
)
from evaluation.services.queue import IMPORT_TASK, INSPECT_TASK, send
from evaluation.services.steps import step_fail

logger = logging.getLogger(__name__)


# Where a step goes back to when the worker holding it disappears, and the task to resend.
_RESUME = {
    StepStatus.QUEUED: (StepStatus.QUEUED, "evaluation.extract_embeddings"),
    StepStatus.EXTRACTING: (StepStatus.QUEUED, "evaluation.extract_embeddings"),
    StepStatus.EXTRACTED: (StepStatus.EXTRACTED, "evaluation.score_embeddings"),
    StepStatus.SCORING: (StepStatus.EXTRACTED, "evaluation.score_embeddings"),
}


def steps_requeue_orphaned(*, worker: str) -> int:
    """A worker starting under a name that still holds steps means its previous process
    died (killed, out of memory, machine lost): give those steps back to the queue."""
    steps = RunStep.objects.filter(status__in=CLAIMED_STEP_STATUSES, claimed_by=worker)
    return sum(_requeue(step) for step in steps)


def steps_requeue_stalled(*, stalled_after_seconds: int | None = None) -> int:
    """Requeue unfinished steps with no heartbeat for a while (dead worker or lost message)."""
    seconds = stalled_after_seconds or settings.RUN_STALL_SECONDS
    cutoff = timezone.now() - timedelta(seconds=seconds)
    steps = RunStep.objects.filter(status__in=_RESUME.keys(), heartbeat_at__lt=cutoff).exclude(
        run__status__in=FINISHED_RUN_STATUSES
    )
    return sum(_requeue(step) for step in steps)


def _requeue(step: RunStep) -> bool:
    if step.status in CLAIMED_STEP_STATUSES and step.attempts >= settings.RUN_MAX_ATTEMPTS:
        step_fail(
            step_id=step.pk,
            message=f"The worker processing this model stopped {step.attempts} times without "
            "finishing (killed or out of memory?). Try a smaller batch size or another worker.",
        )
        return False
    back_to, task_name = _RESUME[StepStatus(step.status)]
    with transaction.atomic():
        updated = RunStep.objects.filter(
            pk=step.pk, status=step.status, claimed_by=step.claimed_by
        ).update(status=back_to, claimed_by="", heartbeat_at=timezone.now())
        if updated:
            logger.warning(
                "Requeued step %s (%s, was held by %r)", step.pk, step.status, step.claimed_by
            )
            transaction.on_commit(lambda: send(task_name, step.pk))
    return bool(updated)


def steps_requeue_dropped(
    *, worker: str, running: Collection[int], grace_seconds: float | None = None
) -> int:
    """Give back the steps that this live worker's name holds while none of its tasks runs
    them: a task that lost the database mid-step could not even record its failure, and the
    step would sit claimed until the stall reaper (``RUN_STALL_SECONDS``).

    ``running`` holds the ids of the steps the worker's tasks have in hand; a step claimed in
    the last ``grace_seconds`` is left alone (its task may not be listed yet)."""
    cutoff = _grace_cutoff(grace_seconds)
    steps = RunStep.objects.filter(
        status__in=CLAIMED_STEP_STATUSES, claimed_by=worker, heartbeat_at__lt=cutoff
    ).exclude(pk__in=list(running))
    count = sum(_requeue(step) for step in steps)
    if count:
        logger.warning(
            "Requeued %d run step(s) that %s held but no task was running", count, worker
        )
    return count


def steps_resend_lost(
    *, live: Collection[tuple[str, int]] | None, grace_seconds: float | None = None
) -> int:
    """Send again the task of each waiting step whose message is lost; returns how many.

    A message is lost when it was never sent (the broker was unreachable when the run was
    created) or, where ``live`` lists the (task, step id) of every message the broker holds,
    queued or handed to a worker, when it is not among them (a broker restarted without
    persistence). ``live`` is None where the broker cannot be read that way: then only unsent
    steps are sent, and the stall reaper remains for the rest. Steps whose message was sent
    in the last ``grace_seconds`` are left alone. Row locks (skipping locked rows) keep two
    workers sweeping at once from sending a step twice."""
    cutoff = _grace_cutoff(grace_seconds)
    waiting = Q(message_sent_at__isnull=True) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    )
    if live is not None:
        waiting |= Q(message_sent_at__lt=cutoff)
    held = set(live or ())
    sent = 0
    with transaction.atomic():
        steps = (
            RunStep.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(waiting, status__in=_WAITING_TASK.keys(), claimed_by="")
            .exclude(run__status__in=FINISHED_RUN_STATUSES)
            .only("pk", "status", "message_sent_at")
            .order_by("pk")
        )
        for step in steps:
            task_name = _WAITING_TASK[StepStatus(step.status)]
            if step.message_sent_at is not None and (task_name, step.pk) in held:
                continue
            if not send(task_name, step.pk):
                break  # the broker is still away: the next sweep tries again
            sent += 1
    if sent:
        logger.warning("Sent again the lost task message of %d waiting run step(s)", sent)
    return sent


# A step waiting for a worker, and the task its message carries.
_WAITING_TASK = {
    StepStatus.QUEUED: "evaluation.extract_embeddings",
    StepStatus.EXTRACTED: "evaluation.score_embeddings",
}


def models_resend_inspections(*, grace_seconds: float | None = None) -> int:
    """Send the inspection of each model whose inspection task could not be handed to the
    broker (registered while it was unreachable); returns how many were sent.

    Models registered in the last ``grace_seconds`` are left alone (their request may not
    have sent it yet). Row locks (skipping locked rows) keep two workers sweeping at once
    from sending one twice. Unlike steps, a sent inspection lost inside the broker is not
    sent again: compose's Redis keeps its messages across restarts, and
    ``manage.py list_layers --inspect`` lists a model's layers at once."""
    cutoff = _grace_cutoff(grace_seconds)
    models = PretrainedModel.objects.filter(
        inspection_sent_at__isnull=True, layers=[], inspection_error="", created_at__lt=cutoff
    ).exclude(source__in=NEVER_INSPECTED)  # never loaded: nothing to inspect
    sent = _send_each(models, INSPECT_TASK)
    if sent:
        logger.warning(
            "Sent the inspection of %d model(s) registered while the queue was away", sent
        )
    return sent


def imports_resend_lost(*, grace_seconds: float | None = None) -> int:
    """Send the task of each queued embeddings import whose task could not be handed to the
    broker (uploaded while it was unreachable); returns how many were sent."""
    cutoff = _grace_cutoff(grace_seconds)
    jobs = EmbeddingImport.objects.filter(
        status=EmbeddingImport.Status.QUEUED, message_sent_at__isnull=True, created_at__lt=cutoff
    )
    return _send_each(jobs, IMPORT_TASK)


def _grace_cutoff(grace_seconds: float | None) -> datetime:
    """Rows older than this may have lost their message; newer ones' request may still be
    sending it (RUN_MESSAGE_GRACE_SECONDS unless given)."""
    grace = settings.RUN_MESSAGE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    return timezone.now() - timedelta(seconds=grace)


def _send_each(rows: QuerySet[Any], task: str) -> int:
    """Send ``task`` for each row, in id order, until the broker fails (the next sweep tries
    again); returns how many were sent. Row locks (skipping locked rows) keep two workers
    sweeping at once from sending one twice."""
    sent = 0
    with transaction.atomic():
        locked = rows.select_for_update(skip_locked=True).order_by("pk")
        for pk in locked.values_list("pk", flat=True):
            if not send(task, pk):
                break
            sent += 1
    return sent
