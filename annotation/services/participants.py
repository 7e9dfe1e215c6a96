"""Participants: starting a session (and refusing a recruiter id that has started already),
their session plan, and a researcher's exclusion or inclusion."""

from __future__ import annotations

import random
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from annotation.models import (
    Participant,
    ParticipantStatus,
    Pilot,
    PilotStatus,
    RefusedResume,
    Study,
    StudyStatus,
    TrialRole,
)
from annotation.services import arrangements
from annotation.services.base import ParticipantConflict, StudyFull
from annotation.services.design import study_close_if_complete
from annotation.services.quality import participant_items_count
from annotation.services.trials import participant_release_holdings, participant_reserve_first_item
from core.querystring import clean_text

EXTERNAL_ID_MAX_LENGTH = 200  # Participant.external_id


# --- Participants ---------------------------------------------------------------------------
def participant_start(
    *,
    study: Study,
    external_id: str = "",
    user: Any = None,
    seed: int | None = None,
    pilot: Pilot | None = None,
) -> Participant:
    """Start a participant's session; a logged-in account resumes its own. A recruiter id
    that has started already raises ParticipantConflict (the attempt is recorded for the
    researcher): knowing someone's id is not being them. Sessions resume through what only
    the participant holds: their browser's session or their private link (the views).

    A simulated participant of a running ``pilot`` of this study may start while the study
    is not open (a pilot comes before anyone real)."""
    piloting = pilot is not None and pilot_admits(pilot=pilot, study=study)
    if study.status != StudyStatus.OPEN and not piloting:
        raise PermissionDenied("This study is not open.")
    external_id = clean_external_id(external_id)
    own = None if piloting else participant_of_account(study=study, user=user)
    if own is not None:
        return own
    _refuse_if_started(study, external_id)
    plan = session_plan(study, random.Random(seed))
    try:
        with transaction.atomic():  # the participant and their reserved item, or neither
            if pilot is not None and piloting and not _pilot_still_admits(pilot):
                raise PermissionDenied("This study is not open.")
            if not piloting and user is not None and user.is_authenticated:
                # Simulated sessions started from this account before a pilot's participants
                # were kept apart from accounts: theirs no longer (one participant per account).
                Participant.objects.filter(study=study, user=user).exclude(pilot=None).update(
                    user=None
                )
            participant = Participant.objects.create(
                study=study,
                external_id=external_id,
                # A simulated participant is nobody's account: a researcher who tried the
                # pilot link while logged in takes part as themselves once the study opens.
                user=user if not piloting and user is not None and user.is_authenticated else None,
                plan=plan,
                pilot=pilot if piloting else None,
            )
            participant_reserve_first_item(participant=participant)
    except IntegrityError:  # the same id or account started twice at once: the first stands
        own = participant_of_account(study=study, user=user)
        if own is not None:
            return own
        _refuse_if_started(study, external_id)
        raise
    except StudyFull:
        study_close_if_complete(study=study)
        raise
    return participant


def pilot_admits(*, pilot: Pilot, study: Study) -> bool:
    """Whether this pilot may send simulated participants into this study now: while it
    runs and nobody asked it to stop (a stop request is its ``error``: services/pilots.py)."""
    return pilot.study_id == study.pk and pilot.status == PilotStatus.RUNNING and not pilot.error


def _pilot_still_admits(pilot: Pilot) -> bool:
    """The pilot is still running, read under its row's lock, which the transaction that
    ends it (pilots._end, an update of the row) takes too: a bot starting while the pilot is
    stopped either commits first (and its session is ended and taken out with the others) or
    finds the pilot ended. FOR NO KEY UPDATE, not FOR UPDATE: rows that refer to the pilot
    (a new participant) take a key-share lock on it, which this must not wait for (other
    bots' transactions hold item locks meanwhile: a deadlock)."""
    running = Pilot.objects.select_for_update(no_key=True)
    return running.filter(pk=pilot.pk, status=PilotStatus.RUNNING, error="").exists()


