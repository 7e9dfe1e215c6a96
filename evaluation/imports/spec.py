"""What each import asks for, declared once: the web forms (``DatasetImportForm``,
``JudgmentImportForm``), the API (``DatasetUploadSerializer``, ``JudgmentsImportSerializer``)
and ``manage.py import_judgments`` build their fields, help texts and choices from these
lists, so the interfaces cannot drift apart.

The importers (``evaluation.imports.stimuli``, ``evaluation.imports.judgments``) keep their
own checks; this module only says what each interface offers and the rules between fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from evaluation.imports.embeddings import MATCH_RULES as EMBEDDING_MATCH_RULES
from evaluation.imports.judgment_files import CHOICE_MEANINGS, FORMATS
from evaluation.imports.judgments import MATCH_RULES, SELF_PAIR_RULES
from evaluation.models import Modality, ScoringUnit, ValueMeaning

FieldKind = Literal["text", "choice", "file", "dataset", "flag", "number"]


@dataclass(frozen=True)
class ImportField:
    name: str
    kind: FieldKind
    help: str = ""
    required: bool = True
    max_length: int | None = None
    choices: tuple[tuple[str, str], ...] = ()
    default: Any = None  # the value when none is given (a choice: preselected)
    initial: Any = None  # a required choice: the web form's preselection (the API has none)
    multiline: bool = False  # a text box rather than a line
    radio: bool = False  # a choice shown as radio buttons


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
    ImportField(
        "file",
        "file",
        help="CSV or TSV: .csv is read as RFC 4180, .tsv and .tab as tab-separated without "
        "quote processing.",
    ),
    ImportField(
        "no_header",
        "flag",
        help="The file has no header row: columns are taken by number (by default in the "
        "format's order: a, b, value; a, b, c, choice; each then participant).",
        required=False,
    ),
    ImportField(
        "columns",
        "text",
        help="Which column holds what, by header name or number (1 = first): e.g. "
        "'a=word1, b=word2, value=SimLex999'. Blank: the format's own column names.",
        required=False,
        max_length=500,
    ),
    ImportField(
        "choice_is",
        "choice",
        help="Triplets and 2AFC: the choice column names the chosen stimulus, or gives its "
        "position among the options (1-3 for a, b, c; 1-2 for first, second).",
        choices=tuple(
            (meaning, label)
            for meaning, label in zip(
                CHOICE_MEANINGS, ("the chosen stimulus", "its position"), strict=True
            )
        ),
        default="reference",
    ),
    ImportField(
        "names_file",
        "file",
        help="Index-coded stimuli (THINGS' triplets): a CSV or TSV with a header row that "
        "lists the stimuli in index order; the file's stimulus cells are indices.",
        required=False,
    ),
    ImportField(
        "names_column",
        "text",
        help="With a names file: the column holding the names, by header name or number "
        "(blank: the first; THINGS' item_names.tsv: uniqueID).",
        required=False,
        max_length=100,
    ),
    ImportField(
        "index_base",
        "choice",
        help="With a names file: the index of its first name.",
        choices=(("1", "1 (the first name is 1)"), ("0", "0 (the first name is 0)")),
        default="1",
    ),
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
    ImportField(
        "self_pairs",
        "choice",
        help="Pairs only: rows whose two stimuli are the same (STS sets have them). Kept, they "
        "are scored with a model's similarity of a stimulus with itself; dropped, the number "
        "dropped is recorded with the data.",
        choices=tuple(
            (rule, label)
            for rule, label in zip(
                SELF_PAIR_RULES, ("keep (a judgment like any other)", "drop them"), strict=True
            )
        ),
        default="keep",
    ),
    ImportField(
        "scoring_unit",
        "choice",
        help="Pairs only: what a correlation with a model counts once. Per pair averages the "
        "rows of a pair first; per row scores every row as published (MTEB's STS does).",
        choices=tuple((unit.value, unit.label) for unit in ScoringUnit),
        default=ScoringUnit.PAIR.value,
    ),
    ImportField(
        "value_is",
        "choice",
        help="Pairs only: what the value column says. Dissimilarities (distances) are kept as "
        "published and negated when scored, so a model agreeing with people scores positive.",
        choices=tuple((meaning.value, meaning.label) for meaning in ValueMeaning),
        default=ValueMeaning.SIMILARITY.value,
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


# --- Embeddings computed elsewhere ------------------------------------------------------------
EMBEDDING_IMPORT_FIELDS: tuple[ImportField, ...] = (
    ImportField("name", "text", help="The model's name, e.g. SPoSE-49d.", max_length=200),
    ImportField("dataset", "dataset", help="The stimuli the embeddings are of."),
    ImportField(
        "file",
        "file",
        help="npy, npz, thingsvision's txt/hdf5/mat, parquet or csv: one row per stimulus.",
    ),
    ImportField(
        "ids_file",
        "file",
        help="Optional: the rows' ids, one per line (thingsvision's file_names.txt).",
        required=False,
    ),
    ImportField(
        "match",
        "choice",
        help="How rows meet stimuli: by stimulus id or name (auto: whichever every id reaches "
        "exactly one stimulus by), or by order.",
        choices=tuple((rule, rule) for rule in EMBEDDING_MATCH_RULES),
        default="auto",
    ),
    ImportField(
        "provenance",
        "text",
        help="Where they come from: the paper, code or data they were computed with.",
        required=False,
        multiline=True,
    ),
    ImportField("link", "text", help="A link to the source.", required=False, max_length=500),
    ImportField("licence", "text", help="e.g. CC BY 4.0.", required=False, max_length=200),
)


# --- Datasets ---------------------------------------------------------------------------------
DATASET_IMPORT_FIELDS: tuple[ImportField, ...] = (
    ImportField("name", "text", max_length=200),
    ImportField(
        "modality",
        "choice",
        choices=(
            (Modality.IMAGE, "Images: a zip of folders named by label"),
            (Modality.TEXT, "Texts: a CSV file, one text per row"),
            (Modality.AUDIO, "Audio: a zip of folders named by label (wav, flac, ogg, mp3)"),
            (
                Modality.VIDEO,
                "Video: a zip of folders named by label (mp4, webm, mov, mkv, avi)",
            ),
        ),
        initial=Modality.IMAGE,
        radio=True,
    ),
    ImportField(
        "file",
        "file",
        help="Images, audio or video: a zip of label folders. Texts: a UTF-8 CSV with a header.",
    ),
    ImportField(
        "frame_sampling",
        "text",
        help="Video only: which frames models see. frames=8 spreads 8 frames evenly over "
        "each clip; fps=2,max=32 takes 2 frames per second, at most 32. Fixed for the "
        "dataset.",
        required=False,
        max_length=40,
        default="frames=8",
    ),
    ImportField(
        "text_column",
        "text",
        help="CSV only: column holding the text.",
        required=False,
        max_length=100,
        default="text",
    ),
    ImportField(
        "label_column",
        "text",
        help="CSV only: column holding the label (blank: none).",
        required=False,
        max_length=100,
        default="label",
    ),
    ImportField(
        "split_column",
        "text",
        help="CSV only: optional column with train/val/test.",
        required=False,
        max_length=100,
    ),
    ImportField("description", "text", required=False, multiline=True),
    ImportField(
        "origin",
        "text",
        help="Where the stimuli come from (a paper, a link); shown on the dataset's page.",
        required=False,
        max_length=200,
    ),
)

TEXT_COLUMN_ERROR = "Name the CSV column that holds the texts."


def text_column_error(*, modality: str | None, text_column: str | None) -> str | None:
    """The message when a text dataset names no column for its texts."""
    if modality == Modality.TEXT and not (text_column or "").strip():
        return TEXT_COLUMN_ERROR
    return None
