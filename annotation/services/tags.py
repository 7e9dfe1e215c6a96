"""Tag studies: checking tags a participant rated or added, storing them, and the state of each
tag (active, hidden, frozen) and chain."""

from __future__ import annotations

import re

from django.db.models import F

from annotation.models import (
    Item,
    Study,
    Tag,
    TagRating,
    TagStatus,
    Trial,
)
from annotation.services.base import Answer, TrialProblem

TAG_MAX_LENGTH = 100
MAX_TAGS_PER_TRIAL = 20


def tags_check_answer(*, study: Study, trial: Trial, answer: Answer) -> None:
    unknown = set(answer.tag_ratings) - set(trial.shown_tags)
    if unknown:
        raise TrialProblem("A rated tag was not shown in this trial.")
    missing = set(trial.shown_tags) - set(answer.tag_ratings)
    if missing:
        raise TrialProblem("Rate or flag every tag shown.")
    if any(r is not None and not 1 <= r <= 5 for r in answer.tag_ratings.values()):
        raise TrialProblem("Tag ratings go from 1 to 5.")
    tags = [normalise_tag(t) for t in answer.new_tags]
    tags = [t for t in tags if t]
    if len(tags) > MAX_TAGS_PER_TRIAL:
        raise TrialProblem(f"Add at most {MAX_TAGS_PER_TRIAL} tags at a time.")
    if any(len(t) > TAG_MAX_LENGTH for t in tags):
        raise TrialProblem(f"A tag can be at most {TAG_MAX_LENGTH} characters long.")
    if not tags and not trial.shown_tags:
        raise TrialProblem("Add at least one tag.")


def normalise_tag(text: str) -> str:
    """Tags compare equal regardless of case and spacing: 'Red  Car ' == 'red car'."""
    return re.sub(r"\s+", " ", text).strip().lower()


def tags_store(*, study: Study, trial: Trial, answer: Answer) -> None:
    """Apply ratings and flags to shown tags, add new ones, and update each tag's state."""
    assert trial.item is not None  # regular tag trials always have their stimulus's item
    stimulus_id = trial.item.a_id
    touched = set()
    for tag_id, rating in answer.tag_ratings.items():
        TagRating.objects.create(tag_id=tag_id, trial=trial, rating=rating, flagged=rating is None)
        if rating is None:
            Tag.objects.filter(pk=tag_id).update(flag_count=F("flag_count") + 1)
        else:
            Tag.objects.filter(pk=tag_id).update(
                rating_count=F("rating_count") + 1, rating_sum=F("rating_sum") + rating
            )
        touched.add(tag_id)
    for text in dict.fromkeys(normalise_tag(t) for t in answer.new_tags):
        if not text:
            continue
        tag, created = Tag.objects.get_or_create(
            study=study, stimulus_id=stimulus_id, text=text, defaults={"added_in": trial}
        )
        if not created and tag.pk not in touched and study.is_adaptive_tags:
            # Proposing an existing tag again endorses it, as rating it 5 would.
            TagRating.objects.create(tag=tag, trial=trial, rating=5)
            Tag.objects.filter(pk=tag.pk).update(
                rating_count=F("rating_count") + 1, rating_sum=F("rating_sum") + 5
            )
        touched.add(tag.pk)
    if study.is_adaptive_tags:
        _update_tag_states(study, touched)
        _maybe_complete_chain(study, trial.item)


def _update_tag_states(study: Study, tag_ids: set[int]) -> None:
    tags = Tag.objects.filter(pk__in=tag_ids, status=TagStatus.ACTIVE)
    tags.filter(flag_count__gte=study.flags_to_hide).update(status=TagStatus.HIDDEN)
    tags.filter(
        rating_count__gte=study.ratings_to_freeze,
        rating_sum__gte=F("rating_count") * study.freeze_mean,
    ).update(status=TagStatus.FROZEN)


def _maybe_complete_chain(study: Study, item: Item | None) -> None:
    """A stimulus is done when enough tags are frozen, or after the last iteration."""
    if item is None:
        return
    frozen = Tag.objects.filter(study=study, stimulus_id=item.a_id, status=TagStatus.FROZEN).count()
    chain = Item.objects.filter(pk=item.pk)
    if frozen >= study.frozen_tags_to_complete:
        chain.update(completed=True)
    else:
        chain.filter(answered__gte=study.max_iterations).update(completed=True)
