"""Pilots: running simulated participants through a study's real pages before it opens
(annotation/simulation.py); what they found is annotation/services/pilot_report.py.

A pilot is started on a draft study (``pilot_start``), then run (``pilot_run``,
from the ``simulate_study`` command or the ``annotation.pilot_run`` task): its bots take
part over HTTP through the study link carrying the pilot's token, which admits them while
the pilot runs. When they are done the pilot's report is built from the database
(``pilot_report``), and then everything the bots counted on the study's items is taken out
again (``_take_out``), so that the real study starts from zero. The bots' participants and
responses stay, marked with the pilot: aggregation and the study page leave them out unless
the researcher aggregates the pilot itself.

Idempotent through the pilot's row: ``pilot_run`` claims the pilot once (a redelivered task
finds it claimed), and the counts are taken out in the same transaction as the conditional
update that ends the pilot, so they are taken out exactly once. Whatever stops a run (an
error, Ctrl-C, a worker shutting down) the pilot ends, FAILED with the reason, once its bots
have stopped; a runner that died without a word (a killed worker) stops reporting that it is
alive, and the next look at the study's pilots (a new pilot, the pilot panel) fails it.

Stopping (``pilot_stop``, the panel's Stop button) is cooperative: a pilot that a live runner
has claimed is only asked to stop (the request is its ``error`` while it still runs), its
runner's next check finds it and stops the bots, and the runner ends the pilot with that
message once they have stopped. Only a pilot that no live runner holds (queued, or its runner
silent for STALE_SILENCE) is ended by the Stop itself: the clean-up never runs beside bots
that are still answering.
"""

from __future__ import annotations

import logging
import math
import random
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.urls import reverse
from django.utils import timezone

