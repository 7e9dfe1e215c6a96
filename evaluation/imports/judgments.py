"""Import published human judgments from a CSV or TSV file, so they can be scored without a study.

How the file is read (layouts, the column map, rows, matrices) is ``judgment_files``. By
default ``choice`` names the chosen stimulus itself, written exactly as in its column; a
position (``1``, ``a``) is refused unless the column map says choices are positions, because
stimuli may well be called "1" or "a". Rows for the same pair are separate judgments, scored
per pair (their mean) or per row as the import says; a row pairing a stimulus with itself is
kept (or dropped on request) and counted.

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

import math
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from core.fields import max_length
from core.uploads import check_upload_size
from evaluation.engine.fingerprint import stimulus_hash
from evaluation.imports.judgment_files import (
    FORMATS,
    LAYOUTS,
    ColumnMap,
    ParsedJudgment,
    column_map_from,
    parse_judgment_csv,
)
from evaluation.imports.reading import (
    ImportProblem,
    ParsedStimulus,
)
from evaluation.imports.stimuli import dataset_import
from evaluation.judgments import JudgmentRow, item_key, judgments_create
from evaluation.models import (
    Dataset,
    HumanJudgments,
    JudgmentKind,
    Modality,
    ScoringUnit,
    Stimulus,
    ValueMeaning,
)

MATCH_RULES = ("auto", "id", "name", "text")
# A row pairing a stimulus with itself: in published data a judgment (STS sets have them and
# benchmarks score them), kept unless the researcher drops them on purpose (recorded).
SELF_PAIR_RULES = ("keep", "drop")
MAX_LISTED = 5


# Every row becomes a Judgment object in memory before the bulk insert; beyond this, split
# the file (THINGS' full 4.7M triplets would need several GB).
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
    value_is: str = ValueMeaning.SIMILARITY,
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
    check_upload_size(file)
    try:
        parsed, read_as = parse_judgment_csv(
            file, format=format, symmetrize=symmetrize, columns=columns
        )
        references = list(dict.fromkeys(ref for item in parsed for ref in item.references))
        if dataset is None:
            orders = _orders_for_new_dataset(references)
        else:
            orders = orders_in_dataset(dataset, references, match)
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
            value_meaning=value_is,
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
    if judgments.value_meaning == ValueMeaning.DISSIMILARITY:
        lines.append("The values are dissimilarities: kept as published, negated when scored.")
    if repeated:
        lines.append(
            f"{repeated} pair(s) appear in more than one row ({report['rows_of_repeated_pairs']} "
            f"rows); scored {unit}."
        )
    else:
        lines.append(f"Every pair appears once; scored {unit}.")
    return lines


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
        value_is=data.get("value_is") or ValueMeaning.SIMILARITY,
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


def _default_origin(format: str, file: UploadedFile | IO[bytes]) -> str:
    file_name = PurePosixPath(str(getattr(file, "name", "") or "")).name
    limit = max_length(HumanJudgments, "origin")
    return (f"{format} file {file_name}" if file_name else f"{format} file")[:limit]


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


def orders_in_dataset(dataset: Dataset, references: list[str], match: str) -> dict[str, int]:
    index, id_of_order = stimulus_index(dataset)
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


def stimulus_index(dataset: Dataset) -> tuple[dict[str, dict[str, set[int]]], dict[int, int]]:
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
