"""Trials: issuing them (claiming items, reservations, expiry), storing answers, and the end of
a session. The only module of the services that runs plain SQL (annotation/sql.py).

Concurrency: an item is claimed with a conditional UPDATE (``assigned < quota``), so two
participants racing for the last slot cannot both win, on PostgreSQL or SQLite. A response
is stored once: the trial moves from issued to answered with a conditional UPDATE and the
idempotency key is unique, so a double click or a retried request stores one response.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotation import caches, sql
from annotation.models import (
    Item,
    Participant,
    ParticipantStatus,
    Response,
    Study,
    StudyKind,
    Tag,
    TagStatus,
    Trial,
    TrialRole,
    TrialStatus,
)
from annotation.services import arrangements
from annotation.services.base import Answer, StudyFull, TrialProblem
from annotation.services.design import study_close_if_complete
from annotation.services.quality import participant_items_count, quality_problems
from annotation.services.tags import tags_check_answer, tags_store


def study_has_room(*, study: Study) -> bool:
    """Whether a new participant could be given an item now (returning trials past their
    deadline to the pool first if none seems left)."""
    candidates, params = _candidates_sql(study, 0)  # 0: a participant who has seen nothing
    if sql.fetch_one(candidates, params) is not None:
        return True
    return bool(trials_expire(study=study)) and sql.fetch_one(candidates, params) is not None


def participant_reserve_first_item(*, participant: Participant) -> None:
    """Claim the item of the participant's first regular trial now, at consent: practice
    trials come first, and without this the last item could go to someone else meanwhile,
    leaving a session of practice trials only. StudyFull if no item is left. The item is
    held as long as the trials before it may take (each trial's timeout), then returns to
    the pool (trials_expire). A multi-arrangement session claims all its stimuli instead."""
    if participant.study.is_arrangement:
        arrangements.session_claim(participant=participant)
        return
    item = _claim_item(participant)
    if item is None:
        raise StudyFull(
            "Every place in this study is taken at the moment: each item has all the "
            "participants it needs, answered or in progress."
        )
    study = participant.study
    hold = timedelta(seconds=study.trial_timeout_seconds * (study.practice_trials + 1))
    participant.reserved_item_id = item.pk
    participant.reserved_until = timezone.now() + hold
    Participant.objects.filter(pk=participant.pk).update(
        reserved_item=item.pk, reserved_until=participant.reserved_until
    )


def _take_reservation(participant: Participant) -> Item | None:
    """The item reserved at consent, now issued as the first regular trial (its claim
    already counted); None if there is none or it has returned to the pool meanwhile."""
    item_id = participant.reserved_item_id
    if item_id is None:
        return None
    participant.reserved_item_id = participant.reserved_until = None
    # Conditional: released meanwhile (past its time), or taken by a concurrent request.
    taken = sql.execute(
        f"UPDATE {sql.table(Participant)} SET reserved_item_id = NULL, reserved_until = NULL "
        "WHERE id = %s AND reserved_item_id = %s",
        [participant.pk, item_id],
    )
    if not taken:
        return None
    row = sql.fetch_one(f"SELECT a_id, b_id, c_id FROM {sql.table(Item)} WHERE id = %s", [item_id])
    assert row is not None  # items are never deleted while their study exists
    return Item(pk=item_id, study=participant.study, a_id=row[0], b_id=row[1], c_id=row[2])


def _release_reservation(participant_id: int, item_id: int) -> bool:
    with transaction.atomic():  # both writes or neither, as in _expire
        released = sql.execute(
            f"UPDATE {sql.table(Participant)} SET reserved_item_id = NULL, reserved_until = NULL "
            "WHERE id = %s AND reserved_item_id = %s",
            [participant_id, item_id],
        )
        if released:
            sql.execute(
                f"UPDATE {sql.table(Item)} SET assigned = assigned - 1 WHERE id = %s", [item_id]
            )
    return bool(released)


# --- Issuing trials -------------------------------------------------------------------------
# Unanswered trials past their deadline go back to the pool in a sweep that runs at most this
# often per study and process (annotation/caches.py; and whenever no item seems left), not on
# every request.
EXPIRY_SWEEP_SECONDS = 10.0


def trial_current(*, participant: Participant, answered: Trial | None = None) -> Trial | None:
    """The participant's open trial, issuing the next one if needed; None when done.

    ``answered`` is the trial this request has just answered: the next slot follows it, so
    the participant's trials need not be read again."""
    if participant.status != ParticipantStatus.CONSENTED:
        return None
    _sweep_expired_if_due(participant.study)
    if participant.study.is_arrangement and not arrangements.session_resume(
        participant=participant
    ):
        participant_finish(participant=participant)  # lapsed, and its stimuli taken meanwhile
        return None
    try:
        if answered is not None:
            # Issuing a trial is atomic by itself (_issue): no transaction around it.
            trial = _issue_next(participant, answered.position + 1)
        else:
            with transaction.atomic():
                # The latest trial that holds its slot: the open one, or the last answered.
                last = (
                    participant.trials.exclude(status=TrialStatus.EXPIRED)
                    .order_by("-position")
                    .first()
                )
                if last is not None and last.status == TrialStatus.ISSUED:
                    if last.expires_at >= timezone.now():
                        return last
                    _expire(last.pk, last.item_id, last.role)  # its slot gets a fresh trial
                    position = last.position
                else:
                    position = 0 if last is None else last.position + 1
                trial = _issue_next(participant, position)
    except IntegrityError:
        # Two requests of one participant (a double click, two tabs) issued the same slot at
        # once; the other committed first (its claim stands, ours was rolled back): show it.
        live = participant.trials.filter(status=TrialStatus.ISSUED).first()
        if live is None:
            raise
        return live
    if trial is None:
        participant_finish(participant=participant)
    return trial


def _issue_next(participant: Participant, position: int) -> Trial | None:
    while position < len(participant.plan):
        role = participant.plan[position]
        trial = _issue(participant, position, role)
        if trial is not None:
            return trial
        if role == TrialRole.REGULAR:
            return None  # no item left for this participant: the session ends early
        position += 1  # e.g. a repeat with nothing to repeat: skip the slot
    return None


def _sweep_expired_if_due(study: Study) -> None:
    now = time.monotonic()
    if now - caches.EXPIRY_SWEEPS.get(study.pk, -math.inf) >= EXPIRY_SWEEP_SECONDS:
        caches.EXPIRY_SWEEPS[study.pk] = now
        trials_expire(study=study)


def trials_expire(*, study: Study) -> int:
    """Return unanswered trials, and reservations for first trials, past their deadline to
    the pool; how many."""
    now = timezone.now()
    stale = list(
        Trial.objects.filter(
            participant__study=study, status=TrialStatus.ISSUED, expires_at__lt=now
        ).values_list("pk", "item_id", "role")
    )
    reservations = list(
        Participant.objects.filter(
            study=study, reserved_item__isnull=False, reserved_until__lt=now
        ).values_list("pk", "reserved_item_id")
    )
    expired = sum(_expire(pk, item_id, role) for pk, item_id, role in stale) + sum(
        _release_reservation(pk, item_id) for pk, item_id in reservations
    )
    if study.is_arrangement:
        expired += arrangements.sessions_lapse(study=study)
    return expired


def _expire(trial_id: int, item_id: int | None, role: str) -> bool:
    # Conditional: a trial answered meanwhile is not expired (and not released twice). Both
    # writes or neither: a release lost half-way would keep its item from its last judgment.
    with transaction.atomic():
        expired = sql.execute(
            f"UPDATE {sql.table(Trial)} SET status = %s WHERE id = %s AND status = %s",
            [TrialStatus.EXPIRED, trial_id, TrialStatus.ISSUED],
        )
        if expired and item_id and role == TrialRole.REGULAR:
            sql.execute(
                f"UPDATE {sql.table(Item)} SET assigned = assigned - 1 WHERE id = %s", [item_id]
            )
    return bool(expired)


def _issue(participant: Participant, position: int, role: str) -> Trial | None:
    if (
        role == TrialRole.REGULAR
        and sql.single_statement_writes()
        and not participant.study.is_adaptive_tags
        and not participant.study.is_arrangement
        and participant.reserved_item_id is None  # else: the first regular trial, in steps
    ):
        return _claim_and_issue(participant, position)
    with transaction.atomic():  # the claim and the trial that holds it, or neither
        return _issue_in_steps(participant, position, role)


def _issue_in_steps(participant: Participant, position: int, role: str) -> Trial | None:
    study = participant.study
    rng = random.Random()
    item: Item | None = None
    shown: list[int]
    expected = None
    repeat_of = None
    if study.is_arrangement:
        chosen = arrangements.trial_stimuli(participant, role, rng)
        if chosen is None:
            return None
        shown, expected = chosen
    elif role == TrialRole.REGULAR:
        item = _take_reservation(participant) or _claim_item(participant)
        if item is None:
            return None
        shown = _presentation(
            study, [s for s in (item.a_id, item.b_id, item.c_id) if s is not None], rng
        )
    elif role == TrialRole.REPEAT:
        repeat_of = _repeatable_trial(participant)
        if repeat_of is None:  # nothing answered to repeat (should not happen: see plan)
            return None
        item = repeat_of.item
        shown = _presentation(study, list(repeat_of.shown), rng)
    elif role == TrialRole.CATCH:
        shown, expected = _catch_trial(study, rng)
    else:
        shown = _presentation(study, _random_stimuli(study, rng), rng)
    shown_tags: list[int] = []
    if study.is_adaptive_tags and item is not None:
        shown_tags = list(
            Tag.objects.filter(
                study=study, stimulus_id=item.a_id, status=TagStatus.ACTIVE
            ).values_list("pk", flat=True)
        )
        rng.shuffle(shown_tags)
    values = {
        **_trial_values(participant, position, role),
        "item": item.pk if item else None,
        "shown": shown,
        "shown_tags": shown_tags,
        "expected": expected,
        "repeat_of": repeat_of.pk if repeat_of else None,
    }
    trial_id = sql.insert(Trial, values)
    if study.is_arrangement:
        arrangements.session_extend(participant=participant, until=values["expires_at"])
    values.update(participant=participant, item=item, repeat_of=repeat_of)
    return Trial(pk=trial_id, **values)


def _trial_values(participant: Participant, position: int, role: str) -> dict[str, Any]:
    now = timezone.now()
    return {
        "participant": participant.pk,
        "position": position,
        "role": role,
        "status": TrialStatus.ISSUED,
        "issued_at": now,
        "expires_at": now + timedelta(seconds=trial_timeout(participant.study)),
    }


def trial_timeout(study: Study) -> int:
    """Seconds a trial stays open. A multi-arrangement trial may take the session's whole
    time budget: a first arrangement of dozens of items can outlast the usual timeout, and
    an expired trial would lose every drag."""
    if study.is_arrangement:
        return max(study.trial_timeout_seconds, study.session_seconds)
    return study.trial_timeout_seconds


STIMULUS_COLUMNS = ("a_id", "b_id", "c_id")


@dataclass
class _IssueStatement:
    """The WITH clauses ``claimed`` (the claim of _claim_sql) and ``issued`` (the trial that
    shows the claimed item), their parameters, and the trial they insert (less its id and
    item): a regular trial in one statement, alone or after an answer."""

    clauses: str
    params: list[Any]
    values: dict[str, Any]
    order: list[int]

    def trial(self, participant: Participant, claimed: Sequence[Any], trial_id: int) -> Trial:
        item_id, a_id, b_id, c_id = claimed
        item = Item(pk=item_id, study=participant.study, a_id=a_id, b_id=b_id, c_id=c_id)
        shown = [(a_id, b_id, c_id)[index] for index in self.order]
        return Trial(pk=trial_id, participant=participant, item=item, shown=shown, **self.values)


def _issue_statement(participant: Participant, position: int, only_if: str = "") -> _IssueStatement:
    """Claim an item and insert the trial that shows it, its stimuli in an order drawn here
    (left/right randomised). ``only_if`` is an SQL condition the claim also requires."""
    study = participant.study
    order = _presentation(study, list(range(study.stimuli_per_item)), random.Random())
    shown = ", ".join(f"claimed.{STIMULUS_COLUMNS[index]}" for index in order)
    values = {**_trial_values(participant, position, TrialRole.REGULAR), "shown_tags": []}
    columns, params = sql.insert_parts(Trial, values)
    claim, claim_params = _claim_sql(participant, only_if)
    clauses = f"""claimed AS ({claim}),
        issued AS (
            INSERT INTO {sql.table(Trial)} ({columns}, item_id, shown)
            SELECT {", ".join(["%s"] * len(params))}, claimed.id, jsonb_build_array({shown})
            FROM claimed RETURNING id)"""
    values.pop("participant")
    return _IssueStatement(clauses, [*claim_params, *params], values, order)


def _claim_and_issue(participant: Participant, position: int) -> Trial | None:
    """A regular trial in one statement (the claim retried as _claim does)."""
    issue = _issue_statement(participant, position)
    with sql.savepoint_if_nested():  # a taken slot (IntegrityError) leaves a usable transaction
        row = _claim(
            participant,
            f"""WITH {issue.clauses}
            SELECT claimed.id, claimed.a_id, claimed.b_id, claimed.c_id, issued.id
            FROM claimed, issued""",
            issue.params,
        )
    return None if row is None else issue.trial(participant, row[:4], row[4])


def _claim_item(participant: Participant) -> Item | None:
    claim, params = _claim_sql(participant)
    row = _claim(participant, claim, params)
    if row is None:
        return None
    pk, a_id, b_id, c_id = row
    # Only what a trial needs (its id and stimulus ids): no second read.
    return Item(pk=pk, study=participant.study, a_id=a_id, b_id=b_id, c_id=c_id)


def _claim_sql(participant: Participant, only_if: str = "") -> tuple[str, list[Any]]:
    """Claim the least-answered item this participant has not seen (ties broken by a random
    key fixed per item), with one conditional UPDATE: the quota is checked in the statement
    that takes the slot, so concurrent participants cannot push an item past it. PostgreSQL
    skips rows another participant is claiming at this moment instead of queueing behind
    them; SQLite runs one writer at a time anyway.

    The UPDATE (returning the item's id and stimulus ids) and its parameters."""
    study = participant.study
    claimable = _claimable(study)
    candidates, candidate_params = _candidates_sql(study, participant.pk)
    skip_locked = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    claim = f"""
        UPDATE {sql.table(Item)} SET assigned = assigned + 1
        WHERE id = ({candidates}{skip_locked}) AND {claimable}{f" AND {only_if}" if only_if else ""}
        RETURNING id, a_id, b_id, c_id"""
    return claim, [*candidate_params, study.quota]


def _claimable(study: Study) -> str:
    """The SQL condition (one parameter: the quota) for an item that can take a participant."""
    if study.is_adaptive_tags:
        # A chain moves one iteration at a time: nobody else may hold it.
        return "assigned = answered AND answered < %s"
    return "assigned < %s"


def _candidates_sql(study: Study, participant_id: int) -> tuple[str, list[Any]]:
    """The query for the item a participant would claim next, and its parameters."""
    candidates = f"""
        SELECT id FROM {sql.table(Item)}
        WHERE study_id = %s AND NOT completed AND {_claimable(study)} AND id NOT IN (
            SELECT item_id FROM {sql.table(Trial)}
            WHERE participant_id = %s AND item_id IS NOT NULL)
        ORDER BY assigned, shuffle_key LIMIT 1"""
    return candidates, [study.pk, study.quota, participant_id]


def _claim(participant: Participant, statement: str, params: list[Any]) -> tuple[Any, ...] | None:
    """Run a statement that claims an item (_claim_sql), retried while every candidate was
    being claimed by someone else, and once more after returning expired trials' items to
    the pool; its row, or None when no item is left for this participant."""
    candidates, candidate_params = _candidates_sql(participant.study, participant.pk)
    swept = False
    while True:
        row = sql.fetch_one(statement, params)
        if row is not None:
            return row
        if sql.fetch_one(candidates, candidate_params) is not None:
            continue  # every candidate was being claimed by someone else: look again
        if swept or not trials_expire(study=participant.study):
            return None
        swept = True  # trials past their deadline held the last items: try once more


def _presentation(study: Study, stimulus_ids: list[int], rng: random.Random) -> list[int]:
    """Randomise left/right: both orders for pairs and triplets; in 2AFC the reference stays
    first and only the two candidates swap."""
    if study.kind == StudyKind.TWO_AFC:
        candidates = stimulus_ids[1:]
        rng.shuffle(candidates)
        return [stimulus_ids[0], *candidates]
    shuffled = list(stimulus_ids)
    rng.shuffle(shuffled)
    return shuffled


def _random_stimuli(study: Study, rng: random.Random) -> list[int]:
    ids = list(study.dataset.stimuli.values_list("pk", flat=True)[:5000])
    return rng.sample(ids, study.stimuli_per_item)


def _catch_trial(study: Study, rng: random.Random) -> tuple[list[int], Any]:
    """A trial with an obvious answer: a stimulus paired with itself (rated maximally
    similar), a triplet with two copies (the other is the odd one), a 2AFC whose
    reference is one of the candidates."""
    one, other = _random_stimuli(study, rng)[:2] if study.stimuli_per_item > 1 else (0, 0)
    if study.kind == StudyKind.PAIRS:
        return [one, one], {"value": study.scale_max}
    if study.kind == StudyKind.TRIPLETS:
        shown = [one, one, other]
        rng.shuffle(shown)
        return shown, {"chosen": other}
    candidates = [one, other]
    rng.shuffle(candidates)
    return [one, *candidates], {"chosen": one}


def _repeatable_trial(participant: Participant) -> Trial | None:
    repeated = participant.trials.filter(role=TrialRole.REPEAT).values("repeat_of_id")
    options = list(
        participant.trials.filter(role=TrialRole.REGULAR, status=TrialStatus.ANSWERED)
        .exclude(pk__in=repeated)
        .select_related("item")
    )
    return random.choice(options) if options else None


# --- Responses ------------------------------------------------------------------------------
def response_submit(
    *, participant: Participant, answer: Answer, trial: Trial | None = None
) -> Response:
    """Store the answer to a trial issued to this participant, exactly once. ``trial``: the
    participant's trial that the answer names, if the caller has read it already."""
    return _submit(participant, answer, then_issue=False, trial=trial)[0]


def response_submit_and_next(
    *, participant: Participant, answer: Answer, trial: Trial | None = None
) -> tuple[Response, Trial | None]:
    """Store the answer (as response_submit) and issue the participant's next trial (as
    trial_current; None when the session is over). On PostgreSQL, when the next slot is a
    regular trial of a rating or choice study, both go to the database as one statement:
    one round trip and one commit per answer."""
    stored, issued = _submit(participant, answer, then_issue=True, trial=trial)
    if issued is None:  # not issued with the answer: the usual way (retries, expiry, the end)
        issued = trial_current(participant=participant, answered=stored.trial)
    return stored, issued


def _submit(
    participant: Participant, answer: Answer, *, then_issue: bool, trial: Trial | None
) -> tuple[Response, Trial | None]:
    key = answer.idempotency_key.strip()
    if not key or len(key) > 64:
        raise TrialProblem("The response has no valid idempotency key; reload the page.")
    if trial is None or trial.pk != answer.trial_id:
        trial = sql.by_pk(Trial, [answer.trial_id]).get(answer.trial_id)
    if (
        trial is None
        or trial.participant_id != participant.pk
        or trial.status != TrialStatus.ISSUED
    ):
        # Only an answered trial can have a stored response (they are written together).
        existing = Response.objects.filter(idempotency_key=key).select_related("trial").first()
        if existing is not None:
            if existing.trial.participant_id != participant.pk:
                raise PermissionDenied("This response belongs to another participant.")
            return existing, None  # a double click or a retried request: already stored
    if trial is None or trial.participant_id != participant.pk:
        raise PermissionDenied("This trial was not issued to you.")
    if participant.status != ParticipantStatus.CONSENTED:
        raise TrialProblem("Your session has ended; there is nothing more to answer.")
    study = participant.study
    if trial.status == TrialStatus.ANSWERED:
        raise TrialProblem("This trial has already been answered.")
    if trial.status == TrialStatus.EXPIRED or trial.expires_at < timezone.now():
        raise TrialProblem("This trial expired; a new one has been prepared for you.")
    _check_answer(study, trial, answer)
    values: dict[str, Any] = {
        "trial": trial.pk,
        "value": answer.value,
        "chosen": answer.chosen,
        "rt_ms": answer.rt_ms,
        "idempotency_key": key,
        "flags": _response_flags(study, trial, answer),
        "arrangement": arrangements.stored_arrangement(answer) if study.is_arrangement else None,
        "created_at": timezone.now(),
    }
    counted_item = trial.item_id if trial.role == TrialRole.REGULAR else None
    next_position = trial.position + 1
    issued = None
    try:
        if study.kind == StudyKind.TAGS and trial.role == TrialRole.REGULAR:
            with transaction.atomic():
                response_id = _store_response(trial.pk, counted_item, values)
                tags_store(study=study, trial=trial, answer=answer)
        elif (
            then_issue
            and sql.single_statement_writes()
            and not study.is_arrangement  # its trials claim nothing: issued the usual way
            and participant.plan[next_position : next_position + 1] == [TrialRole.REGULAR]
            and participant.reserved_item_id is None  # the first regular trial: its own way
        ):
            response_id, issued = _store_response_and_issue(
                participant, trial.pk, counted_item, values, next_position
            )
        else:
            response_id = _store_response(trial.pk, counted_item, values)
    except (IntegrityError, TrialProblem):
        # The same key raced in from a second request (a double click): that one was stored.
        stored = Response.objects.filter(idempotency_key=key, trial=trial).first()
        if stored is None:
            raise TrialProblem("This trial has already been answered.") from None
        return stored, None
    trial.status = TrialStatus.ANSWERED
    values.update(trial=trial, chosen_id=values.pop("chosen"))
    return Response(pk=response_id, **values), issued


def _answer_clauses(
    trial_id: int, counted_item: int | None, values: dict[str, Any]
) -> tuple[str, list[Any]]:
    """WITH clauses that mark the trial answered (``answered``, empty if it was no longer
    open), store its response (``stored``) and count it on its item; their parameters."""
    columns, params = sql.insert_parts(Response, values)
    clauses = f"""answered AS (
            UPDATE {sql.table(Trial)} SET status = %s WHERE id = %s AND status = %s
            RETURNING id),
        stored AS (
            INSERT INTO {sql.table(Response)} ({columns})
            SELECT {", ".join(["%s"] * len(params))} FROM answered RETURNING id),
        counted AS (
            UPDATE {sql.table(Item)} SET answered = answered + 1
            WHERE id = %s AND EXISTS (SELECT 1 FROM stored))"""
    answered = [TrialStatus.ANSWERED, trial_id, TrialStatus.ISSUED]
    return clauses, [*answered, *params, counted_item]


def _store_response(trial_id: int, counted_item: int | None, values: dict[str, Any]) -> int:
    """Mark the trial answered, store its response and count it on its item: all of it or
    nothing (TrialProblem if the trial is no longer open; IntegrityError if the idempotency
    key is already stored). The new response's id."""
    if sql.single_statement_writes():
        clauses, params = _answer_clauses(trial_id, counted_item, values)
        row = sql.fetch_one(f"WITH {clauses} SELECT id FROM stored", params)
        if row is None:
            raise TrialProblem("This trial has already been answered.")
        return int(row[0])
    with transaction.atomic():
        if not sql.execute(
            f"UPDATE {sql.table(Trial)} SET status = %s WHERE id = %s AND status = %s",
            [TrialStatus.ANSWERED, trial_id, TrialStatus.ISSUED],
        ):
            raise TrialProblem("This trial has already been answered.")
        response_id = sql.insert(Response, values)
        if counted_item is not None:
            sql.execute(
                f"UPDATE {sql.table(Item)} SET answered = answered + 1 WHERE id = %s",
                [counted_item],
            )
    return response_id


def _store_response_and_issue(
    participant: Participant,
    trial_id: int,
    counted_item: int | None,
    values: dict[str, Any],
    next_position: int,
) -> tuple[int, Trial | None]:
    """_store_response and _claim_and_issue as one statement (PostgreSQL): the response's id
    and the next trial, or None when no item could be claimed at once (the caller then goes
    the usual way, which retries, returns expired trials' items or ends the session)."""
    answer, answer_params = _answer_clauses(trial_id, counted_item, values)
    # The claim runs only if the answer was stored: a refused answer changes nothing.
    issue = _issue_statement(participant, next_position, only_if="EXISTS (SELECT 1 FROM stored)")
    try:
        with sql.savepoint_if_nested():
            row = sql.fetch_one(
                f"""WITH {answer}, {issue.clauses}
                SELECT stored.id, claimed.id, claimed.a_id, claimed.b_id, claimed.c_id, issued.id
                FROM stored LEFT JOIN (claimed CROSS JOIN issued) ON true""",
                [*answer_params, *issue.params],
            )
    except IntegrityError:
        # Nothing was written. The key is stored already (a double click: storing the answer
        # alone raises again, for the caller), or the next slot was taken meanwhile: the
        # answer is stored alone and the next trial issued the usual way.
        return _store_response(trial_id, counted_item, values), None
    if row is None:
        raise TrialProblem("This trial has already been answered.")
    response_id, *claimed, next_trial_id = row
    if next_trial_id is None:
        return response_id, None
    return response_id, issue.trial(participant, claimed, next_trial_id)


def _check_answer(study: Study, trial: Trial, answer: Answer) -> None:
    if answer.rt_ms is not None and not 0 <= answer.rt_ms <= 24 * 3600 * 1000:
        raise TrialProblem("The response time is not plausible.")
    if study.kind == StudyKind.PAIRS:
        if answer.value is None or not math.isfinite(answer.value):
            raise TrialProblem("Choose a rating.")
        if answer.value != int(answer.value) or not (
            study.scale_min <= answer.value <= study.scale_max
        ):
            raise TrialProblem(
                f"The rating must be a whole number from {study.scale_min} to {study.scale_max}."
            )
    elif study.is_arrangement:
        arrangements.check_placements(trial, answer)
    elif study.is_choice:
        options = trial.shown if study.kind == StudyKind.TRIPLETS else trial.shown[1:]
        if answer.chosen is None:
            raise TrialProblem("Choose one of the options.")
        if answer.chosen not in options:
            raise TrialProblem("That choice is not one of this trial's options.")
    else:
        tags_check_answer(study=study, trial=trial, answer=answer)


def _response_flags(study: Study, trial: Trial, answer: Answer) -> list[str]:
    flags = []
    elapsed_ms = answer.rt_ms
    if elapsed_ms is None:  # no JavaScript: the server's clock is the best measure
        elapsed_ms = int((timezone.now() - trial.issued_at).total_seconds() * 1000)
    # Multi-arrangement: the minimum is per item the trial shows (a first arrangement of 40
    # items takes far longer than a later one of 3).
    items = len(answer.placements) if study.is_arrangement else 1
    if study.min_response_ms and elapsed_ms < study.min_response_ms * items:
        flags.append("too fast")
    if study.is_arrangement:
        return flags + arrangements.arrangement_flags(trial, answer)
    if trial.role == TrialRole.CATCH and trial.expected:
        passed = (
            answer.value == trial.expected.get("value")
            if "value" in trial.expected
            else answer.chosen == trial.expected.get("chosen")
        )
        if not passed:
            flags.append("failed catch")
    return flags


# --- Finishing and quality control ----------------------------------------------------------
def participant_finish(*, participant: Participant) -> None:
    """Mark the session complete and apply the study's exclusion rules: an excluded
    participant's items go back to the pool. Closes the study if it is now complete."""
    reasons = quality_problems(participant)
    excluded = bool(reasons) and participant.study.exclude_on_failure
    status = ParticipantStatus.EXCLUDED if excluded else ParticipantStatus.COMPLETED
    with transaction.atomic():  # a multi-arrangement session ends with its counts, or not
        finished = Participant.objects.filter(
            pk=participant.pk, status=ParticipantStatus.CONSENTED
        ).update(status=status, flags=reasons, completed_at=timezone.now())
        if finished and participant.study.is_arrangement:
            arrangements.session_finish(participant=participant, excluded=excluded)
    participant.refresh_from_db()
    if not finished:
        return  # finished by a concurrent request, or excluded by the researcher meanwhile
    participant_release_holdings(participant=participant)
    if excluded:
        participant_items_count(participant=participant, change=-1)
    study_close_if_complete(study=participant.study)


def participant_release_holdings(*, participant: Participant) -> None:
    """A session that ended gives back what it held without answering: its open trial and
    an unused reservation."""
    for pk, item_id, role in participant.trials.filter(status=TrialStatus.ISSUED).values_list(
        "pk", "item_id", "role"
    ):
        _expire(pk, item_id, role)
    if participant.reserved_item_id is not None:
        _release_reservation(participant.pk, participant.reserved_item_id)
        participant.reserved_item_id = participant.reserved_until = None
