"""Runs over the API: launched with the web form's validation, followed with per-model
progress, cancelled and retried; bad requests change nothing."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError

from evaluation import services
from evaluation.models import Run, RunStep, Score
from tests.api.conftest import error, run_steps
from tests.conftest import make_text_dataset, make_text_model, make_timm_model
from workers.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def text_setup(enqueued):
    return {"dataset": make_text_dataset(), "model": make_text_model()}


def launch(api, body):
    return api.post("/api/runs/", body, format="json")


def test_launch_queues_one_step_per_model_and_reports_progress(
    api, text_setup, enqueued, django_capture_on_commit_callbacks
):
    dataset, model = text_setup["dataset"], text_setup["model"]
    with django_capture_on_commit_callbacks(execute=True):
        response = launch(
            api,
            {
                "dataset": dataset.pk,
                "models": [model.pk],
                "metrics": [
                    {"name": "knn", "params": {"k": 1}},
                    {"name": "nearest_class_mean"},
                ],
            },
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    run = Run.objects.get()
    step = run.steps.get()
    assert response["Location"] == f"/api/runs/{run.pk}/"
    assert enqueued == [("evaluation.extract_embeddings", step.pk)]
    # Stored as the run form stores it (the defaults filled in, the same keys).
    assert run.metrics == [
        {"name": "knn", "params": {"k": 1, "split": "loo"}},
        {"name": "nearest_class_mean", "params": {}},
    ]
    assert body["status"] == "queued" and body["progress"] == 0.0
    assert body["metric_keys"] == ["knn(k=1,split=loo)", "nearest_class_mean"]
    assert body["steps"][0]["model"]["id"] == model.pk
    assert (body["steps"][0]["processed"], body["steps"][0]["total"]) == (0, 8)
    assert body["seconds_left"] is None and body["elapsed_seconds"] is None

    run_steps(run)  # the workers' part, in-process
    done = api.get(f"/api/runs/{run.pk}/").json()
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["steps"][0]["status"] == "succeeded"
    assert done["steps"][0]["processed"] == 8 and done["steps"][0]["progress"] == 1.0
    assert done["elapsed_seconds"] > 0 and done["seconds_left"] is None
    assert Score.objects.filter(run=run).count() == 2


def test_launch_while_the_task_queue_is_down_stores_one_queued_run(
    api, researcher, monkeypatch, django_capture_on_commit_callbacks
):
    dataset, model = make_text_dataset(), make_text_model()

    def unreachable(task_name, args, **options):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        response = launch(
            api,
            {"dataset": dataset.pk, "models": [model.pk], "metrics": [{"name": "knn"}]},
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["waiting_for_queue"]) == ("queued", True)
    assert Run.objects.count() == 1  # one outcome: stored, and the client told so
    # Once the broker answers, the workers' sweep sends it: no longer waiting.
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args: sent.append((name, *args)))
    assert services.steps_resend_lost(live=None, grace_seconds=0) == 1
    assert api.get(f"/api/runs/{body['id']}/").json()["waiting_for_queue"] is False


def test_progress_mid_extraction_comes_from_the_selectors(api, text_setup, researcher):
    from datetime import timedelta

    from django.utils import timezone

    run = services.run_create(
        dataset=text_setup["dataset"],
        models=[text_setup["model"]],
        metrics=[{"name": "knn", "params": {"k": 1, "split": "loo"}}],
    )
    started = timezone.now() - timedelta(seconds=30)
    Run.objects.filter(pk=run.pk).update(status="running", started_at=started)
    RunStep.objects.filter(run=run).update(status="extracting", processed=4, total=8)
    body = api.get(f"/api/runs/{run.pk}/").json()
    assert body["status"] == "running"
    assert body["progress"] == pytest.approx(0.45)  # extraction is 90% of a step
    assert body["steps"][0]["progress"] == pytest.approx(0.45)
    assert body["elapsed_seconds"] == pytest.approx(30, abs=2)
    # seconds left = elapsed * (1 - progress) / progress, as the run page shows.
    assert body["seconds_left"] == pytest.approx(30 * 0.55 / 0.45, abs=3)


def refused(api, body) -> dict:
    before = (Run.objects.count(), RunStep.objects.count())
    response = launch(api, body)
    assert response.status_code == 400, response.json()
    assert (Run.objects.count(), RunStep.objects.count()) == before
    return response.json()


def test_metric_parameters_are_checked_as_the_form_checks_them(api, text_setup):
    base = {"dataset": text_setup["dataset"].pk, "models": [text_setup["model"].pk]}
    assert refused(api, {**base, "metrics": [{"name": "knn", "params": {"k": 0}}]}) == error(
        "invalid",
        "metrics[0].params.k: Ensure this value is greater than or equal to 1.",
        {"metrics": {"0": {"params": {"k": ["Ensure this value is greater than or equal to 1."]}}}},
    )
    body = refused(api, {**base, "metrics": [{"name": "knn", "params": {"k": 1001}}]})
    assert body["error"]["message"] == (
        "metrics[0].params.k: Ensure this value is less than or equal to 1000."
    )
    body = refused(api, {**base, "metrics": [{"name": "knn", "params": {"split": "random"}}]})
    assert body["error"]["message"] == 'metrics[0].params.split: "random" is not a valid choice.'
    body = refused(api, {**base, "metrics": [{"name": "few_shot", "params": {"k_shot": 3}}]})
    assert body["error"]["message"] == 'metrics[0].params.k_shot: "3" is not a valid choice.'
    body = refused(api, {**base, "metrics": [{"name": "knn", "params": {"correlation": "x"}}]})
    assert "metrics[0].params.correlation" in body["error"]["message"]
    body = refused(
        api, {**base, "metrics": [{"name": "knn", "params": {"correlation": "pearson"}}]}
    )
    assert body["error"]["message"] == (
        "metrics[0].params: knn takes only k, split; correlation do(es) not apply."
    )
    body = refused(api, {**base, "metrics": [{"name": "odd_one_out", "params": {"k": 3}}]})
    assert body["error"]["message"] == (
        "metrics[0].params: odd_one_out takes no parameters; k do(es) not apply."
    )
    body = refused(api, {**base, "metrics": [{"name": "knn", "params": {"kk": 3}}]})
    assert body["error"]["message"] == "metrics[0].params.kk: Unknown parameter."
    body = refused(api, {**base, "metrics": [{"name": "magic"}]})
    assert body["error"]["message"] == 'metrics[0].name: "magic" is not a valid choice.'
    body = refused(api, {**base, "metrics": []})
    assert body["error"]["message"] == "metrics: This list may not be empty."
    body = refused(api, {**base, "metrics": [{"name": "knn"}, {"name": "knn", "params": {"k": 5}}]})
    assert body["error"]["message"] == "metrics: knn(k=5,split=loo) is asked for twice."


def test_models_dataset_and_layers_are_checked(api, text_setup):
    dataset, model = text_setup["dataset"], text_setup["model"]
    knn = [{"name": "knn"}]
    body = refused(api, {"dataset": dataset.pk, "models": [], "metrics": knn})
    assert body["error"]["fields"] == {"models": ["This list may not be empty."]}
    body = refused(api, {"dataset": dataset.pk, "models": [model.pk, model.pk], "metrics": knn})
    assert body["error"]["message"] == f"models: Model {model.pk} is listed twice."
    body = refused(api, {"dataset": 999999, "models": [model.pk], "metrics": knn})
    assert body["error"]["message"] == 'dataset: Invalid pk "999999" - object does not exist.'
    body = refused(api, {"dataset": dataset.pk, "models": ["x"], "metrics": knn})
    assert body["error"]["message"] == "models: Incorrect type. Expected pk value, received str."
    body = refused(
        api,
        {"dataset": dataset.pk, "models": [model.pk], "metrics": knn, "layers": {"12345": ["a"]}},
    )
    assert body["error"]["message"] == "layers: '12345' is not the id of one of the chosen models."
    # The service's own checks, with its messages: modality, targets, layer names.
    image_model = make_timm_model()
    body = refused(api, {"dataset": dataset.pk, "models": [image_model.pk], "metrics": knn})
    assert body["error"]["fields"] == {
        "models": [
            "test-vit (untrained baseline) embeds a different modality than the text "
            "stimuli of sentences."
        ]
    }
    body = refused(
        api, {"dataset": dataset.pk, "models": [model.pk], "metrics": [{"name": "two_afc"}]}
    )
    assert body["error"]["message"] == (
        "metrics: 2AFC agreement needs human 2afc; sentences has none."
    )


def test_unknown_layer_of_an_inspected_model_is_refused_by_name(api, enqueued, digits_zip_small):
    from tests.conftest import make_image_dataset

    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    services.model_inspect(model_id=model.pk)
    body = refused(
        api,
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            "metrics": [{"name": "knn"}],
            "layers": {str(model.pk): ["blocks.9"]},
        },
    )
    assert body["error"]["code"] == "invalid"
    assert body["error"]["message"].startswith("layers: test-vit has no layer 'blocks.9'.")
    ok = launch(
        api,
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            "metrics": [{"name": "knn", "params": {"k": 3}}],
            "layers": {str(model.pk): ["blocks.0", "pre_logits"]},
        },
    )
    assert ok.status_code == 201
    assert ok.json()["steps"][0]["layers"] == ["blocks.0", "pre_logits"]


def test_cancel_then_retry(api, text_setup, enqueued):
    run = services.run_create(
        dataset=text_setup["dataset"],
        models=[text_setup["model"]],
        metrics=[{"name": "knn", "params": {"k": 1, "split": "loo"}}],
    )
    early_retry = api.post(f"/api/runs/{run.pk}/retry/")
    assert early_retry.status_code == 409
    assert early_retry.json() == error(
        "conflict",
        f"Nothing to retry in run {run.pk}: only finished runs with failed or cancelled "
        "models can be retried.",
    )
    cancelled = api.post(f"/api/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["steps"][0]["status"] == "cancelled"
    again = api.post(f"/api/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json() == error("conflict", f"Run {run.pk} had already finished (cancelled).")

    retried = api.post(f"/api/runs/{run.pk}/retry/")
    assert retried.status_code == 200
    assert retried.json()["queued"] == 1
    assert retried.json()["run"]["status"] == "queued"
    assert retried.json()["run"]["steps"][0]["status"] == "queued"
    run_steps(run)
    assert api.get(f"/api/runs/{run.pk}/").json()["status"] == "succeeded"


def test_a_run_with_some_models_failed_is_partly_failed_in_the_api(api, enqueued):
    dataset = make_text_dataset()
    models = [
        services.model_register(name=name, source="baseline", identifier="tfidf")
        for name in ("tfidf-a", "tfidf-b", "tfidf-c")
    ]
    run = services.run_create(
        dataset=dataset,
        models=models,
        metrics=[{"name": "knn", "params": {"k": 1, "split": "loo"}}],
    )
    good, *bad = run.steps.order_by("pk")
    services.step_extract(step_id=good.pk, worker="w1")
    services.step_score(step_id=good.pk, worker="w1")
    for step in bad:
        RunStep.objects.filter(pk=step.pk).update(status="extracting", processed=3)
        services.step_fail(step_id=step.pk, message="CUDA out of memory.")
    body = api.get(f"/api/runs/{run.pk}/").json()
    assert body["status"] == "partly_failed"
    assert body["status_summary"] == "Partly failed: 2 of 3 models failed"
    assert body["progress"] == 1.0
    listed = api.get("/api/runs/?status=partly_failed").json()
    assert [r["id"] for r in listed["results"]] == [run.pk]
    assert api.get("/api/runs/?status=succeeded").json()["results"] == []
    # Its one score is valid and public like any other.
    assert [s["model"]["name"] for s in api.get("/api/scores/").json()["results"]] == ["tfidf-a"]


def test_cancel_and_retry_of_unknown_run_are_404(api):
    for verb in ("cancel", "retry"):
        response = api.post(f"/api/runs/424242/{verb}/")
        assert response.status_code == 404
        assert response.json() == error("not_found", "No run with id 424242.")


def test_list_is_newest_first_and_filtered(api, text_setup):
    knn = [{"name": "knn", "params": {"k": 1, "split": "loo"}}]
    first = services.run_create(
        dataset=text_setup["dataset"], models=[text_setup["model"]], metrics=knn
    )
    second = services.run_create(
        dataset=text_setup["dataset"], models=[text_setup["model"]], metrics=knn
    )
    services.run_cancel(run=second)
    listed = api.get("/api/runs/").json()
    assert [r["id"] for r in listed["results"]] == [second.pk, first.pk]
    queued = api.get("/api/runs/?status=queued").json()
    assert [r["id"] for r in queued["results"]] == [first.pk]
    bad = api.get("/api/runs/?status=done")
    assert bad.status_code == 400
    assert bad.json() == error(
        "invalid",
        "status: Select a valid choice. done is not one of the available choices.",
        {"status": ["Select a valid choice. done is not one of the available choices."]},
    )


def test_run_list_queries_do_not_grow_with_runs(api, text_setup, django_assert_max_num_queries):
    knn = [{"name": "knn", "params": {"k": 1, "split": "loo"}}]
    for _ in range(6):
        services.run_create(
            dataset=text_setup["dataset"], models=[text_setup["model"]], metrics=knn
        )
    with django_assert_max_num_queries(6):  # token, count, runs, steps with models
        assert api.get("/api/runs/").json()["count"] == 6
