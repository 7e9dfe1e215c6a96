"""A pilot's report: what its bots found, built from the database once they are done and
before annotation/services/pilots.py takes their counts out of the study; and the texts the
pilot panel and ``simulate_study`` show beside it.

The reliability curve comes from bots answering from one model with the noise the pilot
sets: it checks the design and the pipeline and bounds recruitment from below; it is not
what people will give (``pilot_caveat`` says so wherever it is shown).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from django.db.models import Count, Q

from annotation import simulation
from annotation.models import (
    Participant,
    ParticipantStatus,
    Pilot,
    Response,
    Study,
    StudyKind,
    Tag,
    Trial,
    TrialRole,
    TrialStatus,
)
from annotation.services.aggregation import RESPONSE_ROW_FIELDS, arrangement_rows
from annotation.services.arrangements import COUNTED, HELD, session_arrangements
from evaluation.engine.arrangement import ArrangementError, evidence_sufficient, pair_evidence
from evaluation.engine.metrics.human import leave_one_out_agreement, split_half_reliability

RELIABILITY_POINTS = 10  # participant counts on the reliability curve
RELIABILITY_DRAWS = 20  # random subsets per count
RELIABILITY_SPLITS = 10  # split-halves per subset (the curve averages over draws as well)
SHOWN_ITEMS = 20  # item ids listed where a check fails
# The flag a session gets when its pilot ends before it did (pilots._take_out); quality
# rules leave it out. Here rather than there, since pilots imports this module.
UNFINISHED = "the pilot ended before this simulated session finished"

# The settings an honest bot of each kind of study answers with (beside the lapse rate, which
# every kind has): the others do nothing there, so forms and reports leave them out.
NOISE_OPTIONS: dict[str, tuple[str, ...]] = {
    StudyKind.PAIRS: ("rating_noise",),
    StudyKind.TRIPLETS: ("temperature",),
    StudyKind.TWO_AFC: ("temperature",),
    StudyKind.ARRANGEMENT: ("placement_noise",),
    StudyKind.TAGS: (),
}
NOISE_LABELS = {
    "rating_noise": "rating noise (SD)",
    "temperature": "choice temperature",
    "placement_noise": "placement noise",
    "lapse_rate": "lapse rate",
}

RULES = (  # what each quality-control reason (quality.quality_problems) is about
    ("catch", "catch trials"),
    ("faster than", "too fast"),
    ("repeated", "test-retest"),
    ("never moved", "items never moved"),
    ("placed twice", "arrangement consistency"),
)


# --- The report -----------------------------------------------------------------------------
def answer_settings(kind: str, options: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The settings the honest bots of this kind of study answered with, labelled: the
    noise of its kind (ratings: rating noise; choices: temperature; arrangements: placement
    noise; tags: none) and the lapse rate."""
    names = (*NOISE_OPTIONS.get(kind, ()), "lapse_rate")
    return [(NOISE_LABELS[name], options[name]) for name in names if name in options]


def settings_text(kind: str, options: Mapping[str, Any]) -> str:
    return ", ".join(f"{label} {value:g}" for label, value in answer_settings(kind, options))


def bot_trials_text(bot: Mapping[str, Any], kind: str) -> str:
    """A bot's regular trials: of those planned; for multi-arrangement, where a session
    ends as soon as its pairs have enough evidence, how many and why the session ended
    (shown under a heading that says "ended on")."""
    if kind != StudyKind.ARRANGEMENT:
        return f"{bot['regular']}/{bot['planned_regular']}"
    ended_on = bot.get("ended_on")
    return f"{bot['regular']} ({ended_on})" if ended_on else str(bot["regular"])


def pilot_caveat(pilot: Pilot) -> str:
    """What a pilot's reliability curve is and is not, in plain words (panel and command)."""
    model = pilot.model.name if pilot.model else "a deleted model"
    return (
        f"These bots answer from one model ({model}) with the noise this pilot set "
        f"({settings_text(pilot.study.kind, pilot.options)}): the curve reflects these "
        "settings, not people. Real participants disagree more, so real reliability is "
        "usually lower. Use the pilot to check the design and the pipeline, and its "
        "participant counts as an optimistic lower bound for recruitment."
    )


