"""Studies over the API: counts, coverage and reliability, and streamed exports identical to
the study pages' exports."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.http import StreamingHttpResponse

from annotation import exports, services
from tests.api.conftest import error

pytestmark = pytest.mark.django_db


def test_list_and_detail_with_counts(api, answered_study):
    listed = api.get("/api/studies/").json()
    assert listed["count"] == 1
    row = listed["results"][0]
    assert (row["name"], row["kind"], row["status"]) == ("Sentence similarity", "pairs", "open")
    assert (row["participant_count"], row["item_count"]) == (2, 28)
    assert row["participant_url"] == f"http://testserver/s/{answered_study.token}/"
    detail = api.get(f"/api/studies/{answered_study.pk}/").json()
    assert detail["coverage"] == {"items": 28, "complete": 0, "responses": 8}
    assert detail["participants_by_status"] == {"completed": 2}
    assert detail["response_count"] == 8
    assert detail["aggregations"] == [] and (detail["scale_min"], detail["scale_max"]) == (1, 7)
    assert api.get("/api/studies/?status=draft").json()["count"] == 0
    assert api.get("/api/studies/?kind=pairs").json()["count"] == 1


def test_detail_lists_aggregations(api, answered_study, researcher):
    judgments = services.study_aggregate(study=answered_study, created_by=researcher)
    detail = api.get(f"/api/studies/{answered_study.pk}/").json()
    assert [(a["judgments"], a["version"], a["responses"]) for a in detail["aggregations"]] == [
        (judgments.pk, 1, 8)
    ]


def streamed(response) -> str:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


def test_exports_are_the_study_pages_exports(api, answered_study):
    address = f"/api/studies/{answered_study.pk}/export/"
    as_csv = api.get(address)  # responses, CSV by default
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert as_csv["Content-Disposition"] == (
        f'attachment; filename="study-{answered_study.pk}-responses.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(streamed(as_csv))))
    assert len(rows) == 8 and list(rows[0]) == exports.RESPONSE_FIELDS
    expected = "".join(
        exports.as_csv(exports.response_rows(answered_study), exports.RESPONSE_FIELDS)
    )
    assert streamed(api.get(address)) == expected

    aggregate = api.get(address + "?data=aggregate&format=json")
    assert aggregate["Content-Type"] == "application/json"
    items = json.loads(streamed(aggregate))
    assert items == list(exports.aggregate_rows(answered_study))
    assert sum(item["n"] for item in items) == 8


def test_export_ignores_the_accept_header_and_checks_its_query(api, answered_study):
    address = f"/api/studies/{answered_study.pk}/export/"
    assert api.get(address + "?format=json", HTTP_ACCEPT="text/csv").status_code == 200
    bad = api.get(address + "?data=everything&format=xml")
    assert bad.status_code == 400
    assert bad.json() == error(
        "invalid",
        'data: "everything" is not a valid choice. format: "xml" is not a valid choice.',
        {
            "data": ['"everything" is not a valid choice.'],
            "format": ['"xml" is not a valid choice.'],
        },
    )
    missing = api.get("/api/studies/4242/export/", HTTP_ACCEPT="text/csv")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/json"
    assert missing.json() == error("not_found", "No study with id 4242.")


def test_empty_export_still_has_its_header(api, researcher):
    from annotation.services import ItemPlan
    from tests.conftest import make_text_dataset

    study = services.study_create(
        dataset=make_text_dataset(), name="empty", kind="pairs", items=ItemPlan()
    )
    text = streamed(api.get(f"/api/studies/{study.pk}/export/"))
    assert text == ",".join(exports.RESPONSE_FIELDS) + "\r\n"
    assert json.loads(streamed(api.get(f"/api/studies/{study.pk}/export/?format=json"))) == []
