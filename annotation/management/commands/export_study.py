"""Export a study's data as CSV or JSON, streamed row by row from the database (the same
exports as the study page and the API: annotation/exports.EXPORTS), to stdout or a file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser

from annotation import exports
from annotation.models import Study
from core.cli import LikenessCommand, Outcome, atomic_output, wrapped_stream

ALIASES = {"aggregates": "aggregate", "response": "responses", "tag": "tags"}


class Command(LikenessCommand):
    help = (
        "Export a study's data: every response (with flags and exclusions, for auditing),\n"
        "per-item aggregates of the usable responses (mean rating and spread, or votes), the\n"
        "tags of a tagging study, or a multi-arrangement study's placements and each\n"
        "participant's estimated dissimilarities. Rows are streamed as they are read, so\n"
        "memory stays small whatever the study's size. With -o the file appears only once it\n"
        "is complete."
    )
    examples = """
  manage.py export_study 3 --what responses --format csv -o responses.csv
  manage.py export_study 3 --what aggregates --format json | jq '.[0]'
  manage.py export_study 4 --what arrangements --format csv -o placements.csv
  manage.py export_study "Sentence similarity pilot" --what tags --format csv -o tags.csv --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("study", metavar="STUDY", help="Study id or name.")
        parser.add_argument(
            "--what",
            default="responses",
            choices=[*exports.EXPORTS, *ALIASES],
            help="; ".join(f"{name}: {e.description}" for name, e in exports.EXPORTS.items()),
        )
        parser.add_argument("--format", default="csv", choices=["csv", "json"])
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="Write to FILE instead of stdout."
        )

    def run(self, **options: Any) -> Outcome:
        study = _study(options["study"])
        what = ALIASES.get(options["what"], options["what"])
        if options["json"] and not options["output"]:
            raise CommandError("--json prints a summary; give -o FILE for the export itself.")
        export = exports.EXPORTS[what]
        counter = _Counter(export.rows(study))
        if options["format"] == "csv":
            chunks = exports.as_csv(counter, export.fields)
        else:
            chunks = exports.as_json(counter)
        target = options["output"]
        destination = (
            atomic_output(target) if target else contextlib.nullcontext(wrapped_stream(self.stdout))
        )
        with destination as stream:
            _write(chunks, stream)
        document = {
            "study": {"id": study.pk, "name": study.name, "kind": study.kind},
            "what": what,
            "format": options["format"],
            "rows": counter.count,
            "file": target or None,
        }
        self.note(f"Exported {counter.count} {what} rows of {study.name} to {target or 'stdout'}.")
        return Outcome(document=document, lines=[])


def _study(reference: str) -> Study:
    reference = reference.strip()
    study = None
    if reference.isdigit():
        study = Study.objects.filter(pk=int(reference)).first()
    study = study or Study.objects.filter(name=reference).first()
    if study is None:
        raise CommandError(f"No study with id or name {reference!r}.")
    return study


class _Counter:
    """Passes rows through, counting them (for the summary)."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows, self.count = rows, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.count += 1
            yield row


def _write(chunks: Iterable[str], stream: IO[Any]) -> None:
    for chunk in chunks:
        stream.write(chunk)
    stream.flush()
