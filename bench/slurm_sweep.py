"""Extraction spread over SLURM-submitted workers, and steps that outlive a job's time limit.

Issue 21's figures: "A sweep of 20 untrained timm models runs with its extraction spread over
3 SLURM-submitted workers; the note gives models/hour with 1 and with 3 workers on this
2-core machine" and "after a SIGTERM time-limit ending, the run completes with one Score per
key; recovery time measured".

On the single-node cluster `make slurm` starts (SLURM_CONF set), a fresh PostgreSQL database
(``likeness_bench_slurm``) and Redis, with ``manage.py slurm_workers`` submitting workers from
the shipped template (slurm/worker.sbatch) and one local CPU worker scoring:

1. Baseline: the 20 models' run with ``--max-workers 1``; models/hour from the run's creation
   to its end (job start-up included: every phase starts with no worker job).
   ``--threads-per-worker N`` sets each job's OMP_NUM_THREADS: with 1, a worker uses one
   core, as if each had a device of its own; by default each uses every core.
2. The same run (its embeddings deleted, so everything is extracted again) with
   ``--max-workers 3``. Printed as a ratio to 1.
3. Time limits: one long extraction (``--model``, ``--images`` digits) whose worker jobs have a
   one-minute limit and get SIGTERM ``--warn`` seconds before it (sbatch --signal): each job
   hands the step back, the next resumes from the saved chunks, until it is done. Prints the
   jobs it took, each hand-back's recovery time (the step back in the queue -> claimed by the
   next job) and the scores stored.

    SLURM_CONF=/var/tmp/likeness-slurm/slurm.conf .venv/bin/python bench/slurm_sweep.py \
        [--models 20] [--images 120] [--workers 3] [--threads-per-worker 1] [--skip-time-limit]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _server import drop_database, fresh_django, start_watchdog  # bench/_server.py
from zoo_sweep import architectures, start_worker, wait_until

ROOT = Path(__file__).resolve().parent.parent
PG_BENCH_DB = "likeness_bench_slurm"
BROKER_URL = "redis://127.0.0.1:6379/10"
JOB_NAME = "likeness-bench-worker"


def scancel_all() -> None:
    subprocess.run(["scancel", f"--name={JOB_NAME}"], check=False, timeout=30)


def jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", f"--name={JOB_NAME}", "--format=%i"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return out.split()


def start_slurm_workers(env: dict[str, str], log: Path, *options: str) -> subprocess.Popen:
    command = [sys.executable, "manage.py", "slurm_workers", f"--job-name={JOB_NAME}",
               "--interval=1", "--gres=", "--idle-exit=5", "--sbatch-arg=--cpus-per-task=1",
               "--sbatch-arg=--mem=2000M", f"--sbatch-arg=--output={log.parent}/job-%j.log",
               *options]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--model", default="resnet50", help="time-limit phase's architecture")
    parser.add_argument("--long-images", type=int, default=1797)
    parser.add_argument("--warn", type=int, default=40, help="sbatch --signal=B:TERM@WARN")
    parser.add_argument("--skip-time-limit", action="store_true")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=0,
        help="OMP_NUM_THREADS of each worker job (0: torch's default, every core)",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        sys.exit("No SLURM cluster: `make slurm`, then set SLURM_CONF (see the docstring).")
    deadline = time.monotonic() + args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-slurm-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}",
        "CELERY_BROKER_URL": BROKER_URL,
        "LIKENESS_VAR_DIR": str(tmp / "var"),
        "MEDIA_ROOT": str(tmp / "media"),
        "EMBEDDINGS_ROOT": str(tmp / "embeddings"),
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "WARNING",
        "LIKENESS_PYTHON": sys.executable,
        "WORKER_HEARTBEAT_SECONDS": "2",
        "EXTRACTION_CHUNK_SIZE": "128",
    }
    if args.threads_per_worker:  # the jobs inherit it (sbatch --export=ALL)
        env["OMP_NUM_THREADS"] = str(args.threads_per_worker)
    os.environ.clear()
    os.environ.update(env)
    processes: list[subprocess.Popen | None] = []

    def cleanup() -> None:
        for process in processes:
            stop(process)
        scancel_all()
        drop_database(PG_BENCH_DB)
        shutil.rmtree(tmp, ignore_errors=True)

    watchdog = start_watchdog(args.timeout, cleanup)
    try:
        scancel_all()
        fresh_django(PG_BENCH_DB, BROKER_URL, ROOT)
        from django.core.management import call_command

        from evaluation import services
        from evaluation.imports.stimuli import dataset_import_images
        from evaluation.metrics import knn_entry
        from evaluation.models import EmbeddingSet, PretrainedModel, Run, RunStep
        from webapp.demo import digits_zip

        names = architectures(args.models)
        dataset = dataset_import_images(
            name="digits", upload=io.BytesIO(digits_zip(limit=args.images))
        )
        # The local scorer takes the cpu queue only: every extraction runs in a SLURM job.
        scorer = start_worker(
            {**env, "OMP_NUM_THREADS": "1"}, tmp / "cpu-worker.log", "cpu", "bench-cpu@%h"
        )
        processes.append(scorer)
        # Registration inspects every model on the gpu queue: done by one job, untimed.
        command = start_slurm_workers(env, tmp / "inspect.log", "--max-workers=1")
        processes.append(command)
        call_command("register_model", *names, "--untrained", "--json", stdout=io.StringIO())
        ids = list(
            PretrainedModel.objects.filter(identifier__in=names).values_list("pk", flat=True)
        )

        def inspected() -> bool:
            return not PretrainedModel.objects.filter(
                pk__in=ids, layers=[], inspection_error=""
            ).exists()

        wait_until(inspected, deadline, "the inspections")
        usable = list(PretrainedModel.objects.filter(pk__in=ids, inspection_error=""))
        stop(command)
        wait_until(lambda: not jobs(), deadline, "the inspecting job to leave")
        print(f"{len(usable)} untrained timm architectures ({names[0]} ... {names[-1]}), "
              f"{dataset.stimulus_count} images, {os.cpu_count()} CPUs; one SLURM job per "
              f"worker (--pool solo, {args.threads_per_worker or 'default'} torch threads "
              f"each), 1 local CPU worker scoring", flush=True)  # fmt: skip

        rates = {}
        for workers in (1, args.workers):
            EmbeddingSet.objects.all().delete()
            shutil.rmtree(tmp / "embeddings", ignore_errors=True)
            log = tmp / f"sweep-{workers}.log"
            command = start_slurm_workers(env, log, f"--max-workers={workers}")
            processes.append(command)
            run = services.run_create(
                dataset=dataset, models=usable, metrics=[knn_entry(k=5, split="loo")]
            )
            wall = wait_until(
                lambda run=run: Run.objects.get(pk=run.pk).is_finished, deadline, "the sweep"
            )
            steps = RunStep.objects.filter(run=run)
            done = steps.filter(status="succeeded").count()
            where = Counter(steps.values_list("extracted_by", flat=True))
            rates[workers] = done / wall * 3600
            print(f"{workers} worker job(s): {done}/{len(usable)} models in {wall:.0f} s = "
                  f"{rates[workers]:.0f} models/hour; extraction by job: "
                  f"{sorted(where.values(), reverse=True)}", flush=True)  # fmt: skip
            stop(command)
            wait_until(lambda: not jobs(), deadline, "the sweep's jobs to leave")
        print(
            f"{args.workers} workers / 1 worker: {rates[args.workers] / rates[1]:.2f}x models/hour",
            flush=True,
        )

        if not args.skip_time_limit:
            time_limits(args, env, tmp, deadline, processes)
        return 0
    finally:
        watchdog.cancel()
        cleanup()


def time_limits(args, env, tmp, deadline, processes) -> None:
    """One step longer than a job may run: jobs with a 1-minute limit and a SIGTERM warning."""
    from evaluation import services
    from evaluation.imports.stimuli import dataset_import_images
    from evaluation.metrics import knn_entry
    from evaluation.models import Run, Score
    from webapp.demo import digits_zip

    dataset = dataset_import_images(
        name="digits-long", upload=io.BytesIO(digits_zip(limit=args.long_images))
    )
    model = services.model_register(
        name=args.model, source="timm", identifier=args.model, weights="untrained"
    )
    log = tmp / "time-limit.log"
    command = start_slurm_workers(env, log, "--max-workers=2", "--sbatch-arg=--time=1",
                                  f"--sbatch-arg=--signal=B:TERM@{args.warn}")  # fmt: skip
    processes.append(command)
    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")]
    )
    step = run.steps.get()
    recoveries, claimed_by, handed_at = [], "", None
    started = time.monotonic()
    while not Run.objects.get(pk=run.pk).is_finished:
        if time.monotonic() > deadline:
            raise TimeoutError("time bound reached in the time-limit phase")
        step.refresh_from_db()
        if step.status == "queued" and step.processed and handed_at is None:
            handed_at = time.monotonic()
        if step.claimed_by and step.claimed_by != claimed_by:
            if handed_at is not None:
                recoveries.append(time.monotonic() - handed_at)
            claimed_by, handed_at = step.claimed_by, None
        time.sleep(0.1)
    wall = time.monotonic() - started
    step.refresh_from_db()
    run.refresh_from_db()
    scores = Score.objects.filter(run=run).count()
    job_logs = sorted(log.parent.glob("job-*.log"))
    handed = sum("goes back to the queue" in p.read_text(errors="replace") for p in job_logs)
    # A job whose worker was still in a batch when SIGKILL followed the SIGTERM (KillWait)
    # could not hand back; slurm_workers gave its step back when it saw the job end.
    given_back = log.read_text(errors="replace").count("step(s) of ended workers")
    print(f"time limits: {args.model} over {dataset.stimulus_count} images with 1-minute jobs "
          f"(SIGTERM {args.warn} s before the limit): {run.status} in {wall:.0f} s, "
          f"{handed} hand-back(s) by SIGTERM, {given_back} step(s) given back by "
          f"slurm_workers after a kill, extracted by {step.extracted_by}; "
          f"{scores} score(s) stored for its 1 metric", flush=True)  # fmt: skip
    if recoveries:
        print(f"recovery (back in the queue -> claimed by the next job): "
              f"{', '.join(f'{s:.1f} s' for s in recoveries)}", flush=True)  # fmt: skip
    stop(command)


if __name__ == "__main__":
    sys.exit(main())
