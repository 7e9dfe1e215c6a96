# ruff: noqa: F811 (pytest fixtures imported from other test modules)
"""Bring your own embeddings (issue 18): every format round-trips to the cached embeddings it
was exported from and scores identically; bad input is refused by name, storing nothing."""

from __future__ import annotations

import io
import os

import h5py
import numpy as np
import pytest
import scipy.io
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import CommandError

from evaluation import downloads, services
from evaluation.imports.embeddings import embeddings_import
from evaluation.metrics import knn_entry, pair_alignment_entry
from evaluation.models import EmbeddingSet, ModelSource, PretrainedModel, Score
from tests.api.test_downloads import minilm_set  # noqa: F401 (fixture)
from tests.cli.conftest import cli
from tests.evaluation.closed_broker import closed_broker  # noqa: F401 (fixture)
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db


def exported(embedding_set, fmt: str) -> bytes:
    return b"".join(downloads.embeddings_download(embedding_set, fmt).chunks)


def files_of(embedding_set, stimuli, shuffle: np.ndarray) -> dict[str, tuple[bytes, bytes | None]]:
    """The same embeddings in every format (rows shuffled where ids say which is which)."""
    vectors = np.asarray(embedding_set.load())
    names = np.array([name for _, name in stimuli])
    out: dict[str, tuple[bytes, bytes | None]] = {}
    for fmt in ("npy", "npz", "parquet", "csv"):
        out[fmt] = (exported(embedding_set, fmt), None)  # dataset order; npz/parquet/csv with ids
    shuffled = io.BytesIO()
    np.save(shuffled, vectors[shuffle])
    ids = "\n".join(names[shuffle]).encode()
    out["npy+ids"] = (shuffled.getvalue(), ids)
    text = io.BytesIO()
    np.savetxt(text, vectors[shuffle])
    out["txt"] = (text.getvalue(), ids)
    hdf5 = io.BytesIO()
    with h5py.File(hdf5, "w") as handle:
        handle["features"] = vectors[shuffle]
        handle["file_names"] = [f"images/{n}".encode() for n in names[shuffle]]
    out["hdf5"] = (hdf5.getvalue(), None)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"features": vectors[shuffle]})
    out["mat"] = (mat.getvalue(), ids)
    return out


SUFFIX = {"npy+ids": "npy"}


def test_every_format_round_trips_and_scores_identically(minilm_set):
    target, model, embedding_set = minilm_set
    dataset = target.dataset
    original = np.asarray(embedding_set.load())
    stimuli = list(dataset.stimuli.order_by("order").values_list("pk", "name"))
    shuffle = np.random.default_rng(0).permutation(len(stimuli))
    metrics = [knn_entry(k=1, split="loo"), pair_alignment_entry(correlation="spearman")]
    reference_run = services.run_create(dataset=dataset, models=[model], metrics=metrics)
    run_steps(reference_run)
    reference = {(s.metric_key, s.target_id): (s.value, s.ci_low, s.ci_high)
                 for s in Score.objects.filter(run=reference_run)}  # fmt: skip
    for fmt, (content, ids) in files_of(embedding_set, stimuli, shuffle).items():
        imported = embeddings_import(
            name=f"elsewhere-{fmt}", dataset=dataset,
            file=SimpleUploadedFile(f"features.{SUFFIX.get(fmt, fmt)}", content),
            ids_file=io.BytesIO(ids) if ids else None, provenance="exported by Likeness",
        )  # fmt: skip
        assert imported.source == ModelSource.IMPORTED
        stored = EmbeddingSet.objects.get(model=imported)
        np.testing.assert_array_equal(stored.load(), original, err_msg=fmt)
        run = services.run_create(dataset=dataset, models=[imported], metrics=metrics)
        run_steps(run)
        scores = {(s.metric_key, s.target_id): (s.value, s.ci_low, s.ci_high)
                  for s in Score.objects.filter(run=run)}  # fmt: skip
        assert scores == reference, fmt
        step = run.steps.get()
        assert step.reused_embeddings and step.status == "succeeded"


