"""Import published human judgments from a CSV or TSV file, so they can be scored without a study.

Formats (a header row names the columns, matched ignoring case and surrounding spaces; other
columns are ignored; the delimiter, comma, semicolon or tab, is sniffed):

- ``pairs``: ``a, b, value`` and optionally ``participant``: one rating, or one mean rating,
  per row. Rows for the same pair are separate judgments (their mean is what is scored).
- ``triplets``: ``a, b, c, choice`` (+ ``participant``): ``choice`` is the odd one out.
- ``2afc``: ``reference, first, second, choice`` (+ ``participant``): ``choice`` is the
  candidate judged more like the reference.
- ``matrix``: a square similarity matrix. The first row holds the stimuli (after a corner
  cell), the first column the same stimuli in the same order; the diagonal is ignored and
  each pair i < j becomes one rating. An asymmetric matrix is refused unless ``symmetrize``
  asks for the two triangles to be averaged.

``choice`` names the chosen stimulus itself, written exactly as in its column; a position
(``1``, ``a``) is refused, because stimuli may well be called "1" or "a".

Each reference is matched to a stimulus of an existing dataset by ``match``:
``id`` (the stimulus id), ``name`` (its name, the last part of its name, or its stored file
name, all exact), ``text`` (its text, compared after Unicode NFC normalisation, case folding
and collapsing runs of white space to one space), or ``auto`` (all three together: each
reference must reach exactly one stimulus). A reference that matches no stimulus, or several,
is refused. Stimuli are never added to an existing dataset: that would change its content
hash, which keys its cached embeddings (one row per stimulus), and runs on it would stop
lining up. Instead, ``new_dataset_name`` with ``create_missing=True`` creates a new text
dataset whose stimuli are the file's references, in sorted order.

Row numbers in messages are the file's line numbers (the header is line 1). Nothing is
stored unless the whole file is good: it is parsed and matched first, then the new dataset
(if any) and the judgments are created in one transaction.
"""

from __future__ import annotations

import csv
import itertools
import math
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core.fields import max_length
from core.uploads import human_bytes
from evaluation.engine.fingerprint import stimulus_hash
from evaluation.imports.reading import (
    CsvReader,
    ImportProblem,
    ParsedStimulus,
    csv_cells,
    csv_reader,
    likely_cause,
)
from evaluation.imports.stimuli import dataset_import
from evaluation.judgments import JudgmentRow, item_key, judgments_create
from evaluation.models import (
    Dataset,
    HumanJudgments,
    Judgment,
    JudgmentKind,
    Modality,
    ScoringUnit,
    Stimulus,
)

MATCH_RULES = ("auto", "id", "name", "text")
# A row pairing a stimulus with itself: in published data a judgment (STS sets have them and
# benchmarks score them), kept unless the researcher drops them on purpose (recorded).
SELF_PAIR_RULES = ("keep", "drop")
# Every row becomes a Judgment object in memory before the bulk insert; beyond this, split
# the file (THINGS' full 4.7M triplets would need several GB).
MAX_JUDGMENT_ROWS = 2_000_000
SYMMETRY_TOLERANCE = 1e-9
MAX_LISTED = 5
POSITION_WORDS = {"1", "2", "3", "a", "b", "c", "first", "second"}


CHOICE_MEANINGS = ("reference", "position")


@dataclass(frozen=True)
class ColumnMap:
    """How a file as published maps onto a layout. The defaults read the layout's own column
    names from a header; a file without one is read by column number (1 = first), by default
    in the layout's order (a, b, value; a, b, c, choice; each then participant).

    ``columns`` maps a role (a, b, c, reference, first, second, value, choice, participant)
    to a header name or a column number. ``choice_is`` says whether the choice column names
    the chosen stimulus (``reference``) or its position among the options (``position``:
    1-3 for a triplet's a, b, c; 1-2 for a 2AFC trial's first and second). ``names`` makes
    the stimulus cells indices into that list (``index_base`` = the first name's index), as
    in THINGS' triplets."""

    header: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    choice_is: str = "reference"
    names: tuple[str, ...] = ()
    index_base: int = 1

    def describe(self) -> dict[str, Any]:
        """What the import recorded (``import_report``), to read the file the same way again."""
        described: dict[str, Any] = {"header": self.header, "columns": dict(self.columns)}
        if self.choice_is != "reference":
            described["choice_is"] = self.choice_is
        if self.names:
            described.update(names=len(self.names), index_base=self.index_base)
        return described


