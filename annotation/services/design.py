"""Designing a study: its items, checks on its design, opening, closing and reopening it, and
model-discriminating designs."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.models import (
    Item,
    PilotStatus,
    Study,
    StudyKind,
    StudyStatus,
)
from annotation.services.arrangements import MIN_SESSION_ITEMS
from evaluation.models import Dataset

MAX_ITEMS = 200_000

# --- Which kinds of study use which design fields ---------------------------------------------
# The one place this is said: the checks below refuse a value a kind does not use, and the
# design form (annotation.forms) groups and hides its fields by it.
ALL_KINDS = frozenset(StudyKind.values)
CHOICE_KINDS = frozenset({StudyKind.TRIPLETS, StudyKind.TWO_AFC})
# Kinds whose items are chosen (ItemPlan); tag and multi-arrangement studies use every stimulus.
ITEM_KINDS = frozenset({StudyKind.PAIRS, *CHOICE_KINDS})
_PAIRS = frozenset({StudyKind.PAIRS})
_TAGS = frozenset({StudyKind.TAGS})
_ARRANGEMENT = frozenset({StudyKind.ARRANGEMENT})
# Design fields that only some kinds use; every other design field is every kind's.
FIELD_KINDS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("scale_min", "scale_max", "scale_min_label", "scale_max_label"), _PAIRS),
    **dict.fromkeys(
        (
            "tag_mode",
            "flags_to_hide",
            "ratings_to_freeze",
            "freeze_mean",
            "frozen_tags_to_complete",
            "max_iterations",
        ),
        _TAGS,
    ),
    **dict.fromkeys(
        ("arena_max_items", "evidence_threshold", "session_seconds", "min_pair_consistency"),
        _ARRANGEMENT,
    ),
    "repeat_trials": ITEM_KINDS,  # arrangements repeat pairs by design; tags have none
    "catch_trials": ALL_KINDS - _TAGS,
    "max_catch_failures": ALL_KINDS - _TAGS,
    "max_retest_difference": _PAIRS,
    "min_retest_agreement": CHOICE_KINDS,
    "require_playback": ALL_KINDS - _ARRANGEMENT,  # an arrangement plays clips on demand
}
KIND_NOUNS: dict[str, str] = {
    StudyKind.PAIRS: "pair rating",
    StudyKind.TRIPLETS: "triplet",
    StudyKind.TWO_AFC: "2AFC",
    StudyKind.TAGS: "tagging",
    StudyKind.ARRANGEMENT: "multi-arrangement",
}


# --- Designing a study ---------------------------------------------------------------------
@dataclass
class ItemPlan:
    """Which items a study asks about: all pairs, N random ones, or an explicit list."""

    mode: str = "all"  # all | random | list
    count: int = 0  # random: how many items
    stimuli: list[tuple[int, ...]] = field(default_factory=list)  # list: stimulus orders
    seed: int = 0


def study_create(
    *,
    dataset: Dataset,
    name: str,
    kind: str,
    items: ItemPlan,
    created_by: Any = None,
    **design: Any,
) -> Study:
    """Create a study and its items; nothing is stored if the design is invalid."""
    name = name.strip()
    if Study.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A study called {name!r} already exists."})
    study = Study(dataset=dataset, name=name, kind=kind, created_by=created_by, **design)
    _check_design(study)
    orders = dict(dataset.stimuli.values_list("order", "id"))
    tuples = _item_tuples(study, items, sorted(orders))
    rng = random.Random(items.seed)
    with transaction.atomic():
        study.save()
        Item.objects.bulk_create(
            [_new_item(study, [orders[o] for o in t], rng) for t in tuples], batch_size=5000
        )
    return study


def _check_design(study: Study) -> None:
    if study.kind not in StudyKind.values:
        raise ValidationError({"kind": f"Unknown study kind {study.kind!r}."})
    if study.kind == StudyKind.PAIRS and study.scale_max <= study.scale_min:
        raise ValidationError({"scale_max": "The top of the scale must be above the bottom."})
    if study.trials_per_session < 1:
        raise ValidationError({"trials_per_session": "A session needs at least one trial."})
    qc_trials = study.repeat_trials + study.catch_trials
    if qc_trials >= study.trials_per_session:
        raise ValidationError(
            {"repeat_trials": "Repeats and catch trials must leave room for regular trials."}
        )
    if study.kind == StudyKind.TAGS and qc_trials:
        raise ValidationError({"catch_trials": "Tag studies have no repeat or catch trials."})
    if study.is_arrangement:
        _check_arrangement_design(study)
    if study.repeat_trials * 2 > study.trials_per_session - study.catch_trials:
        raise ValidationError(
            {"repeat_trials": "At most half of the regular trials can be repeated."}
        )
    if study.require_playback and study.dataset.modality not in ("audio", "video"):
        raise ValidationError(
            {
                "require_playback": f"Only audio and video stimuli are played: "
                f"{study.dataset.name} is a {study.dataset.modality} dataset."
            }
        )
    if study.judgments_per_item < 1:
        raise ValidationError({"judgments_per_item": "Each item needs at least one judgment."})
    # The done page links there: only web addresses (forms check this too; services may be
    # called without a form).
    if study.redirect_url and not study.redirect_url.lower().startswith(("https://", "http://")):
        raise ValidationError(
            {"redirect_url": "The completion address must start with https:// or http://."}
        )
    _check_fields_the_kind_uses(study)


def _check_fields_the_kind_uses(study: Study) -> None:
    """A setting the kind does not use must keep its default: a value set there would be
    stored and never applied (the checks above explain the common ones in their own words)."""
    for name, kinds in FIELD_KINDS.items():
        default = field_default(name)
        if study.kind in kinds or getattr(study, name) == default:
            continue
        users = " and ".join(KIND_NOUNS[kind] for kind in StudyKind.values if kind in kinds)
        raise ValidationError(
            {
                name: f"Only {users} studies use this setting: a {KIND_NOUNS[study.kind]} "
                f"study leaves it at its default ({_shown(default)})."
            }
        )


def field_default(name: str) -> Any:
    """A design field's default, from its model column."""
    column = Study._meta.get_field(name)
    assert isinstance(column, models.Field)  # a column, not a relation
    return column.get_default()


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "ticked" if value else "unticked"
    return repr(value) if isinstance(value, str) else str(value)


