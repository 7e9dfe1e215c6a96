"""Archiving and deleting studies, and deleting whole datasets (with the studies made on
them): what depends on each is listed first, and a deletion runs in one transaction.

Here rather than in the evaluation app because a dataset's studies live in this app, which
evaluation may not import (.importlinter): the catalogue part of a dataset's dependents and
deletion is ``evaluation.services.archive``, which this module extends with the studies.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, QuerySet
from django.urls import reverse

from annotation.models import (
    Aggregation,
    Participant,
    Pilot,
    PilotStatus,
    Response,
    Study,
    StudyStatus,
)
from annotation.services.pilots import pilots_fail_stale
from evaluation.models import (
    FINISHED_RUN_STATUSES,
    Dataset,
    HumanJudgments,
    PretrainedModel,
    Run,
    Score,
    Target,
)
from evaluation.services import archive as catalogue
from evaluation.services.archive import (
    LINKS_SHOWN,
    DeleteRefused,
    Dependent,
    Dependents,
    dataset_catalogue_delete,
    dataset_catalogue_dependents,
    refuse_if_blocked,
    remove_after_commit,
    unfinished_runs,
)

__all__ = [
    "DeleteRefused",
    "dataset_delete",
    "dataset_dependents",
    "model_delete",
    "model_dependents",
    "refused_on_conflict",
    "study_delete",
    "study_dependents",
]


def refused_on_conflict(noun: str, exc: ProtectedError | IntegrityError) -> DeleteRefused:
    """The refusal for a deletion that something made meanwhile blocked (a run or study
    created on it between the checks and the delete: the database protects it)."""
    return DeleteRefused(
        f"{noun} could not be deleted: something that depends on it was added while it was "
        f"being deleted, and nothing was deleted. Look at what depends on it and try again. "
        f"({type(exc).__name__})"
    )


def _study_blockers(study: Study) -> list[str]:
    blockers = []
    if study.status == StudyStatus.OPEN:
        blockers.append(
            f"Study {study.name} is open: participants may be taking it. Close it first."
        )
    if study.pilots.filter(status=PilotStatus.RUNNING).exists():
        blockers.append(f"A pilot of study {study.name} is running: wait until it ends.")
    return blockers


def _made_from(study: Study) -> list[Target]:
    aggregations = Aggregation.objects.filter(study=study).select_related("judgments__target")
    return [a.judgments.target for a in aggregations if hasattr(a.judgments, "target")]


def study_dependents(study: Study) -> Dependents:
    """A study's participants, responses, pilots and the judgment sets (targets) aggregated
    from it. Its own data goes with it; what was aggregated from it is kept unless the
    researcher asks for it to go too (then with the scores on those targets)."""
    real = Participant.objects.filter(study=study, pilot=None)
    responses = Response.objects.filter(trial__participant__study=study)
    targets = _made_from(study)
    scores = Score.objects.filter(target__in=targets).count()
    page = study.get_absolute_url()
    # Unfinished runs on those targets block only the deletion that takes the targets.
    unfinished = (
        Run.objects.filter(targets__in=targets)
        .exclude(status__in=FINISHED_RUN_STATUSES)
        .distinct()
        .order_by("id")
    )
    return Dependents(
        items=[
            Dependent("participants", real.count(), [("Participants", page)], "deleted with it"),
            Dependent("responses", responses.count(), [], "deleted with it"),
            Dependent("pilots", study.pilots.count(), [], "deleted with it"),
            Dependent(
                "targets made from it",
                len(targets),
                [(str(t), t.get_absolute_url()) for t in targets[:LINKS_SHOWN]],
                "kept, with their judgments, unless you tick 'delete the targets made from it "
                "and their scores'",
            ),
            Dependent(
                "scores on those targets",
                scores,
                [],
                "kept unless you tick 'delete the targets made from it and their scores'",
            ),
        ],
        blockers=_study_blockers(study),
        score_count=0,  # its own deletion removes no score: the tick is about its targets
    ).with_more([_unfinished_item(unfinished)] if unfinished else [], [])


def _unfinished_item(unfinished: QuerySet[Run]) -> Dependent:
    return Dependent(
        "unfinished runs on those targets",
        unfinished.count(),
        [
            (f"Run {run.pk} ({run.get_status_display()})", run.get_absolute_url())
            for run in unfinished[:LINKS_SHOWN]
        ],
        "block ticking 'delete the targets made from it': cancel them or wait until they end",
    )


def _delete_study_rows(study: Study) -> None:
    # Participants first: their trials protect the study's items (Trial.item).
    Participant.objects.filter(study=study).delete()
    study.delete()


def study_delete(study: Study, *, delete_targets: bool) -> None:
    """Delete a study with its participants, responses and pilots; with
    ``delete_targets``, also the judgment sets aggregated from it, their targets and the
    scores on them (otherwise those are kept, as published data are). A pilot whose runner
    died is failed first: it must not block the deletion."""
    pilots_fail_stale(study=study)
    noun = f"Study {study.name}"
    try:
        with transaction.atomic():
            study = Study.objects.select_for_update().get(pk=study.pk)
            dependents = study_dependents(study)
            if delete_targets:  # their runs must not be scoring them meanwhile
                runs = Run.objects.filter(targets__in=_made_from(study))
                dependents = dependents.with_more([], unfinished_runs(runs))
            refuse_if_blocked(noun, dependents, delete_scores=True)
            _delete_study(study, delete_targets=delete_targets)
    except (ProtectedError, IntegrityError) as exc:
        raise refused_on_conflict(noun, exc) from exc


def _delete_study(study: Study, *, delete_targets: bool) -> None:
    made = list(Aggregation.objects.filter(study=study).values_list("judgments", flat=True))
    _delete_study_rows(study)
    if delete_targets:
        HumanJudgments.objects.filter(pk__in=made).delete()  # targets, scores cascade


def dataset_dependents(dataset: Dataset) -> Dependents:
    """The catalogue's dependents of a dataset, and its studies (an open one, or one with a
    pilot running, blocks the deletion)."""
    studies = Study.objects.filter(dataset=dataset).order_by("name")
    blockers = [problem for study in studies for problem in _study_blockers(study)]
    studies_item = Dependent(
        "studies",
        studies.count(),
        [
            (study.name, reverse("annotation:study_detail", args=[study.pk]))
            for study in studies[:LINKS_SHOWN]
        ],
        "deleted with it, with their participants and responses",
    )
    return dataset_catalogue_dependents(dataset).with_more([studies_item], blockers)


def dataset_delete(dataset: Dataset, *, delete_scores: bool) -> None:
    """Delete a dataset and everything made on it: studies, runs, targets, judgments,
    embedding sets, scores (only with ``delete_scores`` when it has any); its stimulus media
    and embedding files are removed once the deletion has committed. Its studies' pilots
    whose runner died are failed first: they must not block it."""
    for study in Study.objects.filter(dataset=dataset):
        pilots_fail_stale(study=study)
    noun = f"Dataset {dataset.name}"
    try:
        with transaction.atomic():
            dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
            # Locked: none can open, or start a pilot, between the check and the deletion.
            studies = list(Study.objects.select_for_update().filter(dataset=dataset))
            refuse_if_blocked(noun, dataset_dependents(dataset), delete_scores=delete_scores)
            for study in studies:  # Study.dataset protects the dataset
                _delete_study_rows(study)
            remove_after_commit(dataset_catalogue_delete(dataset))
    except (ProtectedError, IntegrityError) as exc:
        raise refused_on_conflict(noun, exc) from exc


# --- Models: a pilot answers from a model's embeddings --------------------------------------------
def _running_pilots(model: PretrainedModel) -> list[str]:
    running = Pilot.objects.filter(model=model, status=PilotStatus.RUNNING)
    if transaction.get_connection().in_atomic_block:
        running = running.select_for_update()
    return [
        f"Pilot {pilot.pk} of study {pilot.study.name} is running on its embeddings: wait "
        "until it ends."
        for pilot in running.select_related("study").order_by("id")
    ]


def model_dependents(model: PretrainedModel) -> Dependents:
    """The catalogue's dependents of a model, and the pilots that answer from its
    embeddings (a running one blocks the deletion)."""
    pilots = Pilot.objects.filter(model=model).select_related("study").order_by("-id")
    item = Dependent(
        "pilots",
        pilots.count(),
        [
            (f"Pilot {p.pk} of {p.study.name}", p.study.get_absolute_url())
            for p in pilots[:LINKS_SHOWN]
        ],
        "kept, without their model",
    )
    return catalogue.model_dependents(model).with_more([item], _running_pilots(model))


def model_delete(model: PretrainedModel, *, delete_scores: bool) -> None:
    """Delete a model (evaluation.services.archive.model_delete), refused while a pilot
    answers from its embeddings; a pilot whose runner died is failed first."""
    running = Study.objects.filter(pilots__model=model, pilots__status=PilotStatus.RUNNING)
    for study in running.distinct():
        pilots_fail_stale(study=study)
    noun = f"Model {model.name}"
    try:
        with transaction.atomic():
            # Locked first: a pilot made on it meanwhile waits (its foreign key's check).
            list(PretrainedModel.objects.select_for_update().filter(pk=model.pk).values("pk"))
            refuse_if_blocked(noun, Dependents([], _running_pilots(model), 0), delete_scores=True)
            catalogue.model_delete(model, delete_scores=delete_scores)
    except (ProtectedError, IntegrityError) as exc:
        raise refused_on_conflict(noun, exc) from exc
