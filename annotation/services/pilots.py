"""Pilots: simulated participants sent through a study's real pages before it opens
(annotation/simulation.py), and what they found.

A pilot is started on a study that is not open (``pilot_start``), then run (``pilot_run``,
from the ``simulate_study`` command or the ``annotation.pilot_run`` task): its bots take
part over HTTP through the study link carrying the pilot's token, which admits them while
the pilot runs. When they are done the pilot's report is built from the database (who
was excluded and why, next to the persona each bot had; how assignment and quotas
behaved; reliability against the number of participants, by subsampling the bots that were
kept), and then everything the bots counted on the study's items is taken out again
(``_take_out``), so that the real study starts from zero. The bots' participants and
responses stay, marked with the pilot: aggregation and the study page leave them out unless
the researcher aggregates the pilot itself.

Idempotent through the pilot's row: ``pilot_run`` claims the pilot once (a redelivered task
finds it claimed), and the counts are taken out in the same transaction as the conditional
update that ends the pilot, so they are taken out exactly once. Whatever stops a run (an
error, Ctrl-C, a worker shutting down) the pilot ends, FAILED with the reason, once its bots
have stopped; a runner that died without a word (a killed worker) stops reporting that it is
alive, and the next look at the study's pilots (a new pilot, the pilot panel) fails it.

The report's reliability curve comes from bots answering from one model with the noise the
pilot sets: it checks the design and the pipeline and bounds recruitment from below; it is
not what people will give (``pilot_caveat`` says so wherever it is shown).
"""

from __future__ import annotations

import logging
import math
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.urls import reverse
from django.utils import timezone