def _check_arrangement_design(study: Study) -> None:
    if study.repeat_trials:
        raise ValidationError(
            {
                "repeat_trials": "Multi-arrangement studies repeat pairs by design (later trials "
                "show pairs again); their consistency is checked without repeat trials."
            }
        )
    if study.require_playback:
        raise ValidationError(
            {
                "require_playback": "Multi-arrangement trials show dozens of clips at once, "
                "played on demand; waiting for each to play through is for the other kinds."
            }
        )
    if study.arena_max_items < MIN_SESSION_ITEMS:
        raise ValidationError(
            {"arena_max_items": f"An arrangement needs at least {MIN_SESSION_ITEMS} stimuli."}
        )
    if not study.evidence_threshold > 0:
        raise ValidationError({"evidence_threshold": "The evidence threshold must be positive."})
    if study.session_seconds < 30:
        raise ValidationError({"session_seconds": "Allow a session at least 30 seconds."})


def _item_tuples(study: Study, plan: ItemPlan, orders: list[int]) -> list[tuple[int, ...]]:
    size = study.stimuli_per_item
    if len(orders) < size:
        raise ValidationError(f"The dataset has fewer than {size} stimuli.")
    if study.kind == StudyKind.ARRANGEMENT and len(orders) < MIN_SESSION_ITEMS:
        raise ValidationError(
            f"A multi-arrangement study needs a dataset of at least {MIN_SESSION_ITEMS} "
            f"stimuli; this one has {len(orders)}."
        )
    if study.kind in (StudyKind.TAGS, StudyKind.ARRANGEMENT):
        return [(o,) for o in orders]  # one item per stimulus
    if plan.mode == "list":
        return _listed_items(plan.stimuli, size, set(orders))
    if plan.mode == "all":
        if study.kind != StudyKind.PAIRS:
            raise ValidationError("'All items' is for pair studies; choose a random subset.")
        total = math.comb(len(orders), 2)
        if total > MAX_ITEMS:
            raise ValidationError(
                f"All pairs of {len(orders)} stimuli are {total:,} items (limit "
                f"{MAX_ITEMS:,}); choose a random subset."
            )
        return list(itertools.combinations(orders, 2))
    if plan.mode == "random":
        return _random_items(orders, size, plan.count, random.Random(plan.seed))
    raise ValidationError(f"Unknown item mode {plan.mode!r}; use all, random or list.")


