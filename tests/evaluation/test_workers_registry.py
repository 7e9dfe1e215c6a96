"""Workers that end, the registry of workers, and the arithmetic of slurm_workers, in-process
(tests/integration/test_slurm_workers.py runs the same on a real SLURM cluster)."""

from __future__ import annotations

import multiprocessing
import subprocess
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from core import ending
from evaluation import services
from evaluation.metrics import knn_entry
from evaluation.models import RunStep, Worker
from tests.conftest import make_text_dataset, make_text_model
from workers import slurm

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker_is_ending(monkeypatch) -> None:
    monkeypatch.setattr(ending, "_ending", multiprocessing.RawValue("b", 1))


@pytest.fixture
def run(enqueued):
    run = services.run_create(
        dataset=make_text_dataset(),
        models=[make_text_model()],
        metrics=[knn_entry(k=1, split="loo")],
    )
    enqueued.clear()
    return run


def test_an_ending_worker_hands_its_extraction_back_without_counting_the_attempt(
    run, enqueued, worker_is_ending, django_capture_on_commit_callbacks
):
    step = run.steps.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.step_extract(step_id=step.pk, worker="slurm-7@node")
    step.refresh_from_db()
    assert (step.status, step.claimed_by, step.attempts) == ("queued", "", 0)
    assert enqueued == [("evaluation.extract_embeddings", step.pk)]
    assert step.extracted_by == "" and not step.error_message


def test_a_failure_while_the_worker_ends_is_the_signals_doing_not_the_steps(
    run, enqueued, worker_is_ending, monkeypatch, django_capture_on_commit_callbacks
):
    def loader_killed(*_args, **_kwargs):
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated.")

    monkeypatch.setattr("evaluation.services.steps.embeddings_for", loader_killed)
    step = run.steps.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.step_extract(step_id=step.pk, worker="slurm-7@node")
    step.refresh_from_db()
    assert step.status == "queued" and not step.error_message
    assert enqueued == [("evaluation.extract_embeddings", step.pk)]


