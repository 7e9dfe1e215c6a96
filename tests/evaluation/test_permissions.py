"""Only researchers register models, import data or start runs; anonymous visitors read
leaderboards and nothing else; logged-in non-researchers get 403."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation.models import Dataset, PretrainedModel, Run
from tests.conftest import make_text_dataset, make_text_model
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    dataset = make_text_dataset()
    model = make_text_model()
    stimulus = dataset.stimuli.first()
    run = RunFactory(dataset=dataset, metrics=[{"name": "knn", "params": {"k": 1, "split": "loo"}}])
    return {
        "dataset": dataset,
        "model": model,
        "stimulus": stimulus,
        "run": run,
        "target": dataset.targets.get(),
    }


PUBLIC_PAGES = [("evaluation:leaderboards", None), ("evaluation:leaderboard", "target")]
RESEARCHER_PAGES = [
    ("evaluation:model_list", None),
    ("evaluation:model_create", None),
    ("evaluation:model_detail", "model"),
    ("evaluation:dataset_list", None),
    ("evaluation:dataset_create", None),
    ("evaluation:dataset_detail", "dataset"),
    ("evaluation:run_list", None),
    ("evaluation:run_create", None),
    ("evaluation:run_detail", "run"),
]
RESEARCHER_POSTS = [
    (
        "evaluation:model_create",
        None,
        {
            "name": "x",
            "source": "timm",
            "identifier": "test_vit",
            "weights": "untrained",
            "seed": 0,
        },
    ),
    ("evaluation:dataset_create", None, {"name": "y", "modality": "text"}),
    (
        "evaluation:run_create",
        None,
        {"dataset": "1", "models": ["1"], "metric_knn": "on", "knn_k": "1", "knn_split": "loo"},
    ),
    ("evaluation:run_cancel", "run", {}),
]


def url(catalogue, name, key):
    return reverse(name, args=[catalogue[key].pk]) if key else reverse(name)


@pytest.mark.parametrize(("name", "key"), PUBLIC_PAGES)
def test_anonymous_reads_leaderboards(client, catalogue, name, key):
    assert client.get(url(catalogue, name, key)).status_code == 200


@pytest.mark.parametrize(("name", "key"), RESEARCHER_PAGES)
def test_anonymous_is_sent_to_login(client, catalogue, name, key):
    response = client.get(url(catalogue, name, key))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


@pytest.mark.parametrize(("name", "key"), RESEARCHER_PAGES)
def test_non_researcher_is_forbidden(client, outsider, catalogue, name, key):
    client.force_login(outsider)
    assert client.get(url(catalogue, name, key)).status_code == 403


@pytest.mark.parametrize(("name", "key"), RESEARCHER_PAGES)
def test_researcher_sees_every_page(researcher_client, catalogue, name, key):
    assert researcher_client.get(url(catalogue, name, key)).status_code == 200


@pytest.mark.parametrize(("name", "key", "data"), RESEARCHER_POSTS)
def test_writes_are_refused_to_anonymous_and_outsiders(
    client, outsider, catalogue, name, key, data
):
    counts = (PretrainedModel.objects.count(), Dataset.objects.count(), Run.objects.count())
    anonymous = client.post(url(catalogue, name, key), data)
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    client.force_login(outsider)
    assert client.post(url(catalogue, name, key), data).status_code == 403
    assert (PretrainedModel.objects.count(), Dataset.objects.count(), Run.objects.count()) == counts
    catalogue["run"].refresh_from_db()
    assert catalogue["run"].status == "queued"


def test_stimulus_files_are_not_public(client, outsider, researcher, digits_zip_small):
    from tests.conftest import make_image_dataset

    stimulus = make_image_dataset(data=digits_zip_small).stimuli.first()
    address = reverse("evaluation:stimulus_file", args=[stimulus.pk])
    assert client.get(address).status_code == 302
    client.force_login(outsider)
    assert client.get(address).status_code == 403
    client.force_login(researcher)
    assert client.get(address).status_code == 200


def test_forms_are_csrf_protected(catalogue, researcher):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(researcher)
    response = strict.post(reverse("evaluation:model_create"), RESEARCHER_POSTS[0][2])
    assert response.status_code == 403
    assert not PretrainedModel.objects.filter(name="x").exists()
