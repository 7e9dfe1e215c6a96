"""Archiving and deleting studies, and deleting whole datasets (with the studies made on
them): what depends on each is listed first, and a deletion runs in one transaction.

Here rather than in the evaluation app because a dataset's studies live in this app, which
evaluation may not import (.importlinter): the catalogue part of a dataset's dependents and
deletion is ``evaluation.services.archive``, which this module extends with the studies.
"""

from __future__ import annotations

from django.db import transaction
from django.urls import reverse

from annotation.models import (
    Aggregation,
    Participant,
    PilotStatus,
    Response,
    Study,
    StudyStatus,
)
from evaluation.models import Dataset, HumanJudgments, Score
from evaluation.services.archive import (
    LINKS_SHOWN,
    DeleteRefused,
    Dependent,
    Dependents,
    dataset_catalogue_delete,
    dataset_catalogue_dependents,
    refuse_if_blocked,
    remove_after_commit,
)

__all__ = [
    "DeleteRefused",
    "dataset_delete",
    "dataset_dependents",
    "study_delete",
    "study_dependents",
]


def _study_blockers(study: Study) -> list[str]:
    blockers = []
    if study.status == StudyStatus.OPEN:
        blockers.append(
            f"Study {study.name} is open: participants may be taking it. Close it first."
        )
    if study.pilots.filter(status=PilotStatus.RUNNING).exists():
        blockers.append(f"A pilot of study {study.name} is running: wait until it ends.")
    return blockers


def study_dependents(study: Study) -> Dependents:
    """A study's participants, responses, pilots and the judgment sets (targets) aggregated
    from it. Its own data goes with it; what was aggregated from it is kept unless the
    researcher asks for it to go too (then with the scores on those targets)."""
    real = Participant.objects.filter(study=study, pilot=None)
    responses = Response.objects.filter(trial__participant__study=study)
    aggregations = Aggregation.objects.filter(study=study).select_related("judgments__target")
    targets = [a.judgments.target for a in aggregations if hasattr(a.judgments, "target")]
    scores = Score.objects.filter(target__in=targets).count()
    page = study.get_absolute_url()
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
    )


def _delete_study_rows(study: Study) -> None:
    # Participants first: their trials protect the study's items (Trial.item).
    Participant.objects.filter(study=study).delete()
    study.delete()


def study_delete(study: Study, *, delete_targets: bool) -> None:
    """Delete a study with its participants, responses and pilots; with
    ``delete_targets``, also the judgment sets aggregated from it, their targets and the
    scores on them (otherwise those are kept, as published data are)."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study.pk)
        refuse_if_blocked(f"Study {study.name}", study_dependents(study), delete_scores=True)
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
    and embedding files are removed once the deletion has committed."""
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        refuse_if_blocked(
            f"Dataset {dataset.name}", dataset_dependents(dataset), delete_scores=delete_scores
        )
        for study in Study.objects.filter(dataset=dataset):  # Study.dataset protects it
            _delete_study_rows(study)
        remove_after_commit(dataset_catalogue_delete(dataset))