def clean_external_id(external_id: str) -> str:
    """A recruiter's participant id as stored: trimmed, without control characters (a NUL
    from a hand-edited link would make PostgreSQL refuse the query), at most 200 chars."""
    return clean_text(external_id, max_length=EXTERNAL_ID_MAX_LENGTH)


def participant_of_account(*, study: Study, user: Any) -> Participant | None:
    """A logged-in account's own participant in this study (its login is the credential);
    never a pilot's simulated participant."""
    if user is not None and user.is_authenticated:
        return Participant.objects.filter(study=study, user=user, pilot=None).first()
    return None


def _refuse_if_started(study: Study, external_id: str) -> None:
    if not external_id:
        return
    started = Participant.objects.filter(study=study, external_id=external_id).first()
    if started is not None:
        resume_refuse(participant=started)
        raise ParticipantConflict(started)


def participant_check_external_id(*, study: Study, external_id: str) -> None:
    """Raise ParticipantConflict (recording the attempt) if a participant with this recruiter
    id has started already; the study link calls this before showing the consent page."""
    _refuse_if_started(study, clean_external_id(external_id))


def resume_refuse(*, participant: Participant) -> RefusedResume:
    """Record an attempt to take over this participant's session by their recruiter id."""
    return RefusedResume.objects.create(
        participant=participant, external_id=participant.external_id
    )


def session_plan(study: Study, rng: random.Random) -> list[str]:
    """Trial roles for one session: practice first, then regular, catch and repeat trials
    in random order, with every repeat after a regular trial of its own to repeat (the k-th
    repeat after at least k regular trials; the design checks in design.py leave enough of
    them). Multi-arrangement sessions have a plan of their own (arrangements.py)."""
    if study.is_arrangement:
        return arrangements.session_roles(study, rng)
    regular = study.trials_per_session - study.catch_trials - study.repeat_trials
    roles = [TrialRole.REGULAR] * regular + [TrialRole.CATCH] * study.catch_trials
    rng.shuffle(roles)
    # Each repeat goes somewhere in the second half, and after the (k+1)-th regular trial
    # when k repeats are placed already: a repeat placed before others only raises their
    # count of repeats by one, which their later position covers.
    for placed in range(study.repeat_trials):
        earliest = [i + 1 for i, role in enumerate(roles) if role == TrialRole.REGULAR][placed]
        position = rng.randint(max(1, len(roles) // 2, earliest), len(roles))
        roles.insert(position, TrialRole.REPEAT)
    return [TrialRole.PRACTICE] * study.practice_trials + [str(r) for r in roles]


def participant_set_excluded(*, participant: Participant, excluded: bool, reason: str) -> None:
    """A researcher's decision, which overrides the rules. Excluding returns the
    participant's items to the pool (and ends their session if it is still going);
    including them again counts their answers again. A pilot's simulated participants are
    refused: their pilot takes their counts out of the study when it ends."""
    if participant.pilot_id is not None:
        raise ValidationError("Simulated participants of a pilot cannot be excluded or included.")
    if excluded:
        flags = [*participant.flags, f"excluded by researcher: {reason}".strip(": ")]
        status = ParticipantStatus.EXCLUDED
    else:
        flags = [*participant.flags, "included by researcher"]
        status = ParticipantStatus.COMPLETED
    mine = Participant.objects.filter(pk=participant.pk)
    with transaction.atomic():
        # The items change only when the status does (conditional updates): excluding twice
        # releases once, and including someone who was not excluded only adds the note.
        if excluded:
            switched = mine.exclude(status=status).update(status=status, flags=flags)
        else:
            switched = mine.filter(status=ParticipantStatus.EXCLUDED).update(
                status=status, flags=flags
            )
        if not switched:
            mine.update(flags=flags)
        participant.refresh_from_db()
        if switched and excluded:
            participant_release_holdings(participant=participant)
            participant_items_count(participant=participant, change=-1)
        elif switched:
            participant_items_count(participant=participant, change=+1)