def test_the_same_failure_on_a_worker_that_is_not_ending_fails_the_step(run, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("evaluation.services.steps.embeddings_for", broken)
    step = run.steps.get()
    services.step_extract(step_id=step.pk, worker="w1")
    step.refresh_from_db()
    assert step.status == "failed" and "boom" in step.error_message


def test_steps_record_the_workers_that_extracted_and_scored_them(run, client, researcher):
    step = run.steps.get()
    services.worker_register(
        name="slurm-12@gpu-node-3", queues="gpu", host="gpu-node-3", pid=1,
        slurm_job_id="12", slurm_job_name="likeness-worker-gpu",
    )  # fmt: skip
    services.step_extract(step_id=step.pk, worker="slurm-12@gpu-node-3")
    services.step_score(step_id=step.pk, worker="cpu@main")
    step.refresh_from_db()
    assert (step.extracted_by, step.scored_by) == ("slurm-12@gpu-node-3", "cpu@main")

    client.force_login(researcher)
    page = client.get(reverse("evaluation:run_detail", args=[run.pk])).content.decode()
    assert "extracted on slurm-12@gpu-node-3 (SLURM job 12); scored on cpu@main" in page
    runs = client.get(reverse("evaluation:run_list")).content.decode()
    assert "1 worker up" in runs and "slurm-12@gpu-node-3 (SLURM job 12) (gpu)" in runs


def test_workers_not_seen_for_three_beats_or_stopped_are_not_up(client, researcher, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 10
    for name in ("fresh", "silent", "stopped"):
        services.worker_register(
            name=name, queues="cpu", host="h", pid=1, slurm_job_id="", slurm_job_name=""
        )
    Worker.objects.filter(name="silent").update(last_seen_at=timezone.now() - timedelta(seconds=31))
    services.worker_stopped(name="stopped")
    client.force_login(researcher)
    runs = client.get(reverse("evaluation:run_list")).content.decode()
    assert "1 worker up" in runs and "fresh" in runs and "silent" not in runs


# --- slurm_workers: what one pass submits --------------------------------------------------
@pytest.fixture
def cluster(monkeypatch):
    """A fake cluster: the jobs squeue lists, the tasks waiting, the jobs sbatch submits."""

    class Cluster:
        jobs: list[slurm.Job] = []
        waiting = 0
        submitted: list[str] = []

    fake = Cluster()
    fake.jobs, fake.submitted = [], []
    monkeypatch.setattr(slurm, "list_jobs", lambda name: list(fake.jobs))
    monkeypatch.setattr(slurm, "waiting_tasks", lambda app, queues: fake.waiting)

    def submit(config):
        job_id = str(100 + len(fake.submitted))
        fake.submitted.append(job_id)
        return job_id

    monkeypatch.setattr(slurm, "submit", submit)
    return fake


CONFIG = slurm.WorkerJobs(job_name="likeness-worker-gpu", max_workers=3)


def register_job_worker(job_id: str) -> str:
    name = f"slurm-{job_id}@node"
    services.worker_register(
        name=name, queues="gpu", host="node", pid=1, slurm_job_id=job_id,
        slurm_job_name=CONFIG.job_name,
    )  # fmt: skip
    return name


@pytest.mark.parametrize(
    ("waiting", "jobs", "registered", "submitted"),
    [
        (5, [], [], 3),  # capped by --max-workers
        (2, [], [], 2),  # one job per waiting task
        (0, [], [], 0),  # no work: no job
        (2, [("1", "PENDING")], [], 1),  # the pending job will take one of them
        (1, [("1", "RUNNING")], [], 0),  # running, its worker not up yet: it will take it
        (1, [("1", "RUNNING")], ["1"], 1),  # its worker is up and busy (else it had taken it)
        (4, [("1", "RUNNING"), ("2", "PENDING")], ["1"], 1),  # 3 jobs at most
    ],
)
def test_one_pass_submits_one_job_per_waiting_task_not_yet_covered(
    cluster, waiting, jobs, registered, submitted
):
    cluster.waiting = waiting
    cluster.jobs = [slurm.Job(id=job_id, state=state) for job_id, state in jobs]
    for job_id in registered:
        register_job_worker(job_id)
    result = slurm.reconcile(object(), CONFIG)
    assert len(cluster.submitted) == submitted == len(result.submitted)


@pytest.mark.parametrize(
    ("state", "ended"),
    [
        ("RUNNING", False),
        ("COMPLETING", False),  # SIGTERM'd: its worker may be handing the step back now
        ("FAILED", True),
        ("CANCELLED", True),
        ("PENDING", True),  # preempted and requeued: its next start is a new worker
    ],
)
def test_a_workers_job_state_says_whether_it_is_gone(cluster, state, ended):
    name = register_job_worker("41")
    cluster.jobs = [slurm.Job(id="41", state=state)]
    slurm.reconcile(object(), CONFIG)
    assert (Worker.objects.get(name=name).stopped_at is not None) == ended


def test_a_job_squeue_does_not_list_is_gone_only_once_its_worker_stopped_beating(cluster, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 10
    name = register_job_worker("41")
    cluster.jobs = []  # a site's squeue that leaves it out (another cluster, a filter)
    slurm.reconcile(object(), CONFIG)
    assert Worker.objects.get(name=name).stopped_at is None  # still beating: alive

    Worker.objects.filter(name=name).update(last_seen_at=timezone.now() - timedelta(seconds=31))
    slurm.reconcile(object(), CONFIG)
    assert Worker.objects.get(name=name).stopped_at is not None


def test_sbatch_gets_the_worker_settings_in_its_environment_not_split_on_commas(
    monkeypatch, tmp_path
):
    calls = []

    def sbatch(command, **kwargs):
        calls.append((command, kwargs["env"]))
        return subprocess.CompletedProcess(command, 0, stdout="77;cluster\n", stderr="")

    monkeypatch.setattr(subprocess, "run", sbatch)
    monkeypatch.setenv("SBATCH_PARTITION", "someone-elses")
    template = tmp_path / "worker.sbatch"
    template.write_text("#!/bin/bash\n")
    config = slurm.WorkerJobs(queues=("gpu", "cpu"), idle_exit_seconds=42, template=template)
    assert slurm.submit(config) == "77"
    ((command, env),) = calls
    assert "--export=ALL" in command and "--gres=gpu:1" in command
    assert env["LIKENESS_WORKER_QUEUES"] == "gpu,cpu" and env["WORKER_IDLE_EXIT_SECONDS"] == "42"
    assert "SBATCH_PARTITION" not in env  # a user's sbatch defaults do not apply behind our back


def test_a_pass_gives_back_the_steps_of_a_worker_whose_job_ended(
    cluster, run, enqueued, django_capture_on_commit_callbacks
):
    name = register_job_worker("41")
    step = run.steps.get()
    RunStep.objects.filter(pk=step.pk).update(status="extracting", claimed_by=name, attempts=1)
    cluster.jobs = [slurm.Job(id="41", state="RUNNING")]
    assert slurm.reconcile(object(), CONFIG).steps_requeued == 0  # still running: left alone

    cluster.jobs = [slurm.Job(id="41", state="FAILED")]  # its worker was killed
    with django_capture_on_commit_callbacks(execute=True):
        result = slurm.reconcile(object(), CONFIG)
    step.refresh_from_db()
    assert result.steps_requeued == 1 and (step.status, step.claimed_by) == ("queued", "")
    assert enqueued == [("evaluation.extract_embeddings", step.pk)]
    assert Worker.objects.get(name=name).stopped_at is not None


def test_a_missing_sbatch_says_where_to_run_the_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(slurm.SlurmError, match="squeue is not on PATH"):
        slurm.list_jobs("x")


def test_jobs_that_end_before_their_worker_starts_slow_submissions_to_one_at_a_time(cluster):
    starts = slurm.Starts()
    cluster.waiting = 5
    slurm.reconcile(object(), CONFIG, starts)
    assert cluster.submitted == ["100", "101", "102"]  # --max-workers 3

    cluster.jobs = []  # all three ended before their worker registered (a broken venv, say)
    slurm.reconcile(object(), CONFIG, starts)
    assert starts.failed_in_a_row == 3 and cluster.submitted[3:] == ["103"]  # one at a time

    cluster.jobs = [slurm.Job(id="103", state="RUNNING")]
    slurm.reconcile(object(), CONFIG, starts)
    assert cluster.submitted[4:] == []  # not while that one has not started

    register_job_worker("103")  # it started: back to one job per waiting task
    slurm.reconcile(object(), CONFIG, starts)
    assert starts.failed_in_a_row == 0 and cluster.submitted[4:] == ["104", "105"]