def pilot_report(
    pilot: Pilot,
    results: Sequence[simulation.BotResult],
    *,
    tick: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """What the pilot found, from the database after its bots are done (and before its
    counts are taken out): each bot's persona against what quality control decided, how
    assignment and quotas behaved, reliability against the number of participants.
    ``tick`` is called now and then (the runner saying it is alive: a large pilot's
    reliability curve takes a while)."""
    study = pilot.study
    tokens = [r.participant for r in results if r.participant]
    participants = {
        p.token: p
        for p in Participant.objects.filter(pilot=pilot, token__in=tokens).annotate(
            regular=Count(
                "trials",
                filter=Q(trials__role=TrialRole.REGULAR, trials__status=TrialStatus.ANSWERED),
            ),
            answered_trials=Count("trials", filter=Q(trials__status=TrialStatus.ANSWERED)),
        )
    }
    bots = [_bot_row(study, result, participants.get(result.participant)) for result in results]
    return {
        **pilot.report,
        "kind": study.kind,
        "model": pilot.model.name if pilot.model else "",
        "layer": pilot.options.get("layer", ""),
        "bots": bots,
        "sessions": _sessions(study, bots),
        "quality": _quality(study, bots),
        "assignment": _assignment(pilot, bots),
        "reliability": _reliability(pilot, bots, tick or (lambda: None)),
        "tags": _tags_found(pilot) if study.kind == StudyKind.TAGS else None,
        "requests": sum(r.requests for r in results),
    }


def _bot_row(
    study: Study, result: simulation.BotResult, participant: Participant | None
) -> dict[str, Any]:
    planned = sum(role == TrialRole.REGULAR for role in participant.plan) if participant else 0
    regular = getattr(participant, "regular", 0)
    return {
        "number": result.number,
        "persona": result.persona,
        "participant": participant.pk if participant else None,
        "status": participant.status if participant else "",
        "flags": list(participant.flags) if participant else [],
        "answered": result.answered,
        "regular": regular,
        "planned_regular": planned,
        "ended_on": (
            _ended_on(study, participant, regular, planned)
            if study.is_arrangement and participant
            else ""
        ),
        "practice": result.practice,
        "catch_trials": result.catch_trials,
        "lapses": result.lapses,
        "finished": result.finished,
        "refused": result.refused,
        "error": result.error,
        "problems": result.problems[:5],
    }


def _ended_on(study: Study, participant: Participant, regular: int, planned: int) -> str:
    """Why a multi-arrangement session stopped giving trials: its pairs had enough evidence
    ("evidence"), its time budget was spent ("time"), or it ran every trial it had
    ("plan"); "" for a session that did not end on its own."""
    if participant.status not in (ParticipantStatus.COMPLETED, ParticipantStatus.EXCLUDED):
        return ""
    if regular >= planned:
        return "plan"
    placed = session_arrangements(participant)
    try:
        evidence = pair_evidence(len(participant.session_stimuli), placed)
    except ArrangementError:
        return "time"
    return "evidence" if evidence_sufficient(evidence, study.evidence_threshold) else "time"


def _sessions(study: Study, bots: list[dict[str, Any]]) -> dict[str, Any]:
    started = [b for b in bots if b["participant"] is not None]
    statuses = Counter(b["status"] for b in started)
    ended_early = (
        []
        if study.is_arrangement or study.is_adaptive_tags
        else [
            b["number"]
            for b in started
            if b["status"] in (ParticipantStatus.COMPLETED, ParticipantStatus.EXCLUDED)
            and b["regular"] < b["planned_regular"]
        ]
    )
    regular = [b["regular"] for b in started]
    return {
        "bots": len(bots),
        "started": len(started),
        "refused": [{"bot": b["number"], "why": b["refused"]} for b in bots if b["refused"]],
        "errors": [{"bot": b["number"], "error": b["error"]} for b in bots if b["error"]],
        "completed": statuses.get(ParticipantStatus.COMPLETED, 0),
        "excluded": statuses.get(ParticipantStatus.EXCLUDED, 0),
        "unfinished": statuses.get(ParticipantStatus.CONSENTED, 0),
        "ended_early": ended_early,
        "regular_trials": _spread(regular),
        "ended_on": dict(Counter(b["ended_on"] for b in started if b.get("ended_on"))),
    }


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": float(min(values)),
        "mean": round(float(np.mean(values)), 2),
        "max": float(max(values)),
    }


def rule_of(reason: str) -> str:
    """Which quality rule a reason (quality.quality_problems) comes from."""
    return next((rule for key, rule in RULES if key in reason), "other")


