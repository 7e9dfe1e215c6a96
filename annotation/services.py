"""Writes for human studies: designing a study, starting participants, issuing trials,
storing responses, quality control and aggregation into HumanJudgments.

Concurrency: an item is claimed with a conditional UPDATE (``assigned < quota``), so two
participants racing for the last slot cannot both win, on PostgreSQL or SQLite. A response
is stored once: the trial moves from issued to answered with a conditional UPDATE and the
idempotency key is unique, so a double click or a retried request stores one response.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from annotation import sql
from annotation.models import (
    Aggregation,
    Item,
    Participant,
    ParticipantStatus,
    RefusedResume,
    Response,
    Study,
    StudyKind,
    StudyStatus,
    Tag,
    TagRating,
    TagStatus,
    Trial,
    TrialRole,
    TrialStatus,
)
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.models import Dataset, HumanJudgments, Stimulus
from evaluation.querystring import clean_text

MAX_ITEMS = 200_000
EXTERNAL_ID_MAX_LENGTH = 200  # Participant.external_id
TAG_MAX_LENGTH = 100
MAX_TAGS_PER_TRIAL = 20


class TrialProblem(ValidationError):
    """A response that cannot be stored; the message says why."""


class StudyFull(PermissionDenied):
    """No item is left for a new participant: every place is answered or held by a session
    in progress. Raised before a session starts, never after its practice trials."""


class ParticipantConflict(PermissionDenied):
    """A session was asked for with the recruiter id of a participant who has started
    already. Recruiter ids are not secrets, so the session is not handed over: the
    participant continues in their own browser or through their private link."""

    def __init__(self, participant: Participant) -> None:
        super().__init__(
            f"A session with the participant id {participant.external_id!r} has already "
            "started in another browser."
        )
        self.participant = participant


# --- Designing a study ---------------------------------------------------------------------
@dataclass
class ItemPlan:
    """Which items a study asks about: all pairs, N random ones, or an explicit list."""

    mode: str = "all"  # all | random | list
    count: int = 0  # random: how many items
    stimuli: list[tuple[int, ...]] = field(default_factory=list)  # list: stimulus orders
    seed: int = 0


def study_create(
    *, dataset: Dataset, name: str, kind: str, items: ItemPlan, created_by: Any = None, **design
) -> Study:
    """Create a study and its items; nothing is stored if the design is invalid."""
    name = name.strip()
    if Study.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A study called {name!r} already exists."})
    study = Study(dataset=dataset, name=name, kind=kind, created_by=created_by, **design)
    _check_design(study)
    orders = dict(dataset.stimuli.values_list("order", "id"))
    tuples = _item_tuples(study, items, sorted(orders))
    rng = random.Random(items.seed)
    with transaction.atomic():
        study.save()
        Item.objects.bulk_create(
            [_new_item(study, [orders[o] for o in t], rng) for t in tuples], batch_size=5000
        )
    return study


def _check_design(study: Study) -> None:
    if study.kind not in StudyKind.values:
        raise ValidationError({"kind": f"Unknown study kind {study.kind!r}."})
    if study.kind == StudyKind.PAIRS and study.scale_max <= study.scale_min:
        raise ValidationError({"scale_max": "The top of the scale must be above the bottom."})
    if study.trials_per_session < 1:
        raise ValidationError({"trials_per_session": "A session needs at least one trial."})
    qc_trials = study.repeat_trials + study.catch_trials
    if qc_trials >= study.trials_per_session:
        raise ValidationError(
            {"repeat_trials": "Repeats and catch trials must leave room for regular trials."}
        )
    if study.kind == StudyKind.TAGS and qc_trials:
        raise ValidationError({"catch_trials": "Tag studies have no repeat or catch trials."})
    if study.repeat_trials * 2 > study.trials_per_session - study.catch_trials:
        raise ValidationError(
            {"repeat_trials": "At most half of the regular trials can be repeated."}
        )
    if study.judgments_per_item < 1:
        raise ValidationError({"judgments_per_item": "Each item needs at least one judgment."})
    # The done page links there: only web addresses (forms check this too; services may be
    # called without a form).
    if study.redirect_url and not study.redirect_url.lower().startswith(("https://", "http://")):
        raise ValidationError(
            {"redirect_url": "The completion address must start with https:// or http://."}
        )


def _item_tuples(study: Study, plan: ItemPlan, orders: list[int]) -> list[tuple[int, ...]]:
    size = study.stimuli_per_item
    if len(orders) < size:
        raise ValidationError(f"The dataset has fewer than {size} stimuli.")
    if study.kind == StudyKind.TAGS:
        return [(o,) for o in orders]
    if plan.mode == "list":
        return _listed_items(plan.stimuli, size, set(orders))
    if plan.mode == "all":
        if study.kind != StudyKind.PAIRS:
            raise ValidationError("'All items' is for pair studies; choose a random subset.")
        total = math.comb(len(orders), 2)
        if total > MAX_ITEMS:
            raise ValidationError(
                f"All pairs of {len(orders)} stimuli are {total:,} items (limit "
                f"{MAX_ITEMS:,}); choose a random subset."
            )
        return list(itertools.combinations(orders, 2))
    if plan.mode == "random":
        return _random_items(orders, size, plan.count, random.Random(plan.seed))
    raise ValidationError(f"Unknown item mode {plan.mode!r}; use all, random or list.")


def _listed_items(
    listed: Sequence[tuple[int, ...]], size: int, known: set[int]
) -> list[tuple[int, ...]]:
    if not listed:
        raise ValidationError("The item list is empty.")
    seen: dict[tuple[int, ...], int] = {}
    for number, stimuli in enumerate(listed, start=1):
        if len(stimuli) != size:
            raise ValidationError(f"Item {number}: expected {size} stimuli, got {len(stimuli)}.")
        unknown = [s for s in stimuli if s not in known]
        if unknown:
            raise ValidationError(f"Item {number}: stimulus {unknown[0]} is not in the dataset.")
        if len(set(stimuli)) != size:
            raise ValidationError(f"Item {number}: its stimuli must differ.")
        key = tuple(sorted(stimuli)) if size == 2 else tuple(stimuli)
        if key in seen:
            raise ValidationError(f"Item {number} repeats item {seen[key]}.")
        seen[key] = number
    return [tuple(s) for s in listed]


def _random_items(
    orders: list[int], size: int, count: int, rng: random.Random
) -> list[tuple[int, ...]]:
    possible = math.comb(len(orders), size) * (3 if size == 3 else 1)
    if count < 1 or count > min(possible, MAX_ITEMS):
        raise ValidationError(
            f"Ask for between 1 and {min(possible, MAX_ITEMS):,} random items (got {count})."
        )
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        stimuli = tuple(rng.sample(orders, size))
        # Pairs and triplets are unordered; in 2AFC the first stimulus is the reference.
        chosen.add(tuple(sorted(stimuli)) if size == 2 else stimuli)
    return sorted(chosen)


def _new_item(study: Study, stimulus_ids: list[int], rng: random.Random) -> Item:
    padded = [*stimulus_ids, None, None][:3]
    return Item(
        study=study,
        a_id=padded[0],
        b_id=padded[1],
        c_id=padded[2],
        shuffle_key=rng.randrange(1 << 30),
    )


def study_set_status(*, study: Study, status: str) -> None:
    if status not in StudyStatus.values:
        raise ValidationError(f"Unknown status {status!r}.")
    # The researcher's decision: a study that had closed itself is no longer "complete".
    Study.objects.filter(pk=study.pk).update(status=status, completed_at=None)
    study.status = status
    study.completed_at = None


def study_close_if_complete(*, study: Study) -> bool:
    """Close an open study once every item has its judgments (or, adaptive tags, its chain
    ended), so that new arrivals are told it is complete. One conditional statement: only an
    open study with no item left to answer is closed."""
    incomplete = Item.objects.filter(
        study=OuterRef("pk"), completed=False, answered__lt=study.quota
    )
    closed = (
        Study.objects.filter(pk=study.pk, status=StudyStatus.OPEN)
        .filter(~Exists(incomplete))
        .update(status=StudyStatus.CLOSED, completed_at=timezone.now())
    )
    if closed:
        study.refresh_from_db(fields=["status", "completed_at"])
    return bool(closed)


def _reopen_if_closed_itself(study: Study) -> None:
    """Items went back to the pool: a study that closed itself because it was complete opens
    again (one the researcher closed stays closed)."""
    reopened = Study.objects.filter(
        pk=study.pk, status=StudyStatus.CLOSED, completed_at__isnull=False
    ).update(status=StudyStatus.OPEN, completed_at=None)
    if reopened:
        study.status, study.completed_at = StudyStatus.OPEN, None


def study_has_room(*, study: Study) -> bool:
    """Whether a new participant could be given an item now (returning trials past their
    deadline to the pool first if none seems left)."""
    candidates, params = _candidates_sql(study, 0)  # 0: a participant who has seen nothing
    if sql.fetch_one(candidates, params) is not None:
        return True
    return bool(trials_expire(study=study)) and sql.fetch_one(candidates, params) is not None


# --- Participants ---------------------------------------------------------------------------
def participant_start(
    *, study: Study, external_id: str = "", user: Any = None, seed: int | None = None
) -> Participant:
    """Start a participant's session; a logged-in account resumes its own. A recruiter id
    that has started already raises ParticipantConflict (the attempt is recorded for the
    researcher): knowing someone's id is not being them. Sessions resume through what only
    the participant holds: their browser's session or their private link (the views)."""
    if study.status != StudyStatus.OPEN:
        raise PermissionDenied("This study is not open.")
    external_id = clean_external_id(external_id)
    own = participant_of_account(study=study, user=user)
    if own is not None:
        return own
    _refuse_if_started(study, external_id)
    plan = session_plan(study, random.Random(seed))
    try:
        with transaction.atomic():  # the participant and their reserved item, or neither
            participant = Participant.objects.create(
                study=study,
                external_id=external_id,
                user=user if user is not None and user.is_authenticated else None,
                plan=plan,
            )
            _reserve_first_item(participant)
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


