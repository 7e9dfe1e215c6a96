"""Embeddings of a step: reused by fingerprint when cached, extracted otherwise.

With files in an object store (evaluation/storage.py), the extraction works in this
machine's cache: it fetches each chunk's stimuli there, keeps every saved chunk in the store
(so a step resumes on any worker), and stores each finished file under its fingerprint."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone

from core.ending import worker_ending
from evaluation import storage
from evaluation.engine import adapters
from evaluation.engine.errors import EngineError, StimulusError, StorageError
from evaluation.engine.extraction import ExtractionCancelled, extract_layers
from evaluation.engine.fingerprint import embedding_fingerprint
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.video import FrameSampling
from evaluation.models import (
    Dataset,
    Description,
    EmbeddingSet,
    ModelSource,
    PretrainedModel,
    RunStatus,
    RunStep,
    StepStatus,
)

logger = logging.getLogger(__name__)

PROGRESS_REPORT_SECONDS = 0.5
# How often a step waiting for another step's extraction of the same embeddings looks again.
LOCK_POLL_SECONDS = 2.0


def embeddings_for(step: RunStep, worker: str) -> tuple[list[EmbeddingSet], bool]:
    """One EmbeddingSet per layer of the step: cached ones are reused by fingerprint, the
    missing ones extracted together, in one forward pass per batch."""
    model, dataset = step.model, step.run.dataset
    if model.source == ModelSource.IMPORTED:
        return _imported(step), True
    spec = model.spec()
    adapter_class = adapters.adapter_class(spec.source, spec.identifier)
    identity = adapter_class.identity(spec)
    if dataset.frame_sampling:
        # Which frames of each clip the model sees changes every embedding of a video.
        identity = {
            **identity,
            "preprocessing": {**identity["preprocessing"], "frames": dataset.frame_sampling},
        }
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
    cached = _stored(fingerprints)
    missing = [layer for layer in layers if layer not in cached]
    if missing:
        wanted = {layer: fingerprints[layer] for layer in missing}
        with _one_extraction_at_a_time(wanted.values(), step, worker):
            cached.update(_stored(wanted))  # another step may have stored them meanwhile
            missing = [layer for layer in missing if layer not in cached]
            if missing:
                cached.update(
                    _extract(
                        step,
                        worker,
                        spec,
                        identity,
                        {layer: fingerprints[layer] for layer in missing},
                    )
                )
    return [cached[layer] for layer in layers], not missing


def _stored(fingerprints: dict[str, str]) -> dict[str, EmbeddingSet]:
    """The embedding sets of these fingerprints whose file is stored, by layer."""
    return {
        e.layer: e
        for e in EmbeddingSet.objects.filter(fingerprint__in=fingerprints.values())
        if e.is_stored()
    }


@contextmanager
def _one_extraction_at_a_time(
    fingerprints: Iterable[str], step: RunStep, worker: str
) -> Iterator[None]:
    """Two steps that need the same embeddings (one model on one dataset in two runs, on any
    machines) must not write the same chunk and output files at once: the second waits for
    the first, then reuses what it stored. PostgreSQL session advisory locks, one per
    fingerprint, taken in order (two waiters cannot deadlock), released when the connection
    closes if the worker dies. While it waits, the step keeps its heartbeat, and a cancelled
    run or an ending worker stops the wait (ExtractionCancelled). A lock whose holder has
    no live step extracting this model on this dataset (a worker hung, or its host gone
    while the database keeps its connection) is waited for no longer than the stall
    reaper waits for a silent step (RUN_STALL_SECONDS): the step then goes ahead without it.
    SQLite, the embedded default with its one worker, takes none."""
    if connection.vendor != "postgresql":
        yield
        return
    keys = sorted({_lock_key(fingerprint) for fingerprint in fingerprints})
    held: list[int] = []
    try:
        for key in keys:
            while not _try_lock(key):
                if not _still_ours(step.pk, worker):
                    raise ExtractionCancelled()
                if not _extracting_elsewhere(step):
                    logger.warning(
                        "Step %s: the extraction lock %s is held but no live step extracts "
                        "this model on this dataset; going ahead without it",
                        step.pk,
                        key,
                    )
                    break
                time.sleep(LOCK_POLL_SECONDS)
            else:
                held.append(key)
        yield
    finally:
        for key in reversed(held):
            _unlock(key)


def _lock_key(fingerprint: str) -> int:
    """A fingerprint as PostgreSQL's 64-bit advisory lock key."""
    return int.from_bytes(bytes.fromhex(fingerprint[:16]), "big", signed=True)