def _quality(study: Study, bots: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rule and whom it caught; each persona and how many of them were excluded."""
    started = [b for b in bots if b["participant"] is not None]
    fired: dict[str, dict[str, Any]] = {}
    for bot in started:
        for reason in bot["flags"]:
            if reason == UNFINISHED:
                continue
            entry = fired.setdefault(rule_of(reason), {"bots": [], "personas": Counter()})
            entry["bots"].append(bot["number"])
            entry["personas"][bot["persona"]] += 1
    personas: dict[str, dict[str, Any]] = {}
    for persona in simulation.PERSONAS:
        mine = [b for b in started if b["persona"] == persona]
        if not mine and persona != simulation.HONEST:
            continue
        excluded = [b["number"] for b in mine if b["status"] == ParticipantStatus.EXCLUDED]
        flagged = [b["number"] for b in mine if b["flags"]]
        personas[persona] = {
            "label": simulation.PERSONA_LABELS[persona],
            "sessions": len(mine),
            "excluded": excluded,
            "flagged": flagged,
        }
    planted = [b for b in started if b["persona"] != simulation.HONEST]
    caught = [b for b in planted if b["status"] == ParticipantStatus.EXCLUDED]
    honest = personas[simulation.HONEST]
    return {
        "rules": {rule: {**e, "personas": dict(e["personas"])} for rule, e in fired.items()},
        "personas": personas,
        "planted": {"sessions": len(planted), "excluded": len(caught)},
        "honest": {"sessions": honest["sessions"], "excluded": len(honest["excluded"])},
        "exclude_on_failure": study.exclude_on_failure,
        "notes": _quality_notes(study, bots),
    }


def _quality_notes(study: Study, bots: list[dict[str, Any]]) -> list[str]:
    """What the design cannot catch, said plainly."""
    personas = {b["persona"] for b in bots}
    notes = []
    if simulation.CATCH_FAILER in personas and not study.catch_trials:
        notes.append(
            "The design has no catch trials: inattentive participants are caught only if "
            "another rule happens to fire."
        )
    if simulation.SPEEDER in personas and not study.min_response_ms:
        notes.append(
            "The design sets no minimum response time: speeders are not flagged as too fast."
        )
    if not study.exclude_on_failure:
        notes.append("The design flags rule breakers but does not exclude them.")
    return notes


def _assignment(pilot: Pilot, bots: list[dict[str, Any]]) -> dict[str, Any]:
    """Did assignment behave: per-item counts of the pilot's kept answers, items over their
    quota (multi-arrangement: more than one session over; those one over, arranged with the
    last stimuli that had room, are counted apart), an item answered twice by one participant, holdings left after every session
    ended, and whether the items' counters agree with the responses."""
    study = pilot.study
    items = dict(study.items.values_list("pk", "answered"))
    quota = study.quota
    per_item = _pilot_answers_per_item(pilot)
    # Multi-arrangement: the last one or two stimuli with room are arranged together with
    # full ones (arrangements._claim_least_arranged), which get one session over their quota.
    allowed = quota + 1 if study.is_arrangement else quota
    over_quota = sorted(pk for pk, answered in items.items() if answered > allowed)
    topped_up = sum(answered > quota for answered in items.values()) - len(over_quota)
    histogram = Counter(per_item.get(pk, 0) for pk in items)
    duplicates = (
        Trial.objects.filter(
            participant__pilot=pilot,
            role=TrialRole.REGULAR,
            status=TrialStatus.ANSWERED,
            item__isnull=False,  # multi-arrangement trials show a session's stimuli
        )
        .values("participant_id", "item_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    return {
        "items": len(items),
        "quota": quota,
        "per_item": _spread([per_item.get(pk, 0) for pk in items]),
        "histogram": sorted(histogram.items()),
        "complete_items": sum(answered >= quota for answered in items.values()),
        "over_quota": len(over_quota),
        "over_quota_items": over_quota[:SHOWN_ITEMS],
        "topped_up": topped_up,
        "duplicates": duplicates,
        "holdings_left": _holdings_left(pilot),
        "counters_mismatched": _counters_mismatched(study)[:SHOWN_ITEMS],
    }


def _pilot_answers_per_item(pilot: Pilot) -> dict[int, int]:
    """Kept answers per item: regular answers of the pilot's bots that were not excluded
    (multi-arrangement: sessions counted on each stimulus' item)."""
    study = pilot.study
    if study.is_arrangement:
        counts: Counter[int] = Counter()
        sessions = pilot.participants.filter(session_state=COUNTED)
        for stimuli in sessions.values_list("session_stimuli", flat=True):
            counts.update(set(stimuli))
        item_of = dict(study.items.values_list("a_id", "pk"))
        return {item_of[s]: n for s, n in counts.items() if s in item_of}
    answers = Response.objects.filter(
        trial__participant__pilot=pilot, trial__role=TrialRole.REGULAR
    )
    if not study.is_adaptive_tags:  # chains count excluded answers too
        answers = answers.exclude(trial__participant__status=ParticipantStatus.EXCLUDED)
    rows = answers.values("trial__item_id").annotate(n=Count("pk"))
    return {row["trial__item_id"]: row["n"] for row in rows}


def _holdings_left(pilot: Pilot) -> int:
    """Trials, reservations and arrangement sessions the pilot's ended sessions still hold
    (each should give its holdings back when it ends)."""
    ended = pilot.participants.exclude(status=ParticipantStatus.CONSENTED)
    trials = Trial.objects.filter(participant__in=ended, status=TrialStatus.ISSUED).count()
    reserved = ended.filter(reserved_item__isnull=False).count()
    held = ended.filter(session_state=HELD).count()
    return trials + reserved + held


def _counters_mismatched(study: Study) -> list[int]:
    """Items whose ``answered`` counter differs from the responses that should count on it
    (all participants, real and simulated; multi-arrangement: counted sessions)."""
    items = dict(study.items.values_list("pk", "answered"))
    if study.is_arrangement:
        expected: Counter[int] = Counter()
        item_of = dict(study.items.values_list("a_id", "pk"))
        sessions = study.participants.filter(session_state=COUNTED)
        for stimuli in sessions.values_list("session_stimuli", flat=True):
            expected.update(item_of[s] for s in set(stimuli) if s in item_of)
    else:
        answers = Response.objects.filter(
            trial__participant__study=study, trial__role=TrialRole.REGULAR
        )
        if not study.is_adaptive_tags:
            answers = answers.exclude(trial__participant__status=ParticipantStatus.EXCLUDED)
        rows = answers.values("trial__item_id").annotate(n=Count("pk"))
        expected = Counter({row["trial__item_id"]: row["n"] for row in rows})
    return sorted(pk for pk, answered in items.items() if answered != expected.get(pk, 0))


def _tags_found(pilot: Pilot) -> dict[str, Any]:
    """What the bots' tags came to (counted before they are taken out of the study)."""
    added = Tag.objects.filter(added_in__participant__pilot=pilot)
    rows = added.values("status").annotate(n=Count("pk"))
    statuses = {row["status"]: row["n"] for row in rows}
    chains = pilot.study.items.filter(completed=True).count()
    common = added.values("text").annotate(n=Count("pk")).order_by("-n", "text")[:SHOWN_ITEMS]
    return {
        "added": sum(statuses.values()),
        "by_status": statuses,
        "chains_completed": chains,
        "common": [[row["text"], row["n"]] for row in common],  # on how many stimuli
    }


# --- Reliability against the number of participants -----------------------------------------
def recruit_advice(needed: dict[str, Any], bots: Sequence[Mapping[str, Any]]) -> None:
    """How many to recruit for ``needed["participants"]`` kept ones, into ``needed``: for the
    share of honest bots that quality control kept (its false positives). The planted bots
    test the rules; how many of them a pilot has is the researcher's choice, not a forecast
    of how many people will cheat, so they are left out of the share."""
    honest = [b for b in bots if b["persona"] == simulation.HONEST and b["participant"] is not None]
    honest_kept = sum(b["status"] == ParticipantStatus.COMPLETED for b in honest)
    if needed.get("participants") and honest_kept:
        needed["kept_share"] = round(honest_kept / len(honest), 3)
        needed["kept_share_of"] = "honest"
        needed["recruit"] = math.ceil(needed["participants"] * len(honest) / honest_kept)


def recruit_text(needed: dict[str, Any]) -> str:
    """How many to recruit, and what that rests on; '' when the report does not say."""
    if not needed.get("recruit"):
        return ""
    if needed.get("kept_share_of") == "honest":
        return (
            f"Recruit about {needed['recruit']}: quality control kept "
            f"{needed['kept_share']:.0%} of this pilot's honest participants (its false "
            "positives; the planted ones are left out, and real people who cheat would "
            "need more)."
        )
    # Reports from before: the share of every participant, planted ones included.
    return (
        f"Recruit about {needed['recruit']}: {needed['kept_share']:.0%} of this pilot's "
        "participants were kept."
    )


def _reliability(
    pilot: Pilot, bots: list[dict[str, Any]], tick: Callable[[], object]
) -> dict[str, Any] | None:
    """The study's reliability measure on random subsets of n kept bots, n from 2 up to all
    of them: how reliability grows with the number of participants; and how many it takes
    to reach the pilot's target."""
    study = pilot.study
    target = float(pilot.options.get("target", 0.8))
    kept = [b["participant"] for b in bots if b["status"] == ParticipantStatus.COMPLETED]
    if study.kind == StudyKind.TAGS:
        return None
    tick()
    measure = _Measure(study, kept)
    rng = np.random.default_rng(pilot.options.get("seed") or 0)
    curve = []
    for n in _sizes(len(kept)):
        tick()
        curve.append(_point(measure, kept, n, rng))
    needed = _needed(study, curve, target, measure.spearman_brown)
    recruit_advice(needed, bots)
    reached = next((p for p in curve if p["participants"] == needed.get("reached_at")), None)
    if reached is not None:  # how thin the data were where the target was reached
        needed["judged_twice"] = reached["judged_twice"]
    once, twice = measure.coverage(kept)
    return {
        "method": measure.method,
        "kept": len(kept),
        "curve": curve,
        "needed": needed,
        "coverage": {"unit": measure.unit, "total": measure.total, "once": once, "twice": twice},
        "caveat": pilot_caveat(pilot),
    }


def _point(measure: _Measure, kept: list[int], n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Reliability of random subsets of n kept participants (every one of them: one subset),
    and how many items (pairs) those subsets judged at least once and at least twice."""
    draws = 1 if n == len(kept) else RELIABILITY_DRAWS
    values, covered = [], []
    for draw in range(draws):
        subset = [int(p) for p in rng.choice(kept, size=n, replace=False)]
        covered.append(measure.coverage(subset))
        value = measure.score(subset, draw)
        if value is not None:
            values.append(value)
    # A mean over a few lucky subsets would overstate what n participants give.
    enough = len(values) >= max(1, draws // 2)
    reason = "" if enough else measure.reason
    if values and not enough:
        reason = f"only {len(values)} of {draws} random subsets gave a value"
        reason += f" (the others: {measure.reason.rstrip('.')})" if measure.reason else ""
    return {
        "participants": n,
        "mean": round(float(np.mean(values)), 4) if enough else None,
        "sd": round(float(np.std(values)), 4) if enough and len(values) > 1 else None,
        "draws": draws,
        "usable": len(values),
        "judgments_per_item": round(measure.per_item(n), 2),
        "judged_once": round(float(np.mean([c[0] for c in covered])), 1),
        "judged_twice": round(float(np.mean([c[1] for c in covered])), 1),
        "reason": reason,
    }


class _Measure:
    """The study's reliability measure over the responses of a subset of participants (the
    same functions the study page uses: selectors.study_reliability)."""

    def __init__(self, study: Study, kept: list[int]) -> None:
        self.study = study
        self.spearman_brown = not study.is_choice
        self.reason = ""  # why the last subset gave no value
        self.rows: list[tuple[Any, ...]] = []
        if study.is_arrangement:
            self.method = "split-half, Spearman-Brown (estimated dissimilarities)"
            participants = Participant.objects.filter(pk__in=kept)
            for row in arrangement_rows(study, participants):
                who = int(row.participant.removeprefix("p"))
                self.rows.append((row.stimuli[0], row.stimuli[1], float(row.value or 0), who))
        else:
            self.method = (
                "leave-one-out majority agreement"
                if study.is_choice
                else "split-half, Spearman-Brown"
            )
            responses = Response.objects.filter(
                trial__participant_id__in=kept, trial__role=TrialRole.REGULAR
            ).values_list(*RESPONSE_ROW_FIELDS)
            for a, b, c, value, chosen, who in responses:
                self.rows.append((a, b, c, value if value is not None else chosen, who))
        self.who = np.array([row[-1] for row in self.rows])
        self._items = {row[:-2] for row in self.rows}  # pairs, triplets, 2AFC trials
        # What coverage counts: each row's item (multi-arrangement: its stimulus pair),
        # out of the study's items (every pair of the study's stimuli).
        keys = [tuple(sorted(row[:2])) if study.is_arrangement else row[:-2] for row in self.rows]
        index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        self._keys = np.array([index[key] for key in keys], dtype=np.int64)
        items = study.items.count()
        self.unit = "stimulus pairs" if study.is_arrangement else "items"
        self.total = items * (items - 1) // 2 if study.is_arrangement else items

    def coverage(self, subset: Sequence[int]) -> tuple[int, int]:
        """How many items (pairs) the subset's participants judged at least once and at
        least twice (a participant judges an item, or arranges a pair, once at most)."""
        keys = self._keys[np.isin(self.who, list(subset))]
        counts = np.bincount(keys) if len(keys) else np.zeros(0, dtype=np.int64)
        return int((counts >= 1).sum()), int((counts >= 2).sum())

    def per_item(self, n: int) -> float:
        """Judgments per item (pair) that n participants give, on average."""
        participants = len(set(self.who.tolist())) or 1
        items = len(self._items) or 1
        return len(self.rows) * n / participants / items

    def score(self, subset: list[int], draw: int) -> float | None:
        chosen = np.isin(self.who, subset)
        rows = [row for row, keep in zip(self.rows, chosen, strict=True) if keep]
        if not rows:
            self.reason = "these participants gave no regular answers"
            return None
        if self.study.is_choice:
            keys = np.array([row[:3] for row in rows])
            agreement = leave_one_out_agreement(keys, np.array([row[3] for row in rows]))
            if agreement is None:
                self.reason = "no item was answered twice"
                return None
            return float(agreement["mean"])
        a, b = [row[0] for row in rows], [row[1] for row in rows]
        values = [float(row[-2]) for row in rows]
        who = [str(row[-1]) for row in rows]
        result = split_half_reliability(a, b, values, who, n_splits=RELIABILITY_SPLITS, seed=draw)
        mean = result.get("mean")
        if mean is None:
            self.reason = str(result.get("reason", ""))
            return None
        return float(mean)


def _sizes(kept: int) -> list[int]:
    """Participant counts on the curve: from 2 to all, at most RELIABILITY_POINTS."""
    if kept < 2:
        return []
    return sorted({round(n) for n in np.linspace(2, kept, min(kept - 1, RELIABILITY_POINTS))})


def _needed(
    study: Study, curve: list[dict[str, Any]], target: float, spearman_brown: bool
) -> dict[str, Any]:
    """How many participants reach ``target``: the first count on the curve that does; else,
    for reliabilities, the Spearman-Brown prophecy from the largest count with a value
    (more participants give each item proportionally more judgments, as long as the items'
    quota lets them: the judgments per item it implies are given too)."""
    usable = [p for p in curve if p["mean"] is not None]
    reached = next((p for p in usable if p["mean"] >= target), None)
    result: dict[str, Any] = {"target": target, "reached_at": reached and reached["participants"]}
    if reached is not None:
        result["participants"] = reached["participants"]
        return result
    if not usable:
        reason = next((p["reason"] for p in reversed(curve) if p["reason"]), "")
        result["participants"] = None
        result["note"] = (
            "the kept bots gave too little data for any value"
            + (f" ({reason.rstrip('.')})" if reason else "")
            + ": pilot with more participants, or judge fewer items."
        )
        return result
    last = usable[-1]
    r = float(last["mean"])
    if not spearman_brown or not 0 < r < 1:
        result["participants"] = None
        result["note"] = (
            "Agreement is not a reliability: Spearman-Brown does not extrapolate it. Pilot "
            "with more participants to see where it levels off."
            if not spearman_brown
            else "The reliability is not above 0, so no number of participants is predicted."
        )
        return result
    factor = target * (1 - r) / (r * (1 - target))  # as selectors.judgments_needed
    per_item = last["judgments_per_item"] * factor
    result.update(
        participants=math.ceil(last["participants"] * factor),
        judgments_per_item=round(per_item, 1),
        quota=study.quota,
        raise_quota=per_item > study.quota,
        method=f"Spearman-Brown from {last['participants']} participants (r = {r:.3f})",
    )
    return result
