"""Human judgments as scoring targets: creating a version, and reading it for the metrics.

``judgments_create`` stores rows that already refer to a dataset's stimuli (by their order),
all or nothing; it computes the reliability ceiling once, when the version is created, with
the Nili et al. noise-ceiling bounds beside it.
File formats and study aggregation build on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from evaluation import metrics as metric_registry
from evaluation.engine.metrics.ceilings import choice_bounds, nili_bounds
from evaluation.engine.metrics.human import (
    leave_one_out_agreement,
    pairs_by_unit,
    split_half_reliability,
)
from evaluation.models import (
    Dataset,
    HumanJudgments,
    Judgment,
    JudgmentKind,
    ScoringUnit,
    Stimulus,
    Target,
    TargetKind,
    ValueMeaning,
)

MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class JudgmentRow:
    """One response. ``stimuli`` are stimulus orders: (a, b) for pairs, (a, b, c) for
    triplets, (reference, first, second) for 2AFC; ``chosen`` is the order of the picked one."""

    stimuli: tuple[int, ...]
    value: float | None = None
    chosen: int | None = None
    participant: str = ""


def judgments_create(
    *,
    dataset: Dataset,
    name: str,
    kind: str,
    rows: Sequence[JudgmentRow],
    scale_min: float | None = None,
    scale_max: float | None = None,
    allow_repeats: bool = False,
    origin: str = "",
    description: str = "",
    scoring_unit: str = ScoringUnit.PAIR,
    value_meaning: str = ValueMeaning.SIMILARITY,
    import_report: dict[str, Any] | None = None,
    created_by: Any = None,
    simulated: bool = False,
) -> HumanJudgments:
    """Store a new version of ``name`` over ``dataset`` and its scoring target.
    ``simulated``: made by simulated participants (a study's pilot), not people; its target
    is scored only by runs that name it, and stays off the boards across targets.

    A participant judging the same item twice is refused as a duplicate unless
    ``allow_repeats`` says the data hold planned repeats (test-retest trials).
    """
    if kind not in JudgmentKind.values:
        raise ValidationError(f"Unknown judgment kind {kind!r}.")
    if value_meaning not in ValueMeaning.values:
        raise ValidationError(
            f"Unknown value meaning {value_meaning!r}; use {' or '.join(ValueMeaning.values)}."
        )
    if scoring_unit not in ScoringUnit.values:
        raise ValidationError(
            f"Unknown scoring unit {scoring_unit!r}; use {' or '.join(ScoringUnit.values)}."
        )
    if not rows:
        raise ValidationError("There are no judgments to store.")
    stimulus_ids = dict(dataset.stimuli.values_list("order", "id"))
    _validate_rows(kind, rows, stimulus_ids, scale_min, scale_max, allow_repeats)
    with transaction.atomic():
        latest = HumanJudgments.objects.filter(dataset=dataset, name=name).aggregate(
            v=Max("version")
        )["v"]
        judgments = HumanJudgments.objects.create(
            dataset=dataset,
            name=name,
            version=(latest or 0) + 1,
            kind=kind,
            scale_min=scale_min,
            scale_max=scale_max,
            origin=origin,
            description=description,
            judgment_count=len(rows),
            participant_count=len({r.participant for r in rows if r.participant}),
            reliability=_reliability(kind, rows),
            scoring_unit=scoring_unit,
            value_meaning=value_meaning,
            import_report=import_report or {},
            simulated=simulated,
            created_by=created_by,
        )
        Judgment.objects.bulk_create(
            [_judgment(judgments, row, stimulus_ids) for row in rows], batch_size=5000
        )
        Target.objects.create(
            kind=TargetKind(kind),
            dataset=dataset,
            judgments=judgments,
            name=f"{dataset.name}: {name} v{judgments.version}"[-300:],
        )
    return judgments


def _validate_rows(
    kind: str,
    rows: Sequence[JudgmentRow],
    stimulus_ids: dict[int, int],
    scale_min: float | None,
    scale_max: float | None,
    allow_repeats: bool,
) -> None:
    size = 2 if kind == JudgmentKind.PAIRS else 3
    errors: list[str] = []
    first_seen: dict[tuple[Any, ...], int] = {}
    for number, row in enumerate(rows, start=1):
        problem = _row_problem(kind, row, size, stimulus_ids, scale_min, scale_max)
        if problem:
            errors.append(f"Row {number}: {problem}")
        elif row.participant and not allow_repeats:
            key = (row.participant, *item_key(kind, row.stimuli))
            earlier = first_seen.setdefault(key, number)
            if earlier != number:
                errors.append(
                    f"Row {number}: participant {row.participant!r} judged the same item as in "
                    f"row {earlier}. Mark planned test-retest repeats as allowed, or remove it."
                )
        if len(errors) >= MAX_ERRORS_SHOWN:
            break
    if errors:
        raise ValidationError(errors)


def _row_problem(
    kind: str,
    row: JudgmentRow,
    size: int,
    stimulus_ids: dict[int, int],
    scale_min: float | None,
    scale_max: float | None,
) -> str | None:
    if len(row.stimuli) != size:
        return f"expected {size} stimuli, got {len(row.stimuli)}."
    unknown = [s for s in row.stimuli if s not in stimulus_ids]
    if unknown:
        return f"stimulus {unknown[0]} is not in the dataset."
    if kind == JudgmentKind.PAIRS:
        if row.value is None or not math.isfinite(row.value):
            return "a pair rating needs a finite value."
        if (scale_min is not None and row.value < scale_min) or (
            scale_max is not None and row.value > scale_max
        ):
            return f"rating {row.value:g} is outside the scale [{scale_min}, {scale_max}]."
        return None
    if len(set(row.stimuli)) != 3:
        return "the three stimuli must differ."
    options = row.stimuli if kind == JudgmentKind.TRIPLETS else row.stimuli[1:]
    if row.chosen not in options:
        return f"the choice {row.chosen} is not one of the options {options}."
    return None


def _judgment(judgments: HumanJudgments, row: JudgmentRow, ids: dict[int, int]) -> Judgment:
    return Judgment(
        judgments=judgments,
        a_id=ids[row.stimuli[0]],
        b_id=ids[row.stimuli[1]],
        c_id=ids[row.stimuli[2]] if len(row.stimuli) > 2 else None,
        value=row.value,
        chosen_id=ids[row.chosen] if row.chosen is not None else None,
        participant=row.participant,
    )


def _reliability(kind: str, rows: Sequence[JudgmentRow]) -> dict[str, Any] | None:
    """The split-half ceiling (its "mean" is the scores' ceiling) and, under "bounds", the
    Nili et al. lower and upper bounds beside it (or the reason there are none)."""
    participants = [r.participant for r in rows]
    named = participants if any(participants) else None
    if kind == JudgmentKind.PAIRS:
        a = [r.stimuli[0] for r in rows]
        b = [r.stimuli[1] for r in rows]
        values = [float(r.value or 0) for r in rows]
        return {
            **split_half_reliability(a, b, values, named),
            "bounds": nili_bounds(a, b, values, named),
        }
    keys = np.array([item_key(kind, r.stimuli) for r in rows])
    chosen = np.array([r.chosen for r in rows])
    agreement = leave_one_out_agreement(keys, chosen)
    if agreement is None:
        return None
    return {**agreement, "bounds": choice_bounds(keys, chosen, named)}


def item_key(kind: str, stimuli: Sequence[int]) -> tuple[int, ...]:
    """Pairs and triplets are unordered sets; a 2AFC item is a reference and an unordered pair."""
    if kind in (JudgmentKind.PAIRS, JudgmentKind.TRIPLETS):
        return tuple(sorted(stimuli))
    return (stimuli[0], *sorted(stimuli[1:]))


# --- Reading a target for the metrics ------------------------------------------------------------
def target_data(target: Target) -> metric_registry.TargetData:
    """What the metrics need from a target, with stimuli as embedding rows (their order)."""
    if target.kind == TargetKind.LABELS:
        facts = [
            metric_registry.StimulusFacts(label=label, split=split)
            for label, split in target.dataset.stimuli.order_by("order").values_list(
                "label", "split"
            )
        ]
        return metric_registry.LabelsData(facts)
    judgments = target.judgments
    assert judgments is not None
    order = dict(Stimulus.objects.filter(dataset_id=target.dataset_id).values_list("id", "order"))
    rows = np.array(
        [
            (
                order[a],
                order[b],
                order[c] if c else -1,
                value if value is not None else np.nan,
                order[chosen] if chosen else -1,
            )
            for a, b, c, value, chosen in judgments.rows.values_list(
                "a", "b", "c", "value", "chosen"
            )
        ],
        dtype=np.float64,
    )
    a, b, c, value, chosen = (
        rows[:, 0].astype(int),
        rows[:, 1].astype(int),
        rows[:, 2].astype(int),
        rows[:, 3],
        rows[:, 4].astype(int),
    )
    if judgments.kind == JudgmentKind.PAIRS:
        if judgments.value_meaning == ValueMeaning.DISSIMILARITY:
            value = -value  # scored as similarity; the stored values stay as published
        pairs = pairs_by_unit(a, b, value, unit=judgments.scoring_unit)
        return metric_registry.PairsData(pairs, judgments.ceiling)
    if judgments.kind == JudgmentKind.TRIPLETS:
        return metric_registry.TripletsData(np.stack([a, b, c], axis=1), chosen, judgments.ceiling)
    return _two_afc_data(a, b, c, chosen, judgments.ceiling)


def _two_afc_data(
    reference: np.ndarray, b: np.ndarray, c: np.ndarray, chosen: np.ndarray, ceiling: float | None
) -> metric_registry.TwoAfcData:
    first, second = np.minimum(b, c), np.maximum(b, c)
    keys, item = np.unique(
        np.stack([reference, first, second], axis=1), axis=0, return_inverse=True
    )
    item = item.ravel()
    votes_first = np.bincount(item, weights=(chosen == first).astype(float), minlength=len(keys))
    share_first = votes_first / np.bincount(item, minlength=len(keys))
    return metric_registry.TwoAfcData(keys[:, 0], keys[:, 1], keys[:, 2], share_first, ceiling)
