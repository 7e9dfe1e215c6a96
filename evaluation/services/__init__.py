"""Writes of the evaluation app, by concern. Callers use ``from evaluation import services``
and the names below; the modules hold one concern each:

- ``catalogue``: registering models and listing their layers;
- ``runs``: creating, cancelling, retrying runs, and a run's status from its steps;
- ``steps``: executing a step (called by the workers), with ``embeddings`` for the extraction;
- ``recovery``: steps whose worker died or whose message the broker lost;
- ``queue``: sending tasks by name once committed (the only module that talks to the broker);
- ``failures``: how an unexpected failure is worded;
- ``rescoring``: re-computing a target's stale scores in one run;
- ``workers``: the workers' registry, and the steps of workers that ended;
- ``archive``: archiving, and deleting models, targets and datasets with what depends on
  them (a whole dataset with its studies: ``annotation.services.archive``).

Dataset, judgment and description imports live in ``evaluation.imports``.
"""

from evaluation.services.catalogue import model_inspect, model_register
from evaluation.services.queue import STEP_TASKS
from evaluation.services.recovery import (
    imports_resend_lost,
    models_resend_inspections,
    steps_requeue_dropped,
    steps_requeue_orphaned,
    steps_requeue_stalled,
    steps_resend_lost,
)
from evaluation.services.rescoring import scores_rescore_stale, stale_scores
from evaluation.services.runs import run_cancel, run_create, run_refresh_status, run_retry
from evaluation.services.steps import step_extract, step_fail, step_hand_back, step_score
from evaluation.services.workers import (
    slurm_jobs_with_workers,
    worker_register,
    worker_seen,
    worker_stopped,
    workers_ended,
    workers_of_slurm_jobs,
)

__all__ = [
    "STEP_TASKS",
    "imports_resend_lost",
    "model_inspect",
    "model_register",
    "models_resend_inspections",
    "run_cancel",
    "run_create",
    "run_refresh_status",
    "run_retry",
    "scores_rescore_stale",
    "slurm_jobs_with_workers",
    "stale_scores",
    "step_extract",
    "step_fail",
    "step_hand_back",
    "step_score",
    "steps_requeue_dropped",
    "steps_requeue_orphaned",
    "steps_requeue_stalled",
    "steps_resend_lost",
    "worker_register",
    "worker_seen",
    "worker_stopped",
    "workers_ended",
    "workers_of_slurm_jobs",
]
