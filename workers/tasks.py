"""Celery tasks: explicit names, ids in, one service call, no results (state is in the DB)."""

from __future__ import annotations

from celery import shared_task

from evaluation import services


@shared_task(name="evaluation.extract_embeddings", bind=True, acks_late=True)
def extract_embeddings(self, step_id: int) -> None:  # type: ignore[no-untyped-def]
    services.step_extract(step_id=step_id, worker=self.request.hostname or "unknown")


@shared_task(name="evaluation.score_embeddings", bind=True, acks_late=True)
def score_embeddings(self, step_id: int) -> None:  # type: ignore[no-untyped-def]
    services.step_score(step_id=step_id, worker=self.request.hostname or "unknown")


@shared_task(name="evaluation.requeue_stalled")
def requeue_stalled() -> int:
    return services.steps_requeue_stalled()


@shared_task(name="evaluation.inspect_model", acks_late=True)
def inspect_model(model_id: int) -> None:
    services.model_inspect(model_id=model_id)
