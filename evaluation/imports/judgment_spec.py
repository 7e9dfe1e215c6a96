"""What a judgment import asks for, declared once: the web form (``JudgmentImportForm``), the
API (``JudgmentsImportSerializer``) and ``manage.py import_judgments`` build their fields,
help texts and choices from this list, so the three cannot drift apart.

The importer (``evaluation.imports.judgments.judgments_import``) keeps its own checks; this
module only says what each interface offers and the one rule between fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evaluation.imports.judgments import FORMATS, MATCH_RULES

FieldKind = Literal["text", "choice", "file", "dataset", "flag", "number"]


@dataclass(frozen=True)
class ImportField:
    name: str
    kind: FieldKind
    help: str = ""
    required: bool = True
    max_length: int | None = None
    choices: tuple[tuple[str, str], ...] = ()
    default: Any = None  # for a choice: the value preselected
    multiline: bool = False  # a text box rather than a line


FORMAT_LABELS = {
    "pairs": "Pairs: a, b, value [, participant]",
    "triplets": "Triplets: a, b, c, choice [, participant] (choice = the odd one)",
    "2afc": "2AFC: reference, first, second, choice [, participant]",
    "matrix": "Square similarity matrix",
}

JUDGMENT_IMPORT_FIELDS: tuple[ImportField, ...] = (
    ImportField(
        "name", "text", help="e.g. SimLex-999; a new version if it exists.", max_length=200
    ),
    ImportField("format", "choice", choices=tuple((f, FORMAT_LABELS[f]) for f in FORMATS)),
    ImportField("file", "file", help="CSV or TSV with a header row."),
    ImportField(
        "dataset",
        "dataset",
        help="Match the file's stimuli to this dataset's (by id, name or text)...",
        required=False,
    ),
    ImportField("match", "choice", choices=tuple((m, m) for m in MATCH_RULES), default="auto"),
    ImportField(
        "new_dataset_name",
        "text",
        help="...or create a new text dataset whose stimuli are the file's references.",
        required=False,
        max_length=200,
    ),
    ImportField(
        "allow_repeats",
        "flag",
        help="The data hold planned repeats (test-retest) by participant.",
        required=False,
    ),
    ImportField(
        "symmetrize",
        "flag",
        help="Matrix only: average the two triangles if they differ.",
        required=False,
    ),
    ImportField("scale_min", "number", help="Ratings: bottom of the scale.", required=False),
    ImportField("scale_max", "number", help="Ratings: top of the scale.", required=False),
    ImportField("description", "text", required=False, multiline=True),
)
FIELDS = {field.name: field for field in JUDGMENT_IMPORT_FIELDS}

DATASET_CHOICE_ERROR = "Choose an existing dataset or name a new one (not both)."


def dataset_choice_error(*, dataset: Any, new_dataset_name: str | None) -> str | None:
    """The message when the import names both an existing and a new dataset, or neither."""
    if bool(dataset) == bool((new_dataset_name or "").strip()):
        return DATASET_CHOICE_ERROR
    return None
