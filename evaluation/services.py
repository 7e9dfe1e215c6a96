"""Writes that span models: catalogue registration, dataset import, runs and their steps.

Run execution is a small state machine on RunStep rows, driven by Celery tasks that only
pass ids. Each transition is a conditional UPDATE (the claim), so a duplicated or
redelivered task message finds nothing to do, and Score rows are upserted on their unique
key, so repeating a step never duplicates results.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from core.uploads import human_bytes
from evaluation import metrics as metric_registry
from evaluation.engine import adapters
from evaluation.engine.errors import EngineError, ModelSpecError, StorageError, close_names
from evaluation.engine.extraction import ExtractionCancelled, extract_layers
from evaluation.engine.fingerprint import dataset_content_hash, embedding_fingerprint
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.storage import storage_error, writing
from evaluation.importers import (
    ImportProblem,
    ParsedStimulus,
    parse_audio_zip,
    parse_image_zip,
    parse_text_csv,
)
from evaluation.judgments import target_data
from evaluation.models import (
    CLAIMED_STEP_STATUSES,
    FINISHED_RUN_STATUSES,
    FINISHED_STEP_STATUSES,
    Dataset,
    Description,
    EmbeddingSet,
    Modality,
    ModelSource,
    PretrainedModel,
    Run,
    RunStatus,
    RunStep,
    Score,
    StepStatus,
    Stimulus,
    Target,
    TargetKind,
    metric_key,
)

logger = logging.getLogger(__name__)

PROGRESS_REPORT_SECONDS = 0.5


# --- Catalogue ------------------------------------------------------------------------------
def model_register(
    *,
    name: str,
    source: str,
    identifier: str,
    weights: str = "pretrained",
    checkpoint_path: str = "",
    revision: str = "",
    seed: int = 0,
    description: str = "",
    modality: str = "",
    created_by: Any = None,
) -> PretrainedModel:
    """Register a model after checking, without loading weights, that it can be loaded.

    ``modality`` is needed only for language-based models (source ``language``), which
    embed the descriptions of stimuli of any modality: the modality of those stimuli."""
    name = name.strip()
    if PretrainedModel.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A model called {name!r} is already registered."})
    spec = ModelSpec(
        source=source,
        identifier=identifier.strip(),
        weights=weights,
        checkpoint_path=checkpoint_path.strip(),
        revision=revision.strip(),
        seed=seed,
    )
    try:
        adapter_class = adapters.adapter_class(spec.source, spec.identifier)
        adapter_class.validate(spec)
    except ModelSpecError as exc:
        field = (
            "checkpoint_path"
            if weights == "checkpoint" and "checkpoint" in str(exc)
            else "identifier"
        )
        raise ValidationError({field: str(exc)}) from None
    if adapter_class.modality == "any":
        modality = _check_language_model(spec.identifier, modality)
    else:
        modality = adapter_class.modality
    model = PretrainedModel.objects.create(
        name=name,
        source=spec.source,
        identifier=spec.identifier,
        weights=spec.weights,
        checkpoint_path=spec.checkpoint_path,
        revision=spec.revision,
        seed=seed,
        modality=modality,
        default_layer=adapter_class.default_layer,
        description=description,
        created_by=created_by,
    )
    # Listing layers needs the weights and a forward pass: a worker's job, not the request's.
    # The model is the user's intent: it is stored even when the broker does not answer, and
    # its inspection is sent by the workers' sweep once it does (models_resend_inspections).
    transaction.on_commit(lambda: _send(INSPECT_TASK, model.pk))
    return model


def _check_language_model(identifier: str, modality: str) -> str:
    from evaluation.engine.adapters.language_adapter import parse_language

    origin, _ = parse_language(identifier)
    if not Description.objects.filter(origin=origin).exists():
        known = list(Description.objects.values_list("origin", flat=True).distinct()[:10])
        raise ValidationError(
            {
                "identifier": f"No description set called {origin!r}."
                + (f" Known sets: {', '.join(known)}." if known else " Import descriptions first.")
            }
        )
    if modality not in Modality.values:
        raise ValidationError(
            {"modality": "Say which stimuli the descriptions are of: image, text or audio."}
        )
    return modality


def model_inspect(*, model_id: int) -> None:
    """Load the model once, list its layers with output shapes, its size and embedding size."""
    model = PretrainedModel.objects.filter(pk=model_id).first()
    if model is None:
        return
    try:
        adapter = adapters.load_adapter(model.spec(), device=settings.EXTRACTION_DEVICE)
        with _sample_folder() as folder:
            sample = _sample_stimulus(model.modality, folder)
            adapter.prepare([sample])
            layers = adapter.describe_layers(sample)
    except EngineError as exc:
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Listing the layers of model %s stopped: %s", model_id, exc)
        PretrainedModel.objects.filter(pk=model_id).update(inspection_error=str(exc))
        return
    except Exception as exc:
        # Still an outcome: the model page says so instead of waiting for layers forever.
        logger.exception("Listing the layers of model %s failed", model_id)
        PretrainedModel.objects.filter(pk=model_id).update(
            inspection_error=_internal_error("listing the model's layers", exc)
        )
        return
    default = next((layer for layer in layers if layer["name"] == adapter.default_layer), None)
    PretrainedModel.objects.filter(pk=model_id).update(
        layers=layers,
        inspection_error="",
        parameter_count=adapter.parameter_count() or None,
        embedding_size=int(np.prod(default["shape"])) if default else None,
    )


_SAMPLE_WRITE = "write a sample stimulus to list the model's layers"


@contextmanager
def _sample_folder() -> Iterator[Path]:
    """A scratch folder for the sample stimulus, removed afterwards."""
    scratch = Path(tempfile.gettempdir())
    with writing(scratch, place=f"TMPDIR ({scratch})", doing=_SAMPLE_WRITE):
        folder = Path(tempfile.mkdtemp(prefix="likeness-inspect-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sample_stimulus(modality: str, folder: Path) -> StimulusInput:
    # A full or read-only scratch disk is named (only here: other errors of the inspection
    # are about other places).
    with writing(folder, place=f"TMPDIR ({folder.parent})", doing=_SAMPLE_WRITE):
        stimulus = _sample_of(modality, folder)
    # Language-based models embed descriptions, whatever the stimulus is.
    return replace(stimulus, descriptions=(("a short description of the sample", 1.0),))


def _sample_of(modality: str, folder: Path) -> StimulusInput:
    if modality == Modality.IMAGE:
        from PIL import Image

        path = folder / "sample.png"
        Image.new("RGB", (224, 224), (128, 128, 128)).save(path)
        return StimulusInput(path=str(path))
    if modality == Modality.AUDIO:
        import soundfile

        path = folder / "sample.wav"
        seconds = np.arange(16000) / 16000
        encoded = io.BytesIO()  # written by Python, whose OSError says why (libsndfile's not)
        soundfile.write(encoded, 0.5 * np.sin(2 * np.pi * 440 * seconds), 16000, format="WAV")
        path.write_bytes(encoded.getvalue())
        return StimulusInput(path=str(path))
    return StimulusInput(text="A short sentence to trace the model's layers.")


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


def _dataset_import_zip(
    modality: str,
    name: str,
    upload: UploadedFile | IO[bytes],
    created_by: Any,
    description: str,
    origin: str,
) -> Dataset:
    parse_zip = parse_image_zip if modality == Modality.IMAGE else parse_audio_zip

    def parse(staging: Path) -> list[ParsedStimulus]:
        return parse_zip(
            upload,
            staging=staging,
            max_unzipped_bytes=settings.DATASET_UNZIPPED_MAX_BYTES,
            max_members=settings.DATASET_MAX_STIMULI,
        )

    return _dataset_import(
        name=name,
        modality=modality,
        upload=upload,
        parse=parse,
        created_by=created_by,
        description=description,
        origin=origin,
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

    return _dataset_import(
        name=name,
        modality=Modality.TEXT,
        upload=upload,
        parse=parse,
        created_by=created_by,
        description=description,
        origin=origin or "CSV of texts",
    )


def _dataset_import(
    *,
    name: str,
    modality: str,
    upload: UploadedFile | IO[bytes],
    parse: Callable[[Path], list[ParsedStimulus]],
    created_by: Any,
    description: str,
    origin: str,
) -> Dataset:
    """Parse into a staging folder, then create all rows and move the files in one step.

    Any failure leaves neither rows nor files behind.
    """
    name = name.strip()
    if Dataset.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A dataset called {name!r} already exists."})
    size = getattr(upload, "size", None)
    if size is not None and size > settings.DATASET_UPLOAD_MAX_BYTES:
        raise ValidationError(
            {
                "file": f"The file is {human_bytes(size)}; the limit is "
                f"{human_bytes(settings.DATASET_UPLOAD_MAX_BYTES)} (DATASET_UPLOAD_MAX_BYTES)."
            }
        )
    media = Path(settings.MEDIA_ROOT)
    # A full, read-only or forbidden MEDIA_ROOT is the administrator's to fix: named
    # (StorageError: a form error, an API 507), never "a bug".
    place = f"MEDIA_ROOT ({media})"
    tmp_root = media / "tmp"
    with writing(tmp_root, place=place, doing="make a staging folder for the import"):
        tmp_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="import-", dir=tmp_root))
    final_dir: Path | None = None
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
            if any(item.stored_name for item in parsed):  # text stimuli have no files
                final_dir = media / "datasets" / str(dataset.pk)
                with writing(final_dir, place=place, doing="move the imported files into place"):
                    final_dir.parent.mkdir(parents=True, exist_ok=True)
                    staging.rename(final_dir)
        return dataset
    except BaseException as exc:
        if final_dir is not None and final_dir.exists():
            shutil.rmtree(final_dir, ignore_errors=True)
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Import of dataset %r stopped: %s", name, exc)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


# --- Runs -----------------------------------------------------------------------------------
def run_create(
    *,
    dataset: Dataset,
    models: Sequence[PretrainedModel],
    metrics: Sequence[dict[str, Any]],
    layers: dict[int, list[str]] | None = None,
    created_by: Any = None,
) -> Run:
    """Create a run with one step per model and queue the extractions once committed.

    ``layers`` maps a model id to the layers to score (a layer sweep); a model without an
    entry is scored at its default layer.
    """
    layers = layers or {}
    _check_layers(models, layers)
    if not models:
        raise ValidationError({"models": "Choose at least one model."})
    if not metrics:
        raise ValidationError({"metrics": "Choose at least one metric."})
    stacked = [m.name for m in models if m.source == ModelSource.STACKED]
    if stacked:
        raise ValidationError(
            {
                "models": f"{', '.join(stacked)}: stacked models are made on a leaderboard from "
                "their components' cached embeddings, not run."
            }
        )
    mismatched = [m.display_name for m in models if m.modality != dataset.modality]
    if mismatched:
        raise ValidationError(
            {
                "models": f"{', '.join(mismatched)} embed{'s' if len(mismatched) == 1 else ''} "
                f"a different modality than the {dataset.modality} stimuli of {dataset}."
            }
        )
    targets = _targets_for(dataset, metrics)
    with transaction.atomic():
        run = Run.objects.create(dataset=dataset, metrics=list(metrics), created_by=created_by)
        run.targets.set(targets)
        steps = RunStep.objects.bulk_create(
            [
                RunStep(
                    run=run,
                    model=model,
                    layers=list(dict.fromkeys(layers.get(model.pk, []))),
                    total=dataset.stimulus_count,
                    heartbeat_at=timezone.now(),
                )
                for model in models
            ]
        )
        step_ids = [step.pk for step in steps]
        # The run is the user's intent: it is stored even when the broker does not answer,
        # and its unsent steps are sent by the workers' sweep once it does.
        transaction.on_commit(lambda: _enqueue_steps("evaluation.extract_embeddings", step_ids))
    return run


def _check_layers(models: Sequence[PretrainedModel], layers: dict[int, list[str]]) -> None:
    """Refuse layers a model does not have (when its layers have been listed already; if
    not, the worker checks them and fails the step with the same message)."""
    for model in models:
        known = model.layer_names
        for layer in layers.get(model.pk, []):
            if known and layer not in known:
                raise ValidationError(
                    {"layers": f"{model.name} has no layer {layer!r}.{close_names(layer, known)}"}
                )


def _targets_for(dataset: Dataset, metrics: Sequence[dict[str, Any]]) -> list[Target]:
    targets = list(dataset.targets.all())
    for entry in metrics:
        info = metric_registry.METRICS.get(entry.get("name", ""))
        if info is None:
            raise ValidationError({"metrics": f"Unknown metric {entry.get('name')!r}."})
        if not any(t.kind in info.target_kinds for t in targets):
            needed = " or ".join(TargetKind(kind).label.lower() for kind in info.target_kinds)
            raise ValidationError({"metrics": f"{info.label} needs {needed}; {dataset} has none."})
    return targets


def run_cancel(*, run: Run) -> bool:
    """Cancel a run that has not finished; workers stop at their next progress report."""
    with transaction.atomic():
        updated = (
            Run.objects.filter(pk=run.pk)
            .exclude(status__in=FINISHED_RUN_STATUSES)
            .update(status=RunStatus.CANCELLED, finished_at=timezone.now())
        )
        if updated:
            run.steps.exclude(status__in=FINISHED_STEP_STATUSES).update(
                status=StepStatus.CANCELLED, finished_at=timezone.now(), claimed_by=""
            )
    return bool(updated)


def run_retry(*, run: Run) -> int:
    """Queue the failed and cancelled steps of a finished run again; returns how many.

    Embeddings already cached are reused and scores are upserted, so a retry redoes only
    what is missing."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status not in FINISHED_RUN_STATUSES:
            return 0
        step_ids = list(
            locked.steps.filter(status__in=[StepStatus.FAILED, StepStatus.CANCELLED]).values_list(
                "pk", flat=True
            )
        )
        if not step_ids:
            return 0
        RunStep.objects.filter(pk__in=step_ids).update(
            status=StepStatus.QUEUED,
            error_message="",
            claimed_by="",
            attempts=0,
            processed=0,
            started_at=None,
            finished_at=None,
            heartbeat_at=timezone.now(),
            message_sent_at=None,
        )
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.QUEUED, error_message="", finished_at=None
        )
        transaction.on_commit(lambda: _enqueue_steps("evaluation.extract_embeddings", step_ids))
    return len(step_ids)


