"""Listing a model's layers (the inspection a worker does after registration) always ends:
with the layers, or with a message on the model page, never with a page that waits forever;
and a model registered while the task queue is away is inspected once it answers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from django.urls import reverse

from evaluation import services
from evaluation.engine import adapters
from evaluation.models import PretrainedModel
from tests import small_disk
from tests.conftest import make_timm_model
from tests.evaluation.closed_broker import closed_broker  # noqa: F401 (fixture)
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


# --- Registered while the task queue is away ------------------------------------------------------
WAITING = (
    "The task queue is unreachable, so no worker has been asked to list this model's layers "
    "yet. The model is registered: its layers are listed once the queue answers again. No "
    "need to register it again."
)


def register_vit(client):
    return client.post(
        reverse("evaluation:model_create"),
        {"name": "vit", "source": "timm", "identifier": "test_vit", "weights": "untrained"},
    )


def test_the_form_while_the_broker_is_down_registers_once_and_the_sweep_inspects_it(
    researcher_client,
    closed_broker,  # noqa: F811 (the fixture)
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):  # no error after the fact
        response = register_vit(researcher_client)
    model = PretrainedModel.objects.get()
    assert response.status_code == 302 and response.url == model.get_absolute_url()
    assert model.inspection_sent_at is None and model.inspection_waiting_for_queue
    page = researcher_client.get(model.get_absolute_url()).content.decode()
    assert WAITING in page and PENDING not in page

    assert services.models_resend_inspections(grace_seconds=60) == 0  # just registered
    assert services.models_resend_inspections(grace_seconds=0) == 0  # the queue is still away
    closed_broker["up"] = True
    assert services.models_resend_inspections(grace_seconds=0) == 1
    assert closed_broker["published"] == [("evaluation.inspect_model", model.pk)]
    model.refresh_from_db()
    assert model.inspection_sent_at is not None and not model.inspection_waiting_for_queue
    page = researcher_client.get(model.get_absolute_url()).content.decode()
    assert WAITING not in page and PENDING in page
    assert services.models_resend_inspections(grace_seconds=0) == 0  # sent: never twice
    inspected(model)
    assert PretrainedModel.objects.get().layers


def test_only_models_waiting_for_their_inspection_message_are_sent(closed_broker):  # noqa: F811
    from django.utils import timezone

    from evaluation.models import ModelSource

    closed_broker["up"] = True
    waiting, *others = (
        PretrainedModel.objects.create(
            name=name, source=source, identifier="test_vit", modality="image", **fields
        )
        for name, source, fields in [
            ("waiting", ModelSource.TIMM, {}),
            ("sent", ModelSource.TIMM, {"inspection_sent_at": timezone.now()}),
            ("listed", ModelSource.TIMM, {"layers": [{"name": "head", "shape": [2]}]}),
            ("failed", ModelSource.TIMM, {"inspection_error": "could not load"}),
            ("stacked", ModelSource.STACKED, {}),  # made on a leaderboard, never inspected
        ]
    )
    assert services.models_resend_inspections(grace_seconds=0) == 1
    assert closed_broker["published"] == [("evaluation.inspect_model", waiting.pk)]
    assert waiting.inspection_waiting_for_queue
    assert not any(model.inspection_waiting_for_queue for model in others)


def test_the_workers_sweep_sends_lost_inspections(closed_broker, monkeypatch):  # noqa: F811
    from evaluation.services import queue
    from workers import recovery
    from workers.celery import app

    with pytest.raises(Exception, match="Connection refused"):
        queue._enqueue("evaluation.inspect_model", 0)  # the fixture's broker is down
    model = make_timm_model()
    PretrainedModel.objects.filter(pk=model.pk).update(
        created_at=model.created_at - timezone_seconds(60)
    )
    closed_broker["up"] = True
    monkeypatch.setattr(recovery, "live_step_messages", lambda app: None)
    # The sweeper thread has connections of its own; here it shares the test's transaction.
    monkeypatch.setattr(recovery.db, "close_old_connections", lambda: None)
    recovery.StepSweeper(app, "gpu0@host").sweep()
    assert closed_broker["published"] == [("evaluation.inspect_model", model.pk)]


def timezone_seconds(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)