def bad_files(stimuli):
    names = [name for _, name in stimuli]
    good = np.ones((len(names), 4), dtype=np.float32)

    def npz(**arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    yield "wrong id", "x.npz", npz(features=good, ids=np.array([*names[:-1], "nobody"])), \
        "by name: row(s) 8 ('nobody') reach no stimulus"  # fmt: skip
    yield "duplicated id", "x.npz", npz(features=good, ids=np.array([*names[:-1], names[0]])), \
        f"Rows 1 and 8 both hold stimulus {names[0]!r}"  # fmt: skip
    yield "missing stimulus", "x.npz", npz(features=good[:-1], ids=np.array(names[:-1])), \
        f"1 stimuli of the dataset have no row (matched by name): {names[-1]!r}"  # fmt: skip
    nan = good.copy()
    nan[5, 2] = np.nan
    yield "nan", "x.npz", npz(features=nan), "Layer 'features', row 6: NaN or infinite values"
    inf = good.copy()
    inf[2, 0] = np.inf
    yield "inf", "x.npz", npz(features=inf), "Layer 'features', row 3: NaN or infinite values"
    ragged = "id,d0,d1\n" + "".join(f"{n},1,2\n" for n in names[:3]) + f"{names[3]},1\n"
    yield "ragged rows", "x.csv", ragged.encode(), "Row 5 has 2 fields, the header 3"
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"labels": np.array(["a", "b"])})
    yield "mat without features", "x.mat", mat.getvalue(), \
        "The .mat file has no 2-D numeric variable (it holds labels)"  # fmt: skip
    yield "rows in order, too few", "x.npy", _npy(good[:5]), \
        "The file has 5 rows and"  # fmt: skip
    yield "not a format", "x.xlsx", b"PK", "Embeddings in a .xlsx file cannot be read"


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def stored(settings) -> tuple[int, int, list[str]]:
    files = sorted(str(p) for p in settings.EMBEDDINGS_ROOT.rglob("*") if p.is_file()) \
        if settings.EMBEDDINGS_ROOT.exists() else []  # fmt: skip
    return PretrainedModel.objects.count(), EmbeddingSet.objects.count(), files


def test_bad_input_is_refused_by_name_and_nothing_is_stored(minilm_set, settings):
    target, _, _ = minilm_set
    stimuli = list(target.dataset.stimuli.order_by("order").values_list("pk", "name"))
    before = stored(settings)
    for label, name, content, message in bad_files(stimuli):
        with pytest.raises(ValidationError) as caught:
            embeddings_import(name=f"bad {label}", dataset=target.dataset,
                              file=SimpleUploadedFile(name, content))  # fmt: skip
        assert message in " ".join(caught.value.messages), label
        assert stored(settings) == before, label


def test_a_2_gb_file_over_the_limit_is_refused_before_it_is_read(minilm_set, tmp_path, settings):
    target, _, _ = minilm_set
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as handle:  # sparse: 2 GiB of nothing on disk
        handle.truncate(2 * 1024**3)
    before = stored(settings)
    with pytest.raises(
        CommandError,
        match=r"file: The file is 2\.1 GB; the limit is 536\.9 MB \(DATASET_UPLOAD_MAX_BYTES\)",
    ):
        cli("import_embeddings", str(huge), "--name", "huge", "--dataset", target.dataset.name)
    assert stored(settings) == before
    os.remove(huge)


def test_an_imported_model_is_refused_on_a_dataset_it_has_no_embeddings_of(minilm_set):
    from tests.conftest import make_text_dataset

    target, _, embedding_set = minilm_set
    imported = embeddings_import(
        name="elsewhere", dataset=target.dataset,
        file=SimpleUploadedFile("e.npy", exported(embedding_set, "npy")),
    )  # fmt: skip
    other = make_text_dataset(name="other sentences")
    with pytest.raises(ValidationError, match="elsewhere: imported embeddings of other datasets"):
        services.run_create(dataset=other, models=[imported], metrics=[knn_entry(k=1, split="loo")])


