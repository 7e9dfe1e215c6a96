"""A researcher's preview of a study as a participant sees it: the session plan and a few
trials of each role, drawn the way the trial services draw them, but never stored. Nothing
here writes: no Participant, Trial or Response is created, no item is claimed (the quotas
and the coverage stay as they are), and nothing submitted on a preview is recorded.

The trials are unsaved ``Trial`` objects of an unsaved ``Participant``, so that the views
render them with the participant pages' own templates and context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from annotation.models import Item, Participant, Study, StudyKind, Tag, TagStatus, Trial, TrialRole
from annotation.services import arrangements
from annotation.services.participants import session_plan
from annotation.services.trials import _catch_trial, _presentation, _random_stimuli

PER_ROLE = 2  # trials of each role a preview shows
TOKEN = "preview"  # the unsaved participant's token: never a real one (those are random)
ITEM_SAMPLE = 5000  # items a preview draws from (a study may have 200,000)


@dataclass(frozen=True)
class PreviewStep:
    """One trial of the preview: where it falls in a participant's session, and its role."""

    position: int  # in the session's plan, from 0
    role: str


def preview_participant(study: Study, seed: int) -> Participant:
    """An unsaved participant with the session plan a real one could get (its seed)."""
    return Participant(study=study, token=TOKEN, plan=session_plan(study, random.Random(seed)))


def preview_steps(participant: Participant) -> list[PreviewStep]:
    """Up to PER_ROLE trials of each role, in the plan's order. A multi-arrangement preview
    shows the first arrangement only: later ones depend on how the first was arranged."""
    steps: list[PreviewStep] = []
    shown: dict[str, int] = {}
    per_role = {TrialRole.REGULAR: 1} if participant.study.is_arrangement else {}
    for position, role in enumerate(participant.plan):
        if shown.get(role, 0) < per_role.get(role, PER_ROLE):
            shown[role] = shown.get(role, 0) + 1
            steps.append(PreviewStep(position, role))
    return steps


def preview_trial(participant: Participant, step: PreviewStep, seed: int) -> Trial:
    """The unsaved trial of one preview step, drawn as the trial services draw it (the same
    step and seed give the same trial, so a reload shows it again)."""
    study = participant.study
    rng = random.Random(f"{seed}:{step.position}")
    expected = None
    shown_tags: list[int] = []
    if study.is_arrangement:
        shown, expected = _arrangement_stimuli(participant, step.role, rng)
    elif step.role in (TrialRole.REGULAR, TrialRole.REPEAT):
        item = _sample_item(study, rng)  # a repeat: one answered earlier; here any item
        shown = _presentation(study, [s for s in (item.a_id, item.b_id, item.c_id) if s], rng)
        if study.is_adaptive_tags:
            shown_tags = _active_tags(study, item.a_id, rng)
    elif step.role == TrialRole.CATCH:
        shown, expected = _catch_trial(study, rng)
    else:
        shown = _presentation(study, _random_stimuli(study, rng), rng)
    return Trial(
        participant=participant,
        position=step.position,
        role=step.role,
        shown=shown,
        shown_tags=shown_tags,
        expected=expected,
    )


def _sample_item(study: Study, rng: random.Random) -> Item:
    ids = list(study.items.order_by("pk").values_list("pk", flat=True)[:ITEM_SAMPLE])
    if not ids:  # a study always has items (design.study_create); say so if one has not
        raise Item.DoesNotExist(f"{study.name} has no items to preview.")
    return Item.objects.get(pk=rng.choice(ids))


def _active_tags(study: Study, stimulus_id: int, rng: random.Random) -> list[int]:
    tags = list(
        Tag.objects.filter(study=study, stimulus_id=stimulus_id, status=TagStatus.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    rng.shuffle(tags)
    return tags


def _arrangement_stimuli(
    participant: Participant, role: str, rng: random.Random
) -> tuple[list[int], object]:
    """Practice and catch trials as the arrangement service draws them; the first regular
    trial shows a session's stimuli (as many as the arena takes) in random order."""
    study = participant.study
    if role != TrialRole.REGULAR:
        drawn = arrangements.trial_stimuli(participant, role, rng)
        assert drawn is not None  # practice and catch trials always have stimuli
        return drawn
    stimuli = list(study.items.order_by("pk").values_list("a_id", flat=True)[:ITEM_SAMPLE])
    return rng.sample(stimuli, min(study.arena_max_items, len(stimuli))), None


def preview_role_note(study: Study, role: str) -> str:
    """What the researcher should know about this trial, which the participant is not told."""
    if role == TrialRole.PRACTICE:
        return "A practice trial: random stimuli, never counted."
    if role == TrialRole.CATCH:
        return {
            StudyKind.PAIRS: "A catch trial: a stimulus with itself; the expected answer is "
            f"the top of the scale ({study.scale_max}).",
            StudyKind.TRIPLETS: "A catch trial: two copies of one stimulus; the expected "
            "answer is the other one.",
            StudyKind.TWO_AFC: "A catch trial: the reference is one of the two candidates, "
            "which is the expected answer.",
            StudyKind.ARRANGEMENT: "A catch trial: one stimulus twice; the two copies should "
            "be placed on top of each other.",
        }.get(StudyKind(study.kind), "A catch trial.")
    if role == TrialRole.REPEAT:
        return (
            "A repeat trial (test-retest): an item the participant answered earlier, shown "
            "again (here one drawn at random); participants are not told."
        )
    if study.is_arrangement:
        return (
            "The first arrangement: every stimulus of the session. Later trials show the "
            "subsets whose pairs have the least evidence, chosen from the answers: a preview, "
            "which records none, stops here."
        )
    return "A regular trial: an item of the study, drawn at random (not claimed)."
