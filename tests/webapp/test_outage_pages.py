"""A web page that meets an unreachable database, task queue or object store answers 503
and says so."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings
from django.db import connections
from django.urls import reverse
from kombu.exceptions import OperationalError as KombuOperationalError

from evaluation import views as evaluation_views
from evaluation.storage import StoreUnreachable
from tests.api.test_errors import unreachable_database_error

pytestmark = pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="an outage of a database server needs a database server",
)


@pytest.fixture
def anonymous(client):
    client.raise_request_exception = False
    return client


def test_a_page_during_a_database_outage_is_a_503_that_says_so(anonymous, monkeypatch, db):
    down = unreachable_database_error()

    def unreachable(*args, **kwargs):
        raise down

    monkeypatch.setattr(evaluation_views, "render", unreachable)
    response = anonymous.get(reverse("evaluation:leaderboards"))
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    page = response.content.decode()
    assert "The database is unreachable (it may be restarting)" in page
    assert "Server Error" not in page
    assert "Content-Security-Policy" in response.headers


def test_a_page_during_an_object_store_outage_is_a_503_that_says_so(anonymous, monkeypatch, db):
    def unreachable(*args, **kwargs):
        raise StoreUnreachable("The object store at http://10.0.0.9:9000 cannot be reached")

    monkeypatch.setattr(evaluation_views, "render", unreachable)
    response = anonymous.get(reverse("evaluation:leaderboards"))
    assert response.status_code == 503 and response["Retry-After"] == "30"
    page = response.content.decode()
    assert "The file store (object storage) is unreachable" in page
    assert "10.0.0.9" not in page  # the store's address is for the log, not the page


@pytest.mark.django_db(transaction=True)
def test_a_real_database_outage_renders_without_touching_the_database(anonymous):
    """The connection itself is refused (the server is away): the page renders all the same."""
    backend = connections["default"]
    saved = dict(backend.settings_dict)
    backend.close()
    try:
        backend.settings_dict.update(HOST="127.0.0.1", PORT=_closed_port())
        response = anonymous.get(reverse("evaluation:leaderboards"))
    finally:
        backend.close()
        backend.settings_dict.clear()
        backend.settings_dict.update(saved)
    assert response.status_code == 503, response.content.decode()[:500]
    assert "The database is unreachable" in response.content.decode()


def test_a_page_during_a_task_queue_outage_is_a_503(anonymous, monkeypatch, db):
    def unreachable(*args, **kwargs):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(evaluation_views, "render", unreachable)
    response = anonymous.get(reverse("evaluation:leaderboards"))
    assert response.status_code == 503
    assert "task queue (Celery broker) is unreachable" in response.content.decode()


def test_other_errors_stay_internal_errors(anonymous, monkeypatch, db):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(evaluation_views, "render", broken)
    response = anonymous.get(reverse("evaluation:leaderboards"))
    assert response.status_code == 500


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