def _listed_items(
    listed: Sequence[tuple[int, ...]], size: int, known: set[int]
) -> list[tuple[int, ...]]:
    if not listed:
        raise ValidationError("The item list is empty.")
    seen: dict[tuple[int, ...], int] = {}
    for number, stimuli in enumerate(listed, start=1):
        if len(stimuli) != size:
            raise ValidationError(f"Item {number}: expected {size} stimuli, got {len(stimuli)}.")
        unknown = [s for s in stimuli if s not in known]
        if unknown:
            raise ValidationError(f"Item {number}: stimulus {unknown[0]} is not in the dataset.")
        if len(set(stimuli)) != size:
            raise ValidationError(f"Item {number}: its stimuli must differ.")
        key = tuple(sorted(stimuli)) if size == 2 else tuple(stimuli)
        if key in seen:
            raise ValidationError(f"Item {number} repeats item {seen[key]}.")
        seen[key] = number
    return [tuple(s) for s in listed]


def _random_items(
    orders: list[int], size: int, count: int, rng: random.Random
) -> list[tuple[int, ...]]:
    possible = math.comb(len(orders), size) * (3 if size == 3 else 1)
    if count < 1 or count > min(possible, MAX_ITEMS):
        raise ValidationError(
            f"Ask for between 1 and {min(possible, MAX_ITEMS):,} random items (got {count})."
        )
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        stimuli = tuple(rng.sample(orders, size))
        # Pairs and triplets are unordered; in 2AFC the first stimulus is the reference.
        chosen.add(tuple(sorted(stimuli)) if size == 2 else stimuli)
    return sorted(chosen)


def _new_item(study: Study, stimulus_ids: list[int], rng: random.Random) -> Item:
    padded = [*stimulus_ids, None, None][:3]
    return Item(
        study=study,
        a_id=stimulus_ids[0],
        b_id=padded[1],
        c_id=padded[2],
        shuffle_key=rng.randrange(1 << 30),
    )


def study_set_status(*, study: Study, status: str) -> None:
    if status not in StudyStatus.values:
        raise ValidationError(f"Unknown status {status!r}.")
    with transaction.atomic():
        # The lock pilot_start takes: a pilot starting meanwhile either committed before (and
        # is seen running here) or reads the study open after this commits (and is refused).
        Study.objects.select_for_update().filter(pk=study.pk).first()
        if status == StudyStatus.OPEN and study.pilots.filter(status=PilotStatus.RUNNING).exists():
            # Its bots still hold places on the items until the pilot ends and takes them out.
            raise ValidationError("A pilot of this study is running: open it once the pilot ends.")
        # The researcher's decision: a study that had closed itself is no longer "complete".
        Study.objects.filter(pk=study.pk).update(status=status, completed_at=None)
    study.status = status
    study.completed_at = None


