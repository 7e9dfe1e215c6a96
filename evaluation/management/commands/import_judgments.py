"""Import published human judgments (pairs, triplets, 2AFC, a similarity matrix) from a CSV
as a versioned scoring target, through the same importer as the web form."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import CommandError, CommandParser

from core.cli import Outcome, add_user_option, user_lookup
from evaluation.imports.judgment_files import ColumnMap, column_map_from
from evaluation.imports.judgments import judgments_import, report_lines
from evaluation.imports.spec import FIELDS
from evaluation.management.lookups import EvaluationCommand, dataset_lookup


def _values(field: str) -> list[str]:
    return [value for value, _ in FIELDS[field].choices]


class Command(EvaluationCommand):
    help = (
        "Import human judgments from a CSV or TSV (by default with a header row naming):\n"
        "  pairs     a, b, value [, participant]\n"
        "  triplets  a, b, c, choice [, participant]   (choice = the odd one out)\n"
        "  2afc      reference, first, second, choice [, participant]\n"
        "  matrix    a square similarity matrix (stimuli in the first row and column)\n"
        "Stimuli are matched to an existing dataset (--dataset, by id, name or text), or a new\n"
        "text dataset is made of the file's words or sentences (--new-dataset). A name that\n"
        "exists on the dataset gets a new version; scores stay with the version they used.\n"
        "All or nothing: a bad row is named and nothing is stored."
    )
    examples = """
  manage.py import_judgments simlex.csv --format pairs --name SimLex-999 \\
      --new-dataset simlex-words --scale-min 0 --scale-max 10
  manage.py import_judgments things_triplets.tsv --format triplets --name THINGS \\
      --dataset things-images --match name --allow-repeats
  manage.py import_judgments ratings.csv --format pairs --name pilot --dataset stsb --match text --json
  # Files as published: SimLex-999's own file, a headerless word-pair file (MEN, WordSim),
  # THINGS' index-coded triplets (1-based indices into item_names.tsv, choice = position):
  manage.py import_judgments SimLex-999.txt --format pairs --name SimLex-999 \
      --new-dataset simlex-words --columns 'a=word1, b=word2, value=SimLex999'
  manage.py import_judgments EN-MEN-TR-3k.txt --format pairs --name MEN --new-dataset men \
      --no-header
  manage.py import_judgments test_triplets.csv --format triplets --name THINGS \
      --new-dataset things-concepts --no-header --names-file item_names.tsv \
      --names-column uniqueID --choice-is position --allow-repeats
