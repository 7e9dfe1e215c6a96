"""Archiving and deleting catalogue objects: models, targets and (their catalogue part)
datasets.

Archiving sets ``archived_at``: the object leaves the public lists (the selectors' list
functions leave it out) and stays reachable by its address, with its scores. Deleting is for
good: what depends on the object is listed first (``*_dependents``), the researcher decides
on purpose what happens to scores, and a deletion runs in one transaction; the files it
frees (embedding ``.npy`` files, stimulus media, poster frames) are removed only once that
transaction has committed, so a failed deletion leaves every row and every file in place.

A dataset's studies live in the annotation app, which this app may not import:
``annotation.services.archive`` lists and deletes a whole dataset, calling the catalogue
part here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from evaluation import storage
from evaluation.engine.errors import StorageError
from evaluation.models import (
    FINISHED_RUN_STATUSES,
    Dataset,
    EmbeddingImport,
    EmbeddingSet,
    HumanJudgments,
    Modality,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    Stimulus,
    Target,
)

logger = logging.getLogger(__name__)

# How many dependents of a kind are named with a link; the count says how many there are.
LINKS_SHOWN = 10
POSTER_DIR = "posters"  # as evaluation.stimulus_views keeps them, under MEDIA_ROOT
UNFINISHED_IMPORTS = (EmbeddingImport.Status.QUEUED, EmbeddingImport.Status.RUNNING)


class DeleteRefused(Exception):
    """The object cannot be deleted now; the message says what blocks it."""


@dataclass(frozen=True)
class Dependent:
    """One kind of thing that depends on the object: how many, the first few with their
    pages, and what deleting the object does to them."""

    label: str
    count: int
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, url)
    on_delete: str = ""


@dataclass(frozen=True)
class Dependents:
    """What depends on an object, what blocks its deletion now, and how many scores a
    deletion would remove (the researcher must agree to that on purpose)."""

    items: list[Dependent]
    blockers: list[str]
    score_count: int

    def with_more(self, items: Iterable[Dependent], blockers: Iterable[str]) -> Dependents:
        return Dependents([*self.items, *items], [*self.blockers, *blockers], self.score_count)


@dataclass
class FilesToRemove:
    """Stored files a deletion frees, removed after its transaction commits."""

    media: list[str] = field(default_factory=list)  # names in the MEDIA storage
    media_folders: list[str] = field(default_factory=list)  # "folders" there, whole
    embeddings: list[str] = field(default_factory=list)  # names in the EMBEDDINGS storage
    local: list[Path] = field(default_factory=list)  # poster frames under MEDIA_ROOT

    def extend(self, other: FilesToRemove) -> None:
        self.media += other.media
        self.media_folders += other.media_folders
        self.embeddings += other.embeddings
        self.local += other.local


# --- Archive -------------------------------------------------------------------------------------
def archive_set(obj: models.Model, *, archived: bool) -> None:
    """Archive (or unarchive) a model, dataset, target or study: only ``archived_at``
    changes; an object archived already keeps the time it was first archived."""
    rows = type(obj)._default_manager.filter(pk=obj.pk)
    if archived:
        rows.filter(archived_at__isnull=True).update(archived_at=timezone.now())
    else:
        rows.update(archived_at=None)
    obj.refresh_from_db(fields=["archived_at"])


# --- Dependents ------------------------------------------------------------------------------------
def _links(
    rows: QuerySet[Any], text: Callable[[Any], str], url: Callable[[Any], str]
) -> list[tuple[str, str]]:
    return [(text(row), url(row)) for row in rows[:LINKS_SHOWN]]


def _runs_item(runs: QuerySet[Run], on_delete: str) -> Dependent:
    runs = runs.select_related("dataset").order_by("-created_at", "-id").distinct()
    return Dependent(
        "runs",
        runs.count(),
        _links(runs, lambda r: f"Run {r.pk} ({r.get_status_display()})", Run.get_absolute_url),
        on_delete,
    )


def unfinished_runs(runs: QuerySet[Run]) -> list[str]:
    """What blocks a deletion among these runs: each one not finished. Inside a transaction
    every one of them is locked, finished or not (a worker ending one, or a retry starting
    one again, waits until the deletion commits or rolls back): none can start or end
    between this check and the deletion."""
    rows = Run.objects.filter(pk__in=runs.values("pk")).order_by("id")
    if transaction.get_connection().in_atomic_block:
        rows = rows.select_for_update()
    return [
        f"Run {run.pk} is {run.get_status_display().lower()}: cancel it or wait until it ends."
        for run in rows
        if run.status not in FINISHED_RUN_STATUSES
    ]


# --- Embedding sets shared with other models or datasets ----------------------------------------
# An embedding set is keyed by its fingerprint (evaluation.services.embeddings): the same
# identifier registered under two names, or two datasets with the same content, share one
# set, whose model and dataset are those of whichever step extracted it first. Deleting that
# model or dataset must not take the set (and its file) from the others' scores and runs.
SetOwner = str  # "model" or "dataset"


def _owner_of(owner: SetOwner, via: str) -> str:
    """The field, from a Score (via="") or a RunStep (via="runstep__"), naming the model or
    dataset that uses a set."""
    return f"{via}model_id" if owner == "model" else f"{via}run__dataset_id"


def shared_sets(sets: QuerySet[EmbeddingSet], owner: SetOwner, deleted: int) -> dict[int, int]:
    """Of ``sets`` (those of the model or dataset ``deleted``), the ones that another
    model's or dataset's scores or run steps use: set id -> the id of one such survivor."""
    survivors: dict[int, int] = {}
    scores = (
        Score.objects.filter(embedding_set__in=sets)
        .exclude(**{_owner_of(owner, ""): deleted})
        .values_list("embedding_set_id", _owner_of(owner, ""))
        .order_by("embedding_set_id", _owner_of(owner, ""))
    )
    steps = (
        RunStep.embedding_sets.through.objects.filter(embeddingset__in=sets)
        .exclude(**{_owner_of(owner, "runstep__"): deleted})
        .values_list("embeddingset_id", _owner_of(owner, "runstep__"))
        .order_by("embeddingset_id", _owner_of(owner, "runstep__"))
    )
    for set_id, survivor in [*scores, *steps]:
        survivors.setdefault(set_id, survivor)
    return survivors


def _embedding_sets_items(
    sets: QuerySet[EmbeddingSet], owner: SetOwner, deleted: int
) -> list[Dependent]:
    """The sets a deletion takes, and (when there are any) those it keeps because another
    model's or dataset's scores or runs use them, each linked to whom it is shared with."""
    shared = shared_sets(sets, owner, deleted)
    items = [
        Dependent(
            "embedding sets",
            sets.count() - len(shared),
            [],
            "deleted with it, their .npy files too",
        )
    ]
    if shared:
        kind = PretrainedModel if owner == "model" else Dataset
        survivors = kind.objects.in_bulk(set(shared.values()))
        layers = dict(sets.filter(pk__in=shared).values_list("pk", "layer"))
        items.append(
            Dependent(
                f"embedding sets shared with other {owner}s",
                len(shared),
                [
                    (
                        f"layer {layers[set_id]}: shared with {survivors[survivor].name}",
                        survivors[survivor].get_absolute_url(),
                    )
                    for set_id, survivor in sorted(shared.items())[:LINKS_SHOWN]
                ],
                f"kept (same fingerprint): the {owner} named uses them, and they become its",
            )
        )
    return items


def _hand_over_shared_sets(sets: QuerySet[EmbeddingSet], owner: SetOwner, deleted: int) -> None:
    """Point each shared set at a surviving model or dataset that uses it, so that the
    deletion's cascade leaves it (and its file) in place."""
    for set_id, survivor in shared_sets(sets, owner, deleted).items():
        EmbeddingSet.objects.filter(pk=set_id).update(**{f"{owner}_id": survivor})