# Tasks that move a run step on; each step records when its current one was sent.
STEP_TASKS = frozenset({"evaluation.extract_embeddings", "evaluation.score_embeddings"})
# The task that lists a model's layers; the model records when it was sent.
INSPECT_TASK = "evaluation.inspect_model"
# What kombu raises when the broker does not answer (Celery wraps the transport's errors).
BROKER_ERRORS: tuple[type[Exception], ...] = (KombuOperationalError, ConnectionError)


def _enqueue(task_name: str, object_id: int) -> None:
    """Hand a task to the broker; raises kombu's OperationalError when it does not answer
    (``_send`` is the caller that copes with that). Sent by name through the project's
    Celery app (``webapp`` loads it and makes it the default), so no service imports it."""
    current_app.send_task(task_name, args=[object_id])


def _send(task_name: str, object_id: int) -> bool:
    """Send a task; False (logged) when the broker does not answer.

    Tasks are sent once the writes that need them are committed, so an unreachable broker
    must not become an error after the fact (a client would retry and store twice): a step
    task that was not sent leaves the step's ``message_sent_at`` empty, an inspection the
    model's ``inspection_sent_at``, and the workers' sweep (``steps_resend_lost``,
    ``models_resend_inspections``) sends it as soon as the broker answers again."""
    recorded = task_name in STEP_TASKS or task_name == INSPECT_TASK
    try:
        _enqueue(task_name, object_id)
    except BROKER_ERRORS as exc:
        logger.warning(
            "The task queue is unreachable (%s); %s for %s was not sent%s.",
            exc,
            task_name,
            object_id,
            " (the workers send it once the queue is back)" if recorded else "",
        )
        sent = False
    else:
        sent = True
    when = timezone.now() if sent else None
    if task_name in STEP_TASKS:
        RunStep.objects.filter(pk=object_id).update(message_sent_at=when)
    elif task_name == INSPECT_TASK:
        PretrainedModel.objects.filter(pk=object_id).update(inspection_sent_at=when)
    return sent


