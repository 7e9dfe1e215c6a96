"""Schemathesis against the generated schema, in-process through the WSGI application: for
every operation, valid and invalid requests (random ids, and the ids of a real catalogue),
as a researcher. No answer may be a 5xx, every status code and body must be the documented
one, and invalid requests must be refused with a 4xx.

Each request runs in a savepoint that is rolled back, as if the database were in autocommit:
what one request writes or breaks does not leak into the next.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from django.db import transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from evaluation import services
from evaluation.models import EmbeddingSet
from tests.api.conftest import pairs_judgments
from tests.factories import EmbeddingImportFactory, ScoreFactory

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(180)]

EXAMPLES_PER_OPERATION = 12
TIME_BUDGET_SECONDS = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
RESOURCE = {  # first path segment -> catalogue key of an object that exists
    "models": "model",
    "datasets": "dataset",
    "runs": "run",
    "scores": "score",
    "targets": "target",
    "studies": "study",
    "judgments": "judgments",
    "embeddings": "embeddings",
    "embedding-imports": "embedding_import",
}


@pytest.fixture
def catalogue(answered_study, text_catalogue) -> dict[str, int]:
    score = ScoreFactory(
        run=text_catalogue["run"],
        model=text_catalogue["model"],
        target=text_catalogue["target"],
        layer="sentence_embedding",
        metric_key="knn(k=1,split=loo)",
        params={"k": 1, "split": "loo"},
        value=0.75,
        ci_low=0.41,
        ci_high=0.93,
        n=8,
        details={"k": 1},
    )
    # A second layer scored: the model's score-by-layer figure has a curve to draw.
    ScoreFactory(
        run=text_catalogue["run"],
        model=text_catalogue["model"],
        target=text_catalogue["target"],
        layer="0",
        metric_key="knn(k=1,split=loo)",
        params={"k": 1, "split": "loo"},
        value=0.5,
        n=8,
    )
    judgments = pairs_judgments(text_catalogue["dataset"])
    return {
        "model": text_catalogue["model"].pk,
        "dataset": text_catalogue["dataset"].pk,
        "run": text_catalogue["run"].pk,
        "score": score.pk,
        "target": text_catalogue["target"].pk,
        "study": answered_study.pk,
        "judgments": judgments.pk,
        "pair_target": judgments.target.pk,
        "embeddings": embeddings_of(text_catalogue["run"]).pk,
        "embedding_import": EmbeddingImportFactory().pk,
    }


def embeddings_of(run) -> EmbeddingSet:
    """The run's model's embeddings, extracted for real (eight sentences)."""
    step = run.steps.get()
    services.step_extract(step_id=step.pk, worker="fuzz")
    return EmbeddingSet.objects.get(model=step.model)


# Operations that answer 200 only for a pair target, and with a query naming real objects.
PAIR_TARGET_PATHS = {"/api/targets/{id}/human/", "/api/targets/{id}/pairs/"}


def strategies(operation: Any, catalogue: dict[str, int]) -> st.SearchStrategy:
    options = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        options.append(operation.as_strategy(generation_mode=mode))
        if "{id}" in operation.path:
            known = catalogue[RESOURCE[operation.path.split("/")[2]]]
            options.append(
                operation.as_strategy(generation_mode=mode, path_parameters={"id": known})
            )
        if operation.path == "/api/figures/{kind}/":  # a figure that exists
            options.append(
                operation.as_strategy(
                    generation_mode=mode,
                    path_parameters={"kind": "score-by-layer"},
                    query={"model": str(catalogue["model"]), "target": str(catalogue["target"])},
                )
            )
        if operation.path in PAIR_TARGET_PATHS:
            query = {"models": str(catalogue["model"])} if "pairs" in operation.path else {}
            options.append(
                operation.as_strategy(
                    generation_mode=mode,
                    path_parameters={"id": catalogue["pair_target"]},
                    query=query,
                )
            )
    return st.one_of(options)


def fuzz(operation: Any, catalogue: dict[str, int], auth: dict[str, str]) -> set[int]:
    """Send the operation's generated requests; return the status codes it answered."""
    statuses: set[int] = set()

    @given(case=strategies(operation, catalogue))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        with transaction.atomic():
            response = case.call(headers=auth)
            transaction.set_rollback(True)
        statuses.add(response.status_code)
        checks = list(CHECKS)
        if case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE:
            checks.append(negative_data_rejection)  # invalid input must get a 4xx
        case.validate_response(response, checks=checks, headers=auth)

    check()
    return statuses


def test_no_operation_errors_or_leaves_its_schema(catalogue, researcher, wsgi_app):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    auth = {"Authorization": f"Token {Token.objects.create(user=researcher).key}"}
    started = time.monotonic()
    seen = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        seen[f"{operation.method.upper()} {operation.path}"] = fuzz(operation, catalogue, auth)
    elapsed = time.monotonic() - started
    assert elapsed < TIME_BUDGET_SECONDS, f"the fuzz took {elapsed:.0f} s"
    # 25, the nine download and import operations of issue 18, issue 20's comparisons and
    # issue 23's figures, and issue 23's archive, unarchive and delete of models, datasets,
    # targets and studies (12)
    assert len(seen) == 48
    # The real catalogue was reached: every read answered 200 at least once.
    assert not [label for label, codes in seen.items() if label[:3] == "GET" and 200 not in codes]