def model_dependents(model: PretrainedModel) -> Dependents:
    scores = Score.objects.filter(model=model)
    runs = Run.objects.filter(steps__model=model)
    embedding_sets = EmbeddingSet.objects.filter(model=model)
    return Dependents(
        items=[
            Dependent(
                "scores",
                scores.count(),
                [(f"Scores on {model.name}", model.get_absolute_url())] if scores.exists() else [],
                "deleted with it (only when you tick 'delete the scores too')",
            ),
            _runs_item(
                runs,
                "its part of each run is deleted; a run with no other model is deleted whole",
            ),
            *_embedding_sets_items(embedding_sets, "model", model.pk),
        ],
        blockers=unfinished_runs(runs),
        score_count=scores.count(),
    )


def target_dependents(target: Target) -> Dependents:
    scores = Score.objects.filter(target=target)
    items = [
        Dependent(
            "scores",
            scores.count(),
            [(f"Leaderboard of {target.name}", target.get_absolute_url())]
            if scores.exists()
            else [],
            "deleted with it (only when you tick 'delete the scores too')",
        ),
        _runs_item(target.runs.all(), "kept; they no longer score this target"),
    ]
    if target.judgments is not None:
        items.append(
            Dependent(
                "judgment sets",
                1,
                [],
                f"its judgments ({target.judgments}, {target.judgments.judgment_count} rows) "
                "are deleted with it",
            )
        )
    return Dependents(items, unfinished_runs(target.runs.all()), scores.count())