def _enqueue_steps(task_name: str, step_ids: Sequence[int]) -> int:
    """Send the steps' tasks in order; after one fails the others are left to the sweep too
    (each try at an unreachable broker costs up to seconds). Returns how many were sent."""
    for count, step_id in enumerate(step_ids):
        if not _send(task_name, step_id):
            RunStep.objects.filter(pk__in=step_ids[count:]).update(message_sent_at=None)
            return count
    return len(step_ids)


# --- Step execution (called by workers) ----------------------------------------------------
def step_extract(*, step_id: int, worker: str) -> None:
    """Extract (or reuse) the step's embeddings, then queue its scoring."""
    if not _claim(step_id, StepStatus.QUEUED, StepStatus.EXTRACTING, worker):
        return
    step = RunStep.objects.select_related("run__dataset", "model").get(pk=step_id)
    run_refresh_status(run_id=step.run_id)
    started = time.perf_counter()
    try:
        embedding_sets, reused = _embeddings_for(step, worker)
    except ExtractionCancelled:
        return  # the run was cancelled, or another worker took the step over
    except EngineError as exc:
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Extraction of step %s stopped: %s", step_id, exc)
        step_fail(step_id=step_id, message=str(exc), worker=worker)
        return
    except Exception as exc:
        logger.exception("Extraction of step %s failed", step_id)
        step_fail(
            step_id=step_id, message=_internal_error("extracting embeddings", exc), worker=worker
        )
        return
    with transaction.atomic():
        moved = RunStep.objects.filter(
            pk=step_id, status=StepStatus.EXTRACTING, claimed_by=worker
        ).update(
            status=StepStatus.EXTRACTED,
            reused_embeddings=reused,
            processed=embedding_sets[0].count,
            extract_seconds=time.perf_counter() - started,
            claimed_by="",
            heartbeat_at=timezone.now(),
            attempts=0,  # attempts count per phase: scoring starts afresh
        )
        if moved:
            step.embedding_sets.set(embedding_sets)
            # A broker away now leaves the step extracted with no message: the sweep sends it.
            transaction.on_commit(lambda: _send("evaluation.score_embeddings", step_id))