from annotation import simulation
from annotation.models import (
    Item,
    Participant,
    ParticipantStatus,
    Pilot,
    PilotStatus,
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
from annotation.services.aggregation import arrangement_rows
from annotation.services.arrangements import COUNTED, HELD, session_arrangements
from annotation.services.quality import participant_items_count
from annotation.services.trials import participant_release_holdings
from evaluation.engine.arrangement import ArrangementError, evidence_sufficient, pair_evidence
from evaluation.engine.metrics.human import leave_one_out_agreement, split_half_reliability
from evaluation.models import EmbeddingSet, PretrainedModel
from evaluation.services import queue

logger = logging.getLogger(__name__)

MAX_PARTICIPANTS = 500
MAX_CONCURRENCY = 32
DEFAULT_OPTIONS: dict[str, Any] = {
    "rating_noise": 0.5,
    "temperature": 0.5,
    "placement_noise": 0.15,
    "lapse_rate": 0.02,
    "speeders": 0,
    "catch_failers": 0,
    "concurrency": 8,
    "target": 0.8,
    "seed": None,
}
# A pilot not claimed by a runner after this long lost its task message (or no worker runs):
# the next look at the study's pilots fails it.
STALE_AFTER = timedelta(hours=2)
# A runner says it is alive every simulation.TICK_SECONDS while its bots run; one silent for
# this long has died (a killed worker or command), and its bots with it (they are its
# threads), so its pilot may be failed and taken out by someone else.
STALE_SILENCE = timedelta(minutes=10)
RELIABILITY_POINTS = 10  # participant counts on the reliability curve
RELIABILITY_DRAWS = 20  # random subsets per count
RELIABILITY_SPLITS = 10  # split-halves per subset (the curve averages over draws as well)
SHOWN_ITEMS = 20  # item ids listed where a check fails
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


# --- Starting -------------------------------------------------------------------------------
def pilot_start(
    *,
    study: Study,
    model: PretrainedModel,
    participants: int,
    created_by: Any = None,
    base_url: str = "",
    **options: Any,
) -> Pilot:
    """A pilot of ``participants`` simulated participants answering from ``model``'s stored
    embeddings of the study's dataset (its default layer where stored, else its newest).
    Options (DEFAULT_OPTIONS): rating_noise, temperature, placement_noise, lapse_rate,
    speeders and catch_failers (how many of the participants are planted), concurrency,
    target (the reliability to plan for) and seed. ValidationError says what is wrong."""
    checked = _check_options(participants, options)
    if study.status == StudyStatus.OPEN:
        raise ValidationError(
            f"{study.name} is open to participants: a pilot comes before a study opens (its "
            "bots would take places meant for people). Close the study first, or pilot a "
            "draft copy of it."
        )
    if not study.items.exists():
        raise ValidationError(f"{study.name} has no items to pilot.")
    embedding_set = pilot_embeddings(model=model, study=study)
    with transaction.atomic():
        Study.objects.select_for_update().filter(pk=study.pk).first()  # one start at a time
        pilots_fail_stale(study=study)
        running = study.pilots.filter(status=PilotStatus.RUNNING).first()
        if running is not None:
            raise ValidationError(
                f"Pilot {running.pk} of this study is still running; its report comes first."
            )
        return Pilot.objects.create(
            study=study,
            model=model,
            options={
                **checked,
                "embedding_set": embedding_set.pk,
                "layer": embedding_set.layer,
                "base_url": base_url,
            },
            created_by=created_by,
        )


def _check_options(participants: Any, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValidationError(f"Unknown pilot options: {', '.join(sorted(unknown))}.")
    values = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    errors: dict[str, str] = {}

    def whole(name: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors[name] = f"must be a whole number from {low} to {high}; got {value!r}."
            return low
        return value

    def number(name: str, value: Any, low: float, high: float, *, above: bool = False) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > low if above else value >= low)
        if not ok or value > high:
            errors[name] = (
                f"must be a number {'above' if above else 'from'} {low} up to {high}; "
                f"got {value!r}."
            )
            return low
        return float(value)

    checked = {
        "participants": whole("participants", participants, 2, MAX_PARTICIPANTS),
        "rating_noise": number("rating_noise", values["rating_noise"], 0, 10),
        "temperature": number("temperature", values["temperature"], 0, 100, above=True),
        "placement_noise": number("placement_noise", values["placement_noise"], 0, 10),
        "lapse_rate": number("lapse_rate", values["lapse_rate"], 0, 1),
        "speeders": whole("speeders", values["speeders"], 0, MAX_PARTICIPANTS),
        "catch_failers": whole("catch_failers", values["catch_failers"], 0, MAX_PARTICIPANTS),
        "concurrency": whole("concurrency", values["concurrency"], 1, MAX_CONCURRENCY),
        "target": number("target", values["target"], 0, 0.99, above=True),
        "seed": (
            whole("seed", values["seed"], 0, 2**32 - 1)
            if values["seed"] is not None
            else random.randrange(2**32)
        ),
    }
    if not errors and checked["speeders"] + checked["catch_failers"] >= checked["participants"]:
        errors["participants"] = (
            f"{checked['speeders']} speeders and {checked['catch_failers']} catch failers "
            f"leave no honest participant among {checked['participants']}."
        )
    if errors:
        raise ValidationError(errors)
    return checked


def pilot_embeddings(*, model: PretrainedModel, study: Study) -> EmbeddingSet:
    """The model's stored embeddings of the study's dataset the bots answer from: its
    default layer if stored, else the newest stored layer."""
    dataset = study.dataset
    sets = EmbeddingSet.objects.filter(model=model, dataset=dataset).order_by("-created_at", "-id")
    stored = [s for s in sets if s.is_stored()]
    if not stored:
        raise ValidationError(
            f"{model.name} has no stored embeddings of {dataset.name}, so its bots would have "
            "nothing to answer from: run the model on this dataset first (a run extracts and "
            "stores them), or import embeddings computed elsewhere."
        )
    chosen = next((s for s in stored if s.layer == model.default_layer), stored[0])
    stimuli = dataset.stimuli.count()
    if chosen.count != stimuli:
        raise ValidationError(
            f"The stored embeddings of {model.name} ({chosen.layer}) have {chosen.count} rows "
            f"but {dataset.name} has {stimuli} stimuli now; run the model on it again."
        )
    return chosen


def pilots_fail_stale(*, study: Study) -> int:
    """Fail the study's running pilots whose runner is gone: claimed, but silent for
    STALE_SILENCE (the worker or command running it died, and its bots with it); or never
    claimed within STALE_AFTER (its task was lost, or no worker runs). Their sessions are
    ended and their counts taken out. How many."""
    now = timezone.now()
    failed = 0
    for pilot in study.pilots.filter(status=PilotStatus.RUNNING):
        error = _stale_error(pilot, now)
        if error:
            failed += _end(pilot, report={**pilot.report}, error=error)
    return failed


def _stale_error(pilot: Pilot, now: datetime) -> str:
    """Why this running pilot is taken to be dead, or '' while it may still be alive."""
    taken_out = "Its simulated sessions were ended and their counts taken out of the study."
    alive_at = _parse_time(pilot.report.get("alive_at"))
    if alive_at is not None:
        if now - alive_at < STALE_SILENCE:
            return ""
        return (
            f"Its runner stopped reporting at {alive_at:%Y-%m-%d %H:%M} UTC, after "
            f"{pilot.report.get('bots_done', 0)} of {pilot.options.get('participants')} bots: "
            f"the worker or command running it died. {taken_out}"
        )
    if now - pilot.created_at < STALE_AFTER:
        return ""
    return (
        f"No worker took it up within {STALE_AFTER}: its task was lost, or no worker "
        f"runs. {taken_out}"
    )


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


# --- Running --------------------------------------------------------------------------------
PILOT_TASK = "annotation.pilot_run"


def pilot_queue(*, pilot: Pilot) -> bool:
    """Hand the pilot to a worker (the ``annotation.pilot_run`` task); a queue that does
    not answer fails the pilot at once, saying so, rather than leaving it waiting."""
    if queue.send(PILOT_TASK, pilot.pk):
        return True
    pilot_fail(
        pilot=pilot,
        error="The task queue did not answer, so no worker could run the pilot; start it "
        "again once the queue is back.",
    )
    return False


def pilot_run_queued(*, pilot_id: int) -> None:
    """The task's entry: run the pilot if it still exists (at the address it was started
    with)."""
    pilot = Pilot.objects.select_related("study", "model").filter(pk=pilot_id).first()
    if pilot is None:
        logger.info("Pilot %s is gone; nothing to run.", pilot_id)
        return
    pilot_run(pilot=pilot)


def pilot_run(
    *,
    pilot: Pilot,
    base_url: str = "",
    on_result: Callable[[simulation.BotResult], None] | None = None,
) -> Pilot:
    """Run the pilot's bots against the server at ``base_url`` (default: the one given at
    the start), then build its report and take its counts out of the study. Never raises
    for a pilot that goes wrong: the pilot is FAILED with the reason, nothing left
    counted. Interrupted (Ctrl-C, SystemExit from a worker's shutdown), it stops its bots,
    ends the pilot the same way and raises the interruption again."""
    base_url = base_url or pilot.options.get("base_url", "")
    if not _claim(pilot):
        logger.info("Pilot %s was claimed already (or has ended); not run again.", pilot.pk)
        pilot.refresh_from_db()
        return pilot
    ending: tuple[dict[str, Any], str] | None = None
    try:
        if not base_url.startswith(("http://", "https://")):
            raise ValidationError(
                f"The bots need the address of the running web server (http://...), got "
                f"{base_url!r}."
            )
        report = _simulate(pilot, base_url, on_result)
        if report is not None:  # None: someone else ended the pilot meanwhile
            started = report["sessions"]["started"]
            ending = (report, "" if started else _nobody_started(report, base_url))
    except Exception as exc:
        logger.exception("Pilot %s failed", pilot.pk)
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        ending = (_stored_report(pilot), f"The pilot failed: {message}")
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: raised again below
        logger.warning("Pilot %s interrupted (%s)", pilot.pk, type(exc).__name__)
        _connection_usable()
        ending = (_stored_report(pilot), _interrupted(pilot, exc))
        raise
    finally:
        if ending is not None:  # the bots have stopped: run_bots returns only then
            _end(pilot, report=ending[0], error=ending[1])
        pilot.refresh_from_db()
    return pilot


def _stored_report(pilot: Pilot) -> dict[str, Any]:
    """The report as the runner last stored it (when it started, bots done so far)."""
    stored = Pilot.objects.filter(pk=pilot.pk).values_list("report", flat=True).first()
    return dict(stored or pilot.report)


def _connection_usable() -> None:
    """An interruption may have landed mid-query: a connection left unusable is closed, so
    that the clean-up opens a fresh one."""
    if connection.connection is not None and not connection.in_atomic_block:
        if not connection.is_usable():
            connection.close()


def _interrupted(pilot: Pilot, exc: BaseException) -> str:
    """Why the pilot ended: Ctrl-C, a signal the command turned into one (its name is the
    interruption's message), or a SystemExit."""
    if isinstance(exc, KeyboardInterrupt):
        how = f"by {exc}" if str(exc) else "by Ctrl-C"
    else:
        how = f"({type(exc).__name__})"
    done = _stored_report(pilot).get("bots_done", 0)
    return (
        f"The pilot was interrupted {how} after {done} of {pilot.options.get('participants')} "
        "bots were done: the running bots were stopped, their unfinished sessions ended and "
        "everything the bots counted taken out of the study. Start a new pilot for a report."
    )


def _claim(pilot: Pilot) -> bool:
    """Mark the pilot as being run, once; False if it was claimed already or has ended."""
    now = timezone.now().isoformat()
    claimed = (
        Pilot.objects.filter(pk=pilot.pk, status=PilotStatus.RUNNING)
        .exclude(report__has_key="started_at")
        .update(report={"started_at": now, "alive_at": now, "counts_before": _counts(pilot.study)})
    )
    if claimed:
        pilot.refresh_from_db()
    return bool(claimed)


def _counts(study: Study) -> dict[str, int]:
    totals = study.items.aggregate(assigned=Sum("assigned"), answered=Sum("answered"))
    return {key: int(value or 0) for key, value in totals.items()}


def _simulate(
    pilot: Pilot, base_url: str, on_result: Callable[[simulation.BotResult], None] | None
) -> dict[str, Any] | None:
    """Run the bots and build the report; None if the pilot was ended by someone else
    while they ran (it was taken for dead: see pilots_fail_stale), whose clean-up stands."""
    study, options = pilot.study, pilot.options
    view = model_view(pilot)
    settings = simulation.BotSettings(
        rating_noise=options["rating_noise"],
        temperature=options["temperature"],
        placement_noise=options["placement_noise"],
        lapse_rate=options["lapse_rate"],
        min_response_ms=study.min_response_ms,
    )
    personas = planted_personas(
        options["participants"], options["speeders"], options["catch_failers"], options["seed"]
    )
    entry = base_url.rstrip("/") + reverse("annotation:study_entry", args=[study.token])
    entry += "?" + urllib.parse.urlencode({"pilot": pilot.token})
    started = time.monotonic()
    live = {**pilot.report, "bots_done": 0}

    def alive() -> bool:
        """Say that the runner is alive (and how far it has come, for the study page);
        False once the pilot has ended: the bots stop."""
        live["alive_at"] = timezone.now().isoformat()
        return bool(
            Pilot.objects.filter(pk=pilot.pk, status=PilotStatus.RUNNING).update(report=live)
        )

    def record(result: simulation.BotResult) -> None:
        live["bots_done"] += 1
        alive()
        if on_result is not None:
            on_result(result)

    results = simulation.run_bots(
        entry,
        personas,
        view,
        settings,
        seed=options["seed"],
        concurrency=options["concurrency"],
        on_result=record,
        keep_going=alive,
    )
    if not alive():
        logger.warning("Pilot %s was ended while its bots ran; no report.", pilot.pk)
        return None
    pilot.report = dict(live)
    report = pilot_report(pilot, results, tick=alive)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _nobody_started(report: dict[str, Any], base_url: str) -> str:
    bots = report["bots"]
    reason = next((b["refused"] or b["error"] for b in bots if b["refused"] or b["error"]), "")
    return (
        f"None of the {len(bots)} simulated participants could start a session at {base_url}"
        f"{': ' + reason if reason else ''}."
    )


def model_view(pilot: Pilot) -> simulation.ModelView:
    """The bots' knowledge: the pilot's embeddings of the study's dataset, the study's own
    pairs as the similarity scale (pair studies), and the stimuli's labels and texts."""
    study = pilot.study
    embedding_set = EmbeddingSet.objects.filter(pk=pilot.options.get("embedding_set")).first()
    if embedding_set is None or not embedding_set.is_stored():
        raise ValidationError("The embeddings this pilot was started with are no longer stored.")
    stimuli = list(study.dataset.stimuli.order_by("order").values_list("pk", "label", "text"))
    vectors = np.asarray(embedding_set.load(), dtype=np.float32)
    reference = []
    if study.kind == StudyKind.PAIRS:
        reference = list(study.items.values_list("a_id", "b_id"))
    return simulation.ModelView(
        vectors.reshape(len(vectors), -1),
        [pk for pk, _, _ in stimuli],
        labels={pk: label for pk, label, _ in stimuli},
        texts={pk: text for pk, _, text in stimuli},
        reference_pairs=[(a, b) for a, b in reference if b is not None],
        seed=pilot.options.get("seed") or 0,
    )


def planted_personas(participants: int, speeders: int, catch_failers: int, seed: int) -> list[str]:
    """Who each bot is, in arrival order: the planted ones spread among the honest."""
    personas = (
        [simulation.SPEEDER] * speeders
        + [simulation.CATCH_FAILER] * catch_failers
        + [simulation.HONEST] * (participants - speeders - catch_failers)
    )
    random.Random(seed).shuffle(personas)
    return personas


# --- Ending ---------------------------------------------------------------------------------
def pilot_fail(*, pilot: Pilot, error: str) -> bool:
    """End a running pilot as failed (its sessions ended, its counts taken out)."""
    return _end(pilot, report={**pilot.report}, error=error)


def _end(pilot: Pilot, *, report: dict[str, Any], error: str) -> bool:
    """Finish (or, with an error, fail) a running pilot and take what its bots counted out
    of the study's items, in one transaction; False if it had ended already.

    Once: the conditional update that ends the pilot is the claim on its clean-up, and
    commits with it (a second caller, such as a stale-pilot check racing the runner, waits
    on the row and then finds the pilot ended). After its bots stopped: the runner calls
    this once ``run_bots`` has returned or raised, which happens only when every bot thread
    has stopped; anyone else only for a pilot whose runner has been silent for
    STALE_SILENCE, and a runner's bots are its own threads, so they died with it. The one
    transaction over every bot's session and items therefore meets no other writer of
    those rows (the study is not open while piloted, and one pilot runs at a time), so it
    cannot deadlock against them. Should a runner stall longer than STALE_SILENCE and
    wake up, its bots stop at the next check (``alive`` finds the pilot ended), and what
    a bot sends meanwhile is refused: its session was withdrawn and its open trial expired
    here, and answers count only on an issued trial of a consented participant."""
    status = PilotStatus.FAILED if error else PilotStatus.FINISHED
    with transaction.atomic():
        ended = Pilot.objects.filter(pk=pilot.pk, status=PilotStatus.RUNNING).update(
            status=status, error=error, finished_at=timezone.now()
        )
        if not ended:
            return False
        taken = _take_out(pilot)
        report = {**report, "taken_out": taken, "counts_after": _counts(pilot.study)}
        Pilot.objects.filter(pk=pilot.pk).update(report=report)
    pilot.refresh_from_db()
    return True


def _take_out(pilot: Pilot) -> dict[str, int]:
    """End the pilot's unfinished sessions and stop counting all its bots' answers and
    holdings on the study's items; tags the bots added (tag studies) go too, so real
    participants start from the study's own. What was done, in numbers."""
    study = pilot.study
    ended = uncounted = 0
    for participant in pilot.participants.select_related("study"):
        if Participant.objects.filter(pk=participant.pk, status=ParticipantStatus.CONSENTED).update(
            status=ParticipantStatus.WITHDRAWN,
            flags=[*participant.flags, UNFINISHED],
            completed_at=timezone.now(),
        ):
            ended += 1
            participant.refresh_from_db()
            participant_release_holdings(participant=participant)
        if study.is_adaptive_tags:
            continue  # below, for all bots at once
        if study.is_arrangement or participant.status != ParticipantStatus.EXCLUDED:
            # Excluded sessions were taken out by quality control already (an arrangement
            # session knows its own state: releasing it twice changes nothing).
            uncounted += bool(participant_items_count(participant=participant, change=-1))
    if study.is_adaptive_tags:
        uncounted = _uncount_chains(pilot)
    tags = _remove_tags(pilot) if study.kind == StudyKind.TAGS else 0
    return {"sessions_ended": ended, "uncounted": uncounted, "tags_removed": tags}


def _uncount_chains(pilot: Pilot) -> int:
    """Adaptive tag chains count every answer, excluded or not: take each bot answer off its
    item (and the claim that came with it)."""
    answered = (
        Trial.objects.filter(
            participant__pilot=pilot, role=TrialRole.REGULAR, status=TrialStatus.ANSWERED
        )
        .values("item_id")
        .annotate(n=Count("pk"))
    )
    total = 0
    for row in answered:
        Item.objects.filter(pk=row["item_id"]).update(
            assigned=F("assigned") - row["n"], answered=F("answered") - row["n"]
        )
        total += row["n"]
    return total


def _remove_tags(pilot: Pilot) -> int:
    """Take the bots' tags and ratings out of a tag study: tags a bot added are deleted (with
    every rating of them); a bot's rating of another tag comes off its counts; tag states
    and adaptive chains are worked out again from what remains."""
    study = pilot.study
    bot_trials = Trial.objects.filter(participant__pilot=pilot)
    touched: set[int] = set()
    others = TagRating.objects.filter(trial__in=bot_trials).exclude(tag__added_in__in=bot_trials)
    for tag_id, rating, flagged in others.values_list("tag_id", "rating", "flagged"):
        if flagged:
            Tag.objects.filter(pk=tag_id).update(flag_count=F("flag_count") - 1)
        else:
            Tag.objects.filter(pk=tag_id).update(
                rating_count=F("rating_count") - 1, rating_sum=F("rating_sum") - (rating or 0)
            )
        touched.add(tag_id)
    others.delete()
    added = Tag.objects.filter(added_in__in=bot_trials)
    stimuli = set(added.values_list("stimulus_id", flat=True))
    removed = added.count()
    added.delete()
    if study.is_adaptive_tags:
        for tag in Tag.objects.filter(pk__in=touched):
            Tag.objects.filter(pk=tag.pk).update(status=_tag_status(study, tag))
            stimuli.add(tag.stimulus_id)
        _chains_again(study, stimuli)
    return removed


def _tag_status(study: Study, tag: Tag) -> str:
    """A tag's state from its counts, by the rules of tags._update_tag_states."""
    if tag.flag_count >= study.flags_to_hide:
        return TagStatus.HIDDEN
    if tag.rating_count >= study.ratings_to_freeze and (
        tag.rating_sum >= tag.rating_count * study.freeze_mean
    ):
        return TagStatus.FROZEN
    return TagStatus.ACTIVE


def _chains_again(study: Study, stimuli: set[int]) -> None:
    """Whether each touched chain is complete, from its frozen tags and answers."""
    for item in Item.objects.filter(study=study, a_id__in=stimuli):
        frozen = Tag.objects.filter(
            study=study, stimulus_id=item.a_id, status=TagStatus.FROZEN
        ).count()
        complete = frozen >= study.frozen_tags_to_complete or item.answered >= study.max_iterations
        Item.objects.filter(pk=item.pk).update(completed=complete)


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
    quota, an item answered twice by one participant, holdings left after every session
    ended, and whether the items' counters agree with the responses."""
    study = pilot.study
    items = dict(study.items.values_list("pk", "answered"))
    quota = study.quota
    per_item = _pilot_answers_per_item(pilot)
    over_quota = sorted(pk for pk, answered in items.items() if answered > quota)
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
    started = sum(b["participant"] is not None for b in bots)
    if needed.get("participants") and kept:
        # Kept participants are what counts; recruit for the share this pilot excluded.
        needed["kept_share"] = round(len(kept) / started, 3)
        needed["recruit"] = math.ceil(needed["participants"] * started / len(kept))
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
            ).values_list(
                "trial__item__a_id",
                "trial__item__b_id",
                "trial__item__c_id",
                "value",
                "chosen_id",
                "trial__participant_id",
            )
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