def test_the_api_and_the_cli_import_with_provenance(
    researcher, minilm_set, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    from rest_framework.test import APIClient

    from evaluation.imports.embeddings import embeddings_import_run

    sent = []
    monkeypatch.setattr("evaluation.services.queue._enqueue", lambda *args: sent.append(args))
    target, _, embedding_set = minilm_set
    api = APIClient()
    api.force_authenticate(researcher)
    content = exported(embedding_set, "parquet")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/embeddings/",
            {"name": "via-api", "dataset": target.dataset_id, "licence": "CC BY 4.0",
             "link": "https://example.org/paper", "provenance": "computed in another lab",
             "file": SimpleUploadedFile("vectors.parquet", content)},
            format="multipart",
        )  # fmt: skip
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "queued" and job["model"] is None
    assert sent == [("evaluation.import_embeddings", job["id"])]
    assert not PretrainedModel.objects.filter(name="via-api").exists()  # the web read nothing
    embeddings_import_run(job_id=job["id"])  # what the worker does
    done = api.get(response["Location"]).json()
    assert done["status"] == "succeeded" and done["processed"] == done["total"] == 8
    model = PretrainedModel.objects.get(pk=done["model"])
    assert model.provenance["licence"] == "CC BY 4.0" and model.provenance["format"] == "parquet"
    assert model.provenance["file"] == "vectors.parquet"
    assert not any((tmp_path / "media" / "tmp" / "embedding-imports").iterdir())  # cleaned up
    path = tmp_path / "vectors.npz"
    path.write_bytes(exported(embedding_set, "npz"))
    printed = cli("import_embeddings", str(path), "--name", "via-cli",
                  "--dataset", str(target.dataset_id))  # fmt: skip
    assert "Imported via-cli" in printed.stdout and "matched by ids (auto)" in printed.stdout


def test_the_web_form_queues_the_file_and_its_page_shows_how_it_ended(
    client, researcher, minilm_set, django_capture_on_commit_callbacks, monkeypatch
):
    from django.urls import reverse

    from evaluation.imports.embeddings import embeddings_import_run
    from evaluation.models import EmbeddingImport

    monkeypatch.setattr("evaluation.services.queue._enqueue", lambda *args: None)
    target, _, embedding_set = minilm_set
    client.force_login(researcher)
    bad = _npy(np.full((8, 4), np.nan, dtype=np.float32))
    for name, content in (("good", exported(embedding_set, "npy")), ("bad", bad)):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("evaluation:embeddings_import"),
                {"name": name, "dataset": target.dataset_id, "match": "auto",
                 "file": SimpleUploadedFile(f"{name}.npy", content)},
            )  # fmt: skip
        assert response.status_code == 302
        job = EmbeddingImport.objects.get(name=name)
        assert "Waiting for a worker" in client.get(response["Location"]).content.decode()
        embeddings_import_run(job_id=job.pk)
    good = client.get(EmbeddingImport.objects.get(name="good").get_absolute_url()).content.decode()
    assert "Imported as" in good and "runs score it" in good
    failed = client.get(EmbeddingImport.objects.get(name="bad").get_absolute_url()).content.decode()
    assert "Nothing was stored: Layer &#x27;embedding&#x27;, row 1: NaN or infinite" in failed
    assert not PretrainedModel.objects.filter(name="bad").exists()


def test_an_imported_model_is_compared_like_any_other(minilm_set):
    from evaluation import compare

    target, model, embedding_set = minilm_set
    imported = embeddings_import(
        name="elsewhere", dataset=target.dataset,
        file=SimpleUploadedFile("e.npy", exported(embedding_set, "npy")),
    )  # fmt: skip
    result = compare.compare(target=target, models=[model, imported], layers={})
    assert not result.missing and not result.problems
    (_, rho_original, _), (_, rho_imported, _) = result.scatters
    assert rho_imported == pytest.approx(rho_original)  # the same vectors, the same agreement


def test_queued_imports_whose_task_never_reached_the_queue_are_sent_by_the_sweep(closed_broker):
    from django.utils import timezone

    from evaluation.models import EmbeddingImport
    from tests.conftest import make_text_dataset

    dataset = make_text_dataset()
    waiting, _sent, _read = (
        EmbeddingImport.objects.create(
            name=name, dataset=dataset, file_name="v.npy", staged_path="x", **fields
        )
        for name, fields in [
            ("waiting", {}),
            ("sent", {"message_sent_at": timezone.now()}),
            ("read", {"status": EmbeddingImport.Status.SUCCEEDED}),
        ]
    )
    assert services.imports_resend_lost(grace_seconds=60) == 0  # just uploaded
    assert services.imports_resend_lost(grace_seconds=0) == 0  # the queue is still away
    closed_broker["up"] = True
    assert services.imports_resend_lost(grace_seconds=0) == 1
    assert closed_broker["published"] == [("evaluation.import_embeddings", waiting.pk)]
    assert services.imports_resend_lost(grace_seconds=0) == 0  # sent: never twice
