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

from core.outages import outage_of
from evaluation import services, storage
from evaluation.engine.errors import StorageError
from evaluation.imports.embeddings import embeddings_import
from evaluation.metrics import knn_entry
from evaluation.models import Dataset, EmbeddingSet, Score, Stimulus
from tests.conftest import make_image_dataset, make_text_dataset, make_timm_model
from tests.evaluation.test_runs import run_steps
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
    enqueued,
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
    # An outage, not a bug: pages and the API answer it with 503 (core/outages.py).
    assert outage_of(raised.value).code == "storage_unreachable"


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


# --- What the store answers, named (review of the object storage) -------------------------------
def _client_error(code: str, status: int, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def test_an_upload_refused_inside_boto3s_transfer_is_named_not_a_bug(
    object_store: ObjectStore, monkeypatch, tmp_path
):
    from boto3.exceptions import S3UploadFailedError

    def refused(*args, **kwargs):
        try:  # as boto3 does: the ClientError is raised again as S3UploadFailedError
            raise _client_error("AccessDenied", 403, "PutObject")
        except Exception as exc:
            raise S3UploadFailedError(f"Failed to upload: {exc}")  # noqa: B904

    client = storage._client(storage.storage_of(storage.EMBEDDINGS))
    monkeypatch.setattr(client, "upload_file", refused)
    source = tmp_path / "x.npy"
    source.write_bytes(b"x")
    with pytest.raises(StorageError, match=r"refused access \(AccessDenied: AccessDenied\)") as e:
        storage.upload(storage.EMBEDDINGS, "ab/abc.npy", source)
    assert "may list, read, write and delete in the bucket" in str(e.value)


def test_a_download_whose_retries_ran_out_is_named_as_a_store_out_of_reach(
    object_store: ObjectStore, monkeypatch, tmp_path
):
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import ReadTimeoutError

    def timed_out(*args, **kwargs):
        raise RetriesExceededError(ReadTimeoutError(endpoint_url=object_store.endpoint))

    source = tmp_path / "x.npy"
    source.write_bytes(b"x")
    storage.upload(storage.EMBEDDINGS, "ab/abc.npy", source)
    client = storage._client(storage.storage_of(storage.EMBEDDINGS))
    monkeypatch.setattr(client, "download_file", timed_out)
    with pytest.raises(StorageError, match=r"cannot be reached from this machine"):
        storage.local_path(storage.EMBEDDINGS, "ab/abc.npy")
    assert files_under(storage.cache_root() / "embeddings") == []  # no temporary file left


@pytest.mark.parametrize(
    "read",
    [
        lambda: storage.size(storage.EMBEDDINGS, "ab/abc.npy"),
        lambda: storage.open_stream(storage.EMBEDDINGS, "ab/abc.npy", 0, 10),
        lambda: storage.local_path(storage.EMBEDDINGS, "ab/abc.npy"),
    ],
    ids=["size", "open_stream", "fetch"],
)
def test_reading_from_a_missing_bucket_names_the_bucket_not_the_file(
    object_store: ObjectStore, settings, read
):
    settings.STORAGES = {**settings.STORAGES, **object_store.storages(bucket="no-such-bucket")}
    with pytest.raises(StorageError, match=r"^There is no bucket 'no-such-bucket' at "):
        read()


def test_a_missing_file_in_a_bucket_that_exists_is_named_as_missing(object_store: ObjectStore):
    with pytest.raises(storage.MissingFile, match=r"^The file ab/abc.npy is missing from"):
        storage.size(storage.EMBEDDINGS, "ab/abc.npy")


def test_files_the_store_kept_in_a_batch_delete_are_named(
    object_store: ObjectStore, monkeypatch, tmp_path
):
    chunk = tmp_path / "c"
    chunk.write_bytes(b"x")
    storage.upload(storage.EMBEDDINGS, "ab/abc.npy.partial-64/chunk-000000.npy", chunk)
    client = storage._client(storage.storage_of(storage.EMBEDDINGS))

    def kept(Bucket, Delete):
        # What S3 answers (HTTP 200) when the credentials may not delete: every key in Errors.
        errors = [
            {"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
            for o in Delete["Objects"]
        ]
        return {"Errors": errors, "ResponseMetadata": {"HTTPStatusCode": 200}}

    monkeypatch.setattr(client, "delete_objects", kept)
    with pytest.raises(StorageError) as raised:
        storage.delete_under(storage.EMBEDDINGS, "ab/abc.npy.partial-")
    message = str(raised.value)
    assert "kept 1 of the files under ab/abc.npy.partial-" in message, message
    assert "embeddings/ab/abc.npy.partial-64/chunk-000000.npy (AccessDenied" in message


def test_a_chunk_the_store_does_not_hold_is_fetched_with_one_request_and_is_no_error(
    object_store: ObjectStore, monkeypatch, tmp_path
):
    client = storage._client(storage.storage_of(storage.EMBEDDINGS))
    asked: list[str] = []
    monkeypatch.setattr(
        client, "head_object", lambda **kwargs: asked.append("head") or {"ContentLength": 1}
    )
    target = tmp_path / "work" / "chunk-000000.npy"
    assert not storage.fetch_file(storage.EMBEDDINGS, "ab/abc.npy.partial-64/c.npy", target)
    assert asked == []  # no HEAD before the GET: a file removed in between is "not held" too
    assert files_under(tmp_path / "work") == []  # no temporary file left

    chunk = tmp_path / "c"
    chunk.write_bytes(b"kept")
    storage.upload(storage.EMBEDDINGS, "ab/abc.npy.partial-64/c.npy", chunk)
    assert storage.fetch_file(storage.EMBEDDINGS, "ab/abc.npy.partial-64/c.npy", target)
    assert target.read_bytes() == b"kept" and asked == []


def test_a_step_whose_chunks_the_store_will_not_remove_still_succeeds_and_keeps_its_rows(
    object_store: ObjectStore,
    settings,
    monkeypatch,
    digits_zip_small,
    enqueued,
    caplog,
):
    settings.EXTRACTION_CHUNK_SIZE = 64
    dataset = make_image_dataset(data=digits_zip_small)

    def refuses(alias, prefix):
        raise StorageError(f"the store refused to remove {prefix}")

    monkeypatch.setattr(storage, "delete_under", refuses)
    run = services.run_create(
        dataset=dataset, models=[make_timm_model()], metrics=[knn_entry(k=3, split="loo")]
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    stored = EmbeddingSet.objects.get()
    assert f"embeddings/{stored.relative_path}" in object_store.keys("embeddings/")
    assert any(".partial-64/" in key for key in object_store.keys("embeddings/"))  # left
    assert "stay in the store: the store refused to remove" in caplog.text
    # The work files were written apart from the cache's copies, and none is left there.
    assert [p for p in files_under(storage.work_root()) if p.suffix == ".npy"] == []
    assert (storage.cache_root() / "embeddings" / "by-name" / stored.relative_path).is_file()


def test_a_stimulus_file_the_store_cannot_serve_is_a_503_and_a_missing_one_a_404(
    object_store: ObjectStore, settings, researcher_client, digits_zip_small, caplog
):
    import socket

    dataset = make_image_dataset(data=digits_zip_small)
    first, second = dataset.stimuli.order_by("order")[:2]
    object_store.client().delete_object(Bucket=object_store.bucket, Key=f"media/{first.file.name}")
    gone = researcher_client.get(reverse("evaluation:stimulus_file", args=[first.pk]))
    assert gone.status_code == 404
    assert gone.content.decode() == "This stimulus file is missing from the file store."

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settings.STORAGES = {**settings.STORAGES, **ObjectStore(closed, object_store.bucket).storages()}
    away = researcher_client.get(reverse("evaluation:stimulus_file", args=[second.pk]))
    assert away.status_code == 503
    assert "cannot be reached just now" in away.content.decode()
    assert closed not in away.content.decode()  # the store's address is for the log
    assert f"at {closed} cannot be reached" in caplog.text


def test_a_language_model_fetches_no_stimulus_file_from_the_store(
    object_store: ObjectStore, digits_zip_small
):
    from evaluation.imports.descriptions import descriptions_import
    from evaluation.services.embeddings import _stimulus_inputs

    dataset = make_image_dataset(data=digits_zip_small)
    names = list(dataset.stimuli.order_by("order").values_list("name", flat=True))
    captions = "\n".join(["stimulus,text"] + [f"{name},a digit" for name in names])
    descriptions_import(dataset=dataset, upload=io.BytesIO(captions.encode()), origin="tags v1")
    language = services.model_register(
        name="tags by tfidf", source="language", identifier="tags v1 | tfidf", modality="image"
    )
    inputs, stored_media = _stimulus_inputs(dataset, language)
    assert stored_media == {}  # nothing for the extraction to fetch
    assert all(not s.path for s in inputs) and inputs[0].descriptions == (("a digit", 1.0),)
    assert files_under(storage.cache_root()) == []