def _reserve_first_item(participant: Participant) -> None:
    """Claim the item of the participant's first regular trial now, at consent: practice
    trials come first, and without this the last item could go to someone else meanwhile,
    leaving a session of practice trials only. StudyFull if no item is left. The item is
    held as long as the trials before it may take (each trial's timeout), then returns to
    the pool (trials_expire)."""
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


def clean_external_id(external_id: str) -> str:
    """A recruiter's participant id as stored: trimmed, without control characters (a NUL
    from a hand-edited link would make PostgreSQL refuse the query), at most 200 chars."""
    return clean_text(external_id, max_length=EXTERNAL_ID_MAX_LENGTH)


def participant_of_account(*, study: Study, user: Any) -> Participant | None:
    """A logged-in account's own participant in this study (its login is the credential)."""
    if user is not None and user.is_authenticated:
        return Participant.objects.filter(study=study, user=user).first()
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
    repeat after at least k regular trials; _check_design leaves enough of them)."""
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


# --- Issuing trials -------------------------------------------------------------------------
# Unanswered trials past their deadline go back to the pool in a sweep that runs at most this
# often per study and process (and whenever no item seems left), not on every request.
EXPIRY_SWEEP_SECONDS = 10.0
_last_sweep: dict[int, float] = {}


def trial_current(*, participant: Participant, answered: Trial | None = None) -> Trial | None:
    """The participant's open trial, issuing the next one if needed; None when done.

    ``answered`` is the trial this request has just answered: the next slot follows it, so
    the participant's trials need not be read again."""
    if participant.status != ParticipantStatus.CONSENTED:
        return None
    _sweep_expired_if_due(participant.study)
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
    if now - _last_sweep.get(study.pk, -math.inf) >= EXPIRY_SWEEP_SECONDS:
        _last_sweep[study.pk] = now
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
    return sum(_expire(pk, item_id, role) for pk, item_id, role in stale) + sum(
        _release_reservation(pk, item_id) for pk, item_id in reservations
    )


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
    if role == TrialRole.REGULAR:
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
        "expires_at": now + timedelta(seconds=participant.study.trial_timeout_seconds),
    }


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
@dataclass(frozen=True)
class Answer:
    """What a participant submitted for one trial."""

    trial_id: int
    idempotency_key: str
    value: float | None = None
    chosen: int | None = None  # stimulus id
    rt_ms: int | None = None
    tag_ratings: dict[int, int | None] = field(default_factory=dict)  # tag id -> 1-5, None=flag
    new_tags: list[str] = field(default_factory=list)


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
    values = {
        "trial": trial.pk,
        "value": answer.value,
        "chosen": answer.chosen,
        "rt_ms": answer.rt_ms,
        "idempotency_key": key,
        "flags": _response_flags(study, trial, answer),
        "created_at": timezone.now(),
    }
    counted_item = trial.item_id if trial.role == TrialRole.REGULAR else None
    next_position = trial.position + 1
    issued = None
    try:
        if study.kind == StudyKind.TAGS and trial.role == TrialRole.REGULAR:
            with transaction.atomic():
                response_id = _store_response(trial.pk, counted_item, values)
                _store_tags(study, trial, answer)
        elif (
            then_issue
            and sql.single_statement_writes()
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
    elif study.is_choice:
        options = trial.shown if study.kind == StudyKind.TRIPLETS else trial.shown[1:]
        if answer.chosen is None:
            raise TrialProblem("Choose one of the options.")
        if answer.chosen not in options:
            raise TrialProblem("That choice is not one of this trial's options.")
    else:
        _check_tag_answer(study, trial, answer)


def _check_tag_answer(study: Study, trial: Trial, answer: Answer) -> None:
    unknown = set(answer.tag_ratings) - set(trial.shown_tags)
    if unknown:
        raise TrialProblem("A rated tag was not shown in this trial.")
    missing = set(trial.shown_tags) - set(answer.tag_ratings)
    if missing:
        raise TrialProblem("Rate or flag every tag shown.")
    if any(r is not None and not 1 <= r <= 5 for r in answer.tag_ratings.values()):
        raise TrialProblem("Tag ratings go from 1 to 5.")
    tags = [normalise_tag(t) for t in answer.new_tags]
    tags = [t for t in tags if t]
    if len(tags) > MAX_TAGS_PER_TRIAL:
        raise TrialProblem(f"Add at most {MAX_TAGS_PER_TRIAL} tags at a time.")
    if any(len(t) > TAG_MAX_LENGTH for t in tags):
        raise TrialProblem(f"A tag can be at most {TAG_MAX_LENGTH} characters long.")
    if not tags and not trial.shown_tags:
        raise TrialProblem("Add at least one tag.")


def normalise_tag(text: str) -> str:
    """Tags compare equal regardless of case and spacing: 'Red  Car ' == 'red car'."""
    return re.sub(r"\s+", " ", text).strip().lower()


def _response_flags(study: Study, trial: Trial, answer: Answer) -> list[str]:
    flags = []
    elapsed_ms = answer.rt_ms
    if elapsed_ms is None:  # no JavaScript: the server's clock is the best measure
        elapsed_ms = int((timezone.now() - trial.issued_at).total_seconds() * 1000)
    if study.min_response_ms and elapsed_ms < study.min_response_ms:
        flags.append("too fast")
    if trial.role == TrialRole.CATCH and trial.expected:
        passed = (
            answer.value == trial.expected.get("value")
            if "value" in trial.expected
            else answer.chosen == trial.expected.get("chosen")
        )
        if not passed:
            flags.append("failed catch")
    return flags


def _store_tags(study: Study, trial: Trial, answer: Answer) -> None:
    """Apply ratings and flags to shown tags, add new ones, and update each tag's state."""
    assert trial.item is not None  # regular tag trials always have their stimulus's item
    stimulus_id = trial.item.a_id
    touched = set()
    for tag_id, rating in answer.tag_ratings.items():
        TagRating.objects.create(tag_id=tag_id, trial=trial, rating=rating, flagged=rating is None)
        if rating is None:
            Tag.objects.filter(pk=tag_id).update(flag_count=F("flag_count") + 1)
        else:
            Tag.objects.filter(pk=tag_id).update(
                rating_count=F("rating_count") + 1, rating_sum=F("rating_sum") + rating
            )
        touched.add(tag_id)
    for text in dict.fromkeys(normalise_tag(t) for t in answer.new_tags):
        if not text:
            continue
        tag, created = Tag.objects.get_or_create(
            study=study, stimulus_id=stimulus_id, text=text, defaults={"added_in": trial}
        )
        if not created and tag.pk not in touched and study.is_adaptive_tags:
            # Proposing an existing tag again endorses it, as rating it 5 would.
            TagRating.objects.create(tag=tag, trial=trial, rating=5)
            Tag.objects.filter(pk=tag.pk).update(
                rating_count=F("rating_count") + 1, rating_sum=F("rating_sum") + 5
            )
        touched.add(tag.pk)
    if study.is_adaptive_tags:
        _update_tag_states(study, touched)
        _maybe_complete_chain(study, trial.item)


def _update_tag_states(study: Study, tag_ids: set[int]) -> None:
    tags = Tag.objects.filter(pk__in=tag_ids, status=TagStatus.ACTIVE)
    tags.filter(flag_count__gte=study.flags_to_hide).update(status=TagStatus.HIDDEN)
    tags.filter(
        rating_count__gte=study.ratings_to_freeze,
        rating_sum__gte=F("rating_count") * study.freeze_mean,
    ).update(status=TagStatus.FROZEN)


def _maybe_complete_chain(study: Study, item: Item | None) -> None:
    """A stimulus is done when enough tags are frozen, or after the last iteration."""
    if item is None:
        return
    frozen = Tag.objects.filter(study=study, stimulus_id=item.a_id, status=TagStatus.FROZEN).count()
    chain = Item.objects.filter(pk=item.pk)
    if frozen >= study.frozen_tags_to_complete:
        chain.update(completed=True)
    else:
        chain.filter(answered__gte=study.max_iterations).update(completed=True)


# --- Finishing and quality control ----------------------------------------------------------
def participant_finish(*, participant: Participant) -> None:
    """Mark the session complete and apply the study's exclusion rules: an excluded
    participant's items go back to the pool. Closes the study if it is now complete."""
    reasons = quality_problems(participant)
    excluded = bool(reasons) and participant.study.exclude_on_failure
    status = ParticipantStatus.EXCLUDED if excluded else ParticipantStatus.COMPLETED
    finished = Participant.objects.filter(
        pk=participant.pk, status=ParticipantStatus.CONSENTED
    ).update(status=status, flags=reasons, completed_at=timezone.now())
    participant.refresh_from_db()
    if not finished:
        return  # finished by a concurrent request, or excluded by the researcher meanwhile
    _release_holdings(participant)
    if excluded:
        _items_count(participant, -1)
    study_close_if_complete(study=participant.study)


def _release_holdings(participant: Participant) -> None:
    """A session that ended gives back what it held without answering: its open trial and
    an unused reservation."""
    for pk, item_id, role in participant.trials.filter(status=TrialStatus.ISSUED).values_list(
        "pk", "item_id", "role"
    ):
        _expire(pk, item_id, role)
    if participant.reserved_item_id is not None:
        _release_reservation(participant.pk, participant.reserved_item_id)
        participant.reserved_item_id = participant.reserved_until = None


def _items_count(participant: Participant, change: int) -> int:
    """Count (+1) or stop counting (-1) the participant's regular answers on their items:
    an excluded participant's items go back to the pool, and count again if the researcher
    includes them again (an item may then hold more judgments than its quota). Their
    responses are kept either way; aggregation leaves excluded participants out.

    Adaptive tag chains are left as they are: an excluded participant's ratings and flags
    have already moved the chain's tags (frozen, hidden), so their iteration stays used."""
    if participant.study.is_adaptive_tags:
        return 0
    answered = Trial.objects.filter(
        participant=participant, role=TrialRole.REGULAR, status=TrialStatus.ANSWERED
    ).values("item_id")
    changed = Item.objects.filter(pk__in=answered).update(
        assigned=F("assigned") + change, answered=F("answered") + change
    )
    if change < 0 and changed:
        _reopen_if_closed_itself(participant.study)
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
        reasons.append(
            f"{fast} of {len(responses)} responses faster than {study.min_response_ms} ms"
        )
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


def participant_set_excluded(*, participant: Participant, excluded: bool, reason: str) -> None:
    """A researcher's decision, which overrides the rules. Excluding returns the
    participant's items to the pool (and ends their session if it is still going);
    including them again counts their answers again."""
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
            _release_holdings(participant)
            _items_count(participant, -1)
        elif switched:
            _items_count(participant, +1)


# --- Aggregation ----------------------------------------------------------------------------
def study_aggregate(*, study: Study, name: str = "", created_by: Any = None) -> HumanJudgments:
    """A new HumanJudgments version from the regular responses of participants who were not
    excluded (ratings: every rating kept, averaged per pair by the metrics; choices: vote
    shares). Repeats, catch and practice trials are quality control, not data."""
    if study.kind == StudyKind.TAGS:
        raise ValidationError("Tag studies are exported as tags, not aggregated into judgments.")
    rows = list(_judgment_rows(study))
    if not rows:
        raise ValidationError("No usable responses yet: nothing to aggregate.")
    participants = {r.participant for r in rows}
    excluded = study.participants.filter(status=ParticipantStatus.EXCLUDED).count()
    with transaction.atomic():
        judgments = judgments_create(
            dataset=study.dataset,
            name=name or study.name,
            kind=study.kind,
            rows=rows,
            scale_min=study.scale_min if study.kind == StudyKind.PAIRS else None,
            scale_max=study.scale_max if study.kind == StudyKind.PAIRS else None,
            origin=f"study {study.name}",
            created_by=created_by,
        )
        Aggregation.objects.create(
            study=study,
            judgments=judgments,
            responses=len(rows),
            participants=len(participants),
            excluded_participants=excluded,
        )
    return judgments


def _judgment_rows(study: Study) -> Any:
    orders = dict(study.dataset.stimuli.values_list("pk", "order"))
    responses = (
        Response.objects.filter(
            trial__participant__study=study,
            trial__role=TrialRole.REGULAR,
        )
        .exclude(trial__participant__status=ParticipantStatus.EXCLUDED)
        .values_list(
            "trial__item__a_id",
            "trial__item__b_id",
            "trial__item__c_id",
            "value",
            "chosen_id",
            "trial__participant_id",
        )
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
    from evaluation.descriptions import DescriptionRow, descriptions_store
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


# --- Model-discriminating designs -----------------------------------------------------------
def study_create_discriminating(
    *,
    target: Any,
    models: Sequence[Any],
    kind: str = StudyKind.PAIRS,
    count: int = 50,
    judgments_per_item: int = 5,
    created_by: Any = None,
) -> Study:
    """A draft study of the ``count`` pairs (or odd-one-out triplets) on which these models'
    cached embeddings disagree most: the human data that would best separate them next.
    Pairs people have already judged for ``target`` are left out. The researcher reviews
    the draft, then opens it."""
    from evaluation.compare import latest_embeddings
    from evaluation.engine.designs import discriminating_pairs, discriminating_triplets
    from evaluation.engine.metrics.human import unit_rows
    from evaluation.models import Judgment

    if kind not in (StudyKind.PAIRS, StudyKind.TRIPLETS):
        raise ValidationError("Designs that separate models are pair or triplet studies.")
    if len(models) < 2:
        raise ValidationError("Choose at least two models to separate.")
    similarities = []
    for model in models:
        cached = latest_embeddings(model, target)
        chosen = cached.get(model.default_layer)  # the layer leaderboards rank it by default
        if chosen is None:
            raise ValidationError(
                f"{model.name} has no cached embeddings of {target.dataset} at its default layer "
                f"{model.default_layer!r}; run it on this dataset first."
            )
        vectors = unit_rows(np.asarray(chosen.load(), dtype=np.float64))
        similarities.append(vectors @ vectors.T)
    stimuli = list(target.dataset.stimuli.order_by("order").values_list("pk", "order"))
    orders = [order for _, order in stimuli]  # embedding rows follow the stimulus order
    row_of = {pk: row for row, (pk, _) in enumerate(stimuli)}
    judged = [
        (row_of[a], row_of[b])
        for a, b in Judgment.objects.filter(judgments_id=target.judgments_id)
        .values_list("a", "b")
        .distinct()
    ]
    if kind == StudyKind.PAIRS:
        proposed = discriminating_pairs(similarities, count, exclude=judged or None)
        items = [(orders[i], orders[j]) for i, j in zip(proposed.i, proposed.j, strict=True)]
    else:
        triplets = discriminating_triplets(similarities, count)
        items = [tuple(orders[i] for i in row) for row in triplets.triplets]
    if not items:
        raise ValidationError("Every pair of these stimuli has been judged already.")
    names = " vs ".join(model.name for model in models)
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    return study_create(
        dataset=target.dataset,
        name=f"Where {names} disagree ({stamp})"[:200],
        kind=kind,
        items=ItemPlan(mode="list", stimuli=items),
        judgments_per_item=judgments_per_item,
        trials_per_session=min(len(items), 40),
        created_by=created_by,
    )