def dataset_catalogue_dependents(dataset: Dataset) -> Dependents:
    """A dataset's dependents in the catalogue (its studies are added by the annotation
    app): targets, judgments, runs, embedding sets, scores; unfinished runs and embedding
    imports block its deletion."""
    targets = dataset.targets.order_by("name")
    scores = Score.objects.filter(Q(target__dataset=dataset) | Q(run__dataset=dataset))
    imports = EmbeddingImport.objects.filter(dataset=dataset, status__in=UNFINISHED_IMPORTS)
    items = [
        Dependent(
            "targets",
            targets.count(),
            _links(targets, str, Target.get_absolute_url),
            "deleted with it",
        ),
        Dependent(
            "judgment sets",
            dataset.judgment_sets.count(),
            [
                (str(j), "")
                for j in dataset.judgment_sets.order_by("name", "-version")[:LINKS_SHOWN]
            ],
            "deleted with it",
        ),
        _runs_item(dataset.runs.all(), "deleted with it"),
        *_embedding_sets_items(dataset.embedding_sets.all(), "dataset", dataset.pk),
        Dependent(
            "scores",
            scores.distinct().count(),
            [],
            "deleted with it (only when you tick 'delete the scores too')",
        ),
    ]
    blockers = unfinished_runs(dataset.runs.all()) + [
        f"Embedding import {job.pk} ({job.name}) is {job.get_status_display().lower()}: "
        "wait until it ends."
        for job in imports.order_by("id")
    ]
    return Dependents(items, blockers, scores.distinct().count())


# --- Delete --------------------------------------------------------------------------------------
def refuse_if_blocked(noun: str, dependents: Dependents, *, delete_scores: bool) -> None:
    """Raise DeleteRefused naming what blocks the deletion: unfinished work, or scores the
    researcher did not agree to delete."""
    if dependents.blockers:
        raise DeleteRefused(f"{noun} cannot be deleted now. " + " ".join(dependents.blockers))
    if dependents.score_count and not delete_scores:
        many = dependents.score_count != 1
        raise DeleteRefused(
            f"{noun} has {dependents.score_count} score{'s' if many else ''}: tick 'delete the "
            f"scores too' to delete {'them' if many else 'it'} with it, or archive it instead "
            f"(archiving keeps {'them' if many else 'it'})."
        )


def remove_after_commit(files: FilesToRemove) -> None:
    """Remove the files once the surrounding transaction commits (never, if it rolls back)."""
    transaction.on_commit(lambda: remove_files(files))


def remove_files(files: FilesToRemove) -> list[str]:
    """Remove stored files; a file that cannot be removed is logged and named in the list
    returned (its rows are gone already: it is an orphan to clean up, not a failure)."""
    kept = [folder for folder in files.media_folders if not _remove_media_folder(folder)]
    for alias, names in ((storage.MEDIA, files.media), (storage.EMBEDDINGS, files.embeddings)):
        for name in names:
            try:
                storage.delete(alias, name)
            except (StorageError, OSError) as exc:
                logger.warning("Deleted the rows, but not the file %s: %s", name, exc)
                kept.append(name)
    for path in files.local:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("Deleted the rows, but not the file %s: %s", path, exc)
            kept.append(str(path))
    return kept


