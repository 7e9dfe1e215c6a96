"""A run step that meets a full, read-only or forbidden disk fails at once with the condition
named (the researcher's or the administrator's to fix, never "a bug in Likeness"), and a
retry after the fix finishes the run. In-process, through the services the workers call;
tests/integration/test_storage_failures.py does the same on a real disk and worker."""

from __future__ import annotations

import errno
import os

import pytest
from django.conf import settings

from evaluation import services
from evaluation.engine import extraction
from evaluation.metrics import knn_entry
from evaluation.models import Run
from evaluation.services.failures import internal_error
from tests.conftest import make_image_dataset, make_timm_model

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch) -> None:
    monkeypatch.setattr("evaluation.services.queue._enqueue", lambda name, step_id: None)


def run_steps(run: Run) -> None:
    for step in run.steps.all():
        services.step_extract(step_id=step.pk, worker="w1")
        services.step_score(step_id=step.pk, worker="w1")


def test_read_only_embeddings_folder_fails_the_step_with_the_reason_and_retry_finishes(
    digits_zip_small, monkeypatch
):
    run = services.run_create(
        dataset=make_image_dataset(data=digits_zip_small),
        models=[make_timm_model()],
        metrics=[knn_entry(k=3, split="loo")],
    )

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    with monkeypatch.context() as patched:
        patched.setattr(extraction, "open", read_only, raising=False)
        run_steps(run)
    run.refresh_from_db()
    step = run.steps.get()
    assert run.status == "failed" and step.status == "failed"
    assert step.error_message.startswith(
        f"EMBEDDINGS_ROOT ({settings.EMBEDDINGS_ROOT}) is on a read-only file system"
    ), step.error_message
    assert "bug" not in step.error_message and "Internal error" not in step.error_message
    assert not list(settings.EMBEDDINGS_ROOT.rglob("*.tmp"))

    assert services.run_retry(run=run) == 1
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message


def test_a_storage_condition_met_outside_extraction_is_named_not_called_a_bug():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/likeness/plots/x.png")
    message = internal_error("computing metrics", full)
    assert message.startswith("No space left on the device holding /srv/likeness/plots")
    assert "bug" not in message
    # write(2) names no file: the condition is still named.
    unnamed = internal_error("computing metrics", OSError(errno.ENOSPC, "No space"))
    assert unnamed.startswith("No space left on the device holding a disk this process")
    # A bug stays a bug, and EPERM without a file (a signal, say) is not about storage.
    for bug in (KeyError("k"), PermissionError(errno.EPERM, "Operation not permitted")):
        assert "This is a bug in Likeness" in internal_error("computing metrics", bug)
