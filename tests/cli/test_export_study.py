"""export_study: a study's responses, aggregates and tags streamed to a file or stdout as CSV
or JSON, identical to the study page's exports; a failed export leaves no file behind."""

from __future__ import annotations

import csv
import io
import json

import pytest

from annotation import exports, services
from annotation.models import Response, Tag
from annotation.services import ItemPlan
from tests.annotation.test_studies import complete_session, make_study
from tests.cli.conftest import cli, cli_fails

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_study():
    study = make_study("pairs")
    for _ in range(3):
        complete_session(services.participant_start(study=study))
    return study


def test_responses_csv_file_holds_every_response(rated_study, tmp_path):
    target = tmp_path / "responses.csv"
    printed = cli(
        "export_study", str(rated_study.pk), "--what", "responses", "--format", "csv",
        "-o", str(target), "--json",
    )  # fmt: skip
    rows = list(csv.DictReader(target.open(newline="", encoding="utf-8")))
    responses = Response.objects.filter(trial__participant__study=rated_study)
    assert len(rows) == responses.count() == 15
    assert list(rows[0]) == exports.RESPONSE_FIELDS
    assert {int(r["response_id"]) for r in rows} == set(responses.values_list("pk", flat=True))
    assert printed.document == {
        "study": {"id": rated_study.pk, "name": rated_study.name, "kind": "pairs"},
        "what": "responses",
        "format": "csv",
        "rows": 15,
        "file": str(target),
    }
    # The same bytes the study page streams.
    page = "".join(exports.as_csv(exports.response_rows(rated_study), exports.RESPONSE_FIELDS))
    assert target.read_bytes().decode("utf-8") == page


def test_aggregates_json_on_stdout_by_study_name(rated_study):
    printed = cli("export_study", rated_study.name, "--what", "aggregates", "--format", "json")
    items = json.loads(printed.stdout)
    assert items == list(exports.aggregate_rows(rated_study))
    assert sum(item["n"] for item in items) == 15
    assert all(item["mean"] == 4 for item in items)  # complete_session rates 4
    assert "Exported" in printed.stderr


def test_tags_csv_of_a_tag_study(tmp_path):
    study = make_study("tags", items=ItemPlan(mode="random", count=4, seed=1))
    participant = services.participant_start(study=study)
    complete_session(participant, new_tags=["furry", "small"])
    printed = cli("export_study", str(study.pk), "--what", "tags", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(printed.stdout)))
    assert len(rows) == Tag.objects.filter(study=study).count() > 0
    assert {r["tag"] for r in rows} == {"furry", "small"}


def test_failures_leave_no_file_and_no_partial_output(rated_study, tmp_path, monkeypatch):
    error, _ = cli_fails("export_study", "999999", "-o", str(tmp_path / "x.csv"))
    assert str(error) == "No study with id or name '999999'."
    error, _ = cli_fails("export_study", str(rated_study.pk), "-o", str(tmp_path / "no/x.csv"))
    assert "the folder" in str(error) and "does not exist" in str(error)
    error, _ = cli_fails("export_study", str(rated_study.pk), "--json")
    assert "give -o FILE" in str(error)

    # An export that breaks half-way keeps the previous file as it was, and no temporary file.
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "responses.csv"
    target.write_text("yesterday's export\n")

    def broken(study):
        yield from list(exports.response_rows(study))[:3]
        raise OSError("disk full")

    monkeypatch.setitem(
        exports.EXPORTS, "responses", exports.Export(broken, exports.RESPONSE_FIELDS, "broken")
    )
    error, _ = cli_fails("export_study", str(rated_study.pk), "-o", str(target))
    assert str(error) == "disk full"
    assert target.read_text() == "yesterday's export\n"
    assert [p.name for p in folder.iterdir()] == ["responses.csv"]