def _remove_media_folder(folder: str) -> bool:
    """Remove a folder of the MEDIA storage, a dataset's stimulus files: in one listing and
    batch deletes from an object store (not a request per file), or one tree on disk."""
    try:
        if storage.is_remote(storage.MEDIA):
            storage.delete_under(storage.MEDIA, folder)
        else:
            shutil.rmtree(storage.storage_of(storage.MEDIA).path(folder))
    except FileNotFoundError:
        return True  # gone already
    except (StorageError, OSError) as exc:
        logger.warning("Deleted the rows, but not the files under %s: %s", folder, exc)
        return False
    return True


def _embedding_files(embedding_sets: QuerySet[EmbeddingSet]) -> FilesToRemove:
    """The files of the sets a deletion takes, but none that a set it keeps also names."""
    kept = EmbeddingSet.objects.exclude(pk__in=embedding_sets.values("pk"))
    paths = embedding_sets.exclude(relative_path__in=kept.values("relative_path"))
    return FilesToRemove(embeddings=list(paths.values_list("relative_path", flat=True)))


def _stimulus_files(dataset: Dataset) -> FilesToRemove:
    stimuli = Stimulus.objects.filter(dataset=dataset).exclude(file="")
    if not stimuli.exists():
        return FilesToRemove()  # texts: no files
    # Every stimulus file of a dataset is under its folder (evaluation.imports.stimuli).
    files = FilesToRemove(media_folders=[f"datasets/{dataset.pk}/"])
    if dataset.modality == Modality.VIDEO:
        posters = Path(settings.MEDIA_ROOT) / POSTER_DIR
        files.local = [
            posters / f"{pk}-{content_hash[:16]}.jpg"
            for pk, content_hash in stimuli.values_list("pk", "content_hash")
        ]
    return files


def model_delete(model: PretrainedModel, *, delete_scores: bool) -> None:
    """Delete a model, its embedding sets (and files) but those another model's scores or
    runs use (kept for that model), its scores (only with ``delete_scores``) and its steps
    in runs; a run left without models goes too."""
    with transaction.atomic():
        model = PretrainedModel.objects.select_for_update().get(pk=model.pk)
        refuse_if_blocked(
            f"Model {model.name}", model_dependents(model), delete_scores=delete_scores
        )
        _hand_over_shared_sets(EmbeddingSet.objects.filter(model=model), "model", model.pk)
        files = _embedding_files(EmbeddingSet.objects.filter(model=model))
        run_ids = list(RunStep.objects.filter(model=model).values_list("run_id", flat=True))
        Score.objects.filter(model=model).delete()
        RunStep.objects.filter(model=model).delete()  # RunStep.model protects the model
        Run.objects.filter(pk__in=run_ids, steps__isnull=True).delete()
        model.delete()
        remove_after_commit(files)


def target_delete(target: Target, *, delete_scores: bool) -> None:
    """Delete a target, its scores (only with ``delete_scores``) and, for human data, the
    judgments version it scores against; runs are kept."""
    with transaction.atomic():
        target = Target.objects.select_for_update().get(pk=target.pk)
        refuse_if_blocked(
            f"Target {target.name}", target_dependents(target), delete_scores=delete_scores
        )
        judgments_id = target.judgments_id
        target.delete()  # its scores cascade
        if judgments_id:
            HumanJudgments.objects.filter(pk=judgments_id).delete()


def dataset_catalogue_delete(dataset: Dataset) -> FilesToRemove:
    """Delete a dataset whose studies are gone already, with its runs, targets, judgments,
    embedding sets and scores; return the files to remove after commit. The caller checked what blocks it, in the transaction it calls this in
    (annotation.services.archive.dataset_delete)."""
    _hand_over_shared_sets(dataset.embedding_sets.all(), "dataset", dataset.pk)
    files = _embedding_files(EmbeddingSet.objects.filter(dataset=dataset))
    files.extend(_stimulus_files(dataset))
    for staged in EmbeddingImport.objects.filter(dataset=dataset).values_list(
        "staged_path", "ids_path"
    ):
        files.media += [name for name in staged if name]  # uploads a failed import left
    Run.objects.filter(dataset=dataset).delete()  # Run.dataset protects the dataset
    dataset.delete()  # stimuli, targets, judgments, embedding sets and scores cascade
    return files
