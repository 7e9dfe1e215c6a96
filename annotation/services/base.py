"""What every part of the study services shares: the problems they raise and the answer a
participant submits."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError

from annotation.models import (
    Participant,
)


class TrialProblem(ValidationError):
    """A response that cannot be stored; the message says why."""


class StudyFull(PermissionDenied):
    """No item is left for a new participant: every place is answered or held by a session
    in progress. Raised before a session starts, never after its practice trials."""


class ParticipantConflict(PermissionDenied):
    """A session was asked for with the recruiter id of a participant who has started
    already. Recruiter ids are not secrets, so the session is not handed over: the
    participant continues in their own browser or through their private link."""

    def __init__(self, participant: Participant) -> None:
        super().__init__(
            f"A session with the participant id {participant.external_id!r} has already "
            "started in another browser."
        )
        self.participant = participant


@dataclass(frozen=True)
class Placement:
    """Multi-arrangement: where a participant left one shown stimulus, in arena radii from
    the centre (x to the right, y down), and how many times they moved it."""

    stimulus: int
    x: float
    y: float
    moves: int


@dataclass(frozen=True)
class Answer:
    """What a participant submitted for one trial."""

    trial_id: int
    idempotency_key: str
    value: float | None = None
    chosen: int | None = None  # stimulus id
    rt_ms: int | None = None
    tag_ratings: dict[int, int | None] = field(default_factory=dict)  # tag id -> 1-5, None=flag
    new_tags: list[str] = field(default_factory=list)
    placements: tuple[Placement, ...] = ()  # multi-arrangement: every shown item, in order