def step_score(*, step_id: int, worker: str) -> None:
    """Compute every metric of the run on the step's embeddings and store the scores."""
    if not _claim(step_id, StepStatus.EXTRACTED, StepStatus.SCORING, worker):
        return
    step = RunStep.objects.select_related("run__dataset", "model").get(pk=step_id)
    started = time.perf_counter()
    try:
        rows = _score_rows(step)
    except EngineError as exc:
        step_fail(step_id=step_id, message=str(exc), worker=worker)
        return
    except Exception as exc:
        logger.exception("Scoring of step %s failed", step_id)
        step_fail(step_id=step_id, message=_internal_error("computing metrics", exc), worker=worker)
        return
    with transaction.atomic():
        finished = RunStep.objects.filter(
            pk=step_id, status=StepStatus.SCORING, claimed_by=worker
        ).update(
            status=StepStatus.SUCCEEDED,
            score_seconds=time.perf_counter() - started,
            finished_at=timezone.now(),
            claimed_by="",
            heartbeat_at=timezone.now(),
        )
        if finished:
            Score.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["run", "model", "layer", "metric_key", "target"],
                update_fields=[
                    "value",
                    "ci_low",
                    "ci_high",
                    "ceiling",
                    "n",
                    "params",
                    "embedding_set",
                    "details",
                    "created_at",
                ],
            )
    run_refresh_status(run_id=step.run_id)


