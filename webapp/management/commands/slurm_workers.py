"""Keep Celery workers running as SLURM jobs, as many as there is work for (workers/slurm.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from django import db
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers import celery_app
from workers.recovery import OUTAGE_ERRORS
from workers.slurm import TEMPLATE, SlurmError, Starts, WorkerJobs, reconcile

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Submit Celery workers as SLURM jobs (sbatch) while tasks wait in their queue, up to "
        "--max-workers; give back the steps of worker jobs that ended. Runs until stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queues", default="gpu", help="Queues the workers take (gpu).")
        parser.add_argument("--max-workers", type=int, default=4, help="Jobs at most (4).")
        parser.add_argument(
            "--gres", default="gpu:1", help="sbatch --gres of each job (gpu:1); '' for none."
        )
        parser.add_argument(
            "--idle-exit",
            type=int,
            default=300,
            help="Seconds without a task before a worker leaves and its job ends (300).",
        )
        parser.add_argument(
            "--job-name",
            default="",
            help="SLURM job name of the workers (likeness-worker-QUEUES); one per deployment.",
        )
        parser.add_argument("--template", type=Path, default=TEMPLATE, help="sbatch script.")
        parser.add_argument(
            "--sbatch-arg",
            action="append",
            default=[],
            dest="sbatch_args",
            help="An extra sbatch option, e.g. --sbatch-arg=--partition=gpu (repeatable).",
        )
        parser.add_argument("--interval", type=float, default=15.0, help="Seconds between looks.")
        parser.add_argument("--once", action="store_true", help="Look once, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = tuple(q for q in options["queues"].split(",") if q)
        if options["max_workers"] < 1:
            raise CommandError("--max-workers must be at least 1.")
        config = WorkerJobs(
            job_name=options["job_name"] or f"likeness-worker-{'-'.join(queues)}",
            queues=queues,
            max_workers=options["max_workers"],
            gres=options["gres"],
            idle_exit_seconds=options["idle_exit"],
            template=options["template"],
            sbatch_args=tuple(options["sbatch_args"]),
        )
        starts = Starts()  # jobs submitted whose worker has not started yet
        while True:
            # A connection that broke since the last pass (PostgreSQL restarted, an idle
            # connection cut) is dropped here, as a request would; else every pass fails.
            db.close_old_connections()
            try:
                done = reconcile(celery_app, config, starts)
            except SlurmError as exc:
                if options["once"]:
                    raise CommandError(str(exc)) from None
                logger.warning("SLURM: %s; trying again in %.0f s", exc, options["interval"])
            except OUTAGE_ERRORS as exc:
                if options["once"]:
                    raise CommandError(f"Database or broker unreachable: {exc}") from None
                logger.warning("Database or broker unreachable (%s); trying again", exc)
            except Exception:
                if options["once"]:
                    raise
                # Keep watching: a pass that fails must not leave the workers unmanaged.
                logger.exception("slurm_workers pass failed; trying again")
            else:
                self.stdout.write(done.summary())
            if options["once"]:
                return
            time.sleep(options["interval"])
