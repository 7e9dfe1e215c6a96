"""Streamed exports of a study: raw responses, per-item aggregates and tags, as CSV or JSON;
for multi-arrangement studies also every placement and each participant's estimated
dissimilarities.

Rows are read with ``.iterator()`` in chunks and written as they are read, so a million
responses export in constant memory and the first bytes leave at once (no timeout).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError

from annotation.models import Response, Study, StudyKind, Tag, TrialRole
from annotation.services.aggregation import aggregated_participants
from annotation.services.aggregation import arrangement_rows as rows_of_arrangements
from annotation.services.arrangements import session_estimate

CHUNK = 2000

RESPONSE_FIELDS = [
    "response_id",
    "participant",
    "external_id",
    "participant_status",
    "excluded",
    "pilot",
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
            "trial__participant__pilot_id",
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
        (pk, participant, external, status, pilot, position, role, item, shown, value, chosen,
         rt, flags, created) = row  # fmt: skip
        yield {
            "response_id": pk,
            "participant": participant,
            "external_id": external,
            "participant_status": status,
            "excluded": status == "excluded",
            "pilot": pilot,
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
    """Per item, from the usable responses of real participants: mean rating (and spread)
    or vote counts; multi-arrangement: per pair, the participants' estimates."""
    if study.is_arrangement:
        yield from _pair_estimates(study)
        return
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    responses = (
        Response.objects.filter(
            trial__participant__study=study,
            trial__participant__pilot=None,
            trial__role=TrialRole.REGULAR,
        )
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


ARRANGEMENT_FIELDS = [
    "response_id",
    "participant",
    "external_id",
    "participant_status",
    "pilot",
    "position",
    "role",
    "index",
    "stimulus",
    "x",
    "y",
    "moves",
    "rt_ms",
    "created_at",
]


def arrangement_rows(study: Study) -> Iterator[dict[str, Any]]:
    """Every item of every arrangement where the participant left it: x to the right and y
    down, in arena radii from the centre; ``index`` is its place in the trial's order."""
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    queryset = (
        Response.objects.filter(trial__participant__study=study, arrangement__isnull=False)
        .order_by("pk")
        .values_list(
            "pk",
            "trial__participant_id",
            "trial__participant__external_id",
            "trial__participant__status",
            "trial__participant__pilot_id",
            "trial__position",
            "trial__role",
            "trial__shown",
            "arrangement",
            "rt_ms",
            "created_at",
        )
    )
    for row in queryset.iterator(chunk_size=CHUNK):
        (pk, participant, external, status, pilot, position, role, shown, placed, rt,
         created) = row  # fmt: skip
        for index, (stimulus, (x, y, moves)) in enumerate(zip(shown, placed or [], strict=True)):
            yield {
                "response_id": pk,
                "participant": participant,
                "external_id": external,
                "participant_status": status,
                "pilot": pilot,
                "position": position,
                "role": role,
                "index": index,
                "stimulus": names.get(stimulus, stimulus),
                "x": x,
                "y": y,
                "moves": moves,
                "rt_ms": rt,
                "created_at": created.isoformat(),
            }


def matrix_rows(study: Study) -> Iterator[dict[str, Any]]:
    """Each participant's estimated dissimilarities (inverse MDS, RMS 1) and each pair's
    evidence, pilots' and excluded participants' included (marked), for auditing."""
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    for participant in study.participants.order_by("pk").iterator(chunk_size=100):
        who = {
            "participant": participant.pk,
            "external_id": participant.external_id,
            "participant_status": participant.status,
            "pilot": participant.pilot_id,
        }
        try:
            estimate = session_estimate(participant)
        except ValidationError as exc:  # one row that says why, not a broken download
            yield {**who, "a": None, "b": None, "dissimilarity": None, "evidence": None,
                   "problem": " ".join(exc.messages)}  # fmt: skip
            continue
        if estimate is None:
            continue
        for i, j in _upper_pairs(len(estimate.stimuli)):
            yield {
                **who,
                "a": names.get(estimate.stimuli[i]),
                "b": names.get(estimate.stimuli[j]),
                "dissimilarity": _finite(estimate.dissimilarities[i, j]),
                "evidence": float(estimate.evidence[i, j]),
                "problem": "",
            }


def _pair_estimates(study: Study) -> Iterator[dict[str, Any]]:
    """Per pair: how many real, included participants arranged it and their estimates'
    mean and spread (each participant's matrix at RMS 1). A participant whose estimate
    cannot be computed is left out of the pairs and named in a row of its own that says why
    (first, before the pairs), as in matrix_rows: not a broken download."""
    names = dict(study.dataset.stimuli.values_list("pk", "name"))
    by_order = dict(study.dataset.stimuli.values_list("order", "pk"))
    pairs: dict[tuple[int, int], list[float]] = {}
    for participant in aggregated_participants(study).order_by("pk"):
        try:
            rows = rows_of_arrangements(study, [participant])
        except ValidationError as exc:
            yield {"a": None, "b": None, "n": None, "mean": None, "sd": None,
                   "problem": " ".join(exc.messages)}  # fmt: skip
            continue
        for row in rows:
            pairs.setdefault((row.stimuli[0], row.stimuli[1]), []).append(float(row.value or 0))
    for (a, b), values in sorted(pairs.items()):
        array = np.array(values)
        yield {
            "a": names.get(by_order[a]),
            "b": names.get(by_order[b]),
            "n": len(values),
            "mean": float(array.mean()),
            "sd": float(array.std(ddof=1)) if len(values) > 1 else None,
            "problem": "",
        }


def _upper_pairs(n: int) -> Iterator[tuple[int, int]]:
    return ((i, j) for i in range(n) for j in range(i + 1, n))


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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


@dataclass(frozen=True)
class Export:
    rows: Callable[[Study], Iterator[dict[str, Any]]]
    fields: list[str] | None  # the CSV header; None: the first row's keys
    description: str


# What a study can be exported as, for the pages and the API alike.
EXPORTS = {
    "responses": Export(
        response_rows, RESPONSE_FIELDS, "every response, flags and exclusions included"
    ),
    "aggregate": Export(
        aggregate_rows,
        None,
        "per item, from the usable responses (multi-arrangement: per pair, from the "
        "participants' estimates)",
    ),
    "tags": Export(tag_rows, None, "tag studies: tags with ratings and flags"),
    "arrangements": Export(
        arrangement_rows,
        ARRANGEMENT_FIELDS,
        "multi-arrangement studies: every item of every arrangement (x, y, moves, trial, time)",
    ),
    "matrices": Export(
        matrix_rows,
        None,
        "multi-arrangement studies: each participant's estimated dissimilarities and evidence",
    ),
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