def _try_lock(key: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


def _unlock(key: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            released = bool(cursor.fetchone()[0])
    except (DatabaseError, InterfaceError):
        return  # the connection is gone, and its locks with it
    if not released:  # another server session: a pooler that does not pool by session
        logger.error(
            "Extraction lock %s was not held by this database session: is a connection "
            "pooler in front of PostgreSQL pooling by transaction? It must pool by session.",
            key,
        )


def _extracting_elsewhere(step: RunStep) -> bool:
    """Whether another step extracts this model on this dataset and has said so within
    RUN_STALL_SECONDS (the rule the stall reaper goes by)."""
    alive_since = timezone.now() - timedelta(seconds=settings.RUN_STALL_SECONDS)
    return (
        RunStep.objects.filter(
            status=StepStatus.EXTRACTING,
            model_id=step.model_id,
            run__dataset_id=step.run.dataset_id,
            heartbeat_at__gte=alive_since,
        )
        .exclude(pk=step.pk)
        .exists()
    )


def _still_ours(step_id: int, worker: str, **progress: int) -> bool:
    """Whether the step is still this worker's to extract (not cancelled, not taken over
    after a stall, the worker not ending); if so, its heartbeat (and progress) is written."""
    if worker_ending():
        return False
    return bool(
        RunStep.objects.filter(pk=step_id, status=StepStatus.EXTRACTING, claimed_by=worker)
        .exclude(run__status=RunStatus.CANCELLED)
        .update(heartbeat_at=timezone.now(), **progress)
    )


def _imported(step: RunStep) -> list[EmbeddingSet]:
    """An imported model's embeddings: stored at import, never extracted."""
    model, dataset = step.model, step.run.dataset
    layers = list(dict.fromkeys(step.layers)) or [model.default_layer]
    stored = {
        e.layer: e
        for e in EmbeddingSet.objects.filter(model=model, dataset=dataset, layer__in=layers)
        if e.is_stored()
    }
    missing = [layer for layer in layers if layer not in stored]
    if missing:
        imported = sorted(
            set(EmbeddingSet.objects.filter(model=model).values_list("dataset__name", flat=True))
        )
        raise EngineError(
            f"{model.name} holds imported embeddings of {', '.join(imported) or 'no dataset'}, "
            f"not of {dataset.name} at layer {missing[0]!r}; import them for this dataset."
        )
    return [stored[layer] for layer in layers]


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
        frame_sampling=(
            FrameSampling.from_description(dataset.frame_sampling)
            if dataset.frame_sampling
            else None
        ),
    )
    RunStep.objects.filter(pk=step.pk).update(load_seconds=time.perf_counter() - loading)
    relative = {layer: f"{fp[:2]}/{fp}.npy" for layer, fp in fingerprints.items()}
    remote = storage.is_remote(storage.EMBEDDINGS)
    if remote:  # written in this machine's work folder, then stored
        out_paths = {
            layer: storage.work_path(storage.EMBEDDINGS, path) for layer, path in relative.items()
        }
        place = storage.work_place()
    else:  # written in place
        out_paths = {
            layer: storage.local_path(storage.EMBEDDINGS, path) for layer, path in relative.items()
        }
        place = storage.describe(storage.EMBEDDINGS)
    inputs, stored_media = _stimulus_inputs(dataset, model)
    bridge = _ElsewhereFiles(stored_media) if remote or stored_media else None
    try:
        result = extract_layers(
            adapter,
            inputs,
            out_paths=out_paths,
            pooling=model.pooling,
            batch_size=settings.EXTRACTION_BATCH_SIZE,
            chunk_size=settings.EXTRACTION_CHUNK_SIZE,
            num_workers=settings.EXTRACTION_NUM_WORKERS,
            progress=_progress_reporter(step.pk, worker),
            storage_name=place,  # creates the folders
            remote=bridge,
        )
    except StimulusError:
        if remote:  # bad input fails the same way every time: its chunks are never resumed
            try:
                _forget_chunks(step, relative.values())
            except Exception:  # never in place of the input's message, which the user can fix
                logger.exception("Step %s: removing the chunks of a failed extraction", step.pk)
        raise
    if remote:
        for layer, path in relative.items():
            storage.store_file(storage.EMBEDDINGS, path, result.paths[layer])
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
    if remote:  # only now: the rows name the stored files, so a retry reuses them
        _forget_chunks(step, relative.values())
    return created


def _stimulus_inputs(
    dataset: Dataset, model: PretrainedModel
) -> tuple[list[StimulusInput], dict[str, tuple[str, str]]]:
    """The dataset's stimuli for the engine, and, where the files are in an object store,
    what each local path (in this machine's cache) is a copy of: (stored name, sha256). A
    language model embeds the stimuli's descriptions alone: from an object store their files
    are then never fetched (no path)."""
    language = model.source == ModelSource.LANGUAGE
    remote = storage.is_remote(storage.MEDIA)
    described = _descriptions(dataset, model) if language else {}
    rows = dataset.stimuli.order_by("order").values_list(
        "pk", "file", "text", "name", "content_hash"
    )
    inputs, stored = [], {}
    for pk, file, text, name, sha256 in rows:
        path = ""
        if file and remote and not language:
            path = str(storage.cached_copy_path(storage.MEDIA, file, sha256=sha256))
            stored[path] = (file, sha256)
        elif file and not remote:
            path = str(storage.local_path(storage.MEDIA, file))
        inputs.append(
            StimulusInput(
                path=path,
                text=text,
                # Messages name a stimulus as the researcher knows it (cat/1.png), not as stored.
                meta={"name": name} if file else {},
                descriptions=described.get(pk, ()),
            )
        )
    return inputs, stored


class _ElsewhereFiles:
    """The extraction's bridge to the object store (extraction.RemoteFiles): a chunk's
    stimuli are fetched into this machine's cache before it is embedded; chunks are kept
    in the store under their names in the cache (<fingerprint path>.partial-N/chunk-K.npy)."""

    def __init__(self, stored_media: dict[str, tuple[str, str]]) -> None:
        self.stored_media = stored_media
        self.chunks_remote = storage.is_remote(storage.EMBEDDINGS)

    def fetch_inputs(self, stimuli: Sequence[StimulusInput]) -> None:
        wanted = [self.stored_media[s.path] for s in stimuli if s.path in self.stored_media]
        storage.fetch_many(storage.MEDIA, wanted)

    def fetch_chunk(self, path: Path) -> bool:
        if not self.chunks_remote:
            return False
        return storage.fetch_file(storage.EMBEDDINGS, self._name(path), path)

    def keep_chunk(self, path: Path) -> None:
        if self.chunks_remote:
            storage.upload(storage.EMBEDDINGS, self._name(path), path)

    @staticmethod
    def _name(path: Path) -> str:
        return path.relative_to(storage.work_names_root(storage.EMBEDDINGS)).as_posix()


def _forget_chunks(step: RunStep, relative_paths: Iterable[str]) -> None:
    """Remove the chunks kept in the store for these files (every chunk size), as far as the
    store lets us: chunks left behind cost room in the bucket, never a result, so a store
    that refuses is logged, not raised (the step's outcome is already decided)."""
    for relative in relative_paths:
        try:
            storage.delete_under(storage.EMBEDDINGS, f"{relative}.partial-")
        except StorageError as exc:
            logger.warning(
                "Step %s: the chunks of %s stay in the store: %s", step.pk, relative, exc
            )


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
    is no longer this worker's (cancelled, or taken over after a stall) or when the worker
    is ending (the step then goes back to the queue)."""
    last = 0.0

    def report(done: int, total: int) -> bool:
        nonlocal last
        if worker_ending():
            return False
        now = time.monotonic()
        if now - last < PROGRESS_REPORT_SECONDS and done < total:
            return True
        last = now
        return _still_ours(step_id, worker, processed=done, total=total)

    return report
