"""A real Celery worker in a subprocess, on the test PostgreSQL database and Redis.

Each test that uses ``start_worker`` runs with ``transactional_db`` so that the worker, a
separate process, sees the rows the test commits.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from evaluation import services
from evaluation.imports.stimuli import dataset_import_images
from evaluation.metrics import knn_entry
from evaluation.models import Run, RunStep
from tests.conftest import REPO_ROOT, make_timm_model
from webapp.demo import digits_zip

WORKER_READY_SECONDS = 90


class WorkerProcess:
    """``celery worker`` on both queues; killed as a whole process group."""

    def __init__(
        self, env: dict[str, str], name: str, log_path: Path, queues: str = "gpu,cpu"
    ) -> None:
        self.env, self.name, self.log_path, self.queues = env, name, log_path, queues
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--queues",
                self.queues,
                "--concurrency",
                "1",
                "--hostname",
                self.name,
                "--loglevel",
                "info",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes()[offset:]:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"Worker {self.name} did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as when a machine dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def database_url() -> str:
    """The test database's address, for processes the tests start (workers, servers)."""
    db = connection.settings_dict
    user = f"{db['USER']}@" if db.get("USER") else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{user}{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}"


@pytest.fixture
def worker_env(transactional_db, isolated_storage: Path) -> dict[str, str]:
    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), "integration tests run on Redis (make test sets it)"
    redis.Redis.from_url(broker).flushdb()  # no message left over from an earlier test
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "EMBEDDINGS_ROOT": str(settings.EMBEDDINGS_ROOT),
        "LIKENESS_VAR_DIR": str(isolated_storage / "var"),
        "EXTRACTION_BATCH_SIZE": "16",
        "EXTRACTION_CHUNK_SIZE": "128",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture
def start_worker(worker_env, isolated_storage: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(name: str = "itest@%h", queues: str = "gpu,cpu") -> WorkerProcess:
        log = isolated_storage / f"worker-{len(workers)}.log"
        worker = WorkerProcess(worker_env, name, log, queues)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


def wait_for(
    condition: Callable[[], object], *, timeout: float, message: Callable[[], str]
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(message())


def long_extraction_run() -> Run:
    """One small model over 1200 digits, scored by two metrics: an extraction long enough
    (chunks of 128, see worker_env) to be interrupted part-way."""
    dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=1200)))
    return services.run_create(
        dataset=dataset,
        models=[make_timm_model("resnet-tiny", "test_resnet")],
        metrics=[knn_entry(k=5, split="loo"), knn_entry(k=3, split="holdout")],
    )


def extracting_past(step: RunStep, done: int = 300) -> Callable[[], bool]:
    """For wait_for: the step is extracting and has at least ``done`` stimuli behind it."""

    def check() -> bool:
        step.refresh_from_db()
        return step.status == "extracting" and step.processed >= done

    return check
