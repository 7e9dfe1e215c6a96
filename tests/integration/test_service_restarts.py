"""Recovery from restarts of the broker and of the database, measured on real services: the
test starts its own redis-server and its own PostgreSQL cluster (initdb + pg_ctl, in a
temporary folder, on free ports; never the shared ones), a real Celery worker on them, and
creates runs with the real `manage.py evaluate`. Each scenario prints its recovery time:

- broker restarted without persistence while runs wait in it (their messages are gone);
- a run created while the broker is down (stored, sent once the broker is back);
- the database restarted while a worker extracts (its task cannot even record a failure).

Each run must finish within RECOVERY_BOUND_SECONDS, with one Score per key, instead of the
stall reaper's RUN_STALL_SECONDS (15 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import REPO_ROOT, SENTENCES, texts_csv
from tests.integration.conftest import WorkerProcess

pytestmark = pytest.mark.integration

RECOVERY_BOUND_SECONDS = 90
PG_BIN = (
    Path(sorted(glob("/usr/lib/postgresql/*/bin"))[-1])
    if glob("/usr/lib/postgresql/*/bin")
    else None
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class OwnRedis:
    """redis-server as on this project's machines: no persistence, so a restart loses every
    queued message (the case the recovery is for)."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("the test's redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class OwnPostgres:
    def __init__(self, folder: Path) -> None:
        assert PG_BIN is not None
        self.port, self.folder = free_port(), folder
        self.data, self.log = folder / "data", folder / "server.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/likeness"

    def ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    *args,
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def create(self) -> None:
        subprocess.run(
            as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.ctl("start")
        subprocess.run(
            as_postgres(
                [
                    str(PG_BIN / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "likeness",
                ]
            ),
            check=True,
        )

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(
            self.url.replace("postgres://", "postgresql://"), connect_timeout=5
        ) as conn:
            return conn.execute(sql, params).fetchall()


@dataclass
class Stack:
    redis: OwnRedis
    postgres: OwnPostgres
    env: dict[str, str]
    folder: Path

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stderr[-3000:]}"
        return done

    def evaluate(self, *models: str, dataset: str = "sentences") -> dict:
        done = self.manage("evaluate", "--dataset", dataset, "--model", *models, "--json")
        return json.loads(done.stdout)

    def worker(self, name: str) -> WorkerProcess:
        return WorkerProcess(self.env, name, self.folder / f"{name.split('@')[0]}.log").start()

    def run_state(self, run_id: int) -> tuple[str, list[tuple]]:
        try:
            (status,) = self.postgres.query(
                "SELECT status FROM evaluation_run WHERE id = %s", run_id
            )[0]
            keys = self.postgres.query(
                "SELECT model_id, layer, metric_key, target_id, count(*) FROM evaluation_score "
                "WHERE run_id = %s GROUP BY 1, 2, 3, 4",
                run_id,
            )
        except psycopg.OperationalError:
            return "database unreachable", []
        return status, keys

    def wait_finished(self, run_id: int, since: float, log: Callable[[], str]) -> float:
        """Seconds from ``since`` until the run finished (asserted within the bound)."""
        deadline = since + RECOVERY_BOUND_SECONDS
        status = ""
        while time.monotonic() < deadline:
            status, _ = self.run_state(run_id)
            if status in {"succeeded", "partly_failed", "failed", "cancelled"}:
                return time.monotonic() - since
            time.sleep(0.25)
        raise AssertionError(
            f"run {run_id} still {status!r} {RECOVERY_BOUND_SECONDS} s after the restart:\n" + log()
        )

    def assert_scored_once(self, run_id: int, keys: int) -> None:
        status, counts = self.run_state(run_id)
        assert status == "succeeded", self.postgres.query(
            "SELECT error_message FROM evaluation_run WHERE id = %s", run_id
        )
        assert len(counts) == keys and {row[-1] for row in counts} == {1}, counts


SEED = """
import io
from evaluation import services
from webapp.demo import digits_zip
from evaluation.imports.stimuli import dataset_import_images, dataset_import_texts
dataset_import_texts(name="sentences", upload=io.BytesIO(TEXT.encode()))
dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=600)))
for name in ("tfidf-a", "tfidf-b"):
    services.model_register(name=name, source="baseline", identifier="tfidf")
services.model_register(name="tiny-resnet", source="timm", identifier="test_resnet",
                        weights="untrained")
"""
TEXT = texts_csv(SENTENCES)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if PG_BIN is None or shutil.which("redis-server") is None:
        pytest.skip("needs PostgreSQL's server programs and redis-server")
    # Not under pytest's tmp_path: the postgres user must be able to enter the folder.
    folder = Path(tempfile.mkdtemp(prefix="likeness-restarts-"))
    folder.chmod(0o755)
    pg_folder = folder / "pg"
    pg_folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(pg_folder, "postgres", "postgres")
    own_redis, own_postgres = OwnRedis(folder), OwnPostgres(pg_folder)
    own_redis.start()
    own_postgres.create()
    env = {
        **os.environ,
        "DATABASE_URL": own_postgres.url,
        "CELERY_BROKER_URL": own_redis.url,
        "MEDIA_ROOT": str(folder / "media"),
        "EMBEDDINGS_ROOT": str(folder / "embeddings"),
        "LIKENESS_VAR_DIR": str(folder / "var"),
        "EXTRACTION_BATCH_SIZE": "16",
        "EXTRACTION_CHUNK_SIZE": "64",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "test-only"),
    }
    env.pop("TEST_DATABASE_NAME", None)
    built = Stack(own_redis, own_postgres, env, folder)
    try:
        built.manage("migrate", "--noinput")
        built.manage("shell", "-c", f"TEXT = {TEXT!r}\n{SEED}")
        yield built
    finally:
        own_redis.stop()
        try:
            own_postgres.ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)