def step_fail(*, step_id: int, message: str, worker: str | None = None) -> None:
    """Fail the step with a message; with ``worker``, only if that worker still holds it
    (a worker that lost its claim to a stall takeover must not fail its successor's work)."""
    steps = RunStep.objects.filter(pk=step_id).exclude(status__in=FINISHED_STEP_STATUSES)
    if worker is not None:
        steps = steps.filter(claimed_by=worker)
    steps.update(
        status=StepStatus.FAILED,
        error_message=message,
        finished_at=timezone.now(),
        claimed_by="",
    )
    step = RunStep.objects.only("run_id").get(pk=step_id)
    run_refresh_status(run_id=step.run_id)


def run_refresh_status(*, run_id: int) -> None:
    """Derive the run's status and timings from its steps (under a row lock)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status == RunStatus.CANCELLED:
            return
        steps = list(
            run.steps.select_related("model").only(
                "status", "error_message", "model__name", "model__weights"
            )
        )
        now = timezone.now()
        fields: dict[str, Any] = {}
        if all(s.status in FINISHED_STEP_STATUSES for s in steps):
            failed = [s for s in steps if s.status == StepStatus.FAILED]
            if not failed:
                fields["status"] = RunStatus.SUCCEEDED
            elif len(failed) == len(steps):
                fields["status"] = RunStatus.FAILED
            else:  # the models that worked keep their (valid) scores
                fields["status"] = RunStatus.PARTLY_FAILED
            fields["finished_at"] = run.finished_at or now
            fields["error_message"] = "\n".join(
                f"{s.model.display_name}: {s.error_message}" for s in failed
            )
        elif any(s.status != StepStatus.QUEUED for s in steps):
            fields["status"] = RunStatus.RUNNING
        if fields.get("status", run.status) != RunStatus.QUEUED and run.started_at is None:
            fields["started_at"] = now
        if fields:
            Run.objects.filter(pk=run_id).update(**fields)


def _claim(step_id: int, from_status: str, to_status: str, worker: str) -> bool:
    """Take the step for this worker; False if another worker has it or it is finished."""
    now = timezone.now()
    return bool(
        RunStep.objects.filter(pk=step_id, status=from_status)
        .exclude(run__status=RunStatus.CANCELLED)
        .update(
            status=to_status,
            claimed_by=worker,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now),
        )
    )


def _internal_error(doing: str, exc: Exception) -> str:
    # A full, read-only or forbidden disk met anywhere (not only where the engine names it)
    # is still the machine's problem: say which, never "a bug".
    if isinstance(exc, OSError) and (named := storage_error(exc)) is not None:
        return str(named)
    return (
        f"Internal error while {doing} ({type(exc).__name__}: {exc}). "
        "This is a bug in Likeness, not in your inputs; the worker log has the details."
    )


# --- Embeddings -------------------------------------------------------------------------------
def _embeddings_for(step: RunStep, worker: str) -> tuple[list[EmbeddingSet], bool]:
    """One EmbeddingSet per layer of the step: cached ones are reused by fingerprint, the
    missing ones extracted together, in one forward pass per batch."""
    model, dataset = step.model, step.run.dataset
    spec = model.spec()
    adapter_class = adapters.adapter_class(spec.source, spec.identifier)
    identity = adapter_class.identity(spec)
    layers = list(dict.fromkeys(step.layers)) or [adapter_class.default_layer]
    fingerprints = {
        layer: embedding_fingerprint(
            model={"source": spec.source, "identifier": spec.identifier, "weights": spec.weights},
            weights_id=identity["weights_id"],
            layer=layer,
            pooling=model.pooling,
            preprocessing=identity["preprocessing"],
            precision=settings.EXTRACTION_PRECISION,
            dataset_hash=dataset.content_hash,
        )
        for layer in layers
    }
    cached = {
        e.layer: e
        for e in EmbeddingSet.objects.filter(fingerprint__in=fingerprints.values())
        if e.path.exists()
    }
    missing = [layer for layer in layers if layer not in cached]
    if missing:
        cached.update(
            _extract(
                step, worker, spec, identity, {layer: fingerprints[layer] for layer in missing}
            )
        )
    return [cached[layer] for layer in layers], not missing


def _extract(
    step: RunStep,
    worker: str,
    spec: ModelSpec,
    identity: dict[str, Any],
    fingerprints: dict[str, str],
) -> dict[str, EmbeddingSet]:
    model, dataset = step.model, step.run.dataset
    loading = time.perf_counter()
    adapter = adapters.load_adapter(
        spec,
        device=settings.EXTRACTION_DEVICE,
        precision=settings.EXTRACTION_PRECISION,
        channels_last=settings.EXTRACTION_CHANNELS_LAST,
    )
    RunStep.objects.filter(pk=step.pk).update(load_seconds=time.perf_counter() - loading)
    relative = {layer: f"{fp[:2]}/{fp}.npy" for layer, fp in fingerprints.items()}
    out_paths = {layer: Path(settings.EMBEDDINGS_ROOT) / path for layer, path in relative.items()}
    result = extract_layers(
        adapter,
        _stimulus_inputs(dataset, model),
        out_paths=out_paths,
        pooling=model.pooling,
        batch_size=settings.EXTRACTION_BATCH_SIZE,
        chunk_size=settings.EXTRACTION_CHUNK_SIZE,
        num_workers=settings.EXTRACTION_NUM_WORKERS,
        progress=_progress_reporter(step.pk, worker),
        storage_name=f"EMBEDDINGS_ROOT ({settings.EMBEDDINGS_ROOT})",  # creates the folders
    )
    if result.chunks_reused:
        logger.info(
            "Step %s resumed its extraction: reused %d saved chunk(s)",
            step.pk,
            result.chunks_reused,
        )
    if adapter.default_layer in result.dims:
        PretrainedModel.objects.filter(pk=model.pk).update(
            parameter_count=adapter.parameter_count() or None,
            embedding_size=result.dims[adapter.default_layer],
        )
    created = {}
    for layer, fingerprint in fingerprints.items():
        created[layer], _ = EmbeddingSet.objects.update_or_create(
            fingerprint=fingerprint,
            defaults={
                "model": model,
                "dataset": dataset,
                "layer": layer,
                "pooling": model.pooling,
                "precision": settings.EXTRACTION_PRECISION,
                "weights_id": identity["weights_id"],
                "preprocessing": adapter.preprocessing_description(),
                "relative_path": relative[layer],
                "count": result.count,
                "dim": result.dims[layer],
                "extraction_seconds": result.seconds,
            },
        )
    return created


def _stimulus_inputs(dataset: Dataset, model: PretrainedModel) -> list[StimulusInput]:
    media = Path(settings.MEDIA_ROOT)
    described = _descriptions(dataset, model) if model.source == ModelSource.LANGUAGE else {}
    rows = dataset.stimuli.order_by("order").values_list("pk", "file", "text", "name")
    return [
        StimulusInput(
            path=str(media / file) if file else "",
            text=text,
            # Messages name a stimulus as the researcher knows it (cat/1.png), not as stored.
            meta={"name": name} if file else {},
            descriptions=described.get(pk, ()),
        )
        for pk, file, text, name in rows
    ]


def _descriptions(
    dataset: Dataset, model: PretrainedModel
) -> dict[int, tuple[tuple[str, float], ...]]:
    """The model's description set, per stimulus of the dataset, in a fixed order."""
    from evaluation.engine.adapters.language_adapter import parse_language

    origin, _ = parse_language(model.identifier)
    grouped: dict[int, list[tuple[str, float]]] = defaultdict(list)
    rows = Description.objects.filter(origin=origin, stimulus__dataset=dataset).order_by("id")
    for stimulus_id, text, weight in rows.values_list("stimulus_id", "text", "weight"):
        grouped[stimulus_id].append((text, weight))
    return {pk: tuple(texts) for pk, texts in grouped.items()}


