"""Workers as SLURM jobs, on the real single-node cluster that `make slurm` starts: the
extraction runs in a worker that `manage.py slurm_workers` submitted with sbatch; a worker
job ended by `scancel` (SIGTERM) or killed outright (SIGKILL) mid-extraction loses nothing,
and the step finishes once, in another job, from the saved chunks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from evaluation import services
from evaluation.metrics import knn_entry
from evaluation.models import EmbeddingSet, Run, Score, Worker
from tests.conftest import REPO_ROOT, make_image_dataset, make_timm_model
from tests.integration.conftest import extracting_past, long_extraction_run, wait_for

pytestmark = pytest.mark.integration

# Of this test process: two test runs on one cluster never cancel each other's jobs.
JOB_NAME = f"likeness-itest-{os.getpid()}"


def _slurm(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


@pytest.fixture
def slurm_cluster() -> None:
    """The cluster must be up: `make slurm` (part of `make test`) starts it."""
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        pytest.fail("No SLURM cluster configured: run the tests with `make test` (make slurm)")
    states = _slurm("sinfo", "--noheader", "--format=%T").split()
    assert set(states) & {"idle", "mixed", "allocated", "completing"}, (
        f"SLURM node not up: {states}"
    )


class SlurmWorkers:
    """`manage.py slurm_workers` in a subprocess, with the test's database and broker in its
    environment (the jobs it submits inherit them), and the shipped sbatch template."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.folder = folder
        self.log_path = folder / "slurm_workers.log"
        self.env = {
            **env,
            "LIKENESS_PYTHON": sys.executable,
            "WORKER_HEARTBEAT_SECONDS": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, max_workers: int, idle_exit: int) -> SlurmWorkers:
        command = [
            sys.executable,
            "manage.py",
            "slurm_workers",
            f"--job-name={JOB_NAME}",
            f"--max-workers={max_workers}",
            f"--idle-exit={idle_exit}",
            "--interval=1",
            "--gres=",  # no GPUs on this cluster
            # The template asks for a site's resources; this one-node cluster has less.
            "--sbatch-arg=--cpus-per-task=1",
            "--sbatch-arg=--mem=1000M",
            f"--sbatch-arg=--output={self.folder}/job-%j.log",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        subprocess.run(["scancel", f"--name={JOB_NAME}"], check=False, timeout=30)

    def jobs(self) -> list[str]:
        return _slurm("squeue", "--noheader", f"--name={JOB_NAME}", "--format=%i").split()

    def job_log(self, job_id: str) -> str:
        path = self.folder / f"job-{job_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace")[-3000:]
        for path in sorted(self.folder.glob("job-*.log")):
            text += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
        return text


@pytest.fixture
def slurm_workers(
    slurm_cluster, worker_env, isolated_storage: Path
) -> Iterator[Callable[..., SlurmWorkers]]:
    started: list[SlurmWorkers] = []

    def start(**options: int) -> SlurmWorkers:
        command = SlurmWorkers(worker_env, isolated_storage)
        started.append(command)
        return command.start(**options)

    subprocess.run(["scancel", f"--name={JOB_NAME}"], check=False, timeout=30)
    yield start
    for command in started:
        command.stop()


def finished(run: Run) -> bool:
    run.refresh_from_db()
    return run.is_finished


def test_extraction_runs_in_a_submitted_slurm_job_which_leaves_when_idle(
    slurm_workers, start_worker, client, researcher, digits_zip_small
):
    scorer = start_worker("cpu@%h", queues="cpu")
    command = slurm_workers(max_workers=1, idle_exit=4)
    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")]
    )

    wait_for(lambda: finished(run), timeout=150, message=lambda: command.log() + scorer.log())
    assert run.status == "succeeded", run.error_message
    step = run.steps.get()
    worker = Worker.objects.get(name=step.extracted_by)
    assert worker.slurm_job_id and step.extracted_by == f"slurm-{worker.slurm_job_id}@{worker.host}"
    assert worker.slurm_job_name == JOB_NAME
    assert step.scored_by.startswith("cpu@")

    client.force_login(researcher)
    page = client.get(reverse("evaluation:run_detail", args=[run.pk])).content.decode()
    assert f"SLURM job {worker.slurm_job_id}" in page

    # Idle for 4 s, the worker leaves: its job ends and the allocation goes back.
    wait_for(lambda: not command.jobs(), timeout=60, message=command.log)
    worker.refresh_from_db()
    assert worker.stopped_at is not None
    assert "this worker leaves" in command.job_log(worker.slurm_job_id)
    submitted = re.findall(r"submitted ([\d, ]+)", command.log_path.read_text())
    assert len(submitted) == 1, command.log()  # one job for the one step (and the inspection)


@pytest.mark.parametrize("how", ["scancel", "sigkill"])
def test_a_worker_job_ended_mid_extraction_finishes_once_in_another_job(
    how, slurm_workers, start_worker
):
    """scancel: SIGTERM, the worker hands its step back at once. sigkill: the worker dies
    without a word, its job ends, and slurm_workers gives back the steps the worker held."""
    scorer = start_worker("cpu@%h", queues="cpu")
    command = slurm_workers(max_workers=2, idle_exit=30)
    run = long_extraction_run()
    step = run.steps.get()
    wait_for(extracting_past(step), timeout=150, message=command.log)
    first = step.claimed_by
    worker = Worker.objects.get(name=first)
    first_job = worker.slurm_job_id
    if how == "scancel":
        _slurm("scancel", first_job)
    else:
        # What an out-of-memory kill or a lost node looks like. (scancel --signal=KILL
        # is a plain cancel to SLURM: SIGTERM first.)
        os.kill(worker.pid, signal.SIGKILL)
    ended_at = time.monotonic()

    claims_on_resume = []

    def resumed_elsewhere() -> bool:
        step.refresh_from_db()
        if step.status == "extracting" and step.claimed_by not in ("", first):
            claims_on_resume.append(step.attempts)
        return step.claimed_by not in ("", first) or step.extracted_by not in ("", first)

    wait_for(resumed_elsewhere, timeout=90, message=command.log)
    recovery = time.monotonic() - ended_at
    wait_for(lambda: finished(run), timeout=180, message=lambda: command.log() + scorer.log())
    assert run.status == "succeeded", run.error_message
    step.refresh_from_db()
    assert step.extracted_by not in ("", first)
    assert Score.objects.filter(run=run).count() == 2  # one per metric
    # Scored once, from one set of embeddings: the ending changed nothing downstream.
    assert len(re.findall(r"score_embeddings\[[^]]+\] succeeded", scorer.log())) == 1
    assert EmbeddingSet.objects.filter(model=step.model_id).count() == 1
    first_log = command.job_log(first_job)
    if how == "scancel":
        assert f"step {step.pk} goes back to the queue" in first_log, command.log()
        # The hand-back did not count: the second job's claim is the step's first.
        assert claims_on_resume[:1] == [1], claims_on_resume
    else:
        assert "requeued 1 step(s) of ended workers" in command.log_path.read_text()
        assert claims_on_resume[:1] == [2], claims_on_resume  # a death counts
    second_job = Worker.objects.get(name=step.extracted_by).slurm_job_id
    reused = re.search(r"reused (\d+) saved chunk", command.job_log(second_job))
    assert reused and int(reused.group(1)) >= 2, command.log()
    print(f"{how}: another job resumed the step {recovery:.1f} s after the first ended")