"""

    def add_options(self, parser: CommandParser) -> None:
        # Help texts and choices shared with the web form and the API: judgment_import_spec.
        parser.add_argument("file", metavar="FILE", help=FIELDS["file"].help)
        parser.add_argument("--name", required=True, help=FIELDS["name"].help)
        parser.add_argument(
            "--format", required=True, choices=_values("format"), help="Layout of the file."
        )
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--dataset",
            metavar="DATASET",
            help="Match the file's stimuli to this dataset's (id or name).",
        )
        where.add_argument(
            "--new-dataset",
            metavar="NAME",
            help="Create a new text dataset whose stimuli are the file's references.",
        )
        parser.add_argument(
            "--match",
            choices=_values("match"),
            default=FIELDS["match"].default,
            help="With --dataset: match references by stimulus id, name, text, or auto (all "
            "three; each reference must reach exactly one stimulus).",
        )
        for flag in ("allow_repeats", "symmetrize"):
            parser.add_argument(
                f"--{flag.replace('_', '-')}", action="store_true", help=FIELDS[flag].help
            )
        parser.add_argument("--no-header", action="store_true", help=FIELDS["no_header"].help)
        parser.add_argument(
            "--columns", default="", metavar="ROLE=COLUMN,...", help=FIELDS["columns"].help
        )
        parser.add_argument("--names-file", metavar="FILE", help=FIELDS["names_file"].help)
        parser.add_argument(
            "--names-column", default="", metavar="COLUMN", help=FIELDS["names_column"].help
        )
        for rule in ("self_pairs", "scoring_unit", "value_is", "choice_is", "index_base"):
            parser.add_argument(
                f"--{rule.replace('_', '-')}",
                choices=_values(rule),
                default=FIELDS[rule].default,
                help=FIELDS[rule].help,
            )
        for bound in ("scale_min", "scale_max"):
            parser.add_argument(f"--{bound.replace('_', '-')}", type=float, help=FIELDS[bound].help)
        parser.add_argument("--description", default="")
        parser.add_argument("--origin", default="", help="Where the data came from.")
        add_user_option(parser)

    def _column_map(self, options: dict[str, Any]) -> ColumnMap:
        names_path = options["names_file"]
        if names_path and not Path(names_path).is_file():
            raise CommandError(f"No names file {names_path}.")
        if not names_path:
            return column_map_from({**options, "names_file": None})
        with Path(names_path).open("rb") as handle:
            return column_map_from({**options, "names_file": File(handle, name=names_path)})

    def run(self, **options: Any) -> Outcome:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        dataset = dataset_lookup(options["dataset"]) if options["dataset"] else None
        if dataset is None and options["match"] != "auto":
            raise CommandError("--match applies to --dataset; a new dataset is made from the file.")
        for option in ("scale_min", "scale_max"):
            value = options[option]
            if value is not None and not math.isfinite(value):
                raise CommandError(f"--{option.replace('_', '-')} must be a finite number.")
        user = user_lookup(options["user"])
        columns = self._column_map(options)
        self.note(f"Importing {options['format']} judgments from {path}...")
        with path.open("rb") as handle:
            judgments = judgments_import(
                file=File(handle, name=path.name),
                format=options["format"],
                name=options["name"],
                dataset=dataset,
                new_dataset_name=options["new_dataset"] or "",
                match=options["match"],
                # A new dataset is made of the file's references; never added to an old one.
                create_missing=dataset is None,
                symmetrize=options["symmetrize"],
                allow_repeats=options["allow_repeats"],
                scale_min=options["scale_min"],
                scale_max=options["scale_max"],
                self_pairs=options["self_pairs"],
                scoring_unit=options["scoring_unit"],
                value_is=options["value_is"],
                columns=columns,
                origin=options["origin"],
                description=options["description"],
                created_by=user,
            )
        target = getattr(judgments, "target", None)
        reliability = judgments.reliability or {}
        document = {
            "id": judgments.pk,
            "name": judgments.name,
            "version": judgments.version,
            "kind": judgments.kind,
            "judgment_count": judgments.judgment_count,
            "participant_count": judgments.participant_count,
            "scale": [judgments.scale_min, judgments.scale_max],
            "ceiling": judgments.ceiling,
            "reliability": reliability,
            "dataset": {
                "id": judgments.dataset_id,
                "name": judgments.dataset.name,
                "created": dataset is None,
                "stimulus_count": judgments.dataset.stimulus_count,
            },
            "target": {"id": target.pk, "name": target.name} if target else None,
            "scoring_unit": judgments.scoring_unit,
            "import_report": judgments.import_report,
        }
        lines = [
            f"Imported {judgments.judgment_count} {judgments.get_kind_display().lower()} as "
            f"{judgments.name} v{judgments.version} (id {judgments.pk}) over "
            f"{'the new dataset ' if dataset is None else ''}{judgments.dataset.name} "
            f"({judgments.dataset.stimulus_count} stimuli).",
            *report_lines(judgments),
            f"Participants: {judgments.participant_count or 'not given'}.",
            "Reliability ceiling: "
            + (
                f"{judgments.ceiling:.3f}"
                if judgments.ceiling is not None
                else str(reliability.get("reason") or reliability.get("note") or "not available")
            )
            + ".",
            noise_ceiling_line(reliability.get("bounds")),
        ]
        if target:
            lines.append(f"Target: {target.name} (id {target.pk}).")
        return Outcome(document=document, lines=lines)


def noise_ceiling_line(bounds: dict[str, Any] | None) -> str:
    """The Nili et al. bounds in words, as the judgments pages show them."""
    if not bounds:
        return "Noise ceiling (Nili et al. 2014): not computed."
    if bounds.get("lower") is None:
        return f"Noise ceiling (Nili et al. 2014): none, {bounds.get('reason', 'no reason given')}"

    def bound(name: str) -> str:
        interval = bounds.get(f"{name}_ci")
        shown = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        return f"{name} {bounds[name]:.3f}{shown}"

    if "responses" in bounds:
        who = f"{bounds['responses']} responses to {bounds['items']} items"
        if bounds.get("participants"):
            who += f" from {bounds['participants']} participants"
    else:
        who = f"{bounds['participants']} participants"
    return (
        f"Noise ceiling (Nili et al. 2014): {bound('lower')}, {bound('upper')}, over {who} "
        f"(95% CIs: {bounds['ci_method']})."
    )
