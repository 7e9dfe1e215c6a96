"""Importing stimulus datasets: zips of image, audio or video folders, CSVs of texts.

``dataset_import`` is the one path every import takes (the judgment import creates its
new text datasets through it): parse into a staging folder, then create all rows and move
the files in one step (into MEDIA_ROOT; or, with an object store, upload them, several at a
time, inside the rows' transaction, removing those uploaded if any fails).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core.uploads import check_upload_size
from evaluation import storage
from evaluation.engine.errors import StorageError
from evaluation.engine.fingerprint import dataset_content_hash
from evaluation.engine.storage import writing
from evaluation.engine.video import FrameSampling, VideoLimits, VideoProblem
from evaluation.imports.reading import (
    ImportProblem,
    ParsedStimulus,
    parse_audio_zip,
    parse_image_zip,
    parse_text_csv,
    parse_video_zip,
)
from evaluation.models import Dataset, Modality, Stimulus, Target, TargetKind

logger = logging.getLogger(__name__)


def dataset_import_from(data: Mapping[str, Any], *, created_by: Any = None) -> Dataset:
    """Import a dataset from the fields of the import form or the API
    (``evaluation.imports.spec.DATASET_IMPORT_FIELDS``), by its modality."""
    common = {
        "name": data["name"],
        "upload": data["file"],
        "description": data.get("description", ""),
        "origin": data.get("origin", ""),
        "created_by": created_by,
    }
    if data["modality"] == Modality.IMAGE:
        return dataset_import_images(**common)
    if data["modality"] == Modality.AUDIO:
        return dataset_import_audio(**common)
    if data["modality"] == Modality.VIDEO:
        return dataset_import_videos(
            **common, frame_sampling=data.get("frame_sampling") or DEFAULT_FRAME_SAMPLING
        )
    return dataset_import_texts(
        **common,
        text_column=data["text_column"],
        label_column=data["label_column"],
        split_column=data["split_column"],
    )


def dataset_import_images(
    *,
    name: str,
    upload: UploadedFile | IO[bytes],
    created_by: Any = None,
    description: str = "",
    origin: str = "",
) -> Dataset:
    """Import a zip of ``label/image`` folders (optionally under train/ and test/)."""
    return _dataset_import_zip(
        Modality.IMAGE, name, upload, created_by, description, origin or "zip of image folders"
    )


def dataset_import_audio(
    *,
    name: str,
    upload: UploadedFile | IO[bytes],
    created_by: Any = None,
    description: str = "",
    origin: str = "",
) -> Dataset:
    """Import a zip of ``label/clip.wav`` folders (wav, flac, ogg, mp3; optional splits)."""
    return _dataset_import_zip(
        Modality.AUDIO, name, upload, created_by, description, origin or "zip of audio folders"
    )


DEFAULT_FRAME_SAMPLING = "frames=8"


def dataset_import_videos(
    *,
    name: str,
    upload: UploadedFile | IO[bytes],
    frame_sampling: str | FrameSampling = DEFAULT_FRAME_SAMPLING,
    created_by: Any = None,
    description: str = "",
    origin: str = "",
) -> Dataset:
    """Import a zip of ``label/clip.mp4`` folders (mp4, webm, mov, mkv, avi; optional
    splits). Every clip is decoded whole and checked against VIDEO_MAX_SECONDS,
    VIDEO_MAX_FRAMES and VIDEO_MAX_PIXELS. ``frame_sampling`` (e.g. ``frames=8`` spread
    evenly, or ``fps=2,max=32``) is which frames models see; it is fixed for the dataset
    (part of every embedding's fingerprint): to sample otherwise, import again."""
    sampling = _frame_sampling(frame_sampling)
    return _dataset_import_zip(
        Modality.VIDEO,
        name,
        upload,
        created_by,
        description,
        origin or "zip of video folders",
        frame_sampling=sampling.describe(),
    )


def _frame_sampling(value: str | FrameSampling) -> FrameSampling:
    if isinstance(value, FrameSampling):
        return value
    try:
        return FrameSampling.parse(value)
    except (VideoProblem, ValueError) as exc:
        raise ValidationError({"frame_sampling": str(exc)}) from None


def video_limits() -> VideoLimits:
    """The caps every imported clip must keep within (settings VIDEO_MAX_*)."""
    return VideoLimits(
        max_seconds=settings.VIDEO_MAX_SECONDS,
        max_frames=settings.VIDEO_MAX_FRAMES,
        max_pixels=settings.VIDEO_MAX_PIXELS,
    )


def _dataset_import_zip(
    modality: str,
    name: str,
    upload: UploadedFile | IO[bytes],
    created_by: Any,
    description: str,
    origin: str,
    frame_sampling: dict[str, Any] | None = None,
) -> Dataset:
    def parse(staging: Path) -> list[ParsedStimulus]:
        limits = {
            "max_unzipped_bytes": settings.DATASET_UNZIPPED_MAX_BYTES,
            "max_members": settings.DATASET_MAX_STIMULI,
        }
        if modality == Modality.VIDEO:
            return parse_video_zip(upload, staging=staging, **limits, limits=video_limits())
        parse_zip = parse_image_zip if modality == Modality.IMAGE else parse_audio_zip
        return parse_zip(upload, staging=staging, **limits)

    return dataset_import(
        name=name,
        modality=modality,
        upload=upload,
        parse=parse,
        created_by=created_by,
        description=description,
        origin=origin,
        frame_sampling=frame_sampling,
    )


def dataset_import_texts(
    *,
    name: str,
    upload: UploadedFile | IO[bytes],
    text_column: str = "text",
    label_column: str = "label",
    split_column: str = "",
    created_by: Any = None,
    description: str = "",
    origin: str = "",
) -> Dataset:
    """Import a CSV with one text stimulus per row."""

    def parse(staging: Path) -> list[ParsedStimulus]:
        return parse_text_csv(
            upload,
            text_column=text_column.strip(),
            label_column=label_column.strip(),
            split_column=split_column.strip(),
            max_rows=settings.DATASET_MAX_STIMULI,
        )

    return dataset_import(
        name=name,
        modality=Modality.TEXT,
        upload=upload,
        parse=parse,
        created_by=created_by,
        description=description,
        origin=origin or "CSV of texts",
    )


def dataset_import(
    *,
    name: str,
    modality: str,
    upload: UploadedFile | IO[bytes],
    parse: Callable[[Path], list[ParsedStimulus]],
    created_by: Any,
    description: str,
    origin: str,
    frame_sampling: dict[str, Any] | None = None,
) -> Dataset:
    """Parse into a staging folder, then create all rows and move the files in one step.

    Any failure leaves neither rows nor files behind.
    """
    name = name.strip()
    if Dataset.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A dataset called {name!r} already exists."})
    check_upload_size(upload)
    media = Path(settings.MEDIA_ROOT)
    # A full, read-only or forbidden MEDIA_ROOT is the administrator's to fix: named
    # (StorageError: a form error, an API 507), never "a bug".
    place = f"MEDIA_ROOT ({media})"
    tmp_root = media / "tmp"
    with writing(tmp_root, place=place, doing="make a staging folder for the import"):
        tmp_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=tmp_root))
    final_dir: Path | None = None
    uploaded = ""  # the folder of the files uploaded to an object store
    try:
        try:
            with writing(staging, place=place, doing="unpack the uploaded files"):
                parsed = parse(staging)
        except ImportProblem as exc:
            raise ValidationError({"file": str(exc)}) from None
        with transaction.atomic():
            dataset = Dataset.objects.create(
                name=name,
                modality=modality,
                description=description,
                origin=origin,
                frame_sampling=frame_sampling or {},
                content_hash=dataset_content_hash(p.content_hash for p in parsed),
                stimulus_count=len(parsed),
                created_by=created_by,
            )
            Stimulus.objects.bulk_create(
                [_stimulus_row(dataset, order, item) for order, item in enumerate(parsed)],
                batch_size=2000,
            )
            if any(item.label for item in parsed):
                Target.objects.create(
                    kind=TargetKind.LABELS, dataset=dataset, name=f"{dataset.name}: labels"
                )
            stored = [item.stored_name for item in parsed if item.stored_name]
            if stored and storage.is_remote(storage.MEDIA):
                uploaded = f"datasets/{dataset.pk}/"
                storage.store_many(
                    storage.MEDIA, [(uploaded + name, staging / name) for name in stored]
                )
            elif stored:  # text stimuli have no files
                final_dir = media / "datasets" / str(dataset.pk)
                with writing(final_dir, place=place, doing="move the imported files into place"):
                    final_dir.parent.mkdir(parents=True, exist_ok=True)
                    staging.rename(final_dir)
        return dataset
    except BaseException as exc:
        if final_dir is not None and final_dir.exists():
            shutil.rmtree(final_dir, ignore_errors=True)
        if uploaded:
            _remove_uploaded(uploaded, name)
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Import of dataset %r stopped: %s", name, exc)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_uploaded(folder: str, dataset: str) -> None:
    """Remove the files a failed import stored (those it got to), saying so if it cannot."""
    try:
        storage.delete_under(storage.MEDIA, folder)
    except StorageError as exc:
        logger.warning("Files of the failed import of %r stay in the store: %s", dataset, exc)


def _stimulus_row(dataset: Dataset, order: int, item: ParsedStimulus) -> Stimulus:
    return Stimulus(
        dataset=dataset,
        order=order,
        name=item.name,
        file=f"datasets/{dataset.pk}/{item.stored_name}" if item.stored_name else "",
        text=item.text,
        label=item.label,
        split=item.split,
        content_hash=item.content_hash,
    )
