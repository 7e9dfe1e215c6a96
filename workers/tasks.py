"""Celery tasks: explicit names, ids in, one service call, no results (state is in the DB)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from celery import shared_task

from core.outages import database_unreachable
from evaluation import services

if TYPE_CHECKING:
    from celery import Task

logger = logging.getLogger(__name__)


@contextmanager
def _outage_is_not_a_crash(step_id: int) -> Iterator[None]:
    """The database went away mid-step: the step cannot even be marked failed, and stays
    claimed by this worker, whose sweeper (workers/recovery.py) requeues it once the
    database answers. Say so in one line rather than as a crash."""
    try:
        yield
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        logger.warning(
            "Database unreachable while working on run step %s (%s); the step is requeued "
            "once it answers again.",
            step_id,
            str(exc).strip(),
        )


def _run_step(service: Callable[..., None], step_id: int, hostname: str | None) -> None:
    with _outage_is_not_a_crash(step_id):
        service(step_id=step_id, worker=hostname or "unknown")


@shared_task(name="evaluation.extract_embeddings", bind=True, acks_late=True)
def extract_embeddings(self: Task, step_id: int) -> None:
    _run_step(services.step_extract, step_id, self.request.hostname)


@shared_task(name="evaluation.score_embeddings", bind=True, acks_late=True)
def score_embeddings(self: Task, step_id: int) -> None:
    _run_step(services.step_score, step_id, self.request.hostname)


@shared_task(name="evaluation.requeue_stalled")
def requeue_stalled() -> int:
    return services.steps_requeue_stalled()


@shared_task(name="evaluation.import_embeddings", acks_late=True)
def import_embeddings(job_id: int) -> None:
    from evaluation.imports.embeddings import embeddings_import_run

    embeddings_import_run(job_id=job_id)


@shared_task(name="evaluation.inspect_model", acks_late=True)
def inspect_model(model_id: int) -> None:
    services.model_inspect(model_id=model_id)


@shared_task(name="annotation.pilot_run", acks_late=True)
def pilot_run(pilot_id: int) -> None:
    from annotation.services.pilots import pilot_run_queued

    pilot_run_queued(pilot_id=pilot_id)


@shared_task(name="evaluation.layer_choice")
def layer_choice(target_id: int, metric_key: str) -> None:
    from evaluation.layer_choice import layer_choices_compute

    layer_choices_compute(target_id, metric_key)


@shared_task(name="evaluation.random_floor")
def random_floor(target_id: int, metric_key: str) -> None:
    from evaluation.layer_choice import random_floor_compute

    random_floor_compute(target_id, metric_key)
