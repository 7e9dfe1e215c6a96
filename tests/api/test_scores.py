"""Scores and targets over the API: the leaderboard data, public to read, filtered by model,
target, metric and layer, paginated, in a bounded number of queries."""

from __future__ import annotations

import pytest

from evaluation import services
from evaluation.metrics import knn_entry, probe_entry
from evaluation.models import Score
from tests.api.conftest import error, run_steps
from tests.conftest import make_image_dataset, make_timm_model
from webapp.demo import digits_zip

pytestmark = pytest.mark.django_db

LAYERS = ["blocks.0", "blocks.1", "pre_logits"]


@pytest.fixture(scope="module")
def digits_40() -> bytes:
    return digits_zip(limit=40)


@pytest.fixture
def scored(enqueued, digits_40):
    """Two tiny untrained ViTs, three layers each, two metrics, on 40 digits: twelve real
    scores."""
    dataset = make_image_dataset(data=digits_40)
    first = make_timm_model("vit-a")
    second = services.model_register(
        name="vit-b", source="timm", identifier="test_vit", weights="untrained", seed=1
    )
    run = services.run_create(
        dataset=dataset,
        models=[first, second],
        metrics=[knn_entry(k=3, split="loo"), probe_entry("nearest_class_mean")],
        layers={first.pk: LAYERS, second.pk: LAYERS},
    )
    run_steps(run)
    assert Score.objects.count() == 12
    return {
        "dataset": dataset,
        "models": (first, second),
        "run": run,
        "target": dataset.targets.get(),
    }


def ids(response) -> set[int]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def test_anyone_reads_scores_and_they_match_the_database(anonymous, scored):
    body = anonymous.get("/api/scores/").json()
    assert body["count"] == 12
    row = body["results"][0]
    score = Score.objects.get(pk=row["id"])
    assert row["value"] == score.value and row["ci_low"] == score.ci_low
    assert row["ci_high"] == score.ci_high and row["n"] == 40
    assert row["metric_key"] == score.metric_key and row["layer"] == score.layer
    assert row["model"]["name"] == score.model.name
    assert row["model"]["is_untrained_baseline"] is True
    assert row["target"] == {
        "id": scored["target"].pk,
        "name": scored["target"].name,
        "kind": "labels",
        "dataset": {
            "id": scored["dataset"].pk,
            "name": scored["dataset"].name,
            "modality": "image",
        },
        "judgments": None,
        "simulated": False,
    }
    assert row["ceiling"] is None and row["normalized"] is None
    assert anonymous.get(f"/api/scores/{score.pk}/").json() == row


def test_filters(api, scored):
    first, second = scored["models"]
    by_model = ids(api.get(f"/api/scores/?model={first.pk}"))
    assert by_model == set(Score.objects.filter(model=first).values_list("pk", flat=True))
    assert len(by_model) == 6
    by_layer = ids(api.get("/api/scores/?layer=blocks.1"))
    assert by_layer == set(Score.objects.filter(layer="blocks.1").values_list("pk", flat=True))
    assert len(by_layer) == 4
    combined = api.get(f"/api/scores/?model={second.pk}&metric=knn&layer=pre_logits").json()
    assert combined["count"] == 1
    only = combined["results"][0]
    assert (only["model"]["id"], only["metric"], only["layer"]) == (second.pk, "knn", "pre_logits")
    assert ids(api.get("/api/scores/?metric_key=knn(k=3,split=loo)")) == ids(
        api.get("/api/scores/?metric=knn")
    )
    assert len(ids(api.get(f"/api/scores/?target={scored['target'].pk}&page_size=100"))) == 12
    assert len(ids(api.get(f"/api/scores/?dataset={scored['dataset'].pk}&page_size=100"))) == 12
    assert len(ids(api.get(f"/api/scores/?run={scored['run'].pk}&page_size=100"))) == 12
    assert ids(api.get("/api/scores/?layer=no-such-layer")) == set()


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            "model=999999",
            "model",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
        (
            "model=abc",
            "model",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
        (
            "target=-1",
            "target",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
        (
            "metric=accuracy",
            "metric",
            "Select a valid choice. accuracy is not one of the available choices.",
        ),
        ("layer=", "layer", "Blank value: give one, or leave the parameter out."),
        ("model=%20", "model", "Blank value: give one, or leave the parameter out."),
    ],
)
def test_bad_filters_are_400_not_empty_lists(anonymous, query, field, message):
    response = anonymous.get(f"/api/scores/?{query}")
    assert response.status_code == 400
    assert response.json() == error("invalid", f"{field}: {message}", {field: [message]})


def test_pages(anonymous, scored):
    page = anonymous.get("/api/scores/?page_size=5&page=3").json()
    assert page["count"] == 12 and len(page["results"]) == 2
    assert page["next"] is None and page["previous"].endswith("page=2&page_size=5")
    everything = set()
    for number in (1, 2, 3):
        everything |= ids(anonymous.get(f"/api/scores/?page_size=5&page={number}"))
    assert len(everything) == 12  # a stable order: no row twice, none missing
    past = anonymous.get("/api/scores/?page_size=5&page=4")
    assert past.json() == error("not_found", "Page 4 does not exist; the last page is 3.")


def test_score_list_query_count_is_bounded(anonymous, scored, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):  # count, rows with models and targets
        assert len(anonymous.get("/api/scores/?page_size=100").json()["results"]) == 12


def test_targets_are_public_with_score_counts(anonymous, scored):
    body = anonymous.get("/api/targets/").json()
    assert body["results"] == [
        {
            "id": scored["target"].pk,
            "name": scored["target"].name,
            "kind": "labels",
            "dataset": {
                "id": scored["dataset"].pk,
                "name": scored["dataset"].name,
                "modality": "image",
            },
            "judgments": None,
            "simulated": False,
            "score_count": 12,
        }
    ]
    assert anonymous.get("/api/targets/?kind=pairs").json()["count"] == 0
    assert anonymous.get("/api/targets/31337/").json() == error(
        "not_found", "No target with id 31337."
    )


def test_scores_cannot_be_written(api, anonymous, scored):
    score = Score.objects.first()
    assert api.post("/api/scores/", {}, format="json").status_code == 405
    assert api.delete(f"/api/scores/{score.pk}/").json() == error(
        "method_not_allowed", 'Method "DELETE" not allowed.'
    )
    refused = anonymous.delete(f"/api/scores/{score.pk}/")
    assert refused.status_code == 401
    assert Score.objects.count() == 12
