"""Reading a published judgment file as it is: its layout (pairs, triplets, 2AFC, a square
matrix), which column holds what, and its rows, before any stimulus is matched.

Layouts, by role: ``pairs`` a, b, value; ``triplets`` a, b, c, choice (the odd one out);
``2afc`` reference, first, second, choice (the candidate judged more like the reference);
each optionally participant. By default a header row names the columns (ignoring case and
surrounding spaces; other columns are ignored). A ``ColumnMap`` reads other files as
published: roles mapped to header names or column numbers, no header (columns by number, by
default in the layout's order), the choice given as a position among the options, stimuli
given as indices into a names list (THINGS). ``matrix``: a square similarity matrix whose
first row and column hold the stimuli; the diagonal is ignored and each pair i < j becomes
one rating; an asymmetric matrix is refused unless ``symmetrize`` averages the triangles.

The CSV dialect comes from the file's name and first line (``reading.csv_dialect``). Row
numbers in messages are the file's line numbers (the header is line 1).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from django.core.exceptions import ValidationError

from core.fields import max_length
from evaluation.imports.reading import (
    CsvReader,
    ImportProblem,
    csv_cells,
    csv_reader,
    likely_cause,
)
from evaluation.models import (
    Judgment,
    JudgmentKind,
)

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
    names_column: str = ""  # where the names came from in the names file (blank: its first)

    def describe(self) -> dict[str, Any]:
        """What the import recorded (``import_report``), to read the file the same way again."""
        described: dict[str, Any] = {"header": self.header, "columns": dict(self.columns)}
        if self.choice_is != "reference":
            described["choice_is"] = self.choice_is
        if self.names:
            described.update(names=len(self.names), index_base=self.index_base)
            if self.names_column:
                described["names_column"] = self.names_column
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


def column_map_from(data: Mapping[str, Any]) -> ColumnMap:
    """The column mapping asked for by the import form's, the API's or the CLI's fields."""
    names_file = data.get("names_file")
    try:
        names = read_names(names_file, column=data.get("names_column") or "") if names_file else ()
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
        names_column=(data.get("names_column") or "").strip() if names else "",
    )


def read_names(upload: IO[bytes], *, column: str = "") -> tuple[str, ...]:
    """A names list for index-coded stimuli: a column of a CSV or TSV with a header row, by
    header name or number (1 = first; default the first). THINGS' item_names.tsv lists each
    concept's ``Word`` first, where 27 words name two concepts (bat: the animal and the
    club), and its ``uniqueID`` (bat1, bat2) second: ``column="uniqueID"`` reads it as
    published."""
    reader = csv_reader(upload)
    rows = csv_cells(reader, MAX_JUDGMENT_ROWS)
    header = next(rows, (0, []))[1]
    position = _names_column(header, column.strip())
    names = tuple(cells[position].strip() if position < len(cells) else "" for _, cells in rows)
    if not names:
        raise ImportProblem("The names file has a header but no names.")
    empty = [k for k, name in enumerate(names, start=2) if not name]
    if empty:
        raise ImportProblem(
            f"Row {empty[0]} of the names file has no name in its column {header[position]!r}."
        )
    return names


def _names_column(header: list[str], column: str) -> int:
    """The position of the names column ``column`` (a header name, or a number from 1)."""
    if not header:
        raise ImportProblem("The names file is empty: it needs a header row, then the names.")
    if not column:
        return 0
    if column.isdigit():
        number = int(column)
        if not 1 <= number <= len(header):
            raise ImportProblem(
                f"The names file has {len(header)} columns; there is no column {number}."
            )
        return number - 1
    lowered = [cell.strip().lower() for cell in header]
    if column.lower() not in lowered:
        raise ImportProblem(
            f"The names file has no column {column!r}; its columns are "
            f"{', '.join(repr(cell) for cell in header)}."
        )
    return lowered.index(column.lower())


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
