"""The whole deployment of docker/compose.yml, started at once on this machine without Docker.

docker/compose.yml is read as the single source of truth: every service it starts by default
(except PostgreSQL and Redis, whose places the test run's own servers take) runs here with
the command and the environment its container gets: the `migrate` one-shot (check_services,
then migrate), then web (gunicorn with gunicorn.conf.py), worker-cpu, worker-gpu (the
extraction worker), beat and Flower. Only what a container changes is changed: its paths
under /data become a temporary folder, published ports become free loopback ports, the env
file's secrets and URLs point at the test database and this test's Redis database, and the
GPU worker extracts on the CPU (EXTRACTION_DEVICE=cpu, as `--profile cpu-only` does). Of the
env file's knobs, three are set: one web process (WEB_WORKERS=1) on a shared 2-core machine,
worker names of their own (LIKENESS_NODE), and static files served from the source
(STATIC_MANIFEST=0: the image collects them when it is built).

Then: /healthz reports the database and the broker, Flower (behind the basic auth the compose
command sets) lists both workers on their queues, beat passes its compose health check, and a
small k-NN evaluation goes through the stack: extraction on worker-gpu, scoring on
worker-cpu, the score on the leaderboard that gunicorn serves. Every process is started in
its own session and its whole process group is stopped afterwards, whatever happened.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from django.db import connection
from django.urls import reverse

from evaluation import services
from evaluation.metrics import knn_entry
from evaluation.models import Score
from tests.conftest import REPO_ROOT, make_image_dataset, make_timm_model
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yml"
VENV_BIN = Path(sys.executable).parent
SERVERS = {"postgres", "redis"}  # the test run's own PostgreSQL and Redis stand in for these
ONE_SHOT = "migrate"
LONG_RUNNING = ("web", "worker-cpu", "worker-gpu", "beat", "flower")
CONTAINER_DATA = "/data/"  # where compose mounts the volumes
START_SECONDS = 90
STOP_SECONDS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def default_services() -> dict[str, Any]:
    """The services `docker compose up` starts (those without a profile), as written."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: service for name, service in raw.items() if not service.get("profiles")}


def container_port(service: dict[str, Any]) -> str:
    """The container side of the service's one published port (`${X:-8000}:8000` -> 8000)."""
    (published,) = service["ports"]
    return str(published).rsplit(":", 1)[1]


