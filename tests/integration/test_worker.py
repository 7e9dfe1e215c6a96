"""The whole path on real services: a researcher submits the run form, a real Celery worker
on Redis and PostgreSQL extracts and scores, and the result reaches the leaderboard. A
worker killed with SIGKILL mid-run is recovered without losing or duplicating anything."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from collections import Counter

import numpy as np
import pytest
from django.urls import reverse
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation.models import Run, RunStep, Score
from tests.conftest import make_image_dataset, make_timm_model
from tests.integration.conftest import extracting_past, long_extraction_run, wait_for

pytestmark = pytest.mark.integration


def finished(run: Run) -> bool:
    run.refresh_from_db()
    return run.is_finished


def test_run_from_form_to_leaderboard_on_a_real_worker(
    start_worker, client, researcher, digits_zip_small
):
    worker = start_worker()
    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    client.force_login(researcher)
    response = client.post(
        reverse("evaluation:run_create"),
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            "metric_knn": "on",
            "knn_k": 5,
            "knn_split": "loo",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302
    wait_for(lambda: finished(run), timeout=120, message=worker.log)
    assert run.status == "succeeded", run.error_message

    score = Score.objects.get(run=run)
    embeddings = score.embedding_set.load().astype(np.float64)
    labels = np.array(list(dataset.stimuli.order_by("order").values_list("label", flat=True)))
    reference = cross_val_predict(
        KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute"),
        embeddings,
        labels,
        cv=LeaveOneOut(),
    )
    assert score.value == (reference == labels).mean()

    client.logout()
    board = client.get(reverse("evaluation:leaderboard", args=[score.target_id])).content.decode()
    assert "test-vit" in board and f"[{score.ci_low:.3f}, {score.ci_high:.3f}]" in board


def test_sigkill_mid_run_then_new_worker_finishes_with_exactly_one_score_each(
    start_worker, settings
):
    first = start_worker("gpu1@%h")
    run = long_extraction_run()
    step = run.steps.get()
    wait_for(extracting_past(step), timeout=120, message=first.log)
    first.kill()
    step.refresh_from_db()
    assert step.status == "extracting" and step.processed < 1200, "the kill came too late to test"
    killed_at = step.processed

    second = start_worker("gpu1@%h")  # the same worker name, back after a crash
    wait_for(lambda: finished(run), timeout=180, message=second.log)
    assert run.status == "succeeded", run.error_message
    step.refresh_from_db()
    assert step.status == "succeeded"
    keys = Counter(
        Score.objects.filter(run=run).values_list("model", "layer", "metric_key", "target")
    )
    assert len(keys) == 2 and set(keys.values()) == {1}
    assert not RunStep.objects.exclude(status__in=["succeeded"]).exists()
    log = second.log()
    assert "Requeued 1 run step(s)" in log
    # Chunks of 128: at least 2 were saved before the kill (>= 300 done), at most those done.
    reused = re.search(r"resumed its extraction: reused (\d+) saved chunk", log)
    assert reused and 2 <= int(reused.group(1)) <= killed_at // 128 + 1, log[-2000:]


def test_embeddings_uploaded_through_the_api_are_read_by_a_real_worker(start_worker, researcher):
    """The web process only streams the upload to disk; a real worker on Redis reads it,
    reports progress and leaves a model whose embeddings equal the file's rows."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from evaluation.models import EmbeddingImport, EmbeddingSet
    from tests.conftest import make_text_dataset

    worker = start_worker()
    dataset = make_text_dataset()
    vectors = np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)
    upload = io.BytesIO()
    np.save(upload, vectors)
    api = APIClient()
    api.force_authenticate(researcher)
    response = api.post(
        "/api/embeddings/",
        {"name": "from-elsewhere", "dataset": dataset.pk, "match": "order",
         "file": SimpleUploadedFile("vectors.npy", upload.getvalue())},
        format="multipart",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    job = EmbeddingImport.objects.get(pk=response.json()["id"])

    def done() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(done, timeout=60, message=worker.log)
    assert job.status == "succeeded", job.error_message
    assert job.processed == job.total == 8
    stored = EmbeddingSet.objects.get(model=job.model)
    np.testing.assert_array_equal(stored.load(), vectors)


def test_sigterm_to_a_prefork_worker_hands_its_extraction_back_at_once(start_worker):
    """docker stop signals only the worker's main process; the task runs in a pool child,
    which sees the shared ending flag at its next batch and gives the step back, so the
    warm shutdown does not wait out the extraction (compose's grace period is 60 s)."""
    first = start_worker("gpu0@%h")
    run = long_extraction_run()
    step = run.steps.get()
    wait_for(extracting_past(step), timeout=120, message=first.log)
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGTERM)  # the main process only, as docker stop
    started = time.monotonic()
    first.process.wait(timeout=30)
    stopped_in = time.monotonic() - started
    step.refresh_from_db()
    assert step.status == "queued" and step.processed < 1200, first.log()
    assert f"step {step.pk} goes back to the queue" in first.log()
    assert stopped_in < 15, f"the warm shutdown waited {stopped_in:.0f} s"

    second = start_worker("gpu1@%h")
    wait_for(lambda: finished(run), timeout=180, message=second.log)
    assert run.status == "succeeded", run.error_message
    step.refresh_from_db()
    assert step.extracted_by.startswith("gpu1@") and step.attempts <= 1
    assert re.search(r"resumed its extraction: reused [1-9]\d* saved chunk", second.log())
