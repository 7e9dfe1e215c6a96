"""A dataset import that meets a full, read-only or forbidden MEDIA_ROOT says so (the
administrator's to fix, never "a bug in Likeness") and keeps nothing: no rows, no staging
folder, no files. On a real small disk (tests/small_disk.py) where the test may mount one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from evaluation.engine.errors import StorageError
from evaluation.models import Dataset, Stimulus, Target
from tests import small_disk
from tests.conftest import make_image_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_media(settings, tmp_path: Path):
    """MEDIA_ROOT on a real 512 kB disk of its own."""
    with small_disk.small_tmpfs(tmp_path / "media", size=512 * 1024) as root:
        settings.MEDIA_ROOT = root
        yield root


def assert_nothing_kept(media: Path) -> None:
    assert not Dataset.objects.exists() and not Stimulus.objects.exists()
    assert not Target.objects.exists()
    for folder in (media / "datasets", media / "tmp"):
        assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def test_import_form_onto_a_full_media_root_names_the_condition_and_keeps_nothing(
    researcher_client, small_media, digits_zip_small
):
    small_disk.fill(small_media, leave=16 * 1024)  # the 120 digits need about 40 kB
    response = researcher_client.post(
        reverse("evaluation:dataset_create"),
        {
            "name": "digits",
            "modality": "image",
            "file": SimpleUploadedFile("d.zip", digits_zip_small),
        },
    )
    page = response.content.decode()
    assert response.status_code == 200  # the form again, with the reason: not a 500 page
    assert f"No space left on the device holding MEDIA_ROOT ({small_media})" in page
    assert "bug in Likeness" not in page
    assert "work already saved" not in page  # an import keeps nothing: no false promise
    (small_media / "ballast").unlink()
    assert_nothing_kept(small_media)


def test_import_onto_a_read_only_media_root_names_it(small_media, digits_zip_small):
    small_disk.remount(small_media, "ro")
    try:
        with pytest.raises(StorageError) as raised:
            make_image_dataset(data=digits_zip_small)
    finally:
        small_disk.remount(small_media, "rw")
    assert str(raised.value).startswith(
        f"MEDIA_ROOT ({small_media}) is on a read-only file system"
    ), raised.value
    assert_nothing_kept(small_media)


def test_a_refused_final_move_keeps_no_rows_and_no_files(
    monkeypatch, isolated_storage, digits_zip_small
):
    media = isolated_storage / "media"
    rename = Path.rename

    def forbidden(self: Path, target: Path) -> Path:
        if Path(target).parent == media / "datasets":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", forbidden)
    with pytest.raises(StorageError) as raised:
        make_image_dataset(data=digits_zip_small)
    assert str(raised.value).startswith(f"Permission denied on {media / 'datasets'}"), raised.value
    assert f"MEDIA_ROOT ({media})" in str(raised.value)
    assert_nothing_kept(media)


def test_a_bug_while_unpacking_stays_a_bug(monkeypatch, isolated_storage, digits_zip_small):
    def broken(*args, **kwargs):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr("evaluation.imports.stimuli.parse_image_zip", broken)
    with pytest.raises(OSError, match="Bad file descriptor"):  # raised as it is: a bug
        make_image_dataset(data=digits_zip_small)
    assert_nothing_kept(isolated_storage / "media")