def test_the_broker_view_lists_queued_and_taken_but_unacknowledged_step_messages(
    stack, monkeypatch
):
    """What keeps the sweep from sending twice: a message still queued, or taken by a worker
    that has not acknowledged it (acks_late: until its task ends), counts as live."""
    from celery import Celery

    from workers.broker import live_step_messages

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to broker=
    app = Celery("probe", broker=stack.redis.url)
    assert app.conf.broker_url == stack.redis.url
    app.conf.task_routes = {"evaluation.extract_embeddings": {"queue": "gpu"}}
    app.conf.task_default_queue = "cpu"
    redis.Redis.from_url(stack.redis.url).flushdb()
    app.send_task("evaluation.extract_embeddings", args=[101])
    app.send_task("evaluation.extract_embeddings", args=[102])
    app.send_task("evaluation.score_embeddings", args=[103])
    app.send_task("evaluation.inspect_model", args=[104])  # not a step's: not listed
    with app.connection_for_read() as connection:
        taken = connection.SimpleQueue("gpu", no_ack=False).get(timeout=5)  # not acknowledged
        assert live_step_messages(app) == {
            ("evaluation.extract_embeddings", 101),
            ("evaluation.extract_embeddings", 102),
            ("evaluation.score_embeddings", 103),
        }
        taken.ack()
        assert len(live_step_messages(app)) == 2
    redis.Redis.from_url(stack.redis.url).flushdb()


def test_broker_restarts_lose_no_run(stack):
    worker = stack.worker("restarts@%h")
    try:
        # 1. A restart without persistence while a run's messages wait in the broker.
        os.killpg(worker.process.pid, signal.SIGSTOP)  # the worker cannot take them first
        run = stack.evaluate("tfidf-a", "tfidf-b")["run"]
        client = redis.Redis.from_url(stack.redis.url)
        queued = [json.loads(m)["headers"]["task"] for m in client.lrange("gpu", 0, -1)]
        assert queued.count("evaluation.extract_embeddings") == 2, "the run's messages wait"
        stack.redis.stop()
        stack.redis.start()
        assert client.llen("gpu") == 0, "the restart lost them"
        restarted = time.monotonic()
        os.killpg(worker.process.pid, signal.SIGCONT)
        lost = stack.wait_finished(run["id"], restarted, worker.log)
        stack.assert_scored_once(run["id"], keys=2)

        # 2. A run created while the broker is down: stored, and said so; no duplicate.
        stack.redis.stop()
        document = stack.evaluate("tfidf-a")
        assert document["run"]["status"] == "queued" and document["run"]["waiting_for_queue"]
        stack.redis.start()
        back = time.monotonic()
        created_while_down = stack.wait_finished(document["run"]["id"], back, worker.log)
        stack.assert_scored_once(document["run"]["id"], keys=1)
        assert stack.postgres.query("SELECT count(*) FROM evaluation_run")[0][0] == 2
    finally:
        worker.stop()
    print(
        f"\nRecovery after a broker restart that lost the queued messages: {lost:.1f} s"
        f"\nRun created while the broker was down, finished after it came back: "
        f"{created_while_down:.1f} s"
    )


def test_a_database_restart_mid_extraction_loses_no_run(stack):
    worker = stack.worker("dbrestart@%h")
    try:
        run = stack.evaluate("tiny-resnet", dataset="digits")["run"]

        def extracting() -> bool:
            rows = stack.postgres.query(
                "SELECT status, processed FROM evaluation_runstep WHERE run_id = %s", run["id"]
            )
            return rows[0][0] == "extracting" and rows[0][1] >= 64

        deadline = time.monotonic() + 180
        while not extracting():
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.1)
        stack.postgres.ctl("restart", "-m", "fast")
        back = time.monotonic()
        (step,) = stack.postgres.query(
            "SELECT status, processed FROM evaluation_runstep WHERE run_id = %s", run["id"]
        )
        assert step[0] == "extracting" and step[1] < 600, "the restart came too late to test"
        recovered = stack.wait_finished(run["id"], back, worker.log)
        stack.assert_scored_once(run["id"], keys=1)
    finally:
        worker.stop()
    print(f"\nRecovery after a database restart mid-extraction: {recovered:.1f} s")
    log = worker.log()
    assert "Database unreachable while working on run step" in log, log[-3000:]
    assert "held but no task was running" in log, log[-3000:]