def _progress_reporter(step_id: int, worker: str) -> Callable[[int, int], bool]:
    """Write progress at most twice a second; tell the extraction to stop when the step
    is no longer this worker's (cancelled, or taken over after a stall)."""
    last = 0.0

    def report(done: int, total: int) -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_REPORT_SECONDS and done < total:
            return True
        last = now
        return bool(
            RunStep.objects.filter(pk=step_id, status=StepStatus.EXTRACTING, claimed_by=worker)
            .exclude(run__status=RunStatus.CANCELLED)
            .update(processed=done, total=total, heartbeat_at=timezone.now())
        )

    return report


def _score_rows(step: RunStep) -> list[Score]:
    embedding_sets = list(step.embedding_sets.all())
    if not embedding_sets:
        raise EngineError("The step has no embeddings to score; run it again.")
    kinds = {
        kind for e in step.run.metrics for kind in metric_registry.METRICS[e["name"]].target_kinds
    }
    targets = [
        (target, target_data(target))
        for target in step.run.targets.select_related("dataset", "judgments")
        if target.kind in kinds
    ]
    rows = []
    for embedding_set in embedding_sets:
        embeddings = embedding_set.load()
        if len(embeddings) != step.run.dataset.stimulus_count:
            raise EngineError(
                f"The cached embeddings hold {len(embeddings)} rows but the dataset has "
                f"{step.run.dataset.stimulus_count} stimuli; the dataset changed. "
                "Run the evaluation again."
            )
        for target, data in targets:
            rows.extend(_layer_scores(step, embedding_set, embeddings, target, data))
    return rows


