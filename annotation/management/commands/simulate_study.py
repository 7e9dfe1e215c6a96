"""Pilot a study with simulated participants: bots that take part through a running server's
real pages (consent, practice, trials, catch trials) and answer from a model's stored
embeddings; then print what the pilot found (annotation/services/pilots.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from annotation.models import Pilot, Study
from annotation.services import pilots
from annotation.simulation import PERSONA_LABELS, BotResult
from core.cli import (
    LikenessCommand,
    Outcome,
    ProgressLine,
    add_user_option,
    table,
    user_lookup,
    wrapped_stream,
)
from evaluation.models import PretrainedModel


class Command(LikenessCommand):
    help = (
        "Pilot a study that is not open yet with simulated participants. Each bot opens the\n"
        "study link of a running server (--url), consents and answers every trial over HTTP,\n"
        "from the model's stored embeddings of the study's dataset plus noise; some can be\n"
        "planted speeders or inattentive participants who fail catch trials. The report says\n"
        "whom quality control excluded and why, how assignment and quotas behaved, and how\n"
        "reliability grows with the number of participants. The bots' responses are kept as\n"
        "the pilot's, apart from the study's real data, and their counts on the study's items\n"
        "are taken out again when the pilot ends."
    )
    examples = """
  manage.py simulate_study 3 --participants 30 --model minilm --url http://127.0.0.1:8000
  manage.py simulate_study "Animal pairs" --participants 40 --model 7 --url http://127.0.0.1:8000 \\
      --speeders 3 --catch-failers 3 --rating-noise 0.8 --seed 1
  manage.py simulate_study 5 --participants 20 --model clip --url https://studies.example.org --json
