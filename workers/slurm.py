"""Celery workers as SLURM jobs: keep as many running as there is work for, up to a maximum.

``manage.py slurm_workers`` calls ``reconcile`` every few seconds. A pass

1. lists this deployment's worker jobs in SLURM by their job name (so a restarted command
   finds its jobs again: it keeps no state of its own);
2. gives back the steps of workers whose job ended without handing them back (a worker
   killed outright, a node lost, a grace period too short for the batch, a preempted job
   requeued), at once rather than after ``RUN_STALL_SECONDS``;
3. counts the messages waiting in the watched queues and submits one job per message not
   already covered by a job that is starting (pending, or running without its worker
   registered yet), never more than ``max_workers`` jobs in all.

Jobs are never cancelled here: a worker with no task for ``idle_exit_seconds`` leaves by
itself (workers/presence.py), which ends its job and gives the allocation back. A worker
whose job is ended by SLURM gets SIGTERM first and hands its extraction back at the next
progress report (core/ending.py).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from celery import Celery
from kombu.exceptions import ChannelError

if TYPE_CHECKING:
    from evaluation.models import Worker

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent.parent / "slurm" / "worker.sbatch"
# States in which a job's worker runs or may still run: SIGTERM'd jobs stay COMPLETING for
# the site's KillWait while their worker hands its step back, so they are not ended yet.
# Any other state (or a job squeue no longer lists) means the worker is gone, including a
# preempted job requeued to PENDING: its next start is a new worker.
_WORKER_MAY_RUN = {"RUNNING", "SUSPENDED", "COMPLETING", "STOPPED"}
# States of jobs that will take work: submitted ones not yet running, and running ones.
_STARTING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING"}
_TAKING_WORK = _STARTING_STATES | {"RUNNING", "SUSPENDED"}
SLURM_COMMAND_SECONDS = 30
FAILED_STARTS_TO_SLOW_DOWN = 3
NOT_FOUND = "404"  # AMQP's reply code for a queue that does not exist


class SlurmError(Exception):
    """A SLURM command failed or is missing; the message says which and why."""


@dataclass(frozen=True)
class WorkerJobs:
    """What is submitted, and how: one Celery worker per job."""

    job_name: str = "likeness-worker-gpu"
    queues: tuple[str, ...] = ("gpu",)
    max_workers: int = 4
    gres: str = "gpu:1"  # one GPU per worker; "" where the cluster schedules none
    idle_exit_seconds: int = 300
    template: Path = TEMPLATE
    sbatch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    id: str
    state: str


@dataclass
class Starts:
    """Jobs this command submitted whose worker has not registered yet. One that ends first
    failed to start (a wrong virtualenv, a module missing, a node that cannot reach the
    database): after ``FAILED_STARTS_TO_SLOW_DOWN`` in a row, only one job at a time is
    tried until a worker starts again, instead of a job per waiting task every pass."""

    unconfirmed: set[str] = field(default_factory=set)
    failed_in_a_row: int = 0
    last_failed: str = ""

    def slowed_down(self) -> bool:
        return self.failed_in_a_row >= FAILED_STARTS_TO_SLOW_DOWN


@dataclass
class Pass:
    """What one reconcile pass saw and did."""

    waiting: int = 0
    jobs: list[Job] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    steps_requeued: int = 0

    def summary(self) -> str:
        live = sum(job.state in _TAKING_WORK for job in self.jobs)
        text = f"{self.waiting} task(s) waiting, {live} worker job(s)"
        if self.submitted:
            text += f", submitted {', '.join(self.submitted)}"
        if self.steps_requeued:
            text += f", requeued {self.steps_requeued} step(s) of ended workers"
        return text


def reconcile(app: Celery, config: WorkerJobs, starts: Starts | None = None) -> Pass:
    from evaluation import services

    starts = starts if starts is not None else Starts()
    result = Pass(jobs=list_jobs(config.job_name))
    states = {job.id: job.state for job in result.jobs}
    registered = services.workers_of_slurm_jobs(job_name=config.job_name)
    result.steps_requeued = services.workers_ended(names=_ended(registered, states))
    taking_work = {job_id for job_id, state in states.items() if state in _TAKING_WORK}
    started = services.slurm_jobs_with_workers(job_ids=taking_work | starts.unconfirmed)
    _follow_starts(starts, taking_work, started)

    result.waiting = waiting_tasks(app, config.queues)
    # A job that will take a waiting task before any new one could: pending, or running
    # with its worker not started yet (an idle started worker would have taken it).
    starting = sum(
        states[job_id] in _STARTING_STATES or job_id not in started for job_id in taking_work
    )
    wanted = min(result.waiting - starting, config.max_workers - len(taking_work))
    if starts.slowed_down():
        wanted = min(wanted, 1 - len(starts.unconfirmed))
    for _ in range(max(wanted, 0)):
        job_id = submit(config)
        starts.unconfirmed.add(job_id)
        result.submitted.append(job_id)
    return result


def _ended(registered: Sequence[Worker], states: dict[str, str]) -> list[str]:
    """The registered workers whose job is over. A job squeue does not list at all is
    taken as over only once its worker has also stopped beating (``MISSED_HEARTBEATS``):
    a listing that leaves jobs out (a site's squeue defaults, another cluster) must not
    give away the steps of workers that are alive."""
    from evaluation.selectors import worker_is_up

    ended = []
    for worker in registered:
        state = states.get(worker.slurm_job_id)
        if state in _WORKER_MAY_RUN or (state is None and worker_is_up(worker)):
            continue
        ended.append(worker.name)
    return ended


def _follow_starts(starts: Starts, live: set[str], started: set[str]) -> None:
    for job_id in sorted(starts.unconfirmed):
        if job_id in started:
            starts.unconfirmed.discard(job_id)
            starts.failed_in_a_row = 0
        elif job_id not in live:
            starts.unconfirmed.discard(job_id)
            starts.failed_in_a_row += 1
            starts.last_failed = job_id
    if starts.slowed_down():
        logger.error(
            "%d worker jobs in a row ended before their worker started (the last: job %s; "
            "its output file, the template's --output, says why). Trying one job at a time "
            "until a worker starts: check the set-up block of the sbatch template.",
            starts.failed_in_a_row,
            starts.last_failed,
        )


def waiting_tasks(app: Celery, queues: Sequence[str]) -> int:
    """Messages in these queues that no worker has taken yet (any broker kombu speaks)."""
    waiting = 0
    with app.connection_for_read() as connection:
        for name in queues:
            # A channel each: a broker closes the channel on which a passive declare fails.
            with connection.channel() as channel:
                try:
                    waiting += channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError as exc:
                    if str(exc.reply_code) != NOT_FOUND:  # kombu's Redis says '404'
                        raise
                    # Redis keeps no empty list: a queue with nothing in it does not exist.
    return waiting


def list_jobs(job_name: str) -> list[Job]:
    """This user's jobs of that name that SLURM lists, in every state (an ended job stays
    listed for the cluster's MinJobAge, with the state it ended in) and every partition."""
    output = _run(
        ["squeue", "--noheader", "--all", "--states=all", f"--name={job_name}",
         f"--user={os.getuid()}", "--format=%i|%T"]
    )  # fmt: skip
    jobs = []
    for line in output.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            jobs.append(Job(id=job_id, state=state))
    return jobs


def submit(config: WorkerJobs) -> str:
    """Submit one worker job from the template; returns its job id. The job starts with this
    command's environment (database, broker, storage settings: sbatch's default), plus the
    worker's own settings below; the template may override any of them."""
    if not config.template.is_file():
        raise SlurmError(f"No sbatch template at {config.template}")
    worker_settings = {
        "LIKENESS_WORKER_QUEUES": ",".join(config.queues),
        "WORKER_IDLE_EXIT_SECONDS": str(config.idle_exit_seconds),
    }
    command = [
        "sbatch",
        "--parsable",
        f"--job-name={config.job_name}",
        "--export=ALL",  # values go in the environment: --export would split them on commas
        *([f"--gres={config.gres}"] if config.gres else []),
        *config.sbatch_args,
        str(config.template),
    ]
    job_id = _run(command, extra_env=worker_settings).strip().split(";")[0]  # id[;cluster]
    logger.info("Submitted worker job %s (%s)", job_id, config.job_name)
    return job_id


def _run(command: list[str], extra_env: dict[str, str] | None = None) -> str:
    # A user's SQUEUE_*/SBATCH_* defaults (formats, states, partitions) would change what
    # is listed or submitted behind this module's back.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SQUEUE_", "SBATCH_"))
    }
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SLURM_COMMAND_SECONDS,
            check=False,
            env={**env, **(extra_env or {})},
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{command[0]} is not on PATH: run this on a machine that can submit SLURM jobs "
            "(a login node)."
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{command[0]} did not answer in {SLURM_COMMAND_SECONDS} s (is slurmctld up?)"
        ) from None
    if done.returncode != 0:
        raise SlurmError(f"{shlex.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
