"""Media and embeddings in an S3-compatible object store (STORAGE_BUCKET), against a real
S3 server on this machine (moto's server mode; tests/object_store.py): nothing lands in
MEDIA_ROOT or EMBEDDINGS_ROOT, each machine reads through its content-addressed cache,
files served to users stream from the store (ranges as ranged reads), and a store that is
missing or away is named, never "a bug"."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from evaluation import services, storage
from evaluation.engine.errors import StorageError
from evaluation.imports.embeddings import embeddings_import
from evaluation.metrics import knn_entry
from evaluation.models import Dataset, EmbeddingSet, Score, Stimulus
from tests.conftest import make_image_dataset, make_text_dataset, make_timm_model
from tests.evaluation.test_runs import enqueued, run_steps  # noqa: F401 (fixture)
from tests.object_store import (  # noqa: F401 (fixtures)
    ObjectStore,
    moto_server_fixture,
    object_store_fixture,
)

pytestmark = pytest.mark.django_db


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- The storage module -------------------------------------------------------------------------
def test_a_stored_file_is_fetched_once_into_the_cache_under_its_content_hash(
    object_store: ObjectStore, tmp_path
):
    data = np.random.default_rng(0).bytes(300_000)
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "clip.mp4"
    source.write_bytes(data)
    storage.store_file(storage.MEDIA, "datasets/7/000001.mp4", source, keep_copy=False)
    assert not source.exists()
    assert object_store.keys() == ["media/datasets/7/000001.mp4"]

    copy = storage.local_path(storage.MEDIA, "datasets/7/000001.mp4", sha256=sha)
    assert copy.read_bytes() == data and copy.name == f"{sha}.mp4"
    # The cache answers from now on: the store is not asked again.
    object_store.client().delete_object(
        Bucket=object_store.bucket, Key="media/datasets/7/000001.mp4"
    )
    assert storage.local_path(storage.MEDIA, "datasets/7/000001.mp4", sha256=sha) == copy
    assert not list(copy.parent.glob(".fetch-*"))  # no temporary file left


def test_a_stored_file_with_other_bytes_than_its_hash_is_refused_and_not_cached(
    object_store: ObjectStore, tmp_path
):
    source = tmp_path / "a.png"
    source.write_bytes(b"not what was imported")
    storage.store_file(storage.MEDIA, "datasets/1/a.png", source, keep_copy=False)
    with pytest.raises(StorageError, match=r"does not hold the content it was imported with"):
        storage.local_path(storage.MEDIA, "datasets/1/a.png", sha256="0" * 64)
    assert files_under(storage.cache_root()) == []


def test_ranges_and_npy_headers_are_read_without_the_rest_of_the_file(
    object_store: ObjectStore, tmp_path
):
    array = np.arange(5000 * 16, dtype=np.float32).reshape(5000, 16)
    source = tmp_path / "x.npy"
    np.save(source, array)
    whole = source.read_bytes()
    storage.store_file(storage.EMBEDDINGS, "ab/abc.npy", source, keep_copy=False)
    assert storage.read_bytes(storage.EMBEDDINGS, "ab/abc.npy", 1000, 1100) == whole[1000:1100]
    assert storage.npy_shape(storage.EMBEDDINGS, "ab/abc.npy") == (5000, 16)
    assert storage.size(storage.EMBEDDINGS, "ab/abc.npy") == len(whole)
    assert files_under(storage.cache_root()) == []  # neither was a download


def test_files_under_a_prefix_are_removed_together(object_store: ObjectStore, tmp_path):
    for index in range(3):
        chunk = tmp_path / f"c{index}"
        chunk.write_bytes(b"x")
        storage.upload(storage.EMBEDDINGS, f"ab/abc.npy.partial-64/chunk-{index:06d}.npy", chunk)
    storage.upload(storage.EMBEDDINGS, "ab/abd.npy", tmp_path / "c0")
    assert storage.delete_under(storage.EMBEDDINGS, "ab/abc.npy.partial-") == 3
    assert object_store.keys() == ["embeddings/ab/abd.npy"]


# --- Imports, runs and downloads ----------------------------------------------------------------
def test_an_imported_dataset_is_stored_in_the_bucket_and_served_in_ranges_from_it(
    object_store: ObjectStore, settings, researcher_client, digits_zip_small
):
    dataset = make_image_dataset(data=digits_zip_small)
    assert files_under(Path(settings.MEDIA_ROOT)) == []  # the staging folder is gone too
    keys = object_store.keys("media/")
    assert len(keys) == 120 and keys[0] == f"media/datasets/{dataset.pk}/000000.png"

    stimulus = dataset.stimuli.order_by("order").first()
    whole = object_store.read(f"media/{stimulus.file.name}")
    assert hashlib.sha256(whole).hexdigest() == stimulus.content_hash
    url = reverse("evaluation:stimulus_file", args=[stimulus.pk])
    part = researcher_client.get(url, headers={"Range": "bytes=10-59"})
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 10-59/{len(whole)}"
    assert b"".join(part.streaming_content) == whole[10:60]
    full = researcher_client.get(url)
    assert full["Content-Length"] == str(len(whole))
    assert b"".join(full.streaming_content) == whole
    assert files_under(storage.cache_root()) == []  # served from the store, not fetched whole


def test_a_run_extracts_and_scores_through_the_bucket_and_the_second_run_reuses_it(
    object_store: ObjectStore,
    settings,
    digits_zip_small,
    enqueued,  # noqa: F811
):
    settings.EXTRACTION_CHUNK_SIZE = 32  # 4 chunks, each kept in the store until the end
    dataset = make_image_dataset(data=digits_zip_small)
    model = make_timm_model()
    run = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=3, split="loo")]
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message

    score = Score.objects.get(run=run)
    stored = score.embedding_set
    assert object_store.keys("embeddings/") == [
        f"embeddings/{stored.relative_path}"
    ]  # no chunk left
    assert files_under(Path(settings.EMBEDDINGS_ROOT)) == []
    assert files_under(Path(settings.MEDIA_ROOT)) == []
    vectors = np.load(io.BytesIO(object_store.read(f"embeddings/{stored.relative_path}")))
    labels = np.array(list(dataset.stimuli.order_by("order").values_list("label", flat=True)))
    reference = cross_val_predict(
        KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute"),
        vectors.astype(np.float64),
        labels,
        cv=LeaveOneOut(),
    )
    assert score.value == (reference == labels).mean()
    # The stimuli were fetched once each, into the cache under their content hashes.
    hashes = set(dataset.stimuli.values_list("content_hash", flat=True))
    cached = {p.stem for p in (storage.cache_root() / "media" / "by-hash").rglob("*.png")}
    assert cached == hashes

    again = services.run_create(
        dataset=dataset, models=[model], metrics=[knn_entry(k=5, split="loo")]
    )
    run_steps(again)
    step = again.steps.get()
    assert step.status == "succeeded" and step.reused_embeddings
    assert EmbeddingSet.objects.count() == 1


def test_imported_embeddings_are_stored_in_the_bucket_and_downloaded_streamed_from_it(
    object_store: ObjectStore, settings, api_client_for_researcher
):
    dataset = make_text_dataset()
    vectors = np.random.default_rng(1).standard_normal((8, 12)).astype(np.float32)
    upload = io.BytesIO()
    np.save(upload, vectors)
    upload.seek(0)
    upload.name = "vectors.npy"
    model = embeddings_import(name="from elsewhere", dataset=dataset, file=upload, match="order")
    stored = EmbeddingSet.objects.get(model=model)
    assert object_store.keys("embeddings/") == [f"embeddings/{stored.relative_path}"]
    assert files_under(Path(settings.EMBEDDINGS_ROOT)) == []
    np.testing.assert_array_equal(stored.load(), vectors)

    response = api_client_for_researcher.get(f"/api/embeddings/{stored.pk}/download/?format=npy")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == object_store.read(f"embeddings/{stored.relative_path}")


@pytest.fixture
def api_client_for_researcher(researcher):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(researcher)
    return client


# --- A store that is missing or away ------------------------------------------------------------
def test_a_missing_bucket_is_named_and_the_import_keeps_nothing(
    object_store: ObjectStore, settings, digits_zip_small
):
    settings.STORAGES = {**settings.STORAGES, **object_store.storages(bucket="no-such-bucket")}
    with pytest.raises(StorageError) as raised:
        make_image_dataset(data=digits_zip_small)
    assert str(raised.value).startswith(
        f"There is no bucket 'no-such-bucket' at {object_store.endpoint}: could not store "
    ), raised.value
    assert "Create it, or set STORAGE_BUCKET" in str(raised.value)
    assert not Dataset.objects.exists() and not Stimulus.objects.exists()


def test_an_unreachable_store_is_named_with_what_to_check(object_store: ObjectStore, settings):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    away = ObjectStore(closed, object_store.bucket)
    settings.STORAGES = {**settings.STORAGES, **away.storages()}
    with pytest.raises(StorageError) as raised:
        storage.exists(storage.EMBEDDINGS, "ab/abc.npy")
    message = str(raised.value)
    assert message.startswith(
        f"The object store's bucket {object_store.bucket!r} at {closed} cannot be reached"
    ), message
    assert "Check STORAGE_ENDPOINT_URL" in message


def test_the_web_form_says_a_missing_bucket_instead_of_an_error_page(
    object_store: ObjectStore, settings, researcher_client, digits_zip_small
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.STORAGES = {**settings.STORAGES, **object_store.storages(bucket="no-such-bucket")}
    response = researcher_client.post(
        reverse("evaluation:dataset_create"),
        {
            "name": "digits",
            "modality": "image",
            "file": SimpleUploadedFile("d.zip", digits_zip_small),
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "There is no bucket &#x27;no-such-bucket&#x27;" in page
    assert "bug in Likeness" not in page