def _layer_scores(
    step: RunStep,
    embedding_set: EmbeddingSet,
    embeddings: Any,
    target: Target,
    data: metric_registry.TargetData,
) -> list[Score]:
    rows = []
    now = timezone.now()
    entries = [
        e
        for e in step.run.metrics
        if target.kind in metric_registry.METRICS[e["name"]].target_kinds
    ]
    for entry in entries:
        info = metric_registry.METRICS[entry["name"]]
        try:
            result = metric_registry.compute(entry, embeddings, data)
        except EngineError as exc:
            raise type(exc)(f"{info.label} on {target.name}: {exc}") from None
        rows.append(
            Score(
                run=step.run,
                model=step.model,
                target=target,
                layer=embedding_set.layer,
                metric=entry["name"],
                metric_key=metric_key(entry["name"], entry["params"]),
                params=entry["params"],
                value=result.value,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                ceiling=result.ceiling,
                n=result.n,
                embedding_set=embedding_set,
                details=result.details,
                created_at=now,
            )
        )
    return rows


# --- Recovery -----------------------------------------------------------------------------------
# Where a step goes back to when the worker holding it disappears, and the task to resend.
_RESUME = {
    StepStatus.QUEUED: (StepStatus.QUEUED, "evaluation.extract_embeddings"),
    StepStatus.EXTRACTING: (StepStatus.QUEUED, "evaluation.extract_embeddings"),
    StepStatus.EXTRACTED: (StepStatus.EXTRACTED, "evaluation.score_embeddings"),
    StepStatus.SCORING: (StepStatus.EXTRACTED, "evaluation.score_embeddings"),
}


def steps_requeue_orphaned(*, worker: str) -> int:
    """A worker starting under a name that still holds steps means its previous process
    died (killed, out of memory, machine lost): give those steps back to the queue."""
    steps = RunStep.objects.filter(status__in=CLAIMED_STEP_STATUSES, claimed_by=worker)
    return sum(_requeue(step) for step in steps)


def steps_requeue_stalled(*, stalled_after_seconds: int | None = None) -> int:
    """Requeue unfinished steps with no heartbeat for a while (dead worker or lost message)."""
    seconds = stalled_after_seconds or settings.RUN_STALL_SECONDS
    cutoff = timezone.now() - timezone.timedelta(seconds=seconds)
    steps = RunStep.objects.filter(status__in=_RESUME.keys(), heartbeat_at__lt=cutoff).exclude(
        run__status__in=FINISHED_RUN_STATUSES
    )
    return sum(_requeue(step) for step in steps)


