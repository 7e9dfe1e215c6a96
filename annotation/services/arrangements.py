"""Multi-arrangement sessions (Kriegeskorte & Mur 2012): a participant drags stimuli into a
circular arena so that distances reflect dissimilarity. The first regular trial shows every
stimulus of the session; later trials show the subsets whose pairs have the least evidence
("lift the weakest"), until every pair has enough evidence or the time budget is spent.

Items and quotas. An item of a multi-arrangement study is one stimulus; its quota counts the
sessions that arrange it. A session claims its stimuli at consent (the items with room
locked in id order, then counted; ``_claim_least_arranged``) and holds them while it goes
on. Its ``session_state`` says how its items
count it; every change is one conditional UPDATE of the participant plus the items' counts
in the same transaction (``_move``):

    held     claimed at consent, in progress          assigned +1
    counted  completed and not excluded               assigned +1, answered +1
    released lapsed (no answer within the trial timeout), or excluded: counts nothing

A lapsed session continues if its stimuli all have room still (``session_resume``), else it
ends with what it has. Coordinates are in arena radii from the centre: inside means
x² + y² <= 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from annotation import caches
from annotation.models import (
    Item,
    Participant,
    ParticipantStatus,
    Response,
    Study,
    Trial,
    TrialRole,
)
from annotation.services.base import Answer, StudyFull, TrialProblem
from evaluation.engine.arrangement import (
    ArrangementError,
    estimate_dissimilarities,
    evidence_sufficient,
    next_subset,
    pair_evidence,
)

MIN_SESSION_ITEMS = 3  # fewer make no arrangement worth the name
PRACTICE_ITEMS = 4
CATCH_ITEMS = 4  # one stimulus twice, two others
# A catch trial is passed when the two copies lie closer than this share of the trial's RMS
# distance between the other pairs ("place identical items on top of each other").
CATCH_TOGETHER = 0.25
ARENA_TOLERANCE = 1e-6  # rounding in the browser: a point on the rim is inside
MAX_MOVES = 10**6  # per item and trial: more is not a person dragging (and not stored)
MIN_REPEATED_PAIRS = 5  # the consistency rule needs this many pairs placed twice
# "Items never moved". The page counts each drag (or keyboard move) that places an item,
# the drag into the arena included: 1 is an item dropped once and left there. Careful
# participants do drop some items right at once, above all in small later trials, but
# arranging a session means going back to some of them as the others arrive; a participant
# who just dumps items into the circle adjusts (almost) none. So the rule is on the whole
# session: flagged when fewer than this share of the items placed in its arrangements
# (practice aside) were moved again after being dropped in...
MIN_ADJUSTED_SHARE = 0.05
# ...once it placed at least this many (a short session says too little).
MIN_PLACED_FOR_ADJUSTMENT = 10

HELD, COUNTED, RELEASED = "held", "counted", "released"
# (assigned, answered) each item of the session adds in a state.
_COUNTS = {"": (0, 0), HELD: (1, 0), COUNTED: (1, 1), RELEASED: (0, 0)}


# --- Session states -------------------------------------------------------------------------
def session_claim(*, participant: Participant) -> None:
    """Claim the session's stimuli at consent: up to the study's arena maximum of those
    arranged by the fewest sessions (_claim_least_arranged). StudyFull if no stimulus has
    room, or the dataset has fewer than MIN_SESSION_ITEMS; the caller's transaction then
    undoes the claims."""
    study = participant.study
    claimed = _claim_least_arranged(study, study.arena_max_items)
    if len(claimed) < MIN_SESSION_ITEMS:
        raise StudyFull(
            "Every place in this study is taken at the moment: no stimulus still needs "
            "participants."
        )
    random.shuffle(claimed)
    participant.session_stimuli = claimed
    participant.session_state = HELD
    participant.reserved_until = _hold_until(study)
    Participant.objects.filter(pk=participant.pk).update(
        session_stimuli=claimed, session_state=HELD, reserved_until=participant.reserved_until
    )


def _claim_least_arranged(study: Study, wanted: int) -> list[int]:
    """Count one more session on up to ``wanted`` items with room, the least arranged first
    and ties drawn at random for each session (a fixed tie order would hand out the same
    disjoint blocks of stimuli again and again, and pairs across blocks would never be
    arranged); their stimulus ids. The items are locked first, in id order like every other
    multi-row change of them (_lock_session_items), so concurrent sessions wait for each
    other instead of deadlocking, and none is told the study is full while another merely
    holds its rows for a moment.

    When only one or two stimuli still have room they cannot make an arrangement alone, and
    the study could never finish: the least arranged of the full ones join them, each
    arranged once more than its quota asks."""
    with transaction.atomic():
        items = Item.objects.filter(study=study).order_by("pk")
        open_items = items.filter(assigned__lt=study.quota)
        if open_items.count() >= MIN_SESSION_ITEMS:
            items = open_items  # the usual case: lock only what may be claimed
        if connection.features.has_select_for_update:
            items = items.select_for_update()
        rows = list(items.values_list("pk", "a_id", "assigned"))
        tie_break = random.Random()
        rows.sort(key=lambda row: (row[2], tie_break.random()))
        with_room = [row for row in rows if row[2] < study.quota]
        if not with_room:
            return []
        chosen_rows = with_room[:wanted]
        if len(chosen_rows) < MIN_SESSION_ITEMS:
            full = [row for row in rows if row[2] >= study.quota]
            chosen_rows += full[: MIN_SESSION_ITEMS - len(chosen_rows)]
        chosen = dict(row[:2] for row in chosen_rows)
        Item.objects.filter(pk__in=chosen).update(assigned=F("assigned") + 1)
    return list(chosen.values())


def _lock_session_items(participant: Participant) -> Any:
    """The session's items, locked in id order: every multi-row change of them takes its
    locks in this one order, so two of them cannot deadlock."""
    items = Item.objects.filter(
        study_id=participant.study_id, a_id__in=participant.session_stimuli
    ).order_by("pk")
    if connection.features.has_select_for_update:
        list(items.select_for_update().values_list("pk", flat=True))
    return items


def _hold_until(study: Study) -> Any:
    """Until a session's first trial must have been opened (each trial then holds it)."""
    return timezone.now() + timedelta(seconds=study.trial_timeout_seconds)


