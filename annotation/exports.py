"""Streamed exports of a study: raw responses, per-item aggregates and tags, as CSV or JSON.

Rows are read with ``.iterator()`` in chunks and written as they are read, so a million
responses export in constant memory and the first bytes leave at once (no timeout).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from annotation.models import Response, Study, StudyKind, Tag, TrialRole

CHUNK = 2000

RESPONSE_FIELDS = [
    "response_id",
    "participant",
    "external_id",
    "participant_status",
    "excluded",
    "position",
    "role",
    "item",
    "shown",
    "value",
    "chosen",
    "rt_ms",
    "flags",
    "created_at",
]


def response_rows(study: Study) -> Iterator[dict[str, Any]]:
    """Every response of every participant (flags and exclusions included, for auditing)."""
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    queryset = (
        Response.objects.filter(trial__participant__study=study)
        .order_by("pk")
        .values_list(
            "pk",
            "trial__participant_id",
            "trial__participant__external_id",
            "trial__participant__status",
            "trial__position",
            "trial__role",
            "trial__item_id",
            "trial__shown",
            "value",
            "chosen_id",
            "rt_ms",
            "flags",
            "created_at",
        )
    )
    for row in queryset.iterator(chunk_size=CHUNK):
        (pk, participant, external, status, position, role, item, shown, value, chosen, rt,
         flags, created) = row  # fmt: skip
        yield {
            "response_id": pk,
            "participant": participant,
            "external_id": external,
            "participant_status": status,
            "excluded": status == "excluded",
            "position": position,
            "role": role,
            "item": item,
            "shown": [names.get(s, s) for s in shown],
            "value": value,
            "chosen": names.get(chosen) if chosen else None,
            "rt_ms": rt,
            "flags": flags,
            "created_at": created.isoformat(),
        }


def aggregate_rows(study: Study) -> Iterator[dict[str, Any]]:
    """Per item, from the usable responses: mean rating (and spread) or vote counts."""
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    responses = (
        Response.objects.filter(trial__participant__study=study, trial__role=TrialRole.REGULAR)
        .exclude(trial__participant__status="excluded")
        .order_by("trial__item_id")
        .values_list(
            "trial__item_id",
            "trial__item__a_id",
            "trial__item__b_id",
            "trial__item__c_id",
            "value",
            "chosen_id",
        )
    )
    current: list[Any] = []
    for row in responses.iterator(chunk_size=CHUNK):
        if current and row[0] != current[0][0]:
            yield _aggregate(study, current, names)
            current = []
        current.append(row)
    if current:
        yield _aggregate(study, current, names)


def _aggregate(study: Study, rows: list[Any], names: dict[int, str]) -> dict[str, Any]:
    item, a, b, c = rows[0][:4]
    out: dict[str, Any] = {
        "item": item,
        "a": names.get(a),
        "b": names.get(b),
        "c": names.get(c) if c else None,
        "n": len(rows),
    }
    if study.kind == StudyKind.PAIRS:
        values = [r[4] for r in rows]
        mean = sum(values) / len(values)
        out["mean"] = mean
        out["sd"] = (
            (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            if len(values) > 1
            else None
        )
    else:
        # Columns named after the item's slots, not its stimuli: every row of a CSV shares
        # the first row's header.
        for column, stimulus in (("a", a), ("b", b), ("c", c)):
            if stimulus:
                out[f"votes_{column}"] = sum(r[5] == stimulus for r in rows)
    return out


def tag_rows(study: Study) -> Iterator[dict[str, Any]]:
    queryset = (
        Tag.objects.filter(study=study)
        .order_by("stimulus_id", "text")
        .values_list("stimulus__name", "text", "status", "rating_count", "rating_sum", "flag_count")
    )
    for name, text, status, count, total, flags in queryset.iterator(chunk_size=CHUNK):
        yield {
            "stimulus": name,
            "tag": text,
            "status": status,
            "ratings": count,
            "mean_rating": total / count if count else None,
            "flags": flags,
        }


class _Echo:
    def write(self, value: str) -> str:
        return value


def as_csv(rows: Iterable[dict[str, Any]], fields: list[str] | None = None) -> Iterator[str]:
    """CSV lines as the rows arrive; the header comes from ``fields`` or the first row."""
    writer: Any = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(_Echo(), fieldnames=fields or list(row), extrasaction="ignore")
            yield writer.writeheader()
        yield writer.writerow(
            {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
        )
    if writer is None and fields:
        yield ",".join(fields) + "\r\n"


def as_json(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON array, written element by element."""
    yield "["
    for index, row in enumerate(rows):
        yield ("," if index else "") + "\n" + json.dumps(row)
    yield "\n]\n"
