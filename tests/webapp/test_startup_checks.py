"""A missing setting or an unreachable service stops start-up with a message saying what
to fix (run as a user would: a separate `manage.py` process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_secret_key_is_explained(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT,
        env={**env, "DEBUG": "0", "LIKENESS_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "DATABASE_URL": "postgres://postgres@127.0.0.1:1/likeness",
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
            },
            "The database at '127.0.0.1' (postgresql) is unreachable",
        ),
        (
            {
                "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
                "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
            },
            "The Celery broker at 'redis://127.0.0.1:1/0' is unreachable",
        ),
        ({"DATABASE_URL": "mysql+nope:/x"}, "DATABASE_URL='mysql+nope:/x' cannot be parsed"),
    ],
)
def test_unreachable_service_is_named(env, message):
    done = manage("check_services", **env)
    assert done.returncode != 0
    assert message in done.stderr


def test_reachable_services_pass():
    done = manage(
        "check_services",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/15",
    )
    assert done.returncode == 0, done.stderr
    assert "reachable" in done.stdout


@pytest.mark.django_db
def test_healthz_answers_without_an_allowed_host_or_a_session(client, settings):
    settings.ALLOWED_HOSTS = ["likeness.example"]
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")  # a probe by IP address
    assert response.status_code == 200
    assert "Set-Cookie" not in response
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_healthz_reports_the_database_and_the_broker(client, settings):
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "the suite runs on Redis"
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "broker_transport": "redis",
    }


def test_healthz_reports_an_unreachable_database(client, monkeypatch):
    from django.db import connection

    def refuse():
        raise OSError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"] == "unreachable (OSError)"
    assert response.json()["broker"] == "ok"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db
def test_healthz_reports_an_unreachable_broker_at_once(client, settings, caplog):
    settings.CELERY_BROKER_URL = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 1.0  # one attempt, no retry after a pause
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["broker_transport"] == "redis"
    assert body["broker"].startswith("unreachable (") and body["status"] == "unavailable"
    assert "s3cret" not in response.content.decode()  # the public body names no address
    assert "redis broker is unreachable" in caplog.text  # the log says where


@pytest.mark.django_db
def test_healthz_reports_both_when_both_are_down(client, settings, monkeypatch):
    from django.db import connection

    def refuse():
        raise OSError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"].startswith("unreachable") and body["broker"].startswith("unreachable")


@pytest.mark.django_db
def test_healthz_checks_the_folders_of_the_embedded_filesystem_broker(client, settings, tmp_path):
    folders = {key: tmp_path / key for key in ("queue", "control")}
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
    }
    missing = client.get("/healthz")
    assert missing.status_code == 503
    assert missing.json()["broker"] == "unreachable (NotADirectoryError)"
    assert missing.json()["broker_transport"] == "filesystem"
    for folder in folders.values():
        folder.mkdir()
    ready = client.get("/healthz")
    assert ready.status_code == 200 and ready.json()["broker"] == "ok"
