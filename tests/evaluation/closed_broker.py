"""The task queue unreachable for real: Celery pointed at a port nothing listens on, so
sending a task raises kombu's OperationalError (connection refused) after Celery's own
retries, as with a broker that is down."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from workers.celery import app as celery_app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fresh_connections() -> None:
    """Forget pooled connections, so the next send connects to the URL now configured."""
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def closed_broker(monkeypatch) -> Iterator[dict]:
    """Sends fail until ``state["up"] = True``; from then they are recorded, not sent."""
    state: dict = {"up": False, "published": []}
    send_task = celery_app.send_task

    def send(task_name: str, args: list[int], **options: object) -> object:
        if state["up"]:
            state["published"].append((task_name, *args))
            return None
        return send_task(task_name, args=args, **options)

    # Celery prefers the environment's CELERY_BROKER_URL to its configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setattr(celery_app, "send_task", send)
    _fresh_connections()
    yield state
    monkeypatch.undo()
    _fresh_connections()