def study_close_if_complete(*, study: Study) -> bool:
    """Close an open study once every item has its judgments (or, adaptive tags, its chain
    ended), so that new arrivals are told it is complete. One conditional statement: only an
    open study with no item left to answer is closed."""
    incomplete = Item.objects.filter(
        study=OuterRef("pk"), completed=False, answered__lt=study.quota
    )
    closed = (
        Study.objects.filter(pk=study.pk, status=StudyStatus.OPEN)
        .filter(~Exists(incomplete))
        .update(status=StudyStatus.CLOSED, completed_at=timezone.now())
    )
    if closed:
        study.refresh_from_db(fields=["status", "completed_at"])
    return bool(closed)


def study_reopen_if_closed_itself(*, study: Study) -> None:
    """Items went back to the pool: a study that closed itself because it was complete opens
    again (one the researcher closed stays closed)."""
    reopened = Study.objects.filter(
        pk=study.pk, status=StudyStatus.CLOSED, completed_at__isnull=False
    ).update(status=StudyStatus.OPEN, completed_at=None)
    if reopened:
        study.status, study.completed_at = StudyStatus.OPEN, None


# --- Model-discriminating designs -----------------------------------------------------------
def study_create_discriminating(
    *,
    target: Any,
    models: Sequence[Any],
    kind: str = StudyKind.PAIRS,
    count: int = 50,
    judgments_per_item: int = 5,
    created_by: Any = None,
) -> Study:
    """A draft study of the ``count`` pairs (or odd-one-out triplets) on which these models'
    cached embeddings disagree most: the human data that would best separate them next.
    Pairs people have already judged for ``target`` are left out. The researcher reviews
    the draft, then opens it."""
    from evaluation.compare import latest_embeddings
    from evaluation.engine.designs import discriminating_pairs, discriminating_triplets
    from evaluation.engine.metrics.human import unit_rows
    from evaluation.models import Judgment

    if kind not in (StudyKind.PAIRS, StudyKind.TRIPLETS):
        raise ValidationError("Designs that separate models are pair or triplet studies.")
    if len(models) < 2:
        raise ValidationError("Choose at least two models to separate.")
    similarities = []
    for model in models:
        cached = latest_embeddings(model, target)
        chosen = cached.get(model.default_layer)  # the layer leaderboards rank it by default
        if chosen is None:
            raise ValidationError(
                f"{model.name} has no cached embeddings of {target.dataset} at its default layer "
                f"{model.default_layer!r}; run it on this dataset first."
            )
        vectors = unit_rows(np.asarray(chosen.load(), dtype=np.float64))
        similarities.append(vectors @ vectors.T)
    stimuli = list(target.dataset.stimuli.order_by("order").values_list("pk", "order"))
    orders = [order for _, order in stimuli]  # embedding rows follow the stimulus order
    row_of = {pk: row for row, (pk, _) in enumerate(stimuli)}
    judged = [
        (row_of[a], row_of[b])
        for a, b in Judgment.objects.filter(judgments_id=target.judgments_id)
        .values_list("a", "b")
        .distinct()
    ]
    items: list[tuple[int, ...]]
    if kind == StudyKind.PAIRS:
        proposed = discriminating_pairs(similarities, count, exclude=judged or None)
        items = [(orders[i], orders[j]) for i, j in zip(proposed.i, proposed.j, strict=True)]
    else:
        triplets = discriminating_triplets(similarities, count)
        items = [tuple(orders[i] for i in row) for row in triplets.triplets]
    if not items:
        raise ValidationError("Every pair of these stimuli has been judged already.")
    names = " vs ".join(model.name for model in models)
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    return study_create(
        dataset=target.dataset,
        name=f"Where {names} disagree ({stamp})"[:200],
        kind=kind,
        items=ItemPlan(mode="list", stimuli=items),
        judgments_per_item=judgments_per_item,
        trials_per_session=min(len(items), 40),
        created_by=created_by,
    )
