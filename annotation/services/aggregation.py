"""Turning a study's responses into evaluation data: HumanJudgments versions and, for tag
studies, description sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import (
    Aggregation,
    Participant,
    ParticipantStatus,
    Pilot,
    Response,
    Study,
    StudyKind,
    Tag,
    TagStatus,
    TrialRole,
)
from annotation.services.arrangements import study_estimates
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.models import HumanJudgments, Stimulus, ValueMeaning


# --- Aggregation ----------------------------------------------------------------------------
def study_aggregate(
    *,
    study: Study,
    name: str = "",
    created_by: Any = None,
    pilot: Pilot | None = None,
) -> HumanJudgments:
    """A new HumanJudgments version from the regular responses of participants who were not
    excluded (ratings: every rating kept, averaged per pair by the metrics; choices: vote
    shares; multi-arrangement: each participant's estimated dissimilarities, one row per
    pair). Repeats, catch and practice trials are quality control, not data. Simulated
    participants count only when ``pilot`` names their pilot, and then alone."""
    if study.kind == StudyKind.TAGS:
        raise ValidationError("Tag studies are exported as tags, not aggregated into judgments.")
    participants_used = aggregated_participants(study, pilot)
    if study.is_arrangement:
        rows = arrangement_rows(study, participants_used)
    else:
        rows = list(_judgment_rows(study, participants_used))
    if not rows:
        raise ValidationError("No usable responses yet: nothing to aggregate.")
    participants = {r.participant for r in rows}
    excluded = study.participants.filter(pilot=pilot, status=ParticipantStatus.EXCLUDED).count()
    with transaction.atomic():
        judgments = judgments_create(
            dataset=study.dataset,
            name=name or (f"{study.name} (pilot {pilot.pk})" if pilot else study.name),
            kind=StudyKind.PAIRS if study.is_arrangement else study.kind,
            rows=rows,
            scale_min=study.scale_min if study.kind == StudyKind.PAIRS else None,
            scale_max=study.scale_max if study.kind == StudyKind.PAIRS else None,
            value_meaning=(
                ValueMeaning.DISSIMILARITY if study.is_arrangement else ValueMeaning.SIMILARITY
            ),
            origin=f"pilot {pilot.pk} of study {study.name}" if pilot else f"study {study.name}",
            created_by=created_by,
            simulated=pilot is not None,  # kept off automatic runs and the overall boards
        )
        Aggregation.objects.create(
            study=study,
            judgments=judgments,
            pilot=pilot,
            responses=len(rows),
            participants=len(participants),
            excluded_participants=excluded,
        )
    return judgments


# What a regular response contributes to judgments and their reliability: the item's
# stimuli, the rating or choice, and who answered.
RESPONSE_ROW_FIELDS = (
    "trial__item__a_id",
    "trial__item__b_id",
    "trial__item__c_id",
    "value",
    "chosen_id",
    "trial__participant_id",
)


def aggregated_participants(study: Study, pilot: Pilot | None = None) -> Any:
    """Whose answers make a study's data: participants who were not excluded, real ones or,
    for a pilot, that pilot's bots. Multi-arrangement: completed sessions only, each a whole
    matrix (a session in progress is estimated again, differently, with each arrangement
    it adds); the study page's reliability uses the same sessions (selectors)."""
    used = study.participants.filter(pilot=pilot).exclude(status=ParticipantStatus.EXCLUDED)
    if study.is_arrangement:
        used = used.filter(status=ParticipantStatus.COMPLETED)
    return used


def arrangement_rows(study: Study, participants: Any) -> list[JudgmentRow]:
    """Each participant's inverse-MDS estimate (RMS 1, evidence-weighted over their trials)
    as one dissimilarity row per pair of their session's stimuli; the metrics average a
    pair's rows across participants, and the ceiling splits participants."""
    orders = dict(study.dataset.stimuli.values_list("pk", "order"))
    rows = []
    for estimate in study_estimates(list(participants)):
        n = len(estimate.stimuli)
        for i in range(n):
            for j in range(i + 1, n):
                value = float(estimate.dissimilarities[i, j])
                if math.isfinite(value):
                    rows.append(
                        JudgmentRow(
                            stimuli=(orders[estimate.stimuli[i]], orders[estimate.stimuli[j]]),
                            value=value,
                            participant=f"p{estimate.participant.pk}",
                        )
                    )
    return rows


def _judgment_rows(study: Study, participants: Any) -> Any:
    orders = dict(study.dataset.stimuli.values_list("pk", "order"))
    responses = (
        Response.objects.filter(
            trial__participant__in=participants,
            trial__role=TrialRole.REGULAR,
        )
        .values_list(*RESPONSE_ROW_FIELDS)
        .order_by("pk")
    )
    for a, b, c, value, chosen, participant in responses.iterator(chunk_size=5000):
        stimuli = tuple(orders[s] for s in (a, b, c) if s is not None)
        yield JudgmentRow(
            stimuli=stimuli,
            value=value,
            chosen=orders[chosen] if chosen is not None else None,
            participant=f"p{participant}",
        )


def responses_visible_to(participant: Participant) -> Any:
    """A participant's own responses, and nobody else's."""
    return Response.objects.filter(trial__participant=participant)


def stimuli_by_id(ids: Sequence[int]) -> dict[int, Stimulus]:
    return Stimulus.objects.in_bulk(list(ids))


# --- Tags as descriptions -------------------------------------------------------------------
def study_descriptions_create(*, study: Study) -> tuple[str, int]:
    """The study's tags as a new description set, for language-based models (Marjieh et al.
    2023 embed STEP-Tag tags): flagged-out (hidden) tags are left out, and each tag weighs its
    mean rating (1-5), or 1 where nobody rated it yet. Each call makes a new version, so a
    model scored on earlier tags keeps its inputs. Returns (set name, descriptions)."""
    from evaluation.imports.descriptions import DescriptionRow, descriptions_store
    from evaluation.models import Description

    if study.kind != StudyKind.TAGS:
        raise ValidationError("Only tag studies have tags to use as descriptions.")
    tags = Tag.objects.filter(study=study).exclude(status=TagStatus.HIDDEN)
    rows = [
        DescriptionRow(stimulus_id, text, rating_sum / count if count else 1.0)
        for stimulus_id, text, rating_sum, count in tags.values_list(
            "stimulus_id", "text", "rating_sum", "rating_count"
        )
    ]
    if not rows:
        raise ValidationError("The study has no tags yet (or every tag was flagged out).")
    prefix = f"tags of study {study.pk} v"
    taken = Description.objects.filter(origin__startswith=prefix).values_list("origin", flat=True)
    versions = [int(o.removeprefix(prefix)) for o in set(taken) if o.removeprefix(prefix).isdigit()]
    origin = f"{prefix}{max(versions, default=0) + 1}"
    return origin, descriptions_store(origin=origin, rows=rows)
