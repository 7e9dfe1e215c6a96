"""Workers on other machines through an S3-compatible object store (a real S3 server on this
machine: moto's server mode, tests/object_store.py). Each worker here is a real Celery
worker whose MEDIA_ROOT and EMBEDDINGS_ROOT are empty folders of its own, as on a machine
that shares no disk with the web: it reads the stimuli and writes the embeddings through the
bucket only, and a step it leaves half done is resumed by another from the chunks it kept
there."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation import services
from evaluation.imports.stimuli import dataset_import_images
from evaluation.metrics import knn_entry
from evaluation.models import EmbeddingSet, Run, Score
from tests.conftest import make_timm_model
from tests.integration.conftest import (
    WorkerProcess,
    extracting_past,
    long_extraction_run,
    wait_for,
)
from tests.object_store import (  # noqa: F401 (fixtures)
    ObjectStore,
    moto_server_fixture,
    object_store_fixture,
)
from webapp.demo import digits_zip

pytestmark = pytest.mark.integration

RemoteWorker = Callable[..., tuple[WorkerProcess, Path]]


def finished(run: Run) -> bool:
    run.refresh_from_db()
    return run.is_finished


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def remote_worker(
    worker_env: dict[str, str], object_store: ObjectStore, isolated_storage: Path
) -> Iterator[RemoteWorker]:
    """Start a worker as if on another machine: its own empty MEDIA_ROOT, EMBEDDINGS_ROOT
    and cache, and the bucket's settings (or those of ``bucket``). Returns it and its
    machine's folder."""
    workers: list[WorkerProcess] = []

    def start(name: str, machine: str, *, bucket: str | None = None) -> tuple[WorkerProcess, Path]:
        root = isolated_storage / machine
        env = {
            **worker_env,
            **object_store.env(root / "cache", bucket=bucket),
            "MEDIA_ROOT": str(root / "media"),
            "EMBEDDINGS_ROOT": str(root / "embeddings"),
            "LIKENESS_VAR_DIR": str(root / "var"),
        }
        worker = WorkerProcess(env, name, isolated_storage / f"{machine}.log")
        workers.append(worker)
        return worker.start(), root

    yield start
    for worker in workers:
        worker.stop()


def test_a_worker_that_sees_only_the_bucket_completes_a_run_and_the_next_run_reuses_it(
    object_store: ObjectStore, remote_worker: RemoteWorker, settings
):
    dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=120)))
    assert files_under(Path(settings.MEDIA_ROOT)) == []  # the stimuli are in the bucket only
    model = make_timm_model()
    worker, machine = remote_worker("elsewhere@%h", "machine-b")
    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=3, split="loo")]
    )
    wait_for(lambda: finished(run), timeout=120, message=worker.log)
    assert run.status == "succeeded", f"{run.error_message}\n{worker.log()}"

    score = Score.objects.get(run=run)
    key = f"embeddings/{score.embedding_set.relative_path}"
    assert object_store.keys("embeddings/") == [key]  # the file, and no chunk left behind
    vectors = np.load(io.BytesIO(object_store.read(key))).astype(np.float64)
    labels = np.array(list(dataset.stimuli.order_by("order").values_list("label", flat=True)))
    reference = cross_val_predict(
        KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute"),
        vectors,
        labels,
        cv=LeaveOneOut(),
    )
    assert score.value == (reference == labels).mean()
    # Nothing went through either machine's MEDIA_ROOT or EMBEDDINGS_ROOT; the worker read
    # every stimulus through its cache, under the content hash.
    for folder in ("media", "embeddings"):
        assert files_under(machine / folder) == []
    assert files_under(Path(settings.EMBEDDINGS_ROOT)) == []
    cached = {p.stem for p in (machine / "cache" / "media" / "by-hash").rglob("*.png")}
    assert cached == set(dataset.stimuli.values_list("content_hash", flat=True))

    again = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")]
    )
    wait_for(lambda: finished(again), timeout=60, message=worker.log)
    assert again.status == "succeeded", again.error_message
    assert again.steps.get().reused_embeddings
    assert EmbeddingSet.objects.count() == 1 and object_store.keys("embeddings/") == [key]


def test_a_step_killed_on_one_machine_resumes_on_another_from_the_chunks_in_the_bucket(
    object_store: ObjectStore, remote_worker: RemoteWorker
):
    first, _ = remote_worker("gpu1@%h", "machine-a")
    run = long_extraction_run()
    step = run.steps.get()
    wait_for(extracting_past(step), timeout=120, message=first.log)
    first.kill()
    step.refresh_from_db()
    assert step.status == "extracting" and step.processed < 1200, "the kill came too late to test"
    kept = [k for k in object_store.keys("embeddings/") if ".partial-128/chunk-" in k]
    assert len(kept) >= 2, kept  # chunks of 128: those saved before the kill are in the bucket

    # Another machine (the same worker name, so it requeues the step at once): it has none
    # of the first one's files.
    second, machine = remote_worker("gpu1@%h", "machine-b")
    wait_for(lambda: finished(run), timeout=180, message=second.log)
    assert run.status == "succeeded", f"{run.error_message}\n{second.log()}"
    keys = Counter(
        Score.objects.filter(run=run).values_list("model", "layer", "metric_key", "target")
    )
    assert len(keys) == 2 and set(keys.values()) == {1}
    reused = re.search(r"resumed its extraction: reused (\d+) saved chunk", second.log())
    assert reused and int(reused.group(1)) == len(kept), second.log()[-2000:]
    # It fetched only the stimuli of the chunks it embedded, and left no chunk behind.
    fetched = files_under(machine / "cache" / "media" / "by-hash")
    assert len(fetched) <= 1200 - 128 * int(reused.group(1))
    stored = Score.objects.filter(run=run).first().embedding_set  # type: ignore[union-attr]
    assert object_store.keys("embeddings/") == [f"embeddings/{stored.relative_path}"]
    assert stored.load().shape == (1200, stored.dim)


def test_a_worker_given_a_bucket_that_does_not_exist_fails_the_step_saying_so(
    object_store: ObjectStore, remote_worker: RemoteWorker
):
    dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=40)))
    worker, _ = remote_worker("misconfigured@%h", "machine-c", bucket="no-such-bucket")
    run = services.run_create(
        dataset=dataset, models=[make_timm_model()], metrics=[knn_entry(k=3, split="loo")]
    )
    wait_for(lambda: finished(run), timeout=120, message=worker.log)
    step = run.steps.get()
    assert run.status == "failed" and step.status == "failed"
    assert step.error_message.startswith(
        f"There is no bucket 'no-such-bucket' at {object_store.endpoint}: could not "
    ), step.error_message
    assert "Create it, or set STORAGE_BUCKET" in step.error_message
    assert "bug in Likeness" not in step.error_message
