"""Human judgments over the API: multipart CSV import through the import service (all or
nothing, a new version for a known name), and a streamed export that imports again."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evaluation.models import Dataset, HumanJudgments, Judgment, Target
from tests.api.conftest import csv_file, error, pairs_judgments
from tests.conftest import make_text_dataset

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (Dataset, HumanJudgments, Judgment, Target))


def import_(api, **fields):
    return api.post("/api/judgments/", fields, format="multipart")


def test_import_pairs_then_a_second_version(api):
    dataset = make_text_dataset()
    texts = list(dataset.stimuli.order_by("order").values_list("text", flat=True))
    rows = [[texts[0], texts[1], 4], [texts[0], texts[4], 1], [texts[2], texts[3], 3]]
    response = import_(
        api,
        name="similarity",
        format="pairs",
        file=csv_file("r.csv", ["a", "b", "value"], rows),
        dataset=dataset.pk,
        match="text",
        scale_min=0,
        scale_max=5,
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    judgments = HumanJudgments.objects.get()
    assert response["Location"] == f"/api/judgments/{judgments.pk}/"
    assert (body["name"], body["version"], body["kind"], body["judgment_count"]) == (
        "similarity",
        1,
        "pairs",
        3,
    )
    assert body["target"] == judgments.target.pk and body["created_by"] == "rita"
    assert (body["scale_min"], body["scale_max"]) == (0.0, 5.0)
    again = import_(
        api,
        name="similarity",
        format="pairs",
        file=csv_file("r.csv", ["a", "b", "value"], rows[:2]),
        dataset=dataset.pk,
    )
    assert again.json()["version"] == 2 and again.json()["judgment_count"] == 2
    listed = api.get(f"/api/judgments/?dataset={dataset.pk}&name=similarity").json()
    assert [(j["name"], j["version"]) for j in listed["results"]] == [
        ("similarity", 2),
        ("similarity", 1),
    ]


def test_import_into_a_new_text_dataset(api):
    response = import_(
        api,
        name="words",
        format="pairs",
        file=csv_file("w.csv", ["a", "b", "value"], [["cat", "dog", 8], ["cat", "car", 1]]),
        new_dataset_name="three words",
    )
    assert response.status_code == 201, response.json()
    assert Dataset.objects.get(name="three words").stimulus_count == 3


def test_bad_file_names_its_line_and_stores_nothing(api):
    dataset = make_text_dataset()
    before = counts()
    response = import_(
        api,
        name="bad",
        format="pairs",
        file=csv_file("r.csv", ["a", "b", "value"], [["nothing", "like", "this"]]),
        dataset=dataset.pk,
    )
    assert response.status_code == 400
    message = "Row 2: the value 'this' is not a number."
    assert response.json() == error("invalid", f"file: {message}", {"file": [message]})
    assert counts() == before


def test_form_rules(api):
    dataset = make_text_dataset()
    both = import_(
        api,
        name="x",
        format="pairs",
        file=csv_file("r.csv", ["a", "b", "value"], [["a", "b", 1]]),
        dataset=dataset.pk,
        new_dataset_name="also new",
    )
    message = "Choose an existing dataset or name a new one (not both)."
    assert both.json() == error("invalid", message)
    neither = import_(
        api, name="x", format="pairs", file=csv_file("r.csv", ["a", "b", "value"], [["a", "b", 1]])
    )
    assert neither.json() == error("invalid", message)
    wrong = import_(
        api,
        name="x",
        format="quadruplets",
        file=SimpleUploadedFile("r.csv", b"a\n"),
        dataset=dataset.pk,
        match="fuzzy",
        scale_min="low",
    )
    assert wrong.json()["error"]["fields"] == {
        "format": ['"quadruplets" is not a valid choice.'],
        "match": ['"fuzzy" is not a valid choice.'],
        "scale_min": ["A valid number is required."],
    }
    symmetrize = import_(
        api,
        name="x",
        format="pairs",
        file=csv_file("r.csv", ["a", "b", "value"], [["a", "b", 1]]),
        new_dataset_name="n",
        symmetrize="true",
    )
    expected = "Symmetrizing applies to the matrix format only."
    assert symmetrize.json() == error(
        "invalid", f"symmetrize: {expected}", {"symmetrize": [expected]}
    )
    assert counts() == (1, 0, 0, 1)


def test_export_round_trips_through_the_import(api):
    dataset = make_text_dataset()
    judgments = pairs_judgments(dataset)
    response = api.get(f"/api/judgments/{judgments.pk}/export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="judgments-{judgments.pk}-similarity-v1.csv"'
    )
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "judgment_id", "a", "b", "value", "participant", "a_name", "b_name",
    ]  # fmt: skip
    assert len(rows) == 8 and {r["participant"] for r in rows} == {"r1", "r2"}
    stored = Judgment.objects.get(pk=int(rows[0]["judgment_id"]))
    assert (int(rows[0]["a"]), int(rows[0]["b"]), float(rows[0]["value"])) == (
        stored.a_id,
        stored.b_id,
        stored.value,
    )
    again = import_(
        api,
        name="similarity",
        format="pairs",
        file=SimpleUploadedFile("again.csv", text.encode()),
        dataset=dataset.pk,
        match="id",
        scale_min=0,
        scale_max=5,
    )
    assert again.status_code == 201, again.json()
    copy = HumanJudgments.objects.get(pk=again.json()["id"])
    assert copy.version == 2 and copy.judgment_count == 8
    original = sorted(judgments.rows.values_list("a_id", "b_id", "value", "participant"))
    assert sorted(copy.rows.values_list("a_id", "b_id", "value", "participant")) == original
    assert copy.reliability == judgments.reliability


def test_json_export_of_triplets(api):
    dataset = make_text_dataset()
    ids = list(dataset.stimuli.order_by("order").values_list("pk", flat=True))
    rows = [[ids[0], ids[1], ids[4], ids[4], "p1"], [ids[0], ids[1], ids[4], ids[1], "p2"]]
    imported = import_(
        api,
        name="odd",
        format="triplets",
        file=csv_file("t.csv", ["a", "b", "c", "choice", "participant"], rows),
        dataset=dataset.pk,
        match="id",
    )
    assert imported.status_code == 201, imported.json()
    response = api.get(f"/api/judgments/{imported.json()['id']}/export/?format=json")
    assert response["Content-Type"] == "application/json"
    exported = json.loads(b"".join(response.streaming_content))
    assert [(r["a"], r["b"], r["c"], r["choice"], r["participant"]) for r in exported] == [
        tuple(row) for row in rows
    ]
    assert exported[0]["choice_name"] == dataset.stimuli.get(pk=ids[4]).name
    bad = api.get(f"/api/judgments/{imported.json()['id']}/export/?format=xlsx")
    assert bad.json() == error(
        "invalid",
        'format: "xlsx" is not a valid choice.',
        {"format": ['"xlsx" is not a valid choice.']},
    )