class Stack:
    """The compose services as processes here, each in its own session (process group)."""

    def __init__(self, services: dict[str, Any], env_file: dict[str, str], root: Path) -> None:
        self.services, self.env_file, self.root = services, env_file, root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {
            name: free_port()
            for name, s in services.items()
            if s.get("ports") and name not in SERVERS
        }

    def host_path(self, text: str) -> str:
        return text.replace(CONTAINER_DATA, f"{self.root / 'data'}/")

    def env(self, name: str) -> dict[str, str]:
        """The env file, then the service's own `environment` (which wins, as in compose)
        with its container paths mapped here; no GPU here, so extraction runs on the CPU."""
        own = {
            k: self.host_path(str(v)) for k, v in self.services[name].get("environment", {}).items()
        }
        env = {**os.environ, **self.env_file, **own}
        if "EXTRACTION_DEVICE" in own:
            env["EXTRACTION_DEVICE"] = "cpu"
        return env

    def argv(self, name: str) -> list[str]:
        """The service's command as its container runs it: compose's `$$` escapes are
        literal `$` for the shell, container paths map here, its port is a free one."""
        argv = []
        for word in self.services[name]["command"]:
            assert "$" not in word.replace("$$", ""), (
                f"{name}: compose would interpolate {word!r}; this test runs commands as written"
            )
            argv.append(self.host_path(word.replace("$$", "$")))
        if name in self.ports:
            argv = [self.published_here(name, word) for word in argv]
            assert any(str(self.ports[name]) in word for word in argv), (name, argv)
        return argv

    def published_here(self, name: str, word: str) -> str:
        """The port the container listens on, on all its interfaces, is a free loopback port
        here (`0.0.0.0:8000` -> `127.0.0.1:PORT`, `--port=5555` -> `--port=PORT`)."""
        port = container_port(self.services[name])
        here = str(self.ports[name])
        word, found = re.subn(rf"0\.0\.0\.0:{port}\b", f"127.0.0.1:{here}", word)
        word, also = re.subn(rf"--port={port}\b", f"--port={here}", word)
        assert found + also <= 1, word
        return word

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self, name: str) -> None:
        with self.log(name).open("wb") as log:  # the child keeps its own copy
            self.processes[name] = subprocess.Popen(
                self.argv(name),
                cwd=REPO_ROOT,
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_exit(self, name: str) -> int:
        return self.processes[name].wait(timeout=START_SECONDS)

    def logs(self, *names: str) -> str:
        return "\n".join(
            f"--- {name} ---\n{self.log(name).read_text(errors='replace')[-3000:]}"
            for name in names or self.processes
            if self.log(name).exists()
        )

    def alive_or_fail(self) -> None:
        for name, process in self.processes.items():
            if name != ONE_SHOT and process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.logs(name)}")

    def stop_all(self) -> None:
        """SIGTERM every process group at once (what `docker compose down` sends), SIGKILL
        what is left after STOP_SECONDS."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.processes.values():  # children a SIGTERMed leader left behind
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def stack(transactional_db, tmp_path: Path, settings) -> Iterator[Stack]:
    services = default_services()
    assert set(services) - SERVERS == {ONE_SHOT, *LONG_RUNNING}, (
        "docker/compose.yml starts services this test does not: start them here too"
    )
    db = connection.settings_dict
    user = f"{db['USER']}@" if db.get("USER") else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), "the deployment tests run on Redis (make test sets it)"
    redis.Redis.from_url(broker).flushdb()  # this test's own Redis database
    env_file = {
        # What .env holds in production (.env.example): secrets and where the servers are.
        "SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": f"postgres://{user}{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(12)}",
        # Deployment knobs: one web process is enough here, names no other worker shares.
        "WEB_WORKERS": "1",
        "LIKENESS_NODE": f"stack-{secrets.token_hex(4)}",
        # The image collects static files when it is built; here they are served from the
        # source, as in the rest of the suite.
        "STATIC_MANIFEST": "0",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = Stack(services, env_file, tmp_path)
    for service in services.values():  # the volumes' mount points, as folders here
        for value in service.get("environment", {}).values():
            if str(value).startswith(CONTAINER_DATA):
                Path(done.host_path(str(value))).mkdir(parents=True, exist_ok=True)
    # The test process writes stimuli where the workers read them (the shared media volume).
    web_env = done.env("web")
    settings.MEDIA_ROOT = Path(web_env["MEDIA_ROOT"])
    settings.EMBEDDINGS_ROOT = Path(web_env["EMBEDDINGS_ROOT"])
    try:
        yield done
    finally:
        done.stop_all()


def get(url: str, *, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": "127.0.0.1"})
    if auth:
        request.add_header("Authorization", f"Basic {base64.b64encode(auth.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""  # not listening yet


def answers(stack: Stack, url: str, **kwargs: Any) -> bytes | None:
    stack.alive_or_fail()
    status, body = get(url, **kwargs)
    return body if status == 200 else None


def test_the_compose_stack_runs_an_evaluation(stack):
    web = f"http://127.0.0.1:{stack.ports['web']}"
    flower = f"http://127.0.0.1:{stack.ports['flower']}"
    auth = stack.env_file["FLOWER_BASIC_AUTH"]
    node = stack.env_file["LIKENESS_NODE"]

    # Compose's order: Flower needs only Redis; the rest waits for the migration.
    stack.start("flower")
    stack.start(ONE_SHOT)
    assert stack.wait_exit(ONE_SHOT) == 0, stack.logs(ONE_SHOT)
    migrated = stack.log(ONE_SHOT).read_text()
    assert "Database and broker are reachable." in migrated, migrated
    assert "No migrations to apply." in migrated, migrated  # pytest-django migrated it
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        stack.start(name)

    def logs() -> str:
        return stack.logs()

    health = wait_for(lambda: answers(stack, f"{web}/healthz"), timeout=START_SECONDS, message=logs)
    assert json.loads(health) == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "broker_transport": "redis",
    }
    assert "Using worker: gthread" in stack.log("web").read_text()  # gunicorn.conf.py was read

    wait_for(lambda: answers(stack, f"{flower}/healthcheck"), timeout=START_SECONDS, message=logs)
    assert get(f"{flower}/api/workers")[0] == 401  # the compose command's basic auth holds
    extraction = f"{stack.services['worker-gpu']['environment']['WORKER_NAME']}@{node}"
    expected = {f"cpu@{node}": ["cpu"], extraction: ["gpu"]}

    def both_workers_listed() -> dict[str, Any] | None:
        body = answers(stack, f"{flower}/api/workers?refresh=1", auth=auth)
        workers = json.loads(body) if body else {}
        return workers if set(expected) <= set(workers) else None

    workers = wait_for(both_workers_listed, timeout=START_SECONDS, message=logs)
    for name, queues in expected.items():
        assert [q["name"] for q in workers[name]["active_queues"]] == queues, workers[name]

    beat_check = stack.services["beat"]["healthcheck"]["test"]
    assert beat_check[0] == "CMD-SHELL"
    wait_for(
        lambda: subprocess.run(["sh", "-c", stack.host_path(beat_check[1])]).returncode == 0,
        timeout=START_SECONDS,
        message=logs,
    )

    run = services.run_create(
        dataset=make_image_dataset(),
        models=[make_timm_model()],
        metrics=[knn_entry(k=5, split="loo")],
    )

    def finished() -> bool:
        stack.alive_or_fail()
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout=START_SECONDS, message=logs)
    assert run.status == "succeeded", f"{run.error_message}\n{logs()}"
    step = run.steps.get()  # where each phase ran: the run page shows it
    assert (step.extracted_by, step.scored_by) == (extraction, f"cpu@{node}")
    score = Score.objects.get(run=run)
    status, board = get(f"{web}{reverse('evaluation:leaderboard', args=[score.target_id])}")
    assert status == 200 and "test-vit" in board.decode(), board[:2000]