def parse_columns(text: str) -> dict[str, str]:
    """``"a=word1, b=word2, value=SimLex999"`` -> {"a": "word1", ...} (roles checked later)."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        role, equals, column = (x.strip() for x in part.partition("="))
        if not equals or not role or not column:
            raise ValidationError(
                {"columns": f"{part!r} is not role=column (e.g. a=word1 or value=3)."}
            )
        if role.lower() in mapping:
            raise ValidationError({"columns": f"The role {role!r} is mapped twice."})
        mapping[role.lower()] = column
    return mapping


@dataclass(frozen=True)
class _Layout:
    kind: str
    stimuli: tuple[str, ...]  # columns naming the trial's stimuli, in JudgmentRow order
    options: tuple[str, ...]  # the columns ``choice`` may name; none for ratings

    @property
    def required(self) -> tuple[str, ...]:
        return (*self.stimuli, "choice" if self.options else "value")


LAYOUTS = {
    "pairs": _Layout(JudgmentKind.PAIRS, ("a", "b"), ()),
    "triplets": _Layout(JudgmentKind.TRIPLETS, ("a", "b", "c"), ("a", "b", "c")),
    "2afc": _Layout(JudgmentKind.TWO_AFC, ("reference", "first", "second"), ("first", "second")),
}
FORMATS = (*LAYOUTS, "matrix")


@dataclass(frozen=True)
class ParsedJudgment:
    """One judgment read from the file, before its references are matched to stimuli."""

    line: int
    references: tuple[str, ...]
    value: float | None = None
    choice: str | None = None  # the chosen reference, as written in its column
    participant: str = ""


# --- Entry point ---------------------------------------------------------------------------
def judgments_import(
    *,
    file: UploadedFile | IO[bytes],
    format: str,
    name: str,
    dataset: Dataset | None = None,
    new_dataset_name: str = "",
    match: str = "auto",
    create_missing: bool = False,
    symmetrize: bool = False,
    allow_repeats: bool = False,
    scale_min: float | None = None,
    scale_max: float | None = None,
    self_pairs: str = "keep",
    scoring_unit: str = ScoringUnit.PAIR,
    columns: ColumnMap | None = None,
    origin: str = "",
    description: str = "",
    created_by: Any = None,
) -> HumanJudgments:
    """Store the file's judgments as a new version of ``name``, over ``dataset`` or over a new
    text dataset called ``new_dataset_name`` (which needs ``create_missing=True``).

    ``allow_repeats`` accepts a participant judging the same item twice (planned test-retest
    trials, as in THINGS' noise-ceiling set); otherwise that is refused as a duplicate.
    ``self_pairs`` keeps (default) or drops rows that pair a stimulus with itself;
    ``scoring_unit`` says whether a correlation with a model counts each unordered pair once
    (its rows averaged) or each row as published. Both, with the CSV dialect used and the
    counts, are recorded with the data (``import_report``). ``columns`` reads a file as
    published (another header, none, index-coded stimuli, choices by position).
    Raises ValidationError (keyed by argument, or ``file`` for the file's content).
    """
    name, new_dataset_name = name.strip(), new_dataset_name.strip()
    _check_arguments(
        format=format,
        name=name,
        dataset=dataset,
        new_dataset_name=new_dataset_name,
        match=match,
        create_missing=create_missing,
        symmetrize=symmetrize,
        self_pairs=self_pairs,
        scoring_unit=scoring_unit,
    )
    kind = LAYOUTS[format].kind if format in LAYOUTS else JudgmentKind.PAIRS
    _check_scale(kind, scale_min, scale_max)
    _check_upload_size(file)
    try:
        parsed, read_as = parse_judgment_csv(
            file, format=format, symmetrize=symmetrize, columns=columns
        )
        references = list(dict.fromkeys(ref for item in parsed for ref in item.references))
        if dataset is None:
            orders = _orders_for_new_dataset(references)
        else:
            orders = _orders_in_dataset(dataset, references, match)
        rows, dropped = _judgment_rows(
            kind, parsed, orders, scale_min, scale_max, allow_repeats, self_pairs
        )
    except ImportProblem as exc:
        raise ValidationError({"file": str(exc)}) from None
    if not rows:
        raise ValidationError(
            {"self_pairs": f"All {dropped} rows pair a stimulus with itself; nothing is left."}
        )
    report = _import_report(kind, read_as, parsed, rows, self_pairs, dropped)
    if columns is not None and format != "matrix":
        report["columns"] = columns.describe()
    origin = origin or _default_origin(format, file)
    with transaction.atomic():
        if dataset is None:
            dataset = _text_dataset_create(
                name=new_dataset_name,
                texts=sorted(orders, key=orders.__getitem__),
                upload=file,
                judgments_name=name,
                origin=origin,
                created_by=created_by,
            )
        return judgments_create(
            dataset=dataset,
            name=name,
            kind=kind,
            rows=rows,
            scale_min=scale_min,
            scale_max=scale_max,
            allow_repeats=allow_repeats,
            origin=origin,
            description=description,
            scoring_unit=scoring_unit,
            import_report=report,
            created_by=created_by,
        )


def _import_report(
    kind: str,
    read_as: str,
    parsed: Sequence[ParsedJudgment],
    rows: Sequence[JudgmentRow],
    self_pairs: str,
    dropped: int,
) -> dict[str, Any]:
    """How the file was read and what was kept, stored with the data and shown to the user."""
    report: dict[str, Any] = {"read_as": read_as, "rows_read": len(parsed), "stored": len(rows)}
    if kind == JudgmentKind.PAIRS:
        pair_rows = Counter(item_key(kind, row.stimuli) for row in rows)
        report.update(
            self_pairs=self_pairs,
            self_pairs_kept=sum(1 for row in rows if row.stimuli[0] == row.stimuli[1]),
            self_pairs_dropped=dropped,
            repeated_pairs=sum(1 for n in pair_rows.values() if n > 1),
            rows_of_repeated_pairs=sum(n for n in pair_rows.values() if n > 1),
        )
    return report


def report_lines(judgments: HumanJudgments) -> list[str]:
    """The import report in words: how the file was read and what was kept, and the unit."""
    report = judgments.import_report or {}
    lines = [f"Read as {report['read_as']}."] if report.get("read_as") else []
    if judgments.kind != JudgmentKind.PAIRS or "self_pairs_kept" not in report:
        return lines
    kept, dropped = report["self_pairs_kept"], report["self_pairs_dropped"]
    if kept:
        lines.append(
            f"{kept} row(s) pair a stimulus with itself: kept, and scored with the model's "
            "similarity of a stimulus with itself."
        )
    if dropped:
        lines.append(f"{dropped} row(s) pairing a stimulus with itself dropped, as asked.")
    repeated = report["repeated_pairs"]
    unit = ScoringUnit(judgments.scoring_unit).label
    if repeated:
        lines.append(
            f"{repeated} pair(s) appear in more than one row ({report['rows_of_repeated_pairs']} "
            f"rows); scored {unit}."
        )
    else:
        lines.append(f"Every pair appears once; scored {unit}.")
    return lines


def column_map_from(data: Mapping[str, Any]) -> ColumnMap:
    """The column mapping asked for by the import form's, the API's or the CLI's fields."""
    names_file = data.get("names_file")
    try:
        names = read_names(names_file) if names_file else ()
    except ImportProblem as exc:
        raise ValidationError({"names_file": str(exc)}) from None
    choice_is = data.get("choice_is") or "reference"
    if choice_is not in CHOICE_MEANINGS:
        raise ValidationError(
            {"choice_is": f"Unknown meaning {choice_is!r}; use {' or '.join(CHOICE_MEANINGS)}."}
        )
    return ColumnMap(
        header=not data.get("no_header"),
        columns=parse_columns(data.get("columns") or ""),
        choice_is=choice_is,
        names=names,
        index_base=int(data.get("index_base") or 1),
    )


def read_names(upload: IO[bytes]) -> tuple[str, ...]:
    """A names list for index-coded stimuli: the first column of a CSV or TSV with a header
    row (THINGS' item_names.tsv: 1 = its first name)."""
    reader = csv_reader(upload)
    rows = csv_cells(reader, MAX_JUDGMENT_ROWS)
    next(rows, None)  # the header
    names = tuple(cells[0].strip() for _, cells in rows)
    if not names:
        raise ImportProblem("The names file has a header but no names.")
    empty = [k for k, name in enumerate(names, start=2) if not name]
    if empty:
        raise ImportProblem(f"Row {empty[0]} of the names file has no name in its first column.")
    return names


def judgments_import_from(data: Mapping[str, Any], *, created_by: Any = None) -> HumanJudgments:
    """``judgments_import`` from the fields of the import form or the API: a file imported
    into a new text dataset creates its stimuli; one matched to a dataset never does."""
    dataset = data["dataset"]
    return judgments_import(
        file=data["file"],
        format=data["format"],
        name=data["name"],
        dataset=dataset,
        new_dataset_name="" if dataset else data["new_dataset_name"],
        match=data["match"],
        create_missing=not dataset,
        symmetrize=data["symmetrize"],
        allow_repeats=data["allow_repeats"],
        scale_min=data["scale_min"],
        scale_max=data["scale_max"],
        self_pairs=data.get("self_pairs") or "keep",
        scoring_unit=data.get("scoring_unit") or ScoringUnit.PAIR,
        columns=column_map_from(data),
        description=data["description"],
        created_by=created_by,
    )


def _check_arguments(
    *,
    format: str,
    name: str,
    dataset: Dataset | None,
    new_dataset_name: str,
    match: str,
    create_missing: bool,
    symmetrize: bool,
    self_pairs: str,
    scoring_unit: str,
) -> None:
    if format not in FORMATS:
        raise ValidationError(
            {"format": f"Unknown format {format!r}; use one of {', '.join(FORMATS)}."}
        )
    if symmetrize and format != "matrix":
        raise ValidationError({"symmetrize": "Symmetrizing applies to the matrix format only."})
    if self_pairs not in SELF_PAIR_RULES:
        raise ValidationError(
            {"self_pairs": f"Unknown rule {self_pairs!r}; use {' or '.join(SELF_PAIR_RULES)}."}
        )
    if scoring_unit not in ScoringUnit.values:
        raise ValidationError(
            {
                "scoring_unit": f"Unknown scoring unit {scoring_unit!r}; use "
                f"{' or '.join(ScoringUnit.values)}."
            }
        )
    if match not in MATCH_RULES:
        raise ValidationError(
            {"match": f"Unknown match rule {match!r}; use one of {', '.join(MATCH_RULES)}."}
        )
    name_limit = max_length(HumanJudgments, "name")
    if not name or len(name) > name_limit:
        raise ValidationError(
            {"name": f"Give the judgments a name of 1 to {name_limit} characters."}
        )
    if (dataset is None) == (not new_dataset_name):
        raise ValidationError(
            {"dataset": "Choose an existing dataset, or name a new text dataset; not both."}
        )
    if dataset is not None:
        _check_existing_dataset(dataset, match, create_missing)
    else:
        _check_new_dataset(new_dataset_name, match, create_missing)


def _check_existing_dataset(dataset: Dataset, match: str, create_missing: bool) -> None:
    if create_missing:
        raise ValidationError(
            {
                "create_missing": "Stimuli are never added to an existing dataset: that would "
                "change its content hash, so its cached embeddings and runs would no longer "
                "line up with it. Import into a new text dataset instead."
            }
        )
    if match == "text" and dataset.modality != Modality.TEXT:
        raise ValidationError(
            {
                "match": f"{dataset.name} holds {dataset.modality} stimuli, which have no text; "
                "match them by id or name."
            }
        )


def _check_new_dataset(new_dataset_name: str, match: str, create_missing: bool) -> None:
    if not create_missing:
        raise ValidationError(
            {
                "create_missing": "A new dataset is made of the file's references as text "
                "stimuli; confirm that with create_missing."
            }
        )
    if match != "auto":
        raise ValidationError(
            {"match": "Matching applies to an existing dataset; a new one is made from the file."}
        )
    name_limit = max_length(Dataset, "name")
    if len(new_dataset_name) > name_limit:
        raise ValidationError(
            {"new_dataset_name": f"A dataset name has at most {name_limit} characters."}
        )
    if Dataset.objects.filter(name=new_dataset_name).exists():
        raise ValidationError(
            {"new_dataset_name": f"A dataset called {new_dataset_name!r} already exists."}
        )


def _check_scale(kind: str, scale_min: float | None, scale_max: float | None) -> None:
    if scale_min is None and scale_max is None:
        return
    if kind != JudgmentKind.PAIRS:
        raise ValidationError({"scale_min": "A rating scale applies to pair ratings only."})
    for name, bound in (("scale_min", scale_min), ("scale_max", scale_max)):
        if bound is not None and not math.isfinite(bound):
            raise ValidationError({name: "The scale's ends must be finite numbers."})
    if scale_min is not None and scale_max is not None and scale_min >= scale_max:
        raise ValidationError({"scale_max": "The scale's maximum must exceed its minimum."})


def _check_upload_size(file: UploadedFile | IO[bytes]) -> None:
    size = getattr(file, "size", None)
    if size is not None and size > settings.DATASET_UPLOAD_MAX_BYTES:
        raise ValidationError(
            {
                "file": f"The file is {human_bytes(size)}; the limit is "
                f"{human_bytes(settings.DATASET_UPLOAD_MAX_BYTES)} (DATASET_UPLOAD_MAX_BYTES)."
            }
        )


def _default_origin(format: str, file: UploadedFile | IO[bytes]) -> str:
    file_name = PurePosixPath(str(getattr(file, "name", "") or "")).name
    limit = max_length(HumanJudgments, "origin")
    return (f"{format} file {file_name}" if file_name else f"{format} file")[:limit]


# --- Parsing -------------------------------------------------------------------------------
def parse_judgment_csv(
    upload: IO[bytes],
    *,
    format: str,
    symmetrize: bool = False,
    columns: ColumnMap | None = None,
) -> tuple[list[ParsedJudgment], str]:
    """Read every judgment of the file, or raise ImportProblem naming the row at fault; with
    how the file was read (its CSV dialect, said back to the user)."""
    reader = csv_reader(upload)
    if format == "matrix":
        return _parse_matrix(reader, symmetrize), f"{reader.read_as}; the matrix's upper triangle"
    layout, mapping = LAYOUTS[format], columns or ColumnMap()
    rows = csv_cells(reader, MAX_JUDGMENT_ROWS)
    header: list[str] | None = None
    if mapping.header:
        _, header = next(rows, (0, []))
        if not header:
            raise ImportProblem("The file is empty.")
    positions = _column_positions(layout, format, mapping, header)
    parsed = []
    for line, cells in rows:
        if header is not None and len(cells) > len(header):
            raise ImportProblem(
                f"Row {line} has more fields than the header. {likely_cause(reader.read_as)} "
                f"The file was read as {reader.read_as}."
            )
        row = {role: cells[at] if at < len(cells) else "" for role, at in positions.items()}
        parsed.append(_parse_row(row, line, layout, mapping))
    if not parsed:
        raise ImportProblem(
            "The file has a header but no rows." if header else "The file is empty."
        )
    return parsed, str(reader.read_as)


@dataclass(frozen=True)
class Preview:
    """The first rows of a file as Likeness reads them, and where each role's cells are."""

    read_as: str
    header: list[str] | None
    rows: list[list[str]]
    roles: list[tuple[str, int, str]]  # (role, column number from 1, its header name)
    problem: str = ""


PREVIEW_ROWS = 6


def preview_judgment_file(upload: IO[bytes], *, format: str, columns: ColumnMap) -> Preview:
    """How the import would read the file's columns, from its first rows (nothing stored)."""
    if format not in LAYOUTS:
        raise ImportProblem("Choose pairs, triplets or 2AFC to map columns (a matrix has none).")
    reader = csv_reader(upload)
    lines = csv_cells(reader, PREVIEW_ROWS + 1)
    header = next(lines, (0, []))[1] if columns.header else None
    rows = [cells for _, cells in itertools.islice(lines, PREVIEW_ROWS)]
    try:
        positions = _column_positions(LAYOUTS[format], format, columns, header)
    except ImportProblem as exc:
        return Preview(str(reader.read_as), header, rows, [], str(exc))
    roles = [
        (role, at + 1, header[at] if header and at < len(header) else "")
        for role, at in positions.items()
    ]
    return Preview(str(reader.read_as), header, rows, roles)


def _column_positions(
    layout: _Layout, format: str, mapping: ColumnMap, header: list[str] | None
) -> dict[str, int]:
    """Where each role's cells are: 0-based column positions."""
    roles = (*layout.required, "participant")
    unknown = sorted(set(mapping.columns) - set(roles))
    if unknown:
        raise ImportProblem(
            f"A {format} file has no role {unknown[0]!r}; its roles are {', '.join(roles)}."
        )
    if header is None:
        return _positions_by_number(layout, format, mapping)
    found = [cell.strip() for cell in header]
    names = [cell.lower() for cell in found]
    positions: dict[str, int] = {}
    missing = []
    for role in roles:
        wanted = mapping.columns.get(role, role)
        if wanted.isdigit():
            positions[role] = _column_number(wanted, len(header), role)
        elif names.count(wanted.lower()) > 1:
            raise ImportProblem(f"The header names the column {wanted!r} more than once.")
        elif wanted.lower() in names:
            positions[role] = names.index(wanted.lower())
        elif role != "participant" or role in mapping.columns:
            missing.append(wanted)
    if missing:
        mapped = " (as mapped)" if mapping.columns else ""
        raise ImportProblem(
            f"The file has no {', '.join(repr(c) for c in missing)} column{mapped}; a {format} "
            f"file needs columns {', '.join(layout.required)} (and optionally participant). Its "
            f"first line, read as the header, holds: {', '.join(repr(c) for c in found)}. Map "
            "the file's columns to these roles, or say that it has no header."
        )
    return positions


def _positions_by_number(layout: _Layout, format: str, mapping: ColumnMap) -> dict[str, int]:
    named = [role for role, column in mapping.columns.items() if not column.isdigit()]
    if named:
        raise ImportProblem(
            f"A file without a header has no column names: map {named[0]!r} to a column "
            "number (1 = the first column)."
        )
    if mapping.columns:
        positions = {role: int(column) - 1 for role, column in mapping.columns.items()}
        missing = [role for role in layout.required if role not in positions]
        if missing:
            raise ImportProblem(
                f"Say which column holds {', '.join(missing)}: a {format} file needs "
                f"{', '.join(layout.required)}."
            )
        if any(at < 0 for at in positions.values()):
            raise ImportProblem("Column numbers start at 1.")
        return positions
    # The layout's order, then participant: MEN or WordSim (word1 word2 score), THINGS
    # (item_i item_j item_k choice participant).
    roles = (*layout.required, "participant")
    return {role: at for at, role in enumerate(roles)}


def _column_number(raw: str, width: int, role: str) -> int:
    number = int(raw)
    if not 1 <= number <= width:
        raise ImportProblem(
            f"The file has {width} columns; {role} cannot be column {number} (1 = the first)."
        )
    return number - 1


def _parse_row(
    row: dict[str, str], line: int, layout: _Layout, mapping: ColumnMap
) -> ParsedJudgment:
    references = tuple(
        _reference(_cell(row, column, line), line, mapping) for column in layout.stimuli
    )
    participant = _participant(row, line)
    if layout.options:
        if mapping.choice_is == "position":
            choice = _choice_by_position(row, references, layout, line)
        else:
            row = {**row, "choice": _reference(_cell(row, "choice", line), line, mapping)}
            choice = _choice(row, references, layout, line)
        return ParsedJudgment(line, references, choice=choice, participant=participant)
    value = _number(_cell(row, "value", line), line, "the value")
    return ParsedJudgment(line, references, value=value, participant=participant)


def _reference(cell: str, line: int, mapping: ColumnMap) -> str:
    """A stimulus as the file writes it; with a names list, the name its index points to."""
    if not mapping.names:
        return cell
    first, last = mapping.index_base, mapping.index_base + len(mapping.names) - 1
    if not cell.lstrip("-").isdigit() or not first <= int(cell) <= last:
        raise ImportProblem(
            f"Row {line}: {cell!r} is not an index into the names list ({first} to {last})."
        )
    return mapping.names[int(cell) - first]


def _choice_by_position(
    row: dict[str, str], references: tuple[str, ...], layout: _Layout, line: int
) -> str:
    options = [
        ref
        for column, ref in zip(layout.stimuli, references, strict=True)
        if column in layout.options
    ]
    raw = _cell(row, "choice", line)
    if not raw.isdigit() or not 1 <= int(raw) <= len(options):
        raise ImportProblem(
            f"Row {line}: the choice {raw!r} is not a position 1 to {len(options)} among "
            f"the options ({', '.join(layout.options)})."
        )
    return options[int(raw) - 1]


def _cell(row: dict[str, str], column: str, line: int) -> str:
    value = (row.get(column) or "").strip()  # a short row leaves its last columns as None
    if not value:
        raise ImportProblem(f"Row {line}: the column {column!r} is empty.")
    return value


def _participant(row: dict[str, str], line: int) -> str:
    participant = (row.get("participant") or "").strip()
    limit = max_length(Judgment, "participant")
    if len(participant) > limit:
        raise ImportProblem(f"Row {line}: the participant id is longer than {limit} characters.")
    return participant


def _number(raw: str, line: int, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ImportProblem(f"Row {line}: {what} {raw!r} is not a number.") from None
    if not math.isfinite(value):
        raise ImportProblem(f"Row {line}: {what} {raw!r} is not a finite number.")
    return value


def _choice(row: dict[str, str], references: tuple[str, ...], layout: _Layout, line: int) -> str:
    choice = _cell(row, "choice", line)
    options = [
        ref
        for column, ref in zip(layout.stimuli, references, strict=True)
        if column in layout.options
    ]
    if choice in options:
        return choice
    if choice in references:
        raise ImportProblem(
            f"Row {line}: the choice {choice!r} is the reference; it must be the first or the "
            "second stimulus."
        )
    hint = (
        " The choice names the chosen stimulus itself, not its position."
        if choice.lower() in POSITION_WORDS
        else ""
    )
    raise ImportProblem(
        f"Row {line}: the choice {choice!r} is not one of the trial's options "
        f"({', '.join(repr(o) for o in options)}).{hint}"
    )


def _parse_matrix(reader: CsvReader, symmetrize: bool) -> list[ParsedJudgment]:
    table = list(_nonblank_rows(reader))
    if not table:
        raise ImportProblem("The file holds no matrix: all its cells are empty.")
    header_line, header = table[0]
    labels = [cell.strip() for cell in header[1:]]
    _check_matrix_labels(labels, header_line)
    size = len(labels)
    if size * (size - 1) // 2 > MAX_JUDGMENT_ROWS:
        raise ImportProblem(
            f"A matrix of {size} stimuli holds more than {MAX_JUDGMENT_ROWS} pairs; split it."
        )
    body = table[1:]
    if len(body) != size:
        raise ImportProblem(
            f"The matrix names {size} stimuli in its header but has {len(body)} rows below it; "
            "it must be square."
        )
    values = np.array([_matrix_row(cells, i, labels, line) for i, (line, cells) in enumerate(body)])
    if symmetrize:
        values = (values + values.T) / 2
    else:
        _check_symmetric(values, labels)
    return [
        ParsedJudgment(line, (labels[i], labels[j]), value=float(values[i, j]))
        for i, (line, _) in enumerate(body)
        for j in range(i + 1, size)
    ]


def _nonblank_rows(table: CsvReader) -> Iterator[tuple[int, list[str]]]:
    # The matrix header holds stimuli, not column names: read the file's plain rows.
    reader = table.reader
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        raise ImportProblem(f"The file is malformed near row {reader.line_num}: {exc}") from None


def _check_matrix_labels(labels: Sequence[str], line: int) -> None:
    if len(labels) < 2:
        raise ImportProblem(
            f"Row {line}: a similarity matrix needs a header row naming at least two stimuli "
            "after its corner cell."
        )
    first_column: dict[str, int] = {}
    for column, label in enumerate(labels, start=2):
        if not label:
            raise ImportProblem(
                f"Row {line}: header cell {column} is empty; it must name a stimulus."
            )
        earlier = first_column.setdefault(label, column)
        if earlier != column:
            raise ImportProblem(
                f"Row {line}: the header names {label!r} twice (cells {earlier} and {column})."
            )


def _matrix_row(cells: list[str], index: int, labels: Sequence[str], line: int) -> list[float]:
    size = len(labels)
    if len(cells) != size + 1:
        raise ImportProblem(
            f"Row {line} has {len(cells)} cells; each row of this matrix holds its stimulus and "
            f"{size} values."
        )
    label = cells[0].strip()
    if label != labels[index]:
        raise ImportProblem(
            f"Row {line} starts with {label!r}, but stimulus {index + 1} of the header is "
            f"{labels[index]!r}; the first column must list the header's stimuli in its order."
        )
    return [
        math.nan
        if j == index
        else _number(cells[j + 1].strip(), line, f"the cell under {labels[j]!r}")
        for j in range(size)
    ]


def _check_symmetric(values: np.ndarray, labels: Sequence[str]) -> None:
    difference = np.abs(values - values.T)
    np.fill_diagonal(difference, 0.0)  # the diagonal is ignored (and NaN)
    asymmetric = int((difference > SYMMETRY_TOLERANCE).sum()) // 2
    if not asymmetric:
        return
    i, j = (int(k) for k in np.unravel_index(int(np.argmax(difference)), difference.shape))
    raise ImportProblem(
        f"The matrix is not symmetric ({asymmetric} pairs differ); the largest difference: row "
        f"{labels[i]!r}, column {labels[j]!r} holds {values[i, j]:g} but row {labels[j]!r}, "
        f"column {labels[i]!r} holds {values[j, i]:g}. Fix the file, or symmetrize to average "
        "the two triangles."
    )


# --- Matching references to stimuli --------------------------------------------------------
def _orders_for_new_dataset(references: list[str]) -> dict[str, int]:
    """A new dataset holds the references as written, sorted, so that the same set of texts
    always makes the same dataset content hash (and reuses its cached embeddings)."""
    if len(references) > settings.DATASET_MAX_STIMULI:
        raise ImportProblem(
            f"The file names {len(references)} stimuli; a dataset holds at most "
            f"{settings.DATASET_MAX_STIMULI} (DATASET_MAX_STIMULI)."
        )
    return {reference: order for order, reference in enumerate(sorted(references))}


def _orders_in_dataset(dataset: Dataset, references: list[str], match: str) -> dict[str, int]:
    index, id_of_order = _stimulus_index(dataset)
    rules = ("id", "name", "text") if match == "auto" else (match,)
    how = "id, name or text" if match == "auto" else match
    orders: dict[str, int] = {}
    unknown: list[str] = []
    ambiguous: list[str] = []
    for reference in references:
        found = set().union(
            *(index[rule].get(_reference_key(rule, reference), ()) for rule in rules)
        )
        if len(found) == 1:
            orders[reference] = found.pop()
        elif found:
            ids = ", ".join(str(id_of_order[order]) for order in sorted(found))
            ambiguous.append(f"{reference!r} (stimuli {ids})")
        else:
            unknown.append(repr(reference))
    if unknown:
        raise ImportProblem(
            f"{len(unknown)} of the file's {len(references)} stimuli match no stimulus of "
            f"{dataset.name} by {how}: {_listing(unknown)}. Stimuli are never added to an "
            "existing dataset; import into a new text dataset to create them."
        )
    if ambiguous:
        raise ImportProblem(
            f"{len(ambiguous)} of the file's stimuli match more than one stimulus of "
            f"{dataset.name} by {how}: {_listing(ambiguous)}. Name them by id to tell them apart."
        )
    return orders


def _stimulus_index(dataset: Dataset) -> tuple[dict[str, dict[str, set[int]]], dict[int, int]]:
    """For each rule, the stimulus orders each key reaches; and each order's stimulus id."""
    index: dict[str, dict[str, set[int]]] = {"id": {}, "name": {}, "text": {}}
    id_of_order: dict[int, int] = {}
    stimuli = Stimulus.objects.filter(dataset=dataset).values_list(
        "pk", "order", "name", "file", "text"
    )
    for pk, order, name, file, text in stimuli:
        id_of_order[order] = pk
        index["id"].setdefault(str(pk), set()).add(order)
        for key in {name, PurePosixPath(name).name, PurePosixPath(file).name if file else ""}:
            if key:
                index["name"].setdefault(key, set()).add(order)
        if text.strip():
            index["text"].setdefault(normalised_text(text), set()).add(order)
    return index, id_of_order


def _reference_key(rule: str, reference: str) -> str:
    if rule == "id":
        return str(int(reference)) if reference.isascii() and reference.isdigit() else ""
    if rule == "text":
        return normalised_text(reference)
    return reference


def normalised_text(text: str) -> str:
    """How a text is compared: NFC, case-folded, runs of white space as one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return f"{shown} and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else shown


# --- Rows ----------------------------------------------------------------------------------
def _judgment_rows(
    kind: str,
    parsed: Sequence[ParsedJudgment],
    orders: dict[str, int],
    scale_min: float | None,
    scale_max: float | None,
    allow_repeats: bool,
    self_pairs: str,
) -> tuple[list[JudgmentRow], int]:
    """The rows to store, and how many were dropped as pairs of a stimulus with itself."""
    rows = []
    dropped = 0
    first_seen: dict[tuple[Any, ...], int] = {}
    for position, item in enumerate(parsed):
        stimuli = tuple(orders[reference] for reference in item.references)
        if _is_self_pair(kind, item):
            if self_pairs == "drop":
                dropped += 1
                continue
        else:
            _check_distinct(item, stimuli)
        if item.value is not None:
            _check_on_scale(item.line, item.value, scale_min, scale_max)
        if item.participant and not allow_repeats:
            earlier = first_seen.setdefault((item.participant, *item_key(kind, stimuli)), position)
            if earlier != position:
                raise ImportProblem(
                    f"Rows {parsed[earlier].line} and {item.line}: participant "
                    f"{item.participant!r} judged the same item twice. Remove the repeat, or "
                    "allow repeats if the data hold planned test-retest trials."
                )
        chosen = orders[item.choice] if item.choice is not None else None
        rows.append(
            JudgmentRow(stimuli, value=item.value, chosen=chosen, participant=item.participant)
        )
    return rows, dropped


def _is_self_pair(kind: str, item: ParsedJudgment) -> bool:
    """A pair row whose two references are written the same (two spellings that reach one
    stimulus are refused instead: that is more likely a matching problem than data)."""
    return kind == JudgmentKind.PAIRS and item.references[0] == item.references[1]


def _check_distinct(item: ParsedJudgment, stimuli: tuple[int, ...]) -> None:
    """A trial's stimuli must differ; a pair written as one stimulus twice is a self-pair
    (``_is_self_pair``), handled before."""
    for later, order in enumerate(stimuli):
        first = stimuli.index(order)
        if first == later:
            continue
        one, other = item.references[first], item.references[later]
        if one != other:
            problem = f"{one!r} and {other!r} are the same stimulus of the dataset"
        else:
            problem = f"{one!r} appears twice in the trial"
        raise ImportProblem(f"Row {item.line}: {problem}; a trial's stimuli must differ.")


def _check_on_scale(
    line: int, value: float, scale_min: float | None, scale_max: float | None
) -> None:
    if scale_min is not None and value < scale_min:
        raise ImportProblem(
            f"Row {line}: the rating {value:g} is below the scale's minimum {scale_min:g}."
        )
    if scale_max is not None and value > scale_max:
        raise ImportProblem(
            f"Row {line}: the rating {value:g} is above the scale's maximum {scale_max:g}."
        )


# --- A new text dataset --------------------------------------------------------------------
def _text_dataset_create(
    *,
    name: str,
    texts: Sequence[str],
    upload: UploadedFile | IO[bytes],
    judgments_name: str,
    origin: str,
    created_by: Any,
) -> Dataset:
    """A new text dataset whose stimuli are ``texts``, in this order (their order is their row
    in the judgments), created the way every dataset import creates one."""
    name_limit = max_length(Stimulus, "name")
    stimuli = [
        ParsedStimulus(
            name=text[:name_limit],
            label="",
            split="",
            text=text,
            content_hash=stimulus_hash(content=text.encode("utf-8")),
        )
        for text in texts
    ]
    return dataset_import(
        name=name,
        modality=Modality.TEXT,
        upload=upload,
        parse=lambda staging: stimuli,
        created_by=created_by,
        description=f"The stimuli of the judgments {judgments_name!r}.",
        origin=origin,
    )
