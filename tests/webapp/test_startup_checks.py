"""A missing setting or an unreachable service stops start-up with a message saying what
to fix (run as a user would: a separate `manage.py` process)."""

from __future__ import annotations

import os
import subprocess
import sys

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
    assert response.status_code == 200 and response.content == b"ok"
    assert "Set-Cookie" not in response


def test_healthz_reports_an_unreachable_database(client, monkeypatch):
    from django.db import connection

    def refuse():
        raise OSError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503 and b"database unreachable" in response.content