def session_extend(*, participant: Participant, until: Any) -> None:
    """A trial was issued: the session is held until that trial's deadline."""
    participant.reserved_until = until
    Participant.objects.filter(pk=participant.pk).update(reserved_until=until)


def _move(participant: Participant, source: str, target: str, **only_if: Any) -> bool:
    """Move the session from state ``source`` to ``target``, changing its items' counts by
    the difference; False (nothing changed) if it was not in ``source`` (or the participant
    does not meet ``only_if``, more filters of the same conditional UPDATE)."""
    assigned = _COUNTS[target][0] - _COUNTS[source][0]
    answered = _COUNTS[target][1] - _COUNTS[source][1]
    with transaction.atomic():
        moved = Participant.objects.filter(
            pk=participant.pk, session_state=source, **only_if
        ).update(session_state=target)
        if moved and participant.session_stimuli and (assigned or answered):
            _lock_session_items(participant).update(
                assigned=F("assigned") + assigned, answered=F("answered") + answered
            )
    if moved:
        participant.session_state = target
    return bool(moved)


def session_finish(*, participant: Participant, excluded: bool) -> None:
    """The session ended: its items count it as an answer, or (excluded) not at all.

    A session that lapsed and could not go on (its stimuli taken meanwhile) ends released
    with what it has. If it has arrangements, aggregation uses its estimate, so its items
    count it too: over their quota where other sessions took the places meanwhile (as when
    a researcher includes an excluded participant again), but never uncounted. Without
    arrangements it stays released: it gave nothing to count."""
    if _move(participant, HELD, RELEASED if excluded else COUNTED) or excluded:
        return
    if _has_arrangements(participant):
        _move(participant, RELEASED, COUNTED)


def session_release(*, participant: Participant) -> bool:
    """Excluded by the researcher, or lapsed: the session's items stop counting it."""
    return _move(participant, HELD, RELEASED) or _move(participant, COUNTED, RELEASED)


def session_count_again(*, participant: Participant) -> bool:
    """Included again by the researcher: the session counts as answered (its items may then
    hold more sessions than their quota, as for the other kinds); a session without any
    arrangement gave nothing to count, and stays released."""
    return _has_arrangements(participant) and _move(participant, RELEASED, COUNTED)


