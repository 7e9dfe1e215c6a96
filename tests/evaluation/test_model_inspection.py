"""Listing a model's layers (the inspection a worker does after registration) always ends:
with the layers, or with a message on the model page, never with a page that waits forever;
and a model registered while the task queue is away is inspected once it answers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from evaluation import services
from evaluation.engine import adapters
from evaluation.models import PretrainedModel
from tests import small_disk
from tests.conftest import make_timm_model
from tests.evaluation.test_audio_datasets import tiny_wav2vec2  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

PENDING = "Layers are listed once a worker has loaded the model."


def inspected(model: PretrainedModel) -> PretrainedModel:
    services.model_inspect(model_id=model.pk)
    model.refresh_from_db()
    return model


def test_a_read_only_temporary_folder_is_named_on_the_model_page(
    monkeypatch, tmp_path: Path, researcher_client
):
    model = make_timm_model()
    with small_disk.small_tmpfs(tmp_path / "scratch", size=256 * 1024) as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        small_disk.remount(scratch, "ro")
        try:
            model = inspected(model)
        finally:
            small_disk.remount(scratch, "rw")
    assert model.layers == []
    assert model.inspection_error.startswith(
        f"TMPDIR ({scratch}) is on a read-only file system: could not write a sample stimulus "
        "to list the model's layers"
    ), model.inspection_error
    page = researcher_client.get(model.get_absolute_url()).content.decode()
    assert "The model could not be loaded: TMPDIR" in page and PENDING not in page


def test_an_audio_model_on_a_read_only_temporary_folder_is_named_and_lists_after(
    monkeypatch,
    tmp_path: Path,
    tiny_wav2vec2,  # noqa: F811 (the fixture)
):
    model = services.model_register(
        name="tiny-w2v", source="transformers-audio", identifier=str(tiny_wav2vec2)
    )
    with small_disk.small_tmpfs(tmp_path / "scratch", size=256 * 1024) as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        (scratch / "likeness").mkdir()  # writable folder; the disk goes read-only after
        monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix: str(scratch / "likeness"))
        small_disk.remount(scratch, "ro")
        try:
            model = inspected(model)
        finally:
            small_disk.remount(scratch, "rw")
        assert model.inspection_error.startswith(
            f"TMPDIR ({scratch}) is on a read-only file system"
        ), model.inspection_error
        monkeypatch.undo()
        model = inspected(model)
    assert model.inspection_error == "" and model.layers


def test_a_full_temporary_folder_is_named(monkeypatch, tmp_path: Path):
    model = make_timm_model()
    with small_disk.small_tmpfs(tmp_path / "scratch", size=256 * 1024) as scratch:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        small_disk.fill(scratch, leave=0 + 1)
        model = inspected(model)
        leftovers = [p.name for p in scratch.iterdir() if p.name != "ballast"]
    assert model.inspection_error.startswith(
        f"No space left on the device holding TMPDIR ({scratch})"
    ), model.inspection_error
    assert "bug" not in model.inspection_error and leftovers == []


def test_an_unexpected_error_is_logged_and_ends_the_wait(monkeypatch, caplog, researcher_client):
    model = make_timm_model()
    load = adapters.load_adapter

    def broken_adapter(*args, **kwargs):
        adapter = load(*args, **kwargs)

        def describe_layers(sample):
            raise KeyError("shape")

        adapter.describe_layers = describe_layers
        return adapter

    monkeypatch.setattr(adapters, "load_adapter", broken_adapter)
    model = inspected(model)
    assert model.inspection_error == (
        "Internal error while listing the model's layers (KeyError: 'shape'). This is a bug in "
        "Likeness, not in your inputs; the worker log has the details."
    )
    assert "Listing the layers of model" in caplog.text and "KeyError" in caplog.text
    page = researcher_client.get(model.get_absolute_url()).content.decode()
    assert "The model could not be loaded: Internal error" in page and PENDING not in page
