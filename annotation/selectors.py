"""Reads for human studies: the researcher's dashboard (progress, coverage, reliability and
its trend, how many more judgments a target reliability needs) and participant progress."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Min, Q

from annotation import caches, sql
from annotation.models import (
    Aggregation,
    Item,
    Participant,
    ParticipantStatus,
    RefusedResume,
    Response,
    Study,
    StudyKind,
    Tag,
    TagStatus,
    Trial,
    TrialRole,
    TrialStatus,
)
from annotation.services.aggregation import (
    RESPONSE_ROW_FIELDS,
    aggregated_participants,
    arrangement_rows,
)
from evaluation.engine.metrics.ceilings import choice_bounds, nili_bounds
from evaluation.engine.metrics.human import leave_one_out_agreement, split_half_reliability
from evaluation.judgments import JudgmentRow
from evaluation.models import Stimulus

TREND_POINTS = 5


def study_list(*, include_archived: bool = False) -> Any:
    """The study list; archived studies are left out unless asked for (their pages stay)."""
    studies = Study.objects.all() if include_archived else Study.objects.filter(archived_at=None)
    return studies.select_related("dataset").annotate(
        participant_count=Count(
            "participants", filter=Q(participants__pilot=None), distinct=True
        ),  # real ones: a pilot's bots are counted in its report
        item_count=Count("items", distinct=True),
    )


@dataclass(frozen=True)
class Coverage:
    items: int
    complete: int  # items that reached their quota (or, adaptive tags, whose chain ended)
    responses: int
    histogram: list[tuple[int, int]]  # (responses per item, how many items)


def study_coverage(study: Study) -> Coverage:
    counts = Counter(study.items.values_list("answered", flat=True))
    complete = study.items.filter(Q(answered__gte=study.quota) | Q(completed=True)).count()
    return Coverage(
        items=sum(counts.values()),
        complete=complete,
        responses=sum(k * v for k, v in counts.items()),
        histogram=sorted(counts.items()),
    )


@dataclass(frozen=True)
class StudySummary:
    """What a study's API record adds to its fields: progress, who took part, agreement."""

    coverage: Coverage
    participants_by_status: dict[str, int]
    response_count: int
    reliability: dict[str, Any] | None
    aggregations: list[Aggregation]


def study_summary(study: Study) -> StudySummary:
    return StudySummary(
        coverage=study_coverage(study),
        participants_by_status=dict(
            study.participants.filter(pilot=None)
            .values_list("status")
            .annotate(n=Count("pk"))
            .order_by("status")
        ),
        response_count=Response.objects.filter(
            trial__participant__study=study, trial__participant__pilot=None
        ).count(),
        reliability=study_reliability(study),
        aggregations=list(study.aggregations.select_related("judgments")),
    )


def study_participants(study: Study) -> Any:
    """The study's real participants (a pilot's bots have a report of their own)."""
    return (
        study.participants.filter(pilot=None)
        .annotate(
            answered=Count("trials", filter=Q(trials__status=TrialStatus.ANSWERED)),
            first_response=Min("trials__response__created_at"),
            last_response=Max("trials__response__created_at"),
        )
        .order_by("started_at")
    )


@dataclass(frozen=True)
class RefusedResumes:
    count: int
    latest: list[RefusedResume]  # newest first, at most REFUSED_SHOWN


REFUSED_SHOWN = 50


def refused_resumes(study: Study) -> RefusedResumes:
    """Attempts to continue a participant's session by their recruiter id alone."""
    refused = RefusedResume.objects.filter(participant__study=study).order_by("-at")
    return RefusedResumes(count=refused.count(), latest=list(refused[:REFUSED_SHOWN]))


def _usable_responses(study: Study) -> Any:
    return (
        Response.objects.filter(
            trial__participant__study=study,
            trial__participant__pilot=None,
            trial__role=TrialRole.REGULAR,
        )
        .exclude(trial__participant__status=ParticipantStatus.EXCLUDED)
        .order_by("created_at")
    )


def study_reliability(study: Study, *, limit: int | None = None) -> dict[str, Any] | None:
    """Reliability of the usable responses (the first ``limit`` of them, for the trend); for
    all of them, with the Nili et al. noise-ceiling bounds under "bounds". Multi-arrangement:
    of the participants' estimated dissimilarities (the first ``limit`` sessions)."""
    if study.is_arrangement:
        return _arrangement_reliability(study, limit)
    rows = list(_usable_responses(study).values_list(*RESPONSE_ROW_FIELDS)[:limit])
    if not rows:
        return None
    participants = [str(r[5]) for r in rows]
    if study.kind == StudyKind.PAIRS:
        a, b = [r[0] for r in rows], [r[1] for r in rows]
        values = [float(r[3]) for r in rows]
        split_half = split_half_reliability(a, b, values, participants, n_splits=50)
        if limit is not None:  # the trend's points show the split-half value only
            return split_half
        return {**split_half, "bounds": nili_bounds(a, b, values, participants)}
    if study.is_choice:
        keys = np.array([(r[0], r[1], r[2]) for r in rows])
        chosen = np.array([r[4] for r in rows])
        agreement = leave_one_out_agreement(keys, chosen)
        if agreement is None or limit is not None:
            return agreement
        return {**agreement, "bounds": choice_bounds(keys, chosen, participants)}
    return None


def sessions_completed(study: Study) -> int:
    """Multi-arrangement: the real, included sessions that ended (each a whole matrix)."""
    return aggregated_participants(study).count()  # completed ones: see there