def _has_arrangements(participant: Participant) -> bool:
    return Response.objects.filter(
        trial__participant=participant, trial__role=TrialRole.REGULAR
    ).exists()


def session_resume(*, participant: Participant) -> bool:
    """A lapsed session continues only if every one of its stimuli has room still (all
    claimed again, or none); False ends it."""
    # Read again: the expiry sweep of this very request may have released it meanwhile.
    participant.refresh_from_db(fields=["session_state"])
    if participant.session_state != RELEASED:
        return participant.session_state == HELD
    study = participant.study
    with transaction.atomic():
        resumed = Participant.objects.filter(
            pk=participant.pk, session_state=RELEASED, status=ParticipantStatus.CONSENTED
        ).update(session_state=HELD, reserved_until=_hold_until(study))
        if not resumed:  # resumed by a concurrent request, or ended (excluded) meanwhile
            participant.refresh_from_db(fields=["session_state", "status"])
            return (
                participant.session_state == HELD
                and participant.status == ParticipantStatus.CONSENTED
            )
        claimed = (
            _lock_session_items(participant)
            .filter(assigned__lt=study.quota)
            .update(assigned=F("assigned") + 1)
        )
        if claimed != len(set(participant.session_stimuli)):
            transaction.set_rollback(True)
            return False
    participant.session_state = HELD
    return True


def sessions_lapse(*, study: Study) -> int:
    """Release the sessions whose last trial passed its deadline unanswered (or that never
    opened one: each issued trial moves ``reserved_until`` to its own deadline); how many."""
    now = timezone.now()
    still_lapsed = {"status": ParticipantStatus.CONSENTED, "reserved_until__lt": now}
    lapsed = Participant.objects.filter(study=study, session_state=HELD, **still_lapsed)
    # The conditions again in each move: a session that ended or went on meanwhile stays.
    return sum(_move(p, HELD, RELEASED, **still_lapsed) for p in lapsed)


# --- Trials ---------------------------------------------------------------------------------
def session_roles(study: Study, rng: random.Random) -> list[str]:
    """Practice, then the first (full) arrangement, then catch trials among the next few
    regular ones: later regular trials run only while evidence is short, so a catch trial
    placed late might never be shown."""
    regular = study.trials_per_session - study.catch_trials
    early = [TrialRole.CATCH] * study.catch_trials + [TrialRole.REGULAR] * min(
        regular - 1, study.catch_trials
    )
    rng.shuffle(early)
    late = [TrialRole.REGULAR] * (regular - 1 - min(regular - 1, study.catch_trials))
    roles = [TrialRole.PRACTICE] * study.practice_trials + [TrialRole.REGULAR, *early, *late]
    return [str(role) for role in roles]


def trial_stimuli(
    participant: Participant, role: str, rng: random.Random
) -> tuple[list[int], Any] | None:
    """What the next trial shows (stimulus ids, in order) and, for a catch trial, the
    expected answer; None when the session has no further regular trial (enough evidence,
    or the time budget spent)."""
    study = participant.study
    if role == TrialRole.PRACTICE:
        return _random_stimuli(study, PRACTICE_ITEMS, rng), None
    if role == TrialRole.CATCH:
        one, *others = _random_stimuli(study, CATCH_ITEMS - 1, rng)
        shown = [one, one, *others]
        rng.shuffle(shown)
        together = [i for i, s in enumerate(shown) if s == one]
        return shown, {"together": together}
    stimuli = list(participant.session_stimuli)
    placed = session_arrangements(participant)
    if not placed:
        rng.shuffle(stimuli)
        return stimuli, None
    elapsed = (timezone.now() - participant.started_at).total_seconds()
    if elapsed >= study.session_seconds:
        return None
    evidence = pair_evidence(len(stimuli), placed)
    if evidence_sufficient(evidence, study.evidence_threshold):
        return None
    subset = next_subset(
        evidence, max_items=subset_size(len(stimuli)), threshold=study.evidence_threshold
    )
    shown = [stimuli[i] for i in subset]
    rng.shuffle(shown)
    return shown, None


def subset_size(session_items: int) -> int:
    """The most items of a later trial: half the session (at least 3). Smaller subsets let a
    participant spread similar items over the whole arena; the paper's effort model makes the
    same trade."""
    return min(session_items, max(MIN_SESSION_ITEMS, math.ceil(session_items / 2)))


