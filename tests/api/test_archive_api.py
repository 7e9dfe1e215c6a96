"""Archive, unarchive and delete through the API: the web pages' services, with a refusal
as a 409 naming what blocks it."""

from __future__ import annotations

import pytest

from annotation.services import study_set_status
from evaluation.models import Dataset, PretrainedModel, Score
from tests.api.conftest import error, run_steps
from tests.factories import PretrainedModelFactory

pytestmark = pytest.mark.django_db


def listed(api, address: str) -> list[int]:
    return [row["id"] for row in api.get(address).json()["results"]]


def test_archive_and_unarchive_a_model(api):
    model = PretrainedModelFactory()
    archived = api.post(f"/api/models/{model.pk}/archive/")
    assert archived.status_code == 200
    model.refresh_from_db()
    assert archived.json()["archived_at"] is not None and model.archived_at is not None
    assert model.pk not in listed(api, "/api/models/")
    assert model.pk in listed(api, "/api/models/?archived=1")
    assert model.pk in listed(api, "/api/models/?archived=true")
    assert api.get("/api/models/?archived=maybe").status_code == 400
    assert api.post(f"/api/models/{model.pk}/unarchive/").json() == {
        "id": model.pk,
        "archived_at": None,
    }
    assert model.pk in listed(api, "/api/models/")


def test_a_target_leaves_the_list_with_its_dataset(api, text_catalogue):
    dataset, target = text_catalogue["dataset"], text_catalogue["target"]
    api.post(f"/api/datasets/{dataset.pk}/archive/")
    assert target.pk not in listed(api, "/api/targets/")
    assert target.pk in listed(api, "/api/targets/?archived=1")
    assert api.get(f"/api/targets/{target.pk}/").status_code == 200


def test_delete_is_refused_with_what_blocks_it_then_done_when_agreed(api, text_catalogue):
    dataset, run, model = text_catalogue["dataset"], text_catalogue["run"], text_catalogue["model"]
    queued = api.delete(f"/api/datasets/{dataset.pk}/")
    assert queued.status_code == 409
    assert queued.json() == error(
        "conflict",
        f"Dataset sentences cannot be deleted now. Run {run.pk} is queued: cancel it or "
        "wait until it ends.",
    )
    run_steps(run)
    n = Score.objects.filter(run=run).count()
    unticked = api.delete(f"/api/models/{model.pk}/")
    assert unticked.status_code == 409
    assert unticked.json()["error"]["message"].startswith(f"Model minilm has {n} score")
    assert api.delete(f"/api/models/{model.pk}/?delete_scores=true").status_code == 204
    assert not PretrainedModel.objects.filter(pk=model.pk).exists()
    assert api.delete(f"/api/datasets/{dataset.pk}/").status_code == 204  # no scores left
    assert not Dataset.objects.filter(pk=dataset.pk).exists()


def test_an_open_study_is_not_deleted(api, answered_study):
    refused = api.delete(f"/api/studies/{answered_study.pk}/")
    assert refused.status_code == 409
    assert (
        "is open: participants may be taking it. Close it first."
        in refused.json()["error"]["message"]
    )
    study_set_status(study=answered_study, status="closed")
    assert api.delete(f"/api/studies/{answered_study.pk}/").status_code == 204


@pytest.mark.parametrize("archived", ["model", "dataset"])
def test_scores_of_archived_models_or_datasets_leave_the_scores_list(api, text_catalogue, archived):
    run_steps(text_catalogue["run"])
    scores = set(Score.objects.filter(run=text_catalogue["run"]).values_list("pk", flat=True))
    assert scores and scores <= set(listed(api, "/api/scores/"))
    plural = {"model": "models", "dataset": "datasets"}[archived]
    api.post(f"/api/{plural}/{text_catalogue[archived].pk}/archive/")
    assert not scores & set(listed(api, "/api/scores/"))
    assert scores <= set(listed(api, "/api/scores/?archived=1"))
    assert api.get(f"/api/scores/{min(scores)}/").status_code == 200  # still by its id
