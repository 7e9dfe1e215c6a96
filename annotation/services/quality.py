"""Quality control: the study's rules applied to a participant, and counting (or no longer
counting) their answers on their items."""

from __future__ import annotations

from django.db.models import F

from annotation.models import (
    Item,
    Participant,
    Response,
    Study,
    StudyKind,
    Trial,
    TrialRole,
    TrialStatus,
)
from annotation.services import arrangements
from annotation.services.design import study_reopen_if_closed_itself


def participant_items_count(*, participant: Participant, change: int) -> int:
    """Count (+1) or stop counting (-1) the participant's regular answers on their items:
    an excluded participant's items go back to the pool, and count again if the researcher
    includes them again (an item may then hold more judgments than its quota). Their
    responses are kept either way; aggregation leaves excluded participants out.

    Adaptive tag chains are left as they are: an excluded participant's ratings and flags
    have already moved the chain's tags (frozen, hidden), so their iteration stays used."""
    if participant.study.is_adaptive_tags:
        return 0
    if participant.study.is_arrangement:  # a session counts on all its stimuli at once
        if change < 0:
            changed = int(arrangements.session_release(participant=participant))
            if changed:
                study_reopen_if_closed_itself(study=participant.study)
            return changed
        return int(arrangements.session_count_again(participant=participant))
    answered = Trial.objects.filter(
        participant=participant, role=TrialRole.REGULAR, status=TrialStatus.ANSWERED
    ).values("item_id")
    changed = Item.objects.filter(pk__in=answered).update(
        assigned=F("assigned") + change, answered=F("answered") + change
    )
    if change < 0 and changed:
        study_reopen_if_closed_itself(study=participant.study)
    return changed


def quality_problems(participant: Participant) -> list[str]:
    """The study's rules, applied to one participant; each problem is a reason shown."""
    study = participant.study
    responses = list(
        Response.objects.filter(trial__participant=participant)
        .exclude(trial__role=TrialRole.PRACTICE)
        .select_related("trial")
    )
    if not responses:
        return []
    reasons = []
    failed = sum("failed catch" in r.flags for r in responses)
    if study.catch_trials and failed > study.max_catch_failures:
        reasons.append(f"failed {failed} of {study.catch_trials} catch trials")
    fast = sum("too fast" in r.flags for r in responses)
    if study.min_response_ms and fast / len(responses) > study.max_fast_share:
        per_item = " per item shown" if study.is_arrangement else ""
        reasons.append(
            f"{fast} of {len(responses)} responses faster than {study.min_response_ms} ms{per_item}"
        )
    if study.is_arrangement:
        unmoved = arrangements.adjustment_problem(responses)
        if unmoved:
            reasons.append(unmoved)
        inconsistent = arrangements.consistency_problem(participant)
        if inconsistent:
            reasons.append(inconsistent)
        return reasons
    retest = _retest_problem(study, responses)
    if retest:
        reasons.append(retest)
    return reasons


def _retest_problem(study: Study, responses: list[Response]) -> str | None:
    by_trial = {r.trial_id: r for r in responses}
    pairs = [
        (by_trial[r.trial.repeat_of_id], r)
        for r in responses
        if r.trial.role == TrialRole.REPEAT and r.trial.repeat_of_id in by_trial
    ]
    if not pairs:
        return None
    if study.kind == StudyKind.PAIRS:
        difference = sum(abs((a.value or 0) - (b.value or 0)) for a, b in pairs) / len(pairs)
        if difference > study.max_retest_difference:
            return f"repeated ratings differ by {difference:.1f} on average"
        return None
    agreement = sum(a.chosen_id == b.chosen_id for a, b in pairs) / len(pairs)
    if agreement < study.min_retest_agreement:
        return f"{agreement:.0%} of repeated trials got the same answer"
    return None