def _random_stimuli(study: Study, count: int, rng: random.Random) -> list[int]:
    ids = list(study.dataset.stimuli.values_list("pk", flat=True)[:5000])
    return rng.sample(ids, min(count, len(ids)))


def session_arrangements(participant: Participant) -> list[tuple[list[int], np.ndarray]]:
    """The session's answered regular trials as (indices into session_stimuli, positions)."""
    return _arrangements(participant, _answered(participant))


def _answered(participant: Participant) -> list[tuple[int, list[int], Any]]:
    """The session's regular responses in trial order: (id, stimuli shown, placements)."""
    answered = Response.objects.filter(
        trial__participant=participant, trial__role=TrialRole.REGULAR
    ).values_list("pk", "trial__shown", "arrangement")
    return list(answered.order_by("trial__position"))


def _arrangements(
    participant: Participant, answered: list[tuple[int, list[int], Any]]
) -> list[tuple[list[int], np.ndarray]]:
    index = {s: i for i, s in enumerate(participant.session_stimuli)}
    return [
        ([index[s] for s in shown], np.array([p[:2] for p in placed or []], dtype=np.float64))
        for _, shown, placed in answered
    ]


# --- Answers --------------------------------------------------------------------------------
def check_placements(trial: Trial, answer: Answer) -> None:
    """Every shown stimulus once, in the trial's order, at a finite point inside the arena;
    not all on one spot. TrialProblem says what is wrong; nothing is stored."""
    placements = answer.placements
    if not placements:
        raise TrialProblem("Drag every item into the circle, then press Done.")
    if [p.stimulus for p in placements] != list(trial.shown):
        if len(placements) != len(trial.shown):
            raise TrialProblem(
                f"This trial shows {len(trial.shown)} items; positions came for "
                f"{len(placements)}. Place every item in the circle."
            )
        raise TrialProblem("The positions are not for the items this trial showed.")
    for number, placement in enumerate(placements, start=1):
        if not (math.isfinite(placement.x) and math.isfinite(placement.y)):
            raise TrialProblem(f"Item {number} has no valid position.")
        if math.hypot(placement.x, placement.y) > 1 + ARENA_TOLERANCE:
            raise TrialProblem(f"Item {number} lies outside the circle: drag it inside.")
        if placement.moves < 0:
            raise TrialProblem(f"Item {number} has a negative count of moves.")
        if placement.moves > MAX_MOVES:
            raise TrialProblem(
                f"Item {number} has an implausible count of moves (more than {MAX_MOVES:,})."
            )
    points = np.array([(p.x, p.y) for p in placements])
    if np.ptp(points, axis=0).max() < 1e-3:
        raise TrialProblem("The items all lie on one spot: arrange them by how alike they are.")


def stored_arrangement(answer: Answer) -> list[list[float]]:
    return [[p.x, p.y, p.moves] for p in answer.placements]


def arrangement_flags(trial: Trial, answer: Answer) -> list[str]:
    """The flags of an arrangement, beside the response-time floor that every kind gets
    (services.trials; for arrangements it is per item shown). "no item adjusted" marks an
    answer where every item was dropped once and left there: common in a small careful
    trial, so it only informs; the "items never moved" rule judges the whole session
    (adjustment_problem)."""
    flags = []
    if all(p.moves <= 1 for p in answer.placements):
        flags.append("no item adjusted")
    if trial.role == TrialRole.CATCH and trial.expected and not _catch_passed(trial, answer):
        flags.append("failed catch")
    return flags


def _catch_passed(trial: Trial, answer: Answer) -> bool:
    assert trial.expected is not None  # a catch trial's copies, set when it was issued
    first, second = trial.expected["together"]
    points = np.array([(p.x, p.y) for p in answer.placements])
    apart = float(np.linalg.norm(points[first] - points[second]))
    others = [
        float(np.linalg.norm(points[i] - points[j]))
        for i in range(len(points))
        for j in range(i + 1, len(points))
        if {i, j} != {first, second}
    ]
    rms = math.sqrt(sum(d * d for d in others) / len(others))
    return apart < CATCH_TOGETHER * rms