from annotation import simulation
from annotation.models import (
    Item,
    Participant,
    ParticipantStatus,
    Pilot,
    PilotStatus,
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
from annotation.services.pilot_report import UNFINISHED, pilot_report
from annotation.services.quality import participant_items_count
from annotation.services.trials import participant_release_holdings
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
    refusal = pilot_refusal(study)  # said before the embeddings are looked for; again below
    if refusal:
        raise ValidationError(refusal)
    if not study.items.exists():
        raise ValidationError(f"{study.name} has no items to pilot.")
    embedding_set = pilot_embeddings(model=model, study=study)
    with transaction.atomic():
        # One start at a time, and none once the study has left its draft: the row is locked
        # (study_set_status takes the same lock before it opens a study) and read again, so
        # that a study opened since ``study`` was read is refused.
        locked = Study.objects.select_for_update().filter(pk=study.pk).first()
        if locked is None:
            raise ValidationError(f"{study.name} was deleted.")
        refusal = pilot_refusal(locked)
        if refusal:
            raise ValidationError(refusal)
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


def pilot_refusal(study: Study) -> str:
    """Why this study cannot be piloted now, or '' when it can: pilots are for draft studies
    (not archived), before anyone real takes part; an open or closed study has real sessions
    (or may have: a closed study can be opened again) that the bots would count beside, and
    so has a draft that was open once and had participants (a study can be set back to
    draft)."""
    if study.archived_at is not None:
        return f"{study.name} is archived: a pilot is for a draft study, before it opens."
    if study.status == StudyStatus.OPEN:
        return (
            f"{study.name} is open to participants: a pilot comes before a study opens (its "
            "bots would take places meant for people). Pilot a draft copy of it."
        )
    if study.status != StudyStatus.DRAFT:
        return (
            f"{study.name} is {study.get_status_display().lower()}: a pilot comes before a "
            "study opens, on a draft (its bots would count beside the sessions of real "
            "participants). Pilot a draft copy of it."
        )
    if Participant.objects.filter(study_id=study.pk, pilot=None).exists():
        # A study set back to draft after people took part: their sessions are in its counts.
        return (
            f"{study.name} has real participants (it was open before): its bots would count "
            "beside their sessions. Pilot a draft copy of it."
        )
    return ""


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
    except StopRequested as stop:  # the bots have stopped: run_bots returned
        logger.info("Pilot %s stopped on request: %s", pilot.pk, stop.message)
        ending = (stop.report, stop.message)
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


class StopRequested(Exception):
    """Someone asked the pilot to stop (``pilot_stop``) while its bots ran; they have
    stopped now, and the runner ends the pilot with ``message``."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.message, self.report = message, report


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
        False once the pilot has ended or was asked to stop (its ``error`` says who asked):
        the bots stop."""
        live["alive_at"] = timezone.now().isoformat()
        running = Pilot.objects.filter(pk=pilot.pk, status=PilotStatus.RUNNING, error="")
        return bool(running.update(report=live))

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
        requested = stop_requested(pilot)
        if requested:  # the bots have stopped: the runner ends the pilot, as asked
            raise StopRequested(requested, dict(live))
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
STOPPED, STOPPING = "stopped", "stopping"


def pilot_stop(*, pilot: Pilot, by: Any) -> str:
    """Stop a running pilot on someone's request: STOPPED when it was ended here (queued,
    or its runner silent for STALE_SILENCE: no bot of it is answering), STOPPING when a live
    runner holds it (it is asked to stop: its bots stop at the runner's next check and the
    runner ends it once they have, see ``pilot_run``), '' when it had ended already. Either
    way it fails with "Stopped by ...", its sessions ended and its counts taken out."""
    message = f"Stopped by {by}."
    with transaction.atomic():
        # The row's lock orders this against a runner claiming the pilot (_claim waits, then
        # finds it ended) and against its heartbeat. FOR NO KEY UPDATE, as _end's update
        # takes it: a bot's new participant holds a key-share lock on the row meanwhile.
        locked = (
            Pilot.objects.select_for_update(no_key=True)
            .select_related("study")
            .filter(pk=pilot.pk, status=PilotStatus.RUNNING)
            .first()
        )
        if locked is None:
            return ""
        claimed = "started_at" in locked.report
        if claimed and not _stale_error(locked, timezone.now()):
            if not locked.error:  # asked once: the first request's words stand
                Pilot.objects.filter(pk=pilot.pk).update(error=message)
            pilot.refresh_from_db()
            return STOPPING
        _end(locked, report={**locked.report}, error=locked.error or message)
    pilot.refresh_from_db()
    return STOPPED


def stop_requested(pilot: Pilot) -> str:
    """Who asked this running pilot to stop ('' if nobody did, or it has ended)."""
    running = Pilot.objects.filter(pk=pilot.pk, status=PilotStatus.RUNNING)
    return running.values_list("error", flat=True).first() or ""


def pilot_fail(*, pilot: Pilot, error: str) -> bool:
    """End a running pilot as failed (its sessions ended, its counts taken out). Only for a
    pilot no live runner holds (its task could not be queued, or in tests): a researcher's
    Stop is ``pilot_stop``."""
    return _end(pilot, report={**pilot.report}, error=error)


def _end(pilot: Pilot, *, report: dict[str, Any], error: str) -> bool:
    """Finish (or, with an error, fail) a running pilot and take what its bots counted out
    of the study's items, in one transaction; False if it had ended already.

    Once: the conditional update that ends the pilot is the claim on its clean-up, and
    commits with it (a second caller, such as a stale-pilot check racing the runner, waits
    on the row and then finds the pilot ended). After its bots stopped: the runner calls
    this once ``run_bots`` has returned or raised, which happens only when every bot thread
    has stopped; anyone else only for a pilot no live runner holds: never claimed (queued:
    no bot of it runs yet, and _claim finds it ended), or its runner silent for
    STALE_SILENCE, and a runner's bots are its own threads, so they died with it. A
    researcher's Stop of a pilot under way only asks its runner to stop (``pilot_stop``);
    a stop asked for is the ending's error unless the caller gives one. The one
    transaction over every bot's session and items therefore meets no other writer of
    those rows (the study is not open while piloted, and one pilot runs at a time), so it
    cannot deadlock against them. Should a runner stall longer than STALE_SILENCE and
    wake up, its bots stop at the next check (``alive`` finds the pilot ended), and what
    a bot sends meanwhile is refused: its session was withdrawn and its open trial expired
    here, and answers count only on an issued trial of a consented participant."""
    with transaction.atomic():
        # The row's lock, as the update below takes it (FOR NO KEY UPDATE), so that a stop
        # asked for meanwhile is read: a runner whose bots finished as Stop was pressed ends
        # the pilot as stopped, with the report it built.
        requested = (
            Pilot.objects.select_for_update(no_key=True)
            .filter(pk=pilot.pk, status=PilotStatus.RUNNING)
            .values_list("error", flat=True)
            .first()
        )
        if requested is None:
            return False
        error = error or requested
        status = PilotStatus.FAILED if error else PilotStatus.FINISHED
        Pilot.objects.filter(pk=pilot.pk).update(
            status=status, error=error, finished_at=timezone.now()
        )
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
