"""Archiving and deleting datasets, models, targets and studies: what depends on each is
listed, archived objects leave every list (pages and API) and stay at their address, and a
deletion is refused while work is in progress or scores would go unasked, removes the
stored files only after it committed, and leaves everything in place when a step fails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from annotation.models import Aggregation, Participant, Pilot, Response, Study
from annotation.services import archive as study_archive
from annotation.services import study_aggregate, study_set_status
from evaluation import storage
from evaluation.models import (
    Dataset,
    EmbeddingSet,
    HumanJudgments,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    Stimulus,
    Target,
)
from evaluation.services import archive
from evaluation.services.archive import DeleteRefused
from tests.api.conftest import answered_study, pairs_judgments, run_steps, token_client  # noqa: F401
from tests.conftest import make_image_dataset, make_text_dataset, make_text_model
from tests.factories import EmbeddingImportFactory, RunFactory, RunStepFactory
from tests.object_store import (  # noqa: F401 (fixtures)
    ObjectStore,
    moto_server_fixture,
    object_store_fixture,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(researcher, enqueued, answered_study) -> dict[str, Any]:  # noqa: F811
    """A real dataset with a scored run (an embedding file on disk), human judgments, and
    a closed study on it aggregated into a second target."""
    from evaluation import services
    from evaluation.metrics import knn_entry

    dataset = answered_study.dataset
    model = make_text_model()
    judgments = pairs_judgments(dataset)
    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=1, split="loo")],
        created_by=researcher,
    )  # fmt: skip
    run_steps(run)
    study_set_status(study=answered_study, status="closed")
    aggregated = study_aggregate(study=answered_study, created_by=researcher)
    return {
        "dataset": dataset,
        "model": model,
        "run": run,
        "labels": dataset.targets.get(kind="labels"),
        "pairs": judgments.target,
        "aggregated": aggregated.target,
        "study": answered_study,
    }


def counts(dependents: archive.Dependents) -> dict[str, int]:
    return {item.label: item.count for item in dependents.items}


def embedding_file(embedding_set: EmbeddingSet) -> Path:
    return Path(storage.storage_of(storage.EMBEDDINGS).path(embedding_set.relative_path))


# --- What depends on what -------------------------------------------------------------------------
def test_a_datasets_dependents_are_counted_and_linked(catalogue):
    dataset, study = catalogue["dataset"], catalogue["study"]
    dependents = study_archive.dataset_dependents(dataset)
    assert counts(dependents) == {
        "targets": 3,  # labels, the imported ratings, the study's aggregate
        "judgment sets": 2,
        "runs": 1,
        "embedding sets": 1,
        "scores": Score.objects.filter(run=catalogue["run"]).count(),
        "studies": 1,
    }
    assert dependents.score_count == Score.objects.count() > 0
    studies = next(item for item in dependents.items if item.label == "studies")
    assert studies.links == [(study.name, reverse("annotation:study_detail", args=[study.pk]))]
    runs = next(item for item in dependents.items if item.label == "runs")
    assert runs.links == [
        (f"Run {catalogue['run'].pk} (Succeeded)", catalogue["run"].get_absolute_url())
    ]
    assert dependents.blockers == []


def test_a_models_and_a_targets_dependents(catalogue):
    model, labels = catalogue["model"], catalogue["labels"]
    model_scores = Score.objects.filter(model=model).count()
    assert counts(archive.model_dependents(model)) == {
        "scores": model_scores,
        "runs": 1,
        "embedding sets": 1,
    }
    assert archive.model_dependents(model).score_count == model_scores
    target = archive.target_dependents(labels)
    assert counts(target) == {"scores": labels.scores.count(), "runs": 1}
    pairs = archive.target_dependents(catalogue["pairs"])
    assert counts(pairs)["judgment sets"] == 1


def test_a_studys_dependents(catalogue):
    study = catalogue["study"]
    assert counts(study_archive.study_dependents(study)) == {
        "participants": 2,
        "responses": Response.objects.filter(trial__participant__study=study).count(),
        "pilots": 0,
        "targets made from it": 1,
        "scores on those targets": 0,
    }


# --- Archive --------------------------------------------------------------------------------------
LISTS = {
    "dataset": ("evaluation:dataset_list", "/api/datasets/"),
    "model": ("evaluation:model_list", "/api/models/"),
    "target": ("evaluation:leaderboards", "/api/targets/"),
    "study": ("annotation:study_list", "/api/studies/"),
}
OBJECT = {"dataset": "dataset", "model": "model", "target": "labels", "study": "study"}


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_archiving_leaves_the_lists_and_keeps_the_page(
    kind, catalogue, researcher_client, researcher
):
    obj = catalogue[OBJECT[kind]]
    page, api_list = LISTS[kind]
    api = token_client(researcher)
    archive_url = reverse(f"annotation:{kind}_archive", args=[obj.pk])
    assert obj.get_absolute_url() in researcher_client.get(reverse(page)).content.decode()
    assert obj.pk in [row["id"] for row in api.get(api_list).json()["results"]]

    response = researcher_client.post(archive_url)
    assert response.status_code == 302 and response["Location"] == obj.get_absolute_url()
    obj.refresh_from_db()
    assert obj.archived_at is not None
    assert obj.get_absolute_url() not in researcher_client.get(reverse(page)).content.decode()
    assert obj.pk not in [row["id"] for row in api.get(api_list).json()["results"]]
    assert obj.pk in [row["id"] for row in api.get(api_list + "?archived=1").json()["results"]]
    assert api.get(f"{api_list}{obj.pk}/").status_code == 200
    detail = researcher_client.get(obj.get_absolute_url()).content.decode()
    assert "Archived" in detail and reverse(f"annotation:{kind}_unarchive", args=[obj.pk]) in detail
    assert Score.objects.count() > 0  # archiving keeps the scores

    researcher_client.post(reverse(f"annotation:{kind}_unarchive", args=[obj.pk]))
    obj.refresh_from_db()
    assert obj.archived_at is None
    assert obj.get_absolute_url() in researcher_client.get(reverse(page)).content.decode()


def test_an_archived_dataset_takes_its_boards_off_the_index_and_compare(
    catalogue, researcher_client
):
    dataset, labels = catalogue["dataset"], catalogue["labels"]
    archive.archive_set(dataset, archived=True)
    index = researcher_client.get(reverse("evaluation:leaderboards")).content.decode()
    assert labels.get_absolute_url() not in index
    compare = researcher_client.get(reverse("evaluation:compare")).context["targets"]
    assert labels not in list(compare)
    board = researcher_client.get(labels.get_absolute_url()).content.decode()
    assert "is <strong>archived</strong>: this board is left out of the lists" in board


def test_an_archived_model_is_no_compare_choice(catalogue, researcher_client):
    model, labels = catalogue["model"], catalogue["labels"]
    url = reverse("evaluation:compare") + f"?target={labels.pk}"
    assert model in list(researcher_client.get(url).context["available"])
    archive.archive_set(model, archived=True)
    assert model not in list(researcher_client.get(url).context["available"])


# --- Delete: refused ------------------------------------------------------------------------------
def test_scores_are_deleted_only_when_ticked(catalogue, researcher_client):
    model = catalogue["model"]
    response = researcher_client.post(reverse("annotation:model_delete", args=[model.pk]))
    assert response["Location"] == reverse("annotation:model_archive", args=[model.pk])
    message = str(next(iter(response.wsgi_request._messages)))
    n = Score.objects.filter(model=model).count()
    assert n == 1
    assert message == (
        "Model minilm has 1 score: tick 'delete the scores too' to delete it with it, "
        "or archive it instead (archiving keeps it)."
    )
    assert PretrainedModel.objects.filter(pk=model.pk).exists()
    with pytest.raises(DeleteRefused, match="has 1 score"):
        archive.target_delete(catalogue["labels"], delete_scores=False)
    with pytest.raises(DeleteRefused, match="Dataset sentences for a study has 1 score:"):
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=False)
    assert Score.objects.count() == n

    ticked = researcher_client.post(
        reverse("annotation:model_delete", args=[model.pk]), {"delete_scores": "on"}
    )
    assert ticked["Location"] == reverse("evaluation:model_list")
    assert not PretrainedModel.objects.filter(pk=model.pk).exists()
    assert Score.objects.count() == 0


def test_a_running_run_blocks_deleting_its_dataset_model_and_target(catalogue):
    run = catalogue["run"]
    Run.objects.filter(pk=run.pk).update(status="running")
    expected = f"Run {run.pk} is running: cancel it or wait until it ends."
    with pytest.raises(DeleteRefused, match=expected):
        archive.model_delete(catalogue["model"], delete_scores=True)
    with pytest.raises(DeleteRefused, match=expected):
        archive.target_delete(catalogue["labels"], delete_scores=True)
    with pytest.raises(DeleteRefused, match=expected):
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)
    assert Dataset.objects.filter(pk=catalogue["dataset"].pk).exists()


def test_an_unfinished_embedding_import_blocks_deleting_its_dataset(catalogue):
    job = EmbeddingImportFactory(dataset=catalogue["dataset"], name="from elsewhere")
    expected = f"Embedding import {job.pk} (from elsewhere) is waiting for a worker: wait until"
    with pytest.raises(DeleteRefused, match=re.escape(expected)):
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)


def test_an_open_study_or_a_running_pilot_blocks_deletion(catalogue, researcher_client):
    study = catalogue["study"]
    study_set_status(study=study, status="open")
    expected = "Study Sentence similarity is open: participants may be taking it. Close it first."
    with pytest.raises(DeleteRefused, match=expected):
        study_archive.study_delete(study, delete_targets=False)
    with pytest.raises(DeleteRefused, match=expected):
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)
    page = researcher_client.get(reverse("annotation:study_archive", args=[study.pk]))
    assert expected in page.content.decode()
    assert "archiving does not close it" in page.content.decode()
    study_set_status(study=study, status="closed")
    Pilot.objects.create(study=study)  # running, its runner alive
    with pytest.raises(DeleteRefused, match="A pilot of study Sentence similarity is running"):
        study_archive.study_delete(study, delete_targets=False)
    assert Study.objects.filter(pk=study.pk).exists()


# --- Delete: done -----------------------------------------------------------------------------------
def test_deleting_a_dataset_removes_everything_made_on_it_and_its_files_after_commit(
    catalogue, researcher_client, django_capture_on_commit_callbacks
):
    dataset = catalogue["dataset"]
    npy = embedding_file(EmbeddingSet.objects.get(dataset=dataset))
    assert npy.is_file()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = researcher_client.post(
            reverse("annotation:dataset_delete", args=[dataset.pk]), {"delete_scores": "on"}
        )
    assert response["Location"] == reverse("evaluation:dataset_list")
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert npy.is_file()  # not before the commit
    for callback in callbacks:
        callback()
    assert not npy.exists()
    for model in (Study, Participant, Run, Score, EmbeddingSet, HumanJudgments, Target, Stimulus):
        assert not model.objects.exists(), model
    assert not Aggregation.objects.exists()
    assert PretrainedModel.objects.filter(pk=catalogue["model"].pk).exists()  # models stay


def test_deleting_a_media_dataset_removes_its_stimulus_files(
    researcher, digits_zip_small, django_capture_on_commit_callbacks
):
    dataset = make_image_dataset(data=digits_zip_small)
    media = storage.storage_of(storage.MEDIA)
    files = [Path(media.path(name)) for name in dataset.stimuli.values_list("file", flat=True)]
    assert len(files) == 120 and all(path.is_file() for path in files)
    with django_capture_on_commit_callbacks(execute=True):
        study_archive.dataset_delete(dataset, delete_scores=False)  # no scores: no tick needed
    assert not any(path.exists() for path in files)
    assert not Path(media.path(f"datasets/{dataset.pk}")).exists()  # its folder too


def test_a_media_datasets_files_leave_the_object_store_in_batches(
    object_store: ObjectStore, researcher, digits_zip_small, django_capture_on_commit_callbacks
):
    dataset = make_image_dataset(data=digits_zip_small)
    assert len(object_store.keys(f"media/datasets/{dataset.pk}/")) == 120
    other = make_image_dataset(name="kept digits", data=digits_zip_small)
    with django_capture_on_commit_callbacks(execute=True):
        study_archive.dataset_delete(dataset, delete_scores=False)
    assert object_store.keys(f"media/datasets/{dataset.pk}/") == []
    assert len(object_store.keys(f"media/datasets/{other.pk}/")) == 120


def test_a_failed_step_deletes_nothing(catalogue, monkeypatch, django_capture_on_commit_callbacks):
    dataset = catalogue["dataset"]
    npy = embedding_file(EmbeddingSet.objects.get(dataset=dataset))
    before = (Study.objects.count(), Run.objects.count(), Score.objects.count())

    def fail(self, *args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Dataset, "delete", fail)  # after the studies and runs were deleted
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            study_archive.dataset_delete(dataset, delete_scores=True)
    assert callbacks == []
    assert (Study.objects.count(), Run.objects.count(), Score.objects.count()) == before
    assert npy.is_file()


def test_deleting_a_model_keeps_the_runs_other_models_share(
    catalogue, django_capture_on_commit_callbacks
):
    model, run = catalogue["model"], catalogue["run"]
    other = RunStepFactory(run=RunFactory(dataset=catalogue["dataset"], status="succeeded"))
    RunStepFactory(run=other.run, model=model, status="failed")
    npy = embedding_file(EmbeddingSet.objects.get(model=model))
    with django_capture_on_commit_callbacks(execute=True):
        archive.model_delete(model, delete_scores=True)
    assert not PretrainedModel.objects.filter(pk=model.pk).exists()
    assert not Run.objects.filter(pk=run.pk).exists()  # its only model is gone
    assert list(RunStep.objects.filter(run=other.run)) == [other]  # the other model's stays
    assert not npy.exists()


def test_deleting_a_target_takes_its_judgments_and_keeps_runs(catalogue):
    pairs, run = catalogue["pairs"], catalogue["run"]
    judgments_id = pairs.judgments_id
    archive.target_delete(pairs, delete_scores=False)  # no scores on it
    assert not HumanJudgments.objects.filter(pk=judgments_id).exists()
    assert Run.objects.filter(pk=run.pk).exists()


def test_deleting_a_study_keeps_or_takes_the_targets_made_from_it(catalogue, answered_study):  # noqa: F811
    aggregated = catalogue["aggregated"]
    study_archive.study_delete(catalogue["study"], delete_targets=False)
    assert not Study.objects.exists() and not Response.objects.exists()
    assert Target.objects.filter(pk=aggregated.pk).exists()  # kept: a published version

    # a second study, this time with its targets
    from annotation.services import ItemPlan, study_create

    second = study_create(
        dataset=catalogue["dataset"], name="Again", kind="pairs", items=ItemPlan(),
        judgments_per_item=1, trials_per_session=2,
    )  # fmt: skip
    Aggregation.objects.filter(judgments=aggregated.judgments).delete()
    Aggregation.objects.create(
        study=second, judgments=aggregated.judgments, responses=0, participants=0,
        excluded_participants=0,
    )  # fmt: skip
    study_archive.study_delete(second, delete_targets=True)
    assert not Target.objects.filter(pk=aggregated.pk).exists()


def test_only_researchers_reach_the_archive_pages(catalogue, client, outsider):
    url = reverse("annotation:dataset_archive", args=[catalogue["dataset"].pk])
    assert client.get(url)["Location"].startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    assert (
        client.post(
            reverse("annotation:dataset_delete", args=[catalogue["dataset"].pk])
        ).status_code
        == 403
    )
    assert Dataset.objects.filter(pk=catalogue["dataset"].pk).exists()


def test_the_archive_page_lists_the_dependents(catalogue, researcher_client):
    page = researcher_client.get(
        reverse("annotation:dataset_archive", args=[catalogue["dataset"].pk])
    )
    html = page.content.decode()
    assert 'data-dependent="studies"' in html
    assert catalogue["study"].get_absolute_url() in html
    assert catalogue["run"].get_absolute_url() in html
    assert "Delete the scores too" in html


# --- Review fixes (issue 23) ------------------------------------------------------------------------
def scored_run(dataset: Dataset, model: PretrainedModel, researcher) -> Run:
    from evaluation import services
    from evaluation.metrics import knn_entry

    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=1, split="loo")],
        created_by=researcher,
    )  # fmt: skip
    run_steps(run)
    return run


def test_deleting_a_model_keeps_the_embedding_sets_another_models_scores_use(
    catalogue, researcher, researcher_client, django_capture_on_commit_callbacks
):
    model = catalogue["model"]
    shared = EmbeddingSet.objects.get(model=model)
    twin = make_text_model(name="minilm again")  # the same identifier: the same fingerprint
    scored_run(catalogue["dataset"], twin, researcher)
    twin_score = Score.objects.get(model=twin)
    assert twin_score.embedding_set == shared  # reused, not extracted again
    page = researcher_client.get(reverse("annotation:model_archive", args=[model.pk]))
    html = page.content.decode()
    assert 'data-dependent="embedding sets shared with other models"' in html
    assert f"layer {shared.layer}: shared with minilm again" in html
    assert twin.get_absolute_url() in html

    with django_capture_on_commit_callbacks(execute=True):
        study_archive.model_delete(model, delete_scores=True)
    shared.refresh_from_db()
    assert shared.model == twin  # handed over to the model that still uses it
    twin_score.refresh_from_db()
    assert twin_score.embedding_set == shared
    assert embedding_file(shared).is_file()


def test_deleting_a_dataset_keeps_the_embedding_sets_a_dataset_with_the_same_content_uses(
    catalogue, researcher, django_capture_on_commit_callbacks
):
    dataset, model = catalogue["dataset"], catalogue["model"]
    shared = EmbeddingSet.objects.get(dataset=dataset)
    twin = make_text_dataset(name="the same sentences")
    assert twin.content_hash == dataset.content_hash
    run = scored_run(twin, model, researcher)
    assert set(Score.objects.filter(run=run).values_list("embedding_set", flat=True)) == {shared.pk}
    dependents = study_archive.dataset_dependents(dataset)
    shared_item = next(i for i in dependents.items if i.label.startswith("embedding sets shared"))
    assert shared_item.label == "embedding sets shared with other datasets"
    assert (shared_item.count, shared_item.links) == (
        1,
        [(f"layer {shared.layer}: shared with the same sentences", twin.get_absolute_url())],
    )
    assert counts(dependents)["embedding sets"] == 0  # none of them goes
    study_set_status(study=catalogue["study"], status="closed")
    with django_capture_on_commit_callbacks(execute=True):
        study_archive.dataset_delete(dataset, delete_scores=True)
    shared.refresh_from_db()
    assert shared.dataset == twin
    assert Score.objects.filter(run=run, embedding_set=shared).count() > 0
    assert embedding_file(shared).is_file()


def test_deleting_a_model_still_removes_the_files_nobody_else_uses(
    catalogue, django_capture_on_commit_callbacks
):
    model = catalogue["model"]
    npy = embedding_file(EmbeddingSet.objects.get(model=model))
    with django_capture_on_commit_callbacks(execute=True):
        study_archive.model_delete(model, delete_scores=True)
    assert not EmbeddingSet.objects.exists()
    assert not npy.exists()


def test_an_unfinished_run_on_its_targets_blocks_deleting_a_study_with_them(
    catalogue, researcher_client
):
    study, aggregated = catalogue["study"], catalogue["aggregated"]
    run = RunFactory(dataset=catalogue["dataset"], status="running")
    run.targets.add(aggregated)
    with pytest.raises(DeleteRefused, match=f"Run {run.pk} is running: cancel it"):
        study_archive.study_delete(study, delete_targets=True)
    assert Study.objects.filter(pk=study.pk).exists()
    page = researcher_client.get(reverse("annotation:study_archive", args=[study.pk]))
    html = page.content.decode()
    assert 'data-dependent="unfinished runs on those targets"' in html
    assert run.get_absolute_url() in html
    study_archive.study_delete(study, delete_targets=False)  # the targets stay: not blocked
    assert Target.objects.filter(pk=aggregated.pk).exists()


def test_a_running_pilot_on_its_embeddings_blocks_deleting_a_model(
    catalogue, researcher_client, researcher
):
    model, study = catalogue["model"], catalogue["study"]
    pilot = Pilot.objects.create(study=study, model=model)  # running, its runner alive
    expected = f"Pilot {pilot.pk} of study Sentence similarity is running on its embeddings"
    dependents = study_archive.model_dependents(model)
    assert counts(dependents)["pilots"] == 1
    assert any(expected in problem for problem in dependents.blockers)
    with pytest.raises(DeleteRefused, match=expected):
        study_archive.model_delete(model, delete_scores=True)
    response = researcher_client.post(
        reverse("annotation:model_delete", args=[model.pk]), {"delete_scores": "on"}
    )
    assert expected in str(next(iter(response.wsgi_request._messages)))
    api = token_client(researcher)
    refused = api.delete(f"/api/models/{model.pk}/?delete_scores=true")
    assert refused.status_code == 409 and expected in refused.json()["error"]["message"]
    assert PretrainedModel.objects.filter(pk=model.pk).exists()
    Pilot.objects.filter(pk=pilot.pk).update(status="succeeded")
    assert api.delete(f"/api/models/{model.pk}/?delete_scores=true").status_code == 204


def test_an_archived_model_leaves_every_board(catalogue, researcher, researcher_client):
    model, labels = catalogue["model"], catalogue["labels"]
    twin = make_text_model(name="minilm again")
    scored_run(catalogue["dataset"], twin, researcher)
    pages = [
        labels.get_absolute_url(),
        reverse("evaluation:leaderboards"),
        reverse("evaluation:leaderboard_overall"),
    ]

    def shown(url: str) -> str:
        return researcher_client.get(url).content.decode()

    for url in pages:
        assert model.get_absolute_url() in shown(url), url
    compare_link = f"models={model.pk}"
    assert compare_link in shown(reverse("evaluation:leaderboards"))
    archive.archive_set(model, archived=True)
    for url in pages:
        assert model.get_absolute_url() not in shown(url), url
        assert twin.get_absolute_url() in shown(url), url
    assert compare_link not in shown(reverse("evaluation:leaderboards"))
    archive.archive_set(model, archived=False)
    for url in pages:
        assert model.get_absolute_url() in shown(url), url


def test_the_front_pages_stamp_tells_apart_archived_targets_with_the_same_count_and_sum(db):
    from evaluation.leaderboards import _every_score_stamp
    from tests.factories import TargetFactory

    targets = sorted((TargetFactory() for _ in range(4)), key=lambda t: t.pk)
    ids = [t.pk for t in targets]
    assert ids[0] + ids[3] == ids[1] + ids[2]  # consecutive ids
    for target in (targets[0], targets[3]):
        archive.archive_set(target, archived=True)
    first = _every_score_stamp()
    for target in targets:
        archive.archive_set(target, archived=target in (targets[1], targets[2]))
    assert _every_score_stamp() != first


def test_the_compare_page_reaches_an_archived_target_by_its_address(catalogue, researcher_client):
    labels = catalogue["labels"]
    archive.archive_set(labels, archived=True)
    page = researcher_client.get(reverse("evaluation:compare") + f"?target={labels.pk}")
    assert page.context["target"] == labels
    assert labels not in list(page.context["targets"])  # no choice in the select


def test_a_deletion_that_something_made_meanwhile_blocks_is_refused_clearly(
    catalogue, researcher_client, researcher, monkeypatch
):
    from django.db.models import ProtectedError

    labels = catalogue["labels"]

    def raced(self, *args, **kwargs):
        raise ProtectedError("a run was created on it", set())

    monkeypatch.setattr(Target, "delete", raced)
    monkeypatch.setattr(Dataset, "delete", raced)
    response = researcher_client.post(
        reverse("annotation:target_delete", args=[labels.pk]), {"delete_scores": "on"}
    )
    assert response["Location"] == reverse("annotation:target_archive", args=[labels.pk])
    message = str(next(iter(response.wsgi_request._messages)))
    assert message.startswith(f"Target {labels.name} could not be deleted: something that")
    refused = token_client(researcher).delete(f"/api/targets/{labels.pk}/?delete_scores=true")
    assert refused.status_code == 409
    study_set_status(study=catalogue["study"], status="closed")
    with pytest.raises(DeleteRefused, match="could not be deleted: something that depends"):
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)
    assert Study.objects.filter(pk=catalogue["study"].pk).exists()  # rolled back


def test_a_deletion_locks_the_runs_and_studies_it_checks(catalogue):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def locked(queries: CaptureQueriesContext, table: str) -> list[str]:
        return [q["sql"] for q in queries if "FOR UPDATE" in q["sql"] and f'"{table}"' in q["sql"]]

    run = catalogue["run"]
    with CaptureQueriesContext(connection) as queries:
        study_archive.model_delete(catalogue["model"], delete_scores=True)
    assert locked(queries, "evaluation_run"), "the runs were checked without a lock"
    assert not Run.objects.filter(pk=run.pk).exists()  # finished: no blocker, deleted with it

    study_set_status(study=catalogue["study"], status="closed")
    with CaptureQueriesContext(connection) as queries:
        study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)
    assert locked(queries, "annotation_study"), "the studies were checked without a lock"


@pytest.mark.parametrize("kind", sorted(LISTS))
def test_a_researcher_finds_the_archived_on_the_lists(kind, catalogue, researcher_client):
    from django.test import Client

    obj = catalogue[OBJECT[kind]]
    page = reverse(LISTS[kind][0])
    archive.archive_set(obj, archived=True)
    listed = researcher_client.get(page).content.decode()
    assert obj.get_absolute_url() not in listed
    assert 'href="?archived=1">Archived (1)</a>' in listed
    shown = researcher_client.get(page + "?archived=1").content.decode()
    assert obj.get_absolute_url() in shown
    assert '<span class="badge">archived</span>' in shown
    if kind != "study":  # the public lists: nobody else sees the archived
        public = Client().get(page + "?archived=1").content.decode()
        assert obj.get_absolute_url() not in public and "Archived (" not in public


def test_a_pilot_whose_runner_died_blocks_no_deletion(catalogue):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services import pilots

    model, study = catalogue["model"], catalogue["study"]
    long_ago = timezone.now() - pilots.STALE_AFTER - timedelta(minutes=1)
    dead = Pilot.objects.create(study=study, model=model)  # never claimed by a runner
    Pilot.objects.filter(pk=dead.pk).update(created_at=long_ago)
    study_archive.model_delete(model, delete_scores=True)  # the sweep fails it first
    assert Pilot.objects.get(pk=dead.pk).status == "failed"

    dead = Pilot.objects.create(study=study)
    Pilot.objects.filter(pk=dead.pk).update(created_at=long_ago)
    study_set_status(study=study, status="closed")
    study_archive.dataset_delete(catalogue["dataset"], delete_scores=True)
    assert not Study.objects.filter(pk=study.pk).exists()


def test_the_run_and_stacking_forms_leave_archived_datasets_and_models_out(catalogue):
    from evaluation.forms import RunForm, StackForm

    dataset, model = catalogue["dataset"], catalogue["model"]
    assert dataset in RunForm().fields["dataset"].queryset
    assert model in RunForm(initial={"dataset": dataset}).listed_models
    archive.archive_set(dataset, archived=True)
    archive.archive_set(model, archived=True)
    assert dataset not in RunForm().fields["dataset"].queryset
    assert model not in RunForm(initial={"dataset": dataset}).listed_models
    refused = RunForm(data={"dataset": str(dataset.pk), "models": [str(model.pk)]})
    assert not refused.is_valid()
    assert "archived dataset is left out until it is unarchived" in str(refused.errors["dataset"])
    stack = StackForm(target=catalogue["pairs"]).fields["language"]
    assert model not in stack.queryset