# --- Quality and estimates ------------------------------------------------------------------
def adjustment_problem(responses: Sequence[Response]) -> str | None:
    """The "items never moved" rule (MIN_ADJUSTED_SHARE) over a session's responses
    (practice aside): a reason if (almost) no item was moved after being dropped in."""
    moves = [p[2] for r in responses if r.arrangement for p in r.arrangement]
    if len(moves) < MIN_PLACED_FOR_ADJUSTMENT:
        return None
    adjusted = sum(m > 1 for m in moves)
    if adjusted >= MIN_ADJUSTED_SHARE * len(moves):
        return None
    return (
        f"items never moved after being dropped in: {adjusted} of {len(moves)} placed items "
        f"adjusted (fewer than {MIN_ADJUSTED_SHARE:.0%})"
    )


def consistency_problem(participant: Participant) -> str | None:
    """Each later trial's distances against the same pairs' distances in the first regular
    trial (which shows every pair): their correlation within the trial (so each trial's own
    scale does not matter), averaged over trials weighted by their pairs. A participant whose
    arrangements disagree with their own first one is placing at random."""
    arranged = session_arrangements(participant)
    if len(arranged) < 2:
        return None
    first_items, first_positions = arranged[0]
    reference = _distances(first_items, first_positions)
    weighted, pairs = 0.0, 0
    for items, positions in arranged[1:]:
        later = _distances(items, positions)
        common = sorted(set(later) & set(reference))
        if len(common) < 3:
            continue
        before = np.array([reference[pair] for pair in common])
        now = np.array([later[pair] for pair in common])
        if np.std(before) == 0 or np.std(now) == 0:
            continue
        weighted += float(np.corrcoef(before, now)[0, 1]) * len(common)
        pairs += len(common)
    if pairs < MIN_REPEATED_PAIRS:
        return None
    r = weighted / pairs
    threshold = participant.study.min_pair_consistency
    if r < threshold:
        return f"pairs placed twice correlate at r = {r:.3f} between trials (below {threshold:g})"
    return None


def _distances(items: list[int], positions: np.ndarray) -> dict[tuple[int, int], float]:
    """On-screen distance of each pair of a trial, by its items' session indices."""
    return {
        (min(items[i], items[j]), max(items[i], items[j])): float(
            np.linalg.norm(positions[i] - positions[j])
        )
        for i in range(len(items))
        for j in range(i + 1, len(items))
    }


@dataclass(frozen=True)
class SessionEstimate:
    """A participant's dissimilarity estimate over their session's stimuli (RMS 1)."""

    participant: Participant
    stimuli: list[int]
    dissimilarities: np.ndarray
    evidence: np.ndarray


# Estimates are at RMS 1: a change below 1e-6 is far below any meaningful precision, and
# it keeps a slowly converging session well inside the iteration cap (simulated sessions of
# 3 to 40 items took at most about 200 iterations at the engine's own 1e-9).
ESTIMATE_TOLERANCE = 1e-6
ESTIMATE_MAX_ITERATIONS = 10_000


def session_estimate(participant: Participant) -> SessionEstimate | None:
    """The inverse-MDS estimate of the session (None before its first regular trial).
    Raises TrialProblem, naming the participant, if it cannot be computed (answers are
    checked when stored, so this takes rows written by other means)."""
    answered = _answered(participant)
    if not answered:
        return None
    key = (participant.pk, tuple(pk for pk, _, _ in answered))
    estimate = caches.SESSION_ESTIMATES.get(key)
    if estimate is None:
        try:
            estimate = estimate_dissimilarities(
                len(participant.session_stimuli),
                _arrangements(participant, answered),
                tolerance=ESTIMATE_TOLERANCE,
                max_iterations=ESTIMATE_MAX_ITERATIONS,
            )
        except ArrangementError as exc:
            raise TrialProblem(
                f"The arrangements of participant {participant} give no estimate: {exc} "
                "Exclude them to use the others."
            ) from exc
        if len(caches.SESSION_ESTIMATES) >= caches.SESSION_ESTIMATES_MAX:
            caches.SESSION_ESTIMATES.clear()
        caches.SESSION_ESTIMATES[key] = estimate
    return SessionEstimate(
        participant, list(participant.session_stimuli), estimate.dissimilarities, estimate.evidence
    )


def study_estimates(participants: Sequence[Participant]) -> list[SessionEstimate]:
    return [e for e in map(session_estimate, participants) if e is not None]
