"""Description sets: the words people used about stimuli (captions, tags), which
language-based models embed (evaluation/engine/adapters/language_adapter.py).

A set is named by its ``origin`` and never changes once stored: a language-based model over
it then has a fixed identity in the embedding cache. A set comes from a CSV of captions or
tags (``stimulus,text[,weight]``), or from a tag study (annotation.services).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from django.core.exceptions import ValidationError
from django.db import transaction

from core.fields import max_length
from core.uploads import check_upload_size
from evaluation.imports.judgments import (
    MAX_LISTED,
    orders_in_dataset,
    stimulus_index,
)
from evaluation.imports.reading import ImportProblem, csv_reader, csv_rows
from evaluation.models import Dataset, Description

MAX_DESCRIPTION_ROWS = 1_000_000
TEXT_LIMIT = max_length(Description, "text")
ORIGIN_LIMIT = max_length(Description, "origin")


@dataclass(frozen=True)
class DescriptionRow:
    stimulus_id: int
    text: str
    weight: float = 1.0


def descriptions_import(
    *, dataset: Dataset, upload: IO[bytes], origin: str, match: str = "auto"
) -> int:
    """Store a CSV of descriptions (``stimulus``, ``text``, optional ``weight`` > 0) as the
    set ``origin``; stimuli are matched by id, name or text as judgment files are. All or
    nothing: any bad row refuses the file, naming the row. Returns the number stored."""
    check_upload_size(upload)
    try:
        parsed = _parse(upload)
        stimulus_of = _stimulus_ids(dataset, [reference for reference, _, _ in parsed], match)
    except ImportProblem as exc:
        raise ValidationError({"file": str(exc)}) from None
    rows = [DescriptionRow(stimulus_of[ref], text, weight) for ref, text, weight in parsed]
    return descriptions_store(origin=origin, rows=rows)


def descriptions_store(*, origin: str, rows: Sequence[DescriptionRow]) -> int:
    """Store a new description set; a name already taken is refused (sets never change)."""
    origin = " ".join(origin.split())
    if not origin or len(origin) > ORIGIN_LIMIT or " | " in origin:
        raise ValidationError(
            {"origin": f"Name the set in 1-{ORIGIN_LIMIT} characters, without ' | '."}
        )
    if Description.objects.filter(origin=origin).exists():
        raise ValidationError(
            {
                "origin": f"A description set called {origin!r} exists already; sets never change, "
                "so choose a new name (e.g. with a version)."
            }
        )
    if not rows:
        raise ValidationError({"file": "There are no descriptions to store."})
    unique = {(row.stimulus_id, row.text): row for row in rows}  # a repeated tag counts once
    with transaction.atomic():
        Description.objects.bulk_create(
            [
                Description(stimulus_id=r.stimulus_id, origin=origin, text=r.text, weight=r.weight)
                for r in unique.values()
            ],
            batch_size=5000,
        )
    return len(unique)


def _parse(upload: IO[bytes]) -> list[tuple[str, str, float]]:
    reader = csv_reader(upload)
    columns = [(name or "").strip().lower() for name in reader.fieldnames or []]
    if "stimulus" not in columns or "text" not in columns:
        raise ImportProblem(
            f"The CSV needs the columns stimulus and text (and optionally weight); it has "
            f"{', '.join(columns) or 'none'}."
        )
    reader.fieldnames = columns
    parsed = []
    for row in csv_rows(reader, MAX_DESCRIPTION_ROWS):
        line = reader.line_num
        reference, text = (row.get("stimulus") or "").strip(), " ".join((row["text"] or "").split())
        if not reference or not text:
            raise ImportProblem(f"Row {line}: the stimulus and the text must not be empty.")
        if len(text) > TEXT_LIMIT:
            raise ImportProblem(f"Row {line}: the text is longer than {TEXT_LIMIT} characters.")
        parsed.append((reference, text, _weight(row.get("weight"), line)))
    if not parsed:
        raise ImportProblem("The file has a header but no rows.")
    return parsed


def _weight(raw: str | None, line: int) -> float:
    if raw is None or not raw.strip():
        return 1.0
    try:
        weight = float(raw)
    except ValueError:
        raise ImportProblem(f"Row {line}: the weight {raw!r} is not a number.") from None
    if not math.isfinite(weight) or weight <= 0:
        raise ImportProblem(f"Row {line}: the weight must be a positive number, not {raw!r}.")
    return weight


def _stimulus_ids(dataset: Dataset, references: list[str], match: str) -> dict[str, int]:
    unique = list(dict.fromkeys(references))
    orders = orders_in_dataset(dataset, unique, match)
    _, id_of_order = stimulus_index(dataset)
    return {reference: id_of_order[order] for reference, order in orders.items()}


def description_sets(*, dataset: Dataset) -> list[tuple[str, int, int]]:
    """(set name, descriptions, stimuli described) of each set over this dataset's stimuli."""
    from django.db.models import Count

    rows = (
        Description.objects.filter(stimulus__dataset=dataset)
        .values("origin")
        .annotate(n=Count("id"), stimuli=Count("stimulus", distinct=True))
        .order_by("origin")
    )
    return [(row["origin"], row["n"], row["stimuli"]) for row in rows[: MAX_LISTED * 20]]
