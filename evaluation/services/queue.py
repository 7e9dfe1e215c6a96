"""Sending tasks to the workers, by name, once the writes that need them are committed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import current_app
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from evaluation.models import EmbeddingImport, PretrainedModel, RunStep

logger = logging.getLogger(__name__)


# Tasks that move a run step on; each step records when its current one was sent.
STEP_TASKS = frozenset({"evaluation.extract_embeddings", "evaluation.score_embeddings"})
# The task that lists a model's layers; the model records when it was sent.
INSPECT_TASK = "evaluation.inspect_model"
# The task that reads an uploaded embeddings file; the import records when it was sent.
IMPORT_TASK = "evaluation.import_embeddings"
# What kombu raises when the broker does not answer (Celery wraps the transport's errors).
BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, ConnectionError)


def _enqueue(task_name: str, object_id: int) -> None:
    """Hand a task to the broker; raises kombu's OperationalError when it does not answer
    (``send`` is the caller that copes with that). Sent by name through the project's
    Celery app (``webapp`` loads it and makes it the default), so no service imports it."""
    current_app.send_task(task_name, args=[object_id])


def send(task_name: str, object_id: int) -> bool:
    """Send a task; False (logged) when the broker does not answer.

    Tasks are sent once the writes that need them are committed, so an unreachable broker
    must not become an error after the fact (a client would retry and store twice): a step
    task that was not sent leaves the step's ``message_sent_at`` empty, an inspection the
    model's ``inspection_sent_at``, and the workers' sweep (``steps_resend_lost``,
    ``models_resend_inspections``) sends it as soon as the broker answers again."""
    recorded = task_name in STEP_TASKS or task_name in (INSPECT_TASK, IMPORT_TASK)
    try:
        _enqueue(task_name, object_id)
    except BROKER_ERRORS as exc:
        logger.warning(
            "The task queue is unreachable (%s); %s for %s was not sent%s.",
            exc,
            task_name,
            object_id,
            " (the workers send it once the queue is back)" if recorded else "",
        )
        sent = False
    else:
        sent = True
    when = timezone.now() if sent else None
    if task_name in STEP_TASKS:
        RunStep.objects.filter(pk=object_id).update(message_sent_at=when)
    elif task_name == INSPECT_TASK:
        PretrainedModel.objects.filter(pk=object_id).update(inspection_sent_at=when)
    elif task_name == IMPORT_TASK:
        EmbeddingImport.objects.filter(pk=object_id).update(message_sent_at=when)
    return sent


def send_steps(task_name: str, step_ids: Sequence[int]) -> int:
    """Send the steps' tasks in order; after one fails the others are left to the sweep too
    (each try at an unreachable broker costs up to seconds). Returns how many were sent."""
    for count, step_id in enumerate(step_ids):
        if not send(task_name, step_id):
            RunStep.objects.filter(pk__in=step_ids[count:]).update(message_sent_at=None)
            return count
    return len(step_ids)
