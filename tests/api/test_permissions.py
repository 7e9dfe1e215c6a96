"""Every API endpoint against every role: researchers and admins reach everything; logged-in
non-researchers (participants with an account) get 403 and anonymous callers 401, except for
the public leaderboard data and the API's documentation; refused writes change nothing.

The table is checked against the generated schema, so a new endpoint cannot be left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from annotation.models import Study
from evaluation.models import Dataset, HumanJudgments, PretrainedModel, Run
from tests.api.conftest import error, pairs_judgments, token_client
from tests.api.test_fuzz import embeddings_of
from tests.factories import EmbeddingImportFactory, ScoreFactory

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {name} placeholders are filled from the catalogue
    researcher_status: int  # what a researcher gets (a 400 for an empty body still got in)
    public: bool = False  # anyone may call it
    multipart: bool = False


# In this order, so that retrying comes before cancelling the queued run.
ENDPOINTS = [
    Endpoint("POST", "/api/auth/token/", 400, public=True),
    Endpoint("GET", "/api/models/", 200),
    Endpoint("POST", "/api/models/", 400),
    Endpoint("GET", "/api/models/{model}/", 200),
    Endpoint("GET", "/api/models/{model}/layers/", 200),
    Endpoint("GET", "/api/datasets/", 200),
    Endpoint("POST", "/api/datasets/", 400, multipart=True),
    Endpoint("GET", "/api/datasets/{dataset}/", 200),
    Endpoint("GET", "/api/datasets/{dataset}/stimuli/", 200),
    Endpoint("GET", "/api/runs/", 200),
    Endpoint("POST", "/api/runs/", 400),
    Endpoint("GET", "/api/runs/{run}/", 200),
    Endpoint("POST", "/api/runs/{run}/retry/", 409),
    Endpoint("POST", "/api/runs/{run}/cancel/", 200),
    Endpoint("GET", "/api/scores/", 200, public=True),
    Endpoint("GET", "/api/scores/{score}/", 200, public=True),
    Endpoint("GET", "/api/targets/", 200, public=True),
    Endpoint("GET", "/api/targets/{target}/", 200, public=True),
    Endpoint("GET", "/api/targets/{target}/comparisons/", 200, public=True),
    Endpoint("GET", "/api/studies/", 200),
    Endpoint("GET", "/api/studies/{study}/", 200),
    Endpoint("GET", "/api/studies/{study}/export/", 200),
    Endpoint("GET", "/api/judgments/", 200),
    Endpoint("POST", "/api/judgments/", 400, multipart=True),
    Endpoint("GET", "/api/judgments/{judgments}/", 200),
    Endpoint("GET", "/api/judgments/{judgments}/export/", 200),
    Endpoint("GET", "/api/targets/{pair_target}/human/", 200),
    Endpoint("GET", "/api/targets/{pair_target}/pairs/?models={model}", 200),
    Endpoint("GET", "/api/embeddings/", 200),
    Endpoint("POST", "/api/embeddings/", 400, multipart=True),
    Endpoint("GET", "/api/embeddings/{embeddings}/", 200),
    Endpoint("GET", "/api/embeddings/{embeddings}/download/", 200),
    Endpoint("GET", "/api/embeddings/{embeddings}/similarity/", 200),
    Endpoint("GET", "/api/embedding-imports/", 200),
    Endpoint("GET", "/api/embedding-imports/{embedding_import}/", 200),
    # One layer scored: no curve to draw (400), but the researcher got in.
    Endpoint("GET", "/api/figures/score-by-layer/?model={model}&target={target}", 400),
    Endpoint("GET", "/api/figures/differences/?target={target}&format=csv", 400, public=True),
    Endpoint("POST", "/api/models/{model}/archive/", 200),
    Endpoint("POST", "/api/models/{model}/unarchive/", 200),
    Endpoint("DELETE", "/api/models/{model}/", 409),  # scores, an unfinished run, open
    Endpoint("POST", "/api/datasets/{dataset}/archive/", 200),
    Endpoint("POST", "/api/datasets/{dataset}/unarchive/", 200),
    Endpoint("DELETE", "/api/datasets/{dataset}/", 409),  # scores, an unfinished run, open
    Endpoint("POST", "/api/targets/{target}/archive/", 200),
    Endpoint("POST", "/api/targets/{target}/unarchive/", 200),
    Endpoint("DELETE", "/api/targets/{target}/", 409),  # scores, an unfinished run, open
    Endpoint("POST", "/api/studies/{study}/archive/", 200),
    Endpoint("POST", "/api/studies/{study}/unarchive/", 200),
    Endpoint("DELETE", "/api/studies/{study}/", 409),  # scores, an unfinished run, open
    Endpoint("GET", "/api/schema/", 200, public=True),
    Endpoint("GET", "/api/docs/", 200, public=True),
    Endpoint("GET", "/api/redoc/", 200, public=True),
]
DOCUMENTATION = {"/api/schema/", "/api/docs/", "/api/redoc/"}


def test_the_table_covers_every_operation_of_the_schema():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    }
    placeholders = {
        "{model}": "{id}",
        "{dataset}": "{id}",
        "{run}": "{id}",
        "{score}": "{id}",
        "{target}": "{id}",
        "{study}": "{id}",
        "{judgments}": "{id}",
        "{pair_target}": "{id}",
        "{embeddings}": "{id}",
        "{embedding_import}": "{id}",
        "/figures/score-by-layer/": "/figures/{kind}/",
        "/figures/differences/": "/figures/{kind}/",
    }

    def generic(path: str) -> str:
        path = path.partition("?")[0]
        for name, value in placeholders.items():
            path = path.replace(name, value)
        return path

    tabled = {(e.method, generic(e.path)) for e in ENDPOINTS if e.path not in DOCUMENTATION}
    assert tabled == documented


@pytest.fixture
def catalogue(researcher, answered_study, text_catalogue) -> dict[str, Any]:
    run = text_catalogue["run"]
    score = ScoreFactory(
        run=run,
        model=text_catalogue["model"],
        target=text_catalogue["target"],
        layer="sentence_embedding",
        metric_key="knn(k=1,split=loo)",
        params={"k": 1, "split": "loo"},
        value=0.75,
        ci_low=0.41,
        ci_high=0.93,
        n=8,
    )
    judgments = pairs_judgments(text_catalogue["dataset"])
    return {
        "model": text_catalogue["model"].pk,
        "dataset": text_catalogue["dataset"].pk,
        "run": run.pk,
        "score": score.pk,
        "target": text_catalogue["target"].pk,
        "study": answered_study.pk,
        "judgments": judgments.pk,
        "pair_target": judgments.target.pk,
        "embeddings": embeddings_of(run).pk,
        "embedding_import": EmbeddingImportFactory().pk,
    }


def call(client: Client | APIClient, endpoint: Endpoint, catalogue: dict[str, Any]) -> Any:
    path = endpoint.path.format(**catalogue)
    if endpoint.method == "GET":
        return client.get(path)
    if endpoint.method == "DELETE":
        return client.delete(path)
    if endpoint.multipart:
        return client.post(path, {})  # an empty multipart form
    return client.post(path, "{}", content_type="application/json")


def state() -> tuple[Any, ...]:
    return (
        PretrainedModel.objects.count(),
        Dataset.objects.count(),
        HumanJudgments.objects.count(),
        Study.objects.count(),
        list(Run.objects.values_list("pk", "status")),
    )


def client_for(role: str, request: pytest.FixtureRequest) -> Client | APIClient:
    if role == "anonymous":
        return APIClient()
    user = request.getfixturevalue(
        {"admin": "admin", "researcher": "researcher", "non-staff": "participant_user"}[
            role.removesuffix(" (session)")
        ]
    )
    if role.endswith("(session)"):
        browser = Client()  # no CSRF checks: what is refused here is the role, not the form
        browser.force_login(user)
        return browser
    return token_client(user)


def expected(role: str, endpoint: Endpoint) -> int:
    if role.startswith(("admin", "researcher")) or endpoint.public:
        return endpoint.researcher_status
    return 401 if role == "anonymous" else 403


ROLES = [
    "admin",
    "researcher",
    "researcher (session)",
    "non-staff",
    "non-staff (session)",
    "anonymous",
]


@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(role, catalogue, request):
    client = client_for(role, request)
    before = state()
    mismatches = []
    for endpoint in ENDPOINTS:
        response = call(client, endpoint, catalogue)
        want = expected(role, endpoint)
        if response.status_code != want:
            mismatches.append((endpoint.method, endpoint.path, response.status_code, want))
            continue
        if want == 401:
            assert response["WWW-Authenticate"] == "Token"
            assert response.json() == error(
                "not_authenticated", "Authentication credentials were not provided."
            )
        elif want == 403:
            assert response.json() == error(
                "permission_denied",
                "Only researchers (active staff accounts) can use this endpoint.",
            )
    assert mismatches == []
    if not role.startswith(("admin", "researcher")):
        assert state() == before  # nothing created, the run still queued