"""

    def add_options(self, parser: CommandParser) -> None:
        defaults = pilots.DEFAULT_OPTIONS
        parser.add_argument("study", metavar="STUDY", help="Study id or name (not open yet).")
        parser.add_argument(
            "--participants", type=int, required=True, help="How many simulated participants."
        )
        parser.add_argument(
            "--model", required=True, help="Model id or name (with stored embeddings)."
        )
        parser.add_argument(
            "--url",
            required=True,
            help="Base address of the running web server the bots use (http://host:port).",
        )
        parser.add_argument(
            "--rating-noise",
            type=float,
            help=f"SD of a rating's noise, in scale points (default {defaults['rating_noise']}).",
        )
        parser.add_argument(
            "--temperature",
            type=float,
            help="Softmax temperature of choices, in SDs of similarity "
            f"(default {defaults['temperature']}).",
        )
        parser.add_argument(
            "--placement-noise",
            type=float,
            help="Arrangement noise, as a share of the arrangement's spread "
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
        pilot = pilots.pilot_start(
            study=study,
            model=model,
            participants=options["participants"],
            created_by=user_lookup(options["user"]),
            base_url=options["url"],
            rating_noise=options["rating_noise"],
            temperature=options["temperature"],
            placement_noise=options["placement_noise"],
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
            pilot = pilots.pilot_run(pilot=pilot, base_url=options["url"], on_result=tell)
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


def _study(reference: str) -> Study:
    reference = reference.strip()
    study = Study.objects.filter(pk=int(reference)).first() if reference.isdigit() else None
    study = study or Study.objects.filter(name=reference).first()
    if study is None:
        raise CommandError(f"No study with id or name {reference!r}.")
    return study


def _model(reference: str) -> PretrainedModel:
    reference = reference.strip()
    model = (
        PretrainedModel.objects.filter(pk=int(reference)).first() if reference.isdigit() else None
    )
    model = model or PretrainedModel.objects.filter(name=reference).first()
    if model is None:
        raise CommandError(f"No model with id or name {reference!r}.")
    return model


# --- The report, for people -----------------------------------------------------------------
def report_lines(pilot: Pilot) -> list[str]:
    report = pilot.report
    lines = [f"Pilot {pilot.pk} of {pilot.study.name}: {pilot.get_status_display().lower()}"]
    if pilot.error:
        lines.append(f"  {pilot.error}")
    if "bots" not in report:
        return lines
    lines += ["", *_session_lines(report), "", *_quality_lines(report), ""]
    lines += [*_assignment_lines(report), "", *_reliability_lines(report), ""]
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


def _session_lines(report: dict[str, Any]) -> list[str]:
    sessions = report["sessions"]
    lines = [
        f"Sessions: {sessions['started']} of {sessions['bots']} started; "
        f"{sessions['completed']} completed, {sessions['excluded']} excluded"
        + (f", {sessions['unfinished']} unfinished" if sessions["unfinished"] else "")
        + f" ({report.get('requests', 0)} requests in {report.get('seconds', '?')} s; "
        f"model {report['model']}, layer {report['layer']})."
    ]
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


def _quality_lines(report: dict[str, Any]) -> list[str]:
    quality = report["quality"]
    planted, honest = quality["planted"], quality["honest"]
    lines = [
        f"Quality control: {planted['excluded']} of {planted['sessions']} planted bots "
        f"excluded; {honest['excluded']} of {honest['sessions']} honest bots excluded."
    ]
    for persona, entry in quality["personas"].items():
        lines.append(
            f"  {PERSONA_LABELS.get(persona, persona)}: {len(entry['excluded'])} of "
            f"{entry['sessions']} excluded, {len(entry['flagged'])} flagged"
        )
    for rule, entry in quality["rules"].items():
        who = ", ".join(f"{n} {p}" for p, n in entry["personas"].items())
        lines.append(f"  rule '{rule}' fired on {len(entry['bots'])} bots ({who})")
    lines += [f"  note: {note}" for note in quality["notes"]]
    return lines


def _assignment_lines(report: dict[str, Any]) -> list[str]:
    a = report["assignment"]
    spread = a["per_item"] or {"min": 0, "mean": 0, "max": 0}
    lines = [
        f"Assignment: {a['items']} items, quota {a['quota']}; kept answers per item "
        f"min {spread['min']:g}, mean {spread['mean']:g}, max {spread['max']:g}; "
        f"{a['complete_items']} items complete.",
        f"  over quota: {a['over_quota']}; one item twice to one participant: "
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


def _reliability_lines(report: dict[str, Any]) -> list[str]:
    reliability = report.get("reliability")
    if not reliability:
        return ["Reliability: none for tag studies."]
    lines = [f"Reliability against participants ({reliability['method']}):"]
    rows = [
        [
            point["participants"],
            "-" if point["mean"] is None else f"{point['mean']:.3f}",
            "" if point["sd"] is None else f"{point['sd']:.3f}",
            f"{point['usable']}/{point['draws']}",
            point["judgments_per_item"],
        ]
        for point in reliability["curve"]
    ]
    lines += [
        "  " + line
        for line in table(["participants", "mean", "sd", "draws", "judgments/item"], rows)
    ]
    needed = reliability["needed"]
    recruit = (
        f" Recruit about {needed['recruit']}: {needed['kept_share']:.0%} of this pilot's "
        "participants were kept."
        if needed.get("recruit")
        else ""
    )
    if needed.get("reached_at"):
        lines.append(
            f"  Target {needed['target']} reached with {needed['reached_at']} participants."
        )
    elif needed.get("participants"):
        lines.append(
            f"  Target {needed['target']}: about {needed['participants']} kept participants "
            f"({needed['judgments_per_item']} judgments per item; {needed['method']}).{recruit}"
        )
        if needed.get("raise_quota"):
            lines.append(
                f"  The study's quota is {needed['quota']} judgments per item: raise it, or "
                "more participants add nothing."
            )
    else:
        lines.append(f"  Target {needed['target']}: {needed.get('note', 'not predicted')}")
    return lines


def _bot_table(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            bot["number"],
            bot["persona"],
            bot["status"] or ("refused" if bot["refused"] else "error"),
            f"{bot['regular']}/{bot['planned_regular']}",
            bot["catch_trials"],
            "; ".join(bot["flags"]) or bot["refused"] or bot["error"],
        ]
        for bot in report["bots"]
    ]
    return [
        "  " + line
        for line in table(["bot", "persona", "status", "regular", "catch", "flags"], rows)
    ]
