"""The workers' registry: which Celery workers are up, where they run (host, SLURM job), and
the steps of workers that ended without handing them back."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.utils import timezone

from evaluation.models import Worker
from evaluation.services.recovery import steps_requeue_orphaned

logger = logging.getLogger(__name__)


def worker_register(
    *, name: str, queues: str, host: str, pid: int, slurm_job_id: str, slurm_job_name: str
) -> None:
    """A worker started (or started again under its name)."""
    now = timezone.now()
    Worker.objects.update_or_create(
        name=name,
        defaults={
            "queues": queues,
            "host": host,
            "pid": pid,
            "slurm_job_id": slurm_job_id,
            "slurm_job_name": slurm_job_name,
            "started_at": now,
            "last_seen_at": now,
            "stopped_at": None,
        },
    )


def worker_seen(*, name: str) -> None:
    Worker.objects.filter(name=name, stopped_at__isnull=True).update(last_seen_at=timezone.now())


def worker_stopped(*, name: str) -> None:
    Worker.objects.filter(name=name, stopped_at__isnull=True).update(stopped_at=timezone.now())


def workers_of_slurm_jobs(*, job_name: str) -> list[Worker]:
    """The registered workers, not known to have stopped, of SLURM jobs of this name."""
    return list(
        Worker.objects.filter(stopped_at__isnull=True, slurm_job_name=job_name).exclude(
            slurm_job_id=""
        )
    )


def slurm_jobs_with_workers(*, job_ids: Iterable[str]) -> set[str]:
    """Of these SLURM job ids, those whose worker registered (it started, whatever since)."""
    ids = set(job_ids)
    if not ids:
        return set()
    return set(Worker.objects.filter(slurm_job_id__in=ids).values_list("slurm_job_id", flat=True))


def workers_ended(*, names: Iterable[str]) -> int:
    """These workers are gone for good (their SLURM job ended: scancel with SIGKILL, a node
    lost, a grace period too short to hand the step back). Their steps go back to the queue
    now rather than after ``RUN_STALL_SECONDS``; returns how many steps were requeued."""
    requeued = 0
    for name in names:
        requeued += steps_requeue_orphaned(worker=name)
        worker_stopped(name=name)
    if requeued:
        logger.warning("Requeued %d run step(s) of ended worker(s)", requeued)
    return requeued