def _arrangement_reliability(study: Study, limit: int | None) -> dict[str, Any] | None:
    try:
        rows = _session_rows(study, limit)
    except ValidationError as exc:  # a session without an estimate: the page says which
        return {"mean": None, "reason": " ".join(exc.messages)}
    return _rows_reliability(rows, bounds=limit is None)


def _session_rows(study: Study, limit: int | None = None) -> list[JudgmentRow]:
    """The estimated dissimilarities of the first ``limit`` completed real sessions (in the
    order they ended) as judgment rows: each session's inverse MDS is computed here."""
    completed = aggregated_participants(study)  # the sessions aggregation uses: completed
    return arrangement_rows(study, completed.order_by("completed_at", "pk")[:limit])


def _rows_reliability(rows: list[JudgmentRow], *, bounds: bool) -> dict[str, Any] | None:
    if not rows:
        return None
    a, b = [r.stimuli[0] for r in rows], [r.stimuli[1] for r in rows]
    values = [float(r.value or 0) for r in rows]
    who = [r.participant for r in rows]
    split_half = split_half_reliability(a, b, values, who, n_splits=50)
    if not bounds:
        return split_half
    return {**split_half, "bounds": nili_bounds(a, b, values, who)}


def reliability_trend(study: Study) -> list[dict[str, Any]]:
    """Reliability as responses arrived: at evenly spaced response counts (multi-arrangement:
    completed sessions, each a whole matrix, estimated once for all the points)."""
    if study.kind == StudyKind.TAGS:
        return []
    sessions: list[list[JudgmentRow]] = []
    if study.is_arrangement:
        by_session: dict[str, list[JudgmentRow]] = {}
        try:
            rows = _session_rows(study)
        except ValidationError:
            return []  # said once, by study_reliability
        for row in rows:
            by_session.setdefault(row.participant, []).append(row)
        sessions = list(by_session.values())  # in the order the sessions ended
        total = len(sessions)
    else:
        total = _usable_responses(study).count()
    if total == 0:
        return []
    points = sorted({max(1, round(total * (k + 1) / TREND_POINTS)) for k in range(TREND_POINTS)})
    trend = []
    for count in points:
        if study.is_arrangement:
            first = [row for session in sessions[:count] for row in session]
            result = _rows_reliability(first, bounds=False) or {}
        else:
            result = study_reliability(study, limit=count) or {}
        trend.append(
            {
                "responses": count,
                "mean": result.get("mean"),
                "sd": result.get("sd"),
                "split_by": result.get("split_by"),  # what the SD is over, for the caption
            }
        )
    return trend


def judgments_needed(
    *, reliability: float | None, judgments_per_item: float, items: int, target: float
) -> dict[str, Any] | None:
    """Spearman-Brown prophecy: judgments per item that reach ``target`` reliability, given
    ``reliability`` at ``judgments_per_item``; and how many more that is over all items."""
    if reliability is None or not 0 < reliability < 1 or judgments_per_item <= 0:
        return None
    if not 0 < target < 1:
        raise ValueError("The target reliability must lie between 0 and 1.")
    factor = target * (1 - reliability) / (reliability * (1 - target))
    per_item = judgments_per_item * factor
    return {
        "target": target,
        "per_item": per_item,
        "more": max(0, int(np.ceil((per_item - judgments_per_item) * items))),
    }


def tags_summary(study: Study) -> Any:
    return (
        Tag.objects.filter(study=study).values("status").annotate(n=Count("pk")).order_by("status")
    )


def tag_vocabulary(study: Study, prefix: str, *, limit: int = 10) -> list[str]:
    """Tags already used in this study that start with ``prefix`` (autocomplete)."""
    prefix = " ".join(prefix.split()).lower()
    if not prefix:
        return []
    return list(
        Tag.objects.filter(study=study, text__startswith=prefix)
        .exclude(status=TagStatus.HIDDEN)
        .values_list("text", flat=True)
        .distinct()
        .order_by("text")[:limit]
    )


def items_for_export(study: Study) -> Any:
    return Item.objects.filter(study=study).select_related("a", "b", "c").order_by("pk")


# --- A participant's trial (every answer reads these: plain SQL, see annotation/sql.py) -----
def participant_and_trial(
    token: str, trial_id: int | None
) -> tuple[Participant, Trial | None] | None:
    """The participant with this private link (with its study) and, if asked, the trial of
    theirs being answered; None if no participant has the link. One statement."""
    child = (Trial, "participant", trial_id) if trial_id else None
    found = sql.select_with_child(Participant, "study", "m.token = %s", [token], child)
    return found[0] if found else None


def stimuli_for_display(ids: list[int]) -> dict[int, Stimulus]:
    """Stimuli by id, from this process's memory where it can (read-only use: rendering;
    why that is safe: annotation/caches.py)."""
    memory = caches.DISPLAYED_STIMULI
    # One dict.get per id: atomic, so another thread clearing the memory meanwhile is harmless.
    found = {pk: stimulus for pk in ids if (stimulus := memory.get(pk)) is not None}
    missing = [pk for pk in set(ids) if pk not in found]
    if missing:
        fetched = sql.by_pk(Stimulus, missing)  # plain SQL: this runs for trials shown
        if len(memory) + len(fetched) > caches.DISPLAYED_STIMULI_MAX:
            memory.clear()  # bounded; refilled from the studies running now
        memory.update(fetched)
        found.update(fetched)
    return found


def trial_stimuli(trial: Trial) -> list[Stimulus]:
    """The stimuli a trial shows, in the order shown."""
    by_id = stimuli_for_display(trial.shown)
    return [by_id[pk] for pk in trial.shown]


def dataset_modality(dataset_id: int) -> str:
    """A dataset's modality (file stimuli need it on every trial), cached per process."""
    return caches.dataset_modality(dataset_id)
