"""Fixtures of the REST API tests: personas with their clients, and a small real catalogue
(a text dataset, the shipped MiniLM model, a run, judgments and a study with responses).

Runs are executed in-process through the services the Celery tasks call; messages meant for
the broker are recorded instead of sent.
"""

from __future__ import annotations

import csv
import io
import itertools
from typing import Any

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services as study_services
from annotation.models import Study
from annotation.services import Answer, ItemPlan
from evaluation import services
from evaluation.imports.judgments import judgments_import
from evaluation.metrics import knn_entry
from evaluation.models import HumanJudgments, Run
from tests.conftest import make_text_dataset, make_text_model
from tests.factories import AdminFactory, UserFactory

keys = (f"api-key-{n}" for n in itertools.count())


@pytest.fixture(autouse=True)
def fresh_throttles():
    """Throttle counters live in the cache; each test starts with none."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin():
    return AdminFactory(username="ada", email="ada@example.org", password="ada-pass-123")


@pytest.fixture
def participant_user():
    """A participant who logs in to take studies: an account, but not staff."""
    return UserFactory(username="pia", password="pia-pass-123")


def token_client(user: Any) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(researcher) -> APIClient:
    """The researcher's scripted client: token authentication."""
    return token_client(researcher)


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


def error(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error body of the API."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def csv_file(name: str, header: list[str], rows: list[list[Any]]) -> SimpleUploadedFile:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return SimpleUploadedFile(name, buffer.getvalue().encode(), content_type="text/csv")


def run_steps(run: Run, worker: str = "w1") -> None:
    """What the workers do for each step: extract, then score."""
    for step in run.steps.all():
        services.step_extract(step_id=step.pk, worker=worker)
        services.step_score(step_id=step.pk, worker=worker)


@pytest.fixture
def text_catalogue(researcher, enqueued) -> dict[str, Any]:
    dataset = make_text_dataset(user=researcher)
    model = make_text_model()
    run = services.run_create(
        dataset=dataset,
        models=[model],
        metrics=[knn_entry(k=1, split="loo")],
        created_by=researcher,
    )
    return {"dataset": dataset, "model": model, "run": run, "target": dataset.targets.get()}


def pairs_judgments(dataset, name: str = "similarity") -> HumanJudgments:
    """Ratings of four pairs of the dataset's sentences by two raters, matched by text."""
    texts = list(dataset.stimuli.order_by("order").values_list("text", flat=True))
    rows = []
    for rater, shift in (("r1", 0.0), ("r2", 0.5)):
        rows += [
            [texts[0], texts[1], 4.0 + shift, rater],
            [texts[0], texts[4], 1.0 + shift, rater],
            [texts[2], texts[3], 3.5 + shift, rater],
            [texts[5], texts[6], 4.5 - shift, rater],
        ]
    return judgments_import(
        file=csv_file("ratings.csv", ["a", "b", "value", "participant"], rows),
        format="pairs",
        name=name,
        dataset=dataset,
        match="text",
        scale_min=0,
        scale_max=5,
    )


@pytest.fixture
def answered_study(researcher) -> Study:
    """A pair-rating study over eight sentences, two participants with four ratings each."""
    study = study_services.study_create(
        dataset=make_text_dataset(name="sentences for a study"),
        name="Sentence similarity",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=2,
        trials_per_session=4,
        created_by=researcher,
    )
    study_services.study_set_status(study=study, status="open")
    for external_id, value in (("P1", 3), ("P2", 5)):
        participant = study_services.participant_start(study=study, external_id=external_id)
        while (trial := study_services.trial_current(participant=participant)) is not None:
            study_services.response_submit(
                participant=participant,
                answer=Answer(
                    trial_id=trial.pk, idempotency_key=next(keys), value=value, rt_ms=1500
                ),
            )
    return study


# --- Calling the WSGI application directly ----------------------------------------------------
class CountingInput(io.BytesIO):
    """A request body that remembers how much of it the server read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


@pytest.fixture
def wsgi_app():
    """The project's WSGI application, kept inside the test's transaction.

    Django closes the database connection at the end of each request (request_finished),
    which would end the test's transaction; its own test client disconnects that handler,
    and so does this fixture.
    """
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
