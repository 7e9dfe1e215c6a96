"""Streamed export of a HumanJudgments version, in the format its import reads.

Columns name the stimuli by id (``a, b, value, participant`` for pairs; ``a, b, c, choice``
for triplets; ``reference, first, second, choice`` for 2AFC), so an exported file imports
again with ``match=id``; ``*_name`` columns repeat each stimulus by name for people, and
the import ignores them. Rows are read in chunks and written as they are read (the
annotation exports' CSV and JSON writers), so a large set streams in constant memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evaluation.models import HumanJudgments, JudgmentKind

CHUNK = 2000

STIMULUS_COLUMNS = {
    JudgmentKind.PAIRS: ("a", "b"),
    JudgmentKind.TRIPLETS: ("a", "b", "c"),
    JudgmentKind.TWO_AFC: ("reference", "first", "second"),
}


def judgment_fields(judgments: HumanJudgments) -> list[str]:
    columns = STIMULUS_COLUMNS[JudgmentKind(judgments.kind)]
    names = [f"{column}_name" for column in columns]
    if judgments.kind == JudgmentKind.PAIRS:
        return ["judgment_id", *columns, "value", "participant", *names]
    return ["judgment_id", *columns, "choice", "participant", *names, "choice_name"]


def judgment_rows(judgments: HumanJudgments) -> Iterator[dict[str, Any]]:
    names = dict(judgments.dataset.stimuli.values_list("pk", "name"))
    columns = STIMULUS_COLUMNS[JudgmentKind(judgments.kind)]
    is_rating = judgments.kind == JudgmentKind.PAIRS
    queryset = judgments.rows.order_by("pk").values_list(
        "pk", "a_id", "b_id", "c_id", "value", "chosen_id", "participant"
    )
    for pk, a, b, c, value, chosen, participant in queryset.iterator(chunk_size=CHUNK):
        stimuli = dict(zip(columns, (a, b, c), strict=False))
        row: dict[str, Any] = {"judgment_id": pk, **stimuli}
        if is_rating:
            row["value"] = value
        else:
            row["choice"] = chosen
        row["participant"] = participant
        for column, stimulus in stimuli.items():
            row[f"{column}_name"] = names.get(stimulus)
        if not is_rating:
            row["choice_name"] = names.get(chosen)
        yield row