def _requeue(step: RunStep) -> bool:
    if step.status in CLAIMED_STEP_STATUSES and step.attempts >= settings.RUN_MAX_ATTEMPTS:
        step_fail(
            step_id=step.pk,
            message=f"The worker processing this model stopped {step.attempts} times without "
            "finishing (killed or out of memory?). Try a smaller batch size or another worker.",
        )
        return False
    back_to, task_name = _RESUME[StepStatus(step.status)]
    with transaction.atomic():
        updated = RunStep.objects.filter(
            pk=step.pk, status=step.status, claimed_by=step.claimed_by
        ).update(status=back_to, claimed_by="", heartbeat_at=timezone.now())
        if updated:
            logger.warning(
                "Requeued step %s (%s, was held by %r)", step.pk, step.status, step.claimed_by
            )
            transaction.on_commit(lambda: _send(task_name, step.pk))
    return bool(updated)


def steps_requeue_dropped(
    *, worker: str, running: Collection[int], grace_seconds: float | None = None
) -> int:
    """Give back the steps that this live worker's name holds while none of its tasks runs
    them: a task that lost the database mid-step could not even record its failure, and the
    step would sit claimed until the stall reaper (``RUN_STALL_SECONDS``).

    ``running`` holds the ids of the steps the worker's tasks have in hand; a step claimed in
    the last ``grace_seconds`` is left alone (its task may not be listed yet)."""
    grace = settings.RUN_MESSAGE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    steps = RunStep.objects.filter(
        status__in=CLAIMED_STEP_STATUSES, claimed_by=worker, heartbeat_at__lt=cutoff
    ).exclude(pk__in=list(running))
    count = sum(_requeue(step) for step in steps)
    if count:
        logger.warning(
            "Requeued %d run step(s) that %s held but no task was running", count, worker
        )
    return count


def steps_resend_lost(
    *, live: Collection[tuple[str, int]] | None, grace_seconds: float | None = None
) -> int:
    """Send again the task of each waiting step whose message is lost; returns how many.

    A message is lost when it was never sent (the broker was unreachable when the run was
    created) or, where ``live`` lists the (task, step id) of every message the broker holds,
    queued or handed to a worker, when it is not among them (a broker restarted without
    persistence). ``live`` is None where the broker cannot be read that way: then only unsent
    steps are sent, and the stall reaper remains for the rest. Steps whose message was sent
    in the last ``grace_seconds`` are left alone. Row locks (skipping locked rows) keep two
    workers sweeping at once from sending a step twice."""
    grace = settings.RUN_MESSAGE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    waiting = Q(message_sent_at__isnull=True) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    )
    if live is not None:
        waiting |= Q(message_sent_at__lt=cutoff)
    held = set(live or ())
    sent = 0
    with transaction.atomic():
        steps = (
            RunStep.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(waiting, status__in=_WAITING_TASK.keys(), claimed_by="")
            .exclude(run__status__in=FINISHED_RUN_STATUSES)
            .only("pk", "status", "message_sent_at")
            .order_by("pk")
        )
        for step in steps:
            task_name = _WAITING_TASK[StepStatus(step.status)]
            if step.message_sent_at is not None and (task_name, step.pk) in held:
                continue
            if not _send(task_name, step.pk):
                break  # the broker is still away: the next sweep tries again
            sent += 1
    if sent:
        logger.warning("Sent again the lost task message of %d waiting run step(s)", sent)
    return sent


# A step waiting for a worker, and the task its message carries.
_WAITING_TASK = {
    StepStatus.QUEUED: "evaluation.extract_embeddings",
    StepStatus.EXTRACTED: "evaluation.score_embeddings",
}


def models_resend_inspections(*, grace_seconds: float | None = None) -> int:
    """Send the inspection of each model whose inspection task could not be handed to the
    broker (registered while it was unreachable); returns how many were sent.

    Models registered in the last ``grace_seconds`` are left alone (their request may not
    have sent it yet). Row locks (skipping locked rows) keep two workers sweeping at once
    from sending one twice. Unlike steps, a sent inspection lost inside the broker is not
    sent again: compose's Redis keeps its messages across restarts, and
    ``manage.py list_layers --inspect`` lists a model's layers at once."""
    grace = settings.RUN_MESSAGE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timezone.timedelta(seconds=grace)
    sent = 0
    with transaction.atomic():
        models = (
            PretrainedModel.objects.select_for_update(skip_locked=True)
            .filter(
                inspection_sent_at__isnull=True,
                layers=[],
                inspection_error="",
                created_at__lt=cutoff,
            )
            .exclude(source=ModelSource.STACKED)  # made on a leaderboard, never inspected
            .only("pk")
            .order_by("pk")
        )
        for model in models:
            if not _send(INSPECT_TASK, model.pk):
                break  # the broker is still away: the next sweep tries again
            sent += 1
    if sent:
        logger.warning(
            "Sent the inspection of %d model(s) registered while the queue was away", sent
        )
    return sent
