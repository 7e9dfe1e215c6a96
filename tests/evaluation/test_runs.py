"""Runs, executed in-process through the same services the Celery tasks call: scores equal
the independent reference, repeated steps never duplicate rows, cached embeddings are
reused, and failures end the run with a message a researcher can act on."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from kombu.exceptions import OperationalError as KombuOperationalError
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation import services
from evaluation.imports.stimuli import dataset_import_texts
from evaluation.metrics import knn_entry
from evaluation.models import EmbeddingSet, Run, RunStep, Score
from tests.conftest import make_image_dataset, make_text_dataset, make_text_model, make_timm_model
from workers.celery import app as celery_app

pytestmark = pytest.mark.django_db


def run_steps(run: Run, worker: str = "w1") -> None:
    for step in run.steps.all():
        services.step_extract(step_id=step.pk, worker=worker)
        services.step_score(step_id=step.pk, worker=worker)


@pytest.fixture
def image_run(digits_zip_small) -> Run:
    dataset = make_image_dataset(data=digits_zip_small)
    return services.run_create(
        dataset=dataset, models=[make_timm_model()], metrics=[knn_entry(k=3, split="loo")]
    )


def test_run_scores_equal_sklearn_on_the_cached_embeddings(image_run):
    run_steps(image_run)
    image_run.refresh_from_db()
    assert image_run.status == "succeeded" and image_run.started_at and image_run.finished_at
    score = Score.objects.get()
    embeddings = score.embedding_set.load().astype(np.float64)
    labels = np.array(
        list(image_run.dataset.stimuli.order_by("order").values_list("label", flat=True))
    )
    reference = cross_val_predict(
        KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute"),
        embeddings,
        labels,
        cv=LeaveOneOut(),
    )
    assert score.value == (reference == labels).mean()
    assert score.ci_low < score.value < score.ci_high
    assert (score.metric_key, score.layer, score.n) == ("knn(k=3,split=loo)", "pre_logits", 120)


def test_repeated_steps_never_duplicate_scores(image_run):
    run_steps(image_run)
    first = Score.objects.get()
    step = image_run.steps.get()
    services.step_extract(step_id=step.pk, worker="w2")  # a redelivered message: nothing to do
    services.step_score(step_id=step.pk, worker="w2")
    # A worker died after writing scores but before it acknowledged: the step is scored again.
    RunStep.objects.filter(pk=step.pk).update(status="extracted")
    services.step_score(step_id=step.pk, worker="w3")
    assert Score.objects.count() == 1
    assert Score.objects.get().value == first.value


def test_second_run_reuses_embeddings_without_loading_the_model(image_run, monkeypatch):
    run_steps(image_run)
    monkeypatch.setattr(
        "evaluation.engine.adapters.load_adapter", lambda *a, **k: pytest.fail("model loaded")
    )
    again = services.run_create(
        dataset=image_run.dataset,
        models=[image_run.steps.get().model],
        metrics=[knn_entry(k=5, split="holdout")],
    )
    run_steps(again)
    step = again.steps.get()
    assert step.status == "succeeded" and step.reused_embeddings
    assert EmbeddingSet.objects.count() == 1
    holdout = Score.objects.get(run=again)
    assert holdout.details["split_source"].startswith("stratified random 25%") and holdout.n == 30


def test_text_run_with_the_shipped_model(enqueued):
    dataset = make_text_dataset()
    run = services.run_create(
        dataset=dataset, models=[make_text_model()], metrics=[knn_entry(k=1, split="loo")]
    )
    run_steps(run)
    score = Score.objects.get(run=run)
    assert score.value == 1.0  # animals vs finance sentences: MiniLM separates them
    assert run.steps.get().model.embedding_size == 384


def test_run_of_mismatched_modality_is_refused():
    with pytest.raises(ValidationError, match="different modality"):
        services.run_create(
            dataset=make_text_dataset(),
            models=[make_timm_model()],
            metrics=[knn_entry(k=1, split="loo")],
        )
    assert not Run.objects.exists()


def test_knn_needs_labels():
    import io

    dataset = dataset_import_texts(
        name="unlabelled", upload=io.BytesIO(b"text\nA\nB\n"), label_column=""
    )
    with pytest.raises(ValidationError, match="needs class labels; unlabelled has none"):
        services.run_create(
            dataset=dataset, models=[make_text_model()], metrics=[knn_entry(k=1, split="loo")]
        )


def test_k_larger_than_the_dataset_fails_the_run_with_the_reason():
    run = services.run_create(
        dataset=make_text_dataset(),
        models=[make_text_model()],
        metrics=[knn_entry(k=50, split="loo")],
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "failed"
    assert (
        "k-NN accuracy on sentences: labels: k=50 is larger than the 7 training stimuli"
        in run.error_message
    )
    assert not Score.objects.exists()


def test_corrupt_stimulus_fails_the_step_and_caches_nothing(image_run, settings):
    from pathlib import Path

    stimulus = image_run.dataset.stimuli.get(order=7)
    Path(settings.MEDIA_ROOT, stimulus.file.name).write_bytes(b"garbage")
    run_steps(image_run)
    image_run.refresh_from_db()
    assert image_run.status == "failed"
    # Named as the researcher knows it (its zip member), not as it is stored (000007.png).
    assert f"Image '{stimulus.name}' cannot be decoded" in image_run.error_message
    assert "/" in stimulus.name and Path(stimulus.file.name).name not in image_run.error_message
    assert not EmbeddingSet.objects.exists()
    assert not any(p.is_file() for p in Path(settings.EMBEDDINGS_ROOT).rglob("*"))


def test_deleted_checkpoint_fails_with_a_specific_message(digits_zip_small, tmp_path):
    import timm
    import torch

    checkpoint = tmp_path / "w.pth"
    torch.save(timm.create_model("test_vit").state_dict(), checkpoint)
    model = services.model_register(
        name="ckpt",
        source="timm",
        identifier="test_vit",
        weights="checkpoint",
        checkpoint_path=str(checkpoint),
    )
    checkpoint.unlink()
    run = services.run_create(
        dataset=make_image_dataset(data=digits_zip_small),
        models=[model],
        metrics=[knn_entry(k=1, split="loo")],
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "failed" and f"'{checkpoint}' does not exist" in run.error_message


def test_one_failing_model_does_not_stop_the_others(digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    good = make_timm_model()
    bad = make_timm_model("bad", "test_resnet")
    run = services.run_create(
        dataset=dataset, models=[good, bad], metrics=[knn_entry(k=1, split="loo")]
    )
    RunStep.objects.filter(run=run, model=bad).update(layers=["no_such_layer"])
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "partly_failed"
    assert "Layer 'no_such_layer' does not exist" in run.error_message
    assert Score.objects.filter(run=run).count() == 1
    done = RunStep.objects.get(run=run, model=good)
    assert 0 < done.load_seconds <= done.extract_seconds  # loading is part of extraction


def test_run_page_counts_models_by_status(researcher_client, digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    good, bad = make_timm_model(), make_timm_model("bad", "test_resnet")
    run = services.run_create(
        dataset=dataset, models=[good, bad], metrics=[knn_entry(k=1, split="loo")]
    )
    page = researcher_client.get(run.get_absolute_url()).content.decode()
    assert '2 models: <span class="status queued">2 queued</span>' in page
    RunStep.objects.filter(run=run, model=bad).update(layers=["no_such_layer"])
    run_steps(run)
    page = researcher_client.get(run.get_absolute_url()).content.decode()
    assert '1 succeeded</span> · <span class="status failed">1 failed</span>' in page


def tfidf_run(models: int) -> Run:
    """A run of several TF-IDF baselines on a small text dataset (fast: no network)."""
    dataset = make_text_dataset(name=f"sentences-{Run.objects.count()}")
    chosen = [
        services.model_register(
            name=f"tfidf-{dataset.pk}-{n}", source="baseline", identifier="tfidf"
        )
        for n in range(models)
    ]
    return services.run_create(
        dataset=dataset, models=chosen, metrics=[knn_entry(k=1, split="loo")]
    )


def test_a_run_whose_models_mostly_failed_reads_partly_failed_with_counts(researcher_client):
    run = tfidf_run(4)
    good, *bad = run.steps.order_by("pk")
    services.step_extract(step_id=good.pk, worker="w1")
    services.step_score(step_id=good.pk, worker="w1")
    for step in bad:  # failed half-way through their stimuli
        RunStep.objects.filter(pk=step.pk).update(status="extracting", processed=4)
        services.step_fail(step_id=step.pk, message="CUDA out of memory.")
    run.refresh_from_db()
    assert run.status == "partly_failed" and run.is_finished
    assert Score.objects.filter(run=run).count() == 1  # the model that worked keeps its score
    page = researcher_client.get(run.get_absolute_url()).content.decode()
    assert "Partly failed: 3 of 4 models failed" in page
    assert "Succeeded</span>" not in page.split("<table")[0]
    assert 'value="1.000"' in page  # nothing is left to do: the bar is full
    listing = researcher_client.get(reverse("evaluation:run_list")).content.decode()
    assert '<span class="status partly_failed">Partly failed: 3 of 4 models failed</span>' in (
        listing
    )
    assert "100%" in listing
    assert "Retry failed models" in page


def test_runs_whose_models_all_succeeded_or_all_failed_keep_their_plain_status():
    done = tfidf_run(2)
    for step in done.steps.all():
        services.step_extract(step_id=step.pk, worker="w1")
        services.step_score(step_id=step.pk, worker="w1")
    done.refresh_from_db()
    assert (done.status, done.status_summary) == ("succeeded", "Succeeded")
    failed = tfidf_run(2)
    for step in failed.steps.all():
        services.step_fail(step_id=step.pk, message="CUDA out of memory.")
    failed.refresh_from_db()
    assert (failed.status, failed.status_summary) == ("failed", "Failed: 2 of 2 models failed")


def test_cancelled_run_is_not_picked_up(image_run):
    assert services.run_cancel(run=image_run)
    run_steps(image_run)
    image_run.refresh_from_db()
    assert image_run.status == "cancelled"
    assert set(image_run.steps.values_list("status", flat=True)) == {"cancelled"}
    assert not services.run_cancel(run=image_run)


# --- Recovery -----------------------------------------------------------------------------------
def test_steps_of_a_dead_worker_are_requeued_when_it_restarts(
    image_run, enqueued, django_capture_on_commit_callbacks
):
    step = image_run.steps.get()
    RunStep.objects.filter(pk=step.pk).update(
        status="extracting", claimed_by="gpu@host", attempts=1
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.steps_requeue_orphaned(worker="other@host") == 0
        assert services.steps_requeue_orphaned(worker="gpu@host") == 1
    step.refresh_from_db()
    assert (step.status, step.claimed_by) == ("queued", "")
    assert enqueued == [("evaluation.extract_embeddings", step.pk)]


def test_a_step_that_keeps_killing_workers_fails_after_max_attempts(image_run, settings):
    step = image_run.steps.get()
    RunStep.objects.filter(pk=step.pk).update(
        status="scoring", claimed_by="w", attempts=settings.RUN_MAX_ATTEMPTS
    )
    services.steps_requeue_orphaned(worker="w")
    image_run.refresh_from_db()
    assert image_run.status == "failed" and "stopped 3 times" in image_run.error_message


def test_stalled_steps_are_requeued(image_run, enqueued, django_capture_on_commit_callbacks):
    from django.utils import timezone

    step = image_run.steps.get()
    RunStep.objects.filter(pk=step.pk).update(
        status="scoring",
        claimed_by="gone@host",
        heartbeat_at=timezone.now() - timezone.timedelta(hours=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.steps_requeue_stalled(stalled_after_seconds=60) == 1
    assert RunStep.objects.get(pk=step.pk).status == "extracted"
    assert enqueued == [("evaluation.score_embeddings", step.pk)]


@pytest.fixture
def broker(monkeypatch) -> dict:
    """The broker as the services see it: messages published, or refused while it is down."""
    state: dict = {"up": True, "published": [], "tried": []}

    def send_task(task_name: str, args: list[int], **options: object) -> None:
        state["tried"].append(task_name)
        if not state["up"]:
            raise KombuOperationalError(
                "Error 111 connecting to 127.0.0.1:6379. Connection refused."
            )
        state["published"].append((task_name, *args))

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return state


def test_run_created_while_the_broker_is_down_is_stored_and_sent_once_it_is_back(
    broker, django_capture_on_commit_callbacks, researcher_client
):
    dataset = make_text_dataset()
    models = [
        services.model_register(name=f"tfidf-{n}", source="baseline", identifier="tfidf")
        for n in range(3)
    ]
    broker["up"] = False
    with django_capture_on_commit_callbacks(execute=True):  # no error: the run is stored
        run = services.run_create(
            dataset=dataset, models=models, metrics=[knn_entry(k=1, split="loo")]
        )
    steps = list(run.steps.order_by("pk"))
    assert Run.objects.get().status == "queued"
    assert [s.message_sent_at for s in steps] == [None, None, None]
    # One refusal is enough: the other steps wait for the sweep too.
    assert broker["tried"].count("evaluation.extract_embeddings") == 1
    assert run.waiting_for_queue
    page = researcher_client.get(run.get_absolute_url()).content.decode()
    assert "The task queue is unreachable, so no worker has this run's work yet." in page

    assert services.steps_resend_lost(live=None, grace_seconds=60) == 0  # just created
    assert services.steps_resend_lost(live=None, grace_seconds=0) == 0  # broker still down
    broker["up"] = True
    assert services.steps_resend_lost(live=None, grace_seconds=0) == 3
    assert broker["published"] == [("evaluation.extract_embeddings", s.pk) for s in steps]
    assert all(s.message_sent_at for s in run.steps.all())
    assert not Run.objects.get().waiting_for_queue
    assert (
        "task queue is unreachable"
        not in researcher_client.get(run.get_absolute_url()).content.decode()
    )
    # Sent: without a view of the broker's contents, nothing is sent twice.
    assert services.steps_resend_lost(live=None, grace_seconds=0) == 0
    assert len(broker["published"]) == 3


def test_messages_lost_with_a_restarted_broker_are_sent_again_but_live_ones_are_not(broker):
    from django.utils import timezone

    run = tfidf_run(3)
    first, second, third = run.steps.order_by("pk")
    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    RunStep.objects.filter(run=run).update(message_sent_at=long_ago, heartbeat_at=long_ago)
    RunStep.objects.filter(pk=third.pk).update(status="extracted")  # waiting to be scored
    live = {("evaluation.extract_embeddings", first.pk)}  # still in the broker
    assert services.steps_resend_lost(live=live) == 2
    assert broker["published"] == [
        ("evaluation.extract_embeddings", second.pk),
        ("evaluation.score_embeddings", third.pk),
    ]
    # Just sent: not again until they are lost for longer than the grace period.
    assert services.steps_resend_lost(live=live) == 0


def test_broker_down_after_extraction_leaves_the_step_extracted_for_the_sweep(
    broker, django_capture_on_commit_callbacks
):
    run = tfidf_run(1)
    step = run.steps.get()
    broker["up"] = False
    # The worker finishes extracting while the broker is away: no error in the worker.
    with django_capture_on_commit_callbacks(execute=True):
        services.step_extract(step_id=step.pk, worker="w1")
    step.refresh_from_db()
    assert (step.status, step.message_sent_at, step.claimed_by) == ("extracted", None, "")
    assert broker["tried"] == ["evaluation.score_embeddings"]
    assert Run.objects.get().waiting_for_queue
    broker["up"] = True
    assert services.steps_resend_lost(live=None, grace_seconds=0) == 1
    assert broker["published"] == [("evaluation.score_embeddings", step.pk)]
    services.step_score(step_id=step.pk, worker="w2")
    assert Run.objects.get().status == "succeeded"


def test_steps_held_but_not_run_by_a_live_worker_are_requeued(broker):
    from django.utils import timezone

    run = tfidf_run(2)
    dropped, running = run.steps.order_by("pk")
    RunStep.objects.filter(run=run).update(
        status="extracting",
        claimed_by="gpu0@host",
        attempts=1,
        heartbeat_at=timezone.now() - timezone.timedelta(minutes=1),
    )
    assert services.steps_requeue_dropped(worker="other@host", running=set()) == 0
    assert services.steps_requeue_dropped(worker="gpu0@host", running={running.pk}) == 1
    assert RunStep.objects.get(pk=dropped.pk).status == "queued"
    assert RunStep.objects.get(pk=running.pk).status == "extracting"


# --- Pages --------------------------------------------------------------------------------------
def test_run_form_htmx_lists_only_models_of_the_dataset_modality(researcher_client):
    text = make_text_dataset()
    make_text_model()
    make_timm_model()
    response = researcher_client.get(
        reverse("evaluation:run_create"), {"dataset": text.pk}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert 'id="run-fields"' in html and "<html" not in html
    assert "minilm" in html and "test-vit" not in html


def test_run_form_creates_a_run_and_queues_it(
    researcher_client, enqueued, django_capture_on_commit_callbacks
):
    dataset = make_text_dataset()
    model = make_text_model()
    with django_capture_on_commit_callbacks(execute=True):
        response = researcher_client.post(
            reverse("evaluation:run_create"),
            {
                "dataset": dataset.pk,
                "models": [model.pk],
                "metric_knn": "on",
                "knn_k": 3,
                "knn_split": "loo",
            },
        )
    run = Run.objects.get()
    assert response.status_code == 302 and response.url == run.get_absolute_url()
    assert run.metrics == [{"name": "knn", "params": {"k": 3, "split": "loo"}}]
    assert enqueued == [("evaluation.extract_embeddings", run.steps.get().pk)]


def test_run_form_while_the_broker_is_down_stores_the_run_once_and_says_so(
    researcher_client, broker, django_capture_on_commit_callbacks
):
    dataset = make_text_dataset()
    model = make_text_model()
    broker["up"] = False
    with django_capture_on_commit_callbacks(execute=True):
        response = researcher_client.post(
            reverse("evaluation:run_create"),
            {
                "dataset": dataset.pk,
                "models": [model.pk],
                "metric_knn": "on",
                "knn_k": 3,
                "knn_split": "loo",
            },
        )
    run = Run.objects.get()  # no 500 after the fact, nothing for a second press to duplicate
    assert response.status_code == 302 and response.url == run.get_absolute_url()
    page = researcher_client.get(run.get_absolute_url()).content.decode()
    assert "The task queue is unreachable" in page and "starts once the queue answers" in page


def test_run_form_errors_are_shown(researcher_client):
    dataset = make_text_dataset()
    response = researcher_client.post(
        reverse("evaluation:run_create"),
        {"dataset": dataset.pk, "metric_knn": "on", "knn_k": 0, "knn_split": "loo"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "This field is required" in html
    assert "greater than or equal to 1" in html and not Run.objects.exists()


def test_run_page_polls_until_finished_then_shows_scores(researcher_client, image_run):
    page = researcher_client.get(image_run.get_absolute_url()).content.decode()
    assert 'hx-trigger="every 1s"' in page
    run_steps(image_run)
    partial = researcher_client.get(
        image_run.get_absolute_url(), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert (
        "hx-trigger" not in partial and "knn(k=3,split=loo)" in partial and "<html" not in partial
    )


def test_leaderboard_shows_scores_with_intervals_and_baseline_label(client, image_run):
    run_steps(image_run)
    score = Score.objects.get()
    html = client.get(score.target.get_absolute_url()).content.decode()
    assert "untrained baseline" in html
    assert f"{score.value:.3f}" in html and f"[{score.ci_low:.3f}, {score.ci_high:.3f}]" in html


def test_retry_requeues_only_failed_steps_and_reuses_what_was_cached(
    enqueued, django_capture_on_commit_callbacks
):
    dataset = make_text_dataset()
    good, flaky = (
        make_text_model(),
        services.model_register(name="tfidf", source="baseline", identifier="tfidf"),
    )
    run = services.run_create(
        dataset=dataset, models=[good, flaky], metrics=[knn_entry(k=1, split="loo")]
    )
    good_step, flaky_step = run.steps.get(model=good), run.steps.get(model=flaky)
    services.step_extract(step_id=good_step.pk, worker="w1")
    services.step_score(step_id=good_step.pk, worker="w1")
    services.step_fail(step_id=flaky_step.pk, message="the worker stopped 3 times")
    run.refresh_from_db()
    assert run.status == "partly_failed" and "the worker stopped 3 times" in run.error_message
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.run_retry(run=run) == 1
    assert enqueued == [("evaluation.extract_embeddings", flaky_step.pk)]
    run.refresh_from_db()
    assert run.status == "queued" and run.error_message == ""
    services.step_extract(step_id=flaky_step.pk, worker="w2")
    services.step_score(step_id=flaky_step.pk, worker="w2")
    run.refresh_from_db()
    assert run.status == "succeeded" and Score.objects.filter(run=run).count() == 2
    assert services.run_retry(run=run) == 0  # nothing left to retry
