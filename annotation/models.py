"""Human studies: what a researcher designs (Study, Item), who takes part (Participant), what
each was shown (Trial) and answered (Response), and the tags of tag studies.

Counts that assignment depends on (``Item.assigned``) are changed only by conditional
UPDATEs in ``annotation/services/``, so concurrent participants never push an item past
its quota on PostgreSQL or on SQLite.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.db import models
from django.urls import reverse

from evaluation.models import HumanJudgments, Stimulus


def new_token() -> str:
    return secrets.token_urlsafe(18)


def new_completion_code() -> str:
    return secrets.token_hex(4).upper()


class StudyKind(models.TextChoices):
    PAIRS = "pairs", "Pair rating"
    TRIPLETS = "triplets", "Triplet odd-one-out"
    TWO_AFC = "2afc", "2AFC (reference and two candidates)"
    TAGS = "tags", "Tagging"
    ARRANGEMENT = "arrangement", "Multi-arrangement (drag in a circular arena)"


class TagMode(models.TextChoices):
    FREE = "free", "Free tags per stimulus"
    ADAPTIVE = "adaptive", "Adaptive (STEP-Tag): rate, flag and add tags in iterations"


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Study(models.Model):
    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=12, choices=StudyKind.choices)
    dataset = models.ForeignKey(
        "evaluation.Dataset", on_delete=models.PROTECT, related_name="studies"
    )
    status = models.CharField(max_length=10, choices=StudyStatus.choices, default=StudyStatus.DRAFT)
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)

    # Design
    judgments_per_item = models.PositiveIntegerField(
        default=5, help_text="Overlap: how many participants judge each item."
    )
    trials_per_session = models.PositiveIntegerField(default=20)
    practice_trials = models.PositiveIntegerField(default=0)
    scale_min = models.IntegerField(default=1)
    scale_max = models.IntegerField(default=7)
    scale_min_label = models.CharField(max_length=60, default="Not at all similar")
    scale_max_label = models.CharField(max_length=60, default="Very similar")
    # Tag studies
    tag_mode = models.CharField(max_length=10, choices=TagMode.choices, default=TagMode.FREE)
    flags_to_hide = models.PositiveIntegerField(default=2)
    ratings_to_freeze = models.PositiveIntegerField(default=3)
    freeze_mean = models.FloatField(default=3.0)
    frozen_tags_to_complete = models.PositiveIntegerField(default=2)
    max_iterations = models.PositiveIntegerField(default=10)
    # Multi-arrangement studies (annotation/services/arrangements.py)
    arena_max_items = models.PositiveIntegerField(
        default=40,
        help_text="Multi-arrangement: the most stimuli one session arranges; its first trial "
        "shows them all, later trials the subsets whose pairs have the least evidence.",
    )
    evidence_threshold = models.FloatField(
        default=0.5,
        help_text="Multi-arrangement: a session ends once every pair has this much evidence: "
        "the sum over the trials that showed the pair of its squared on-screen distance in "
        "arena diameters, at least 0.04 per trial (a pair placed half the arena's width apart "
        "gets 0.25 from that trial).",
    )
    session_seconds = models.PositiveIntegerField(
        default=1200,
        help_text="Multi-arrangement: no further trial starts after this many seconds.",
    )
    min_pair_consistency = models.FloatField(
        default=-1.0,
        help_text="Multi-arrangement: exclude when each later trial's distances correlate with "
        "the same pairs' distances in the first trial less than this (averaged over trials). "
        "Off at -1, the default: later trials zoom in on pairs the first placed close together, "
        "so honest participants reach only about 0.3 to 0.6 on well-structured stimuli and "
        "near 0 on weakly structured ones, where random placing gives about 0. Run a pilot "
        "to see where honest participants fall before turning it on.",
    )

    # Participant pages
    require_playback = models.BooleanField(
        default=False,
        help_text="Audio and video studies: the answer controls stay disabled until each clip "
        "of the trial has played once to its end. Enforced in the participant's browser only "
        "(the server cannot tell whether a clip was played).",
    )
    consent_md = models.TextField(blank=True)
    instructions_md = models.TextField(blank=True)
    completion_code = models.CharField(max_length=40, default=new_completion_code)
    redirect_url = models.URLField(blank=True, help_text="Sent here after completion.")
    external_id_param = models.CharField(
        max_length=40,
        blank=True,
        default="PROLIFIC_PID",
        help_text="URL parameter holding a recruitment platform's participant id.",
    )
    contact = models.CharField(
        max_length=200,
        blank=True,
        help_text="Whom participants contact about a problem (an email address, or how to "
        "reach you); shown when a session cannot be continued. Empty: your account's email.",
    )

    # Quality control
    repeat_trials = models.PositiveIntegerField(
        default=0, help_text="Trials shown twice per session (test-retest)."
    )
    catch_trials = models.PositiveIntegerField(default=0)
    min_response_ms = models.PositiveIntegerField(
        default=0,
        help_text="Responses faster than this are flagged as too fast. Multi-arrangement: "
        "per item the trial shows (a trial of 10 items is too fast under 10 times this).",
    )
    max_catch_failures = models.PositiveIntegerField(
        default=0, help_text="Exclude a participant who fails more catch trials than this."
    )
    max_fast_share = models.FloatField(
        default=0.2, help_text="Exclude when more than this share of responses is too fast."
    )
    max_retest_difference = models.FloatField(
        default=2.0,
        help_text="Ratings: exclude when repeated ratings differ by more than this on average.",
    )
    exclude_on_failure = models.BooleanField(
        default=True,
        help_text="Exclude participants who break a rule; otherwise only flag them.",
    )
    min_retest_agreement = models.FloatField(
        default=0.5,
        help_text="Choices: exclude when fewer repeated trials than this get the same answer.",
    )
    trial_timeout_seconds = models.PositiveIntegerField(
        default=600, help_text="An unanswered trial returns to the pool after this long."
    )

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when archived: left out of the public lists, kept with its data.",
    )
    # When the study closed itself because every item had its judgments (None: it did not,
    # or it was opened again since). Such a study opens again by itself when excluding a
    # participant returns items to the pool; one the researcher closed stays closed.
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("annotation:study_detail", args=[self.pk])

    def participant_url(self) -> str:
        return reverse("annotation:study_entry", args=[self.token])

    @property
    def contact_for_participants(self) -> str:
        """The study's contact, else the email of the researcher who made it ('' if none)."""
        if self.contact:
            return self.contact
        return getattr(self.created_by, "email", "") or ""

    @property
    def is_rating(self) -> bool:
        return self.kind == StudyKind.PAIRS

    @property
    def is_choice(self) -> bool:
        return self.kind in (StudyKind.TRIPLETS, StudyKind.TWO_AFC)

    @property
    def is_arrangement(self) -> bool:
        return self.kind == StudyKind.ARRANGEMENT

    @property
    def is_adaptive_tags(self) -> bool:
        return self.kind == StudyKind.TAGS and self.tag_mode == TagMode.ADAPTIVE

    @property
    def stimuli_per_item(self) -> int:
        per_kind: dict[str, int] = {
            StudyKind.PAIRS: 2,
            StudyKind.TAGS: 1,
            StudyKind.ARRANGEMENT: 1,  # an item is a stimulus; a session holds many
        }
        return per_kind.get(self.kind, 3)

    @property
    def quota(self) -> int:
        """How many regular responses an item may take."""
        return self.max_iterations if self.is_adaptive_tags else self.judgments_per_item


class Item(models.Model):
    """One thing to judge: a pair, a triplet, a 2AFC trial (reference, first, second) or, in
    tag studies, one stimulus (its chain of iterations in adaptive mode). In multi-arrangement
    studies an item is one stimulus and its quota counts the sessions that arrange it."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    a = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+")
    b = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True)
    c = models.ForeignKey(Stimulus, on_delete=models.PROTECT, related_name="+", null=True)
    # Issued and not expired, plus reserved for a first regular trial, plus answered by
    # participants who are not excluded: what the quota is checked against.
    assigned = models.PositiveIntegerField(default=0)
    answered = models.PositiveIntegerField(default=0)
    completed = models.BooleanField(default=False)  # adaptive tag chains end early
    shuffle_key = models.PositiveIntegerField(default=0)  # random: spreads equal-count ties

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "a", "b", "c"], name="unique_item"),
        ]
        indexes = [models.Index(fields=["study", "assigned", "shuffle_key"])]

    def __str__(self) -> str:
        return f"item {self.pk} of {self.study_id}"

    def stimuli(self) -> list[Stimulus]:
        return [s for s in (self.a, self.b, self.c) if s is not None]


class ParticipantStatus(models.TextChoices):
    CONSENTED = "consented", "Consented"
    COMPLETED = "completed", "Completed"
    EXCLUDED = "excluded", "Excluded"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Participant(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    external_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=10, choices=ParticipantStatus.choices, default=ParticipantStatus.CONSENTED
    )
    # The session's trial roles in order (practice, regular, repeat, catch), fixed at start.
    plan = models.JSONField(default=list)
    # The item claimed at consent for the first regular trial, so that a session never ends
    # with practice trials only; until its first regular trial is issued, or reserved_until,
    # after which it returns to the pool (annotation/services/trials.py).
    reserved_item = models.ForeignKey(
        "Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reserved_until = models.DateTimeField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True)  # reasons, shown to the researcher
    # Multi-arrangement: the stimuli this session arranges (claimed at consent), and how
    # their items count it (SessionState; annotation/services/arrangements.py).
    session_stimuli = models.JSONField(default=list, blank=True)
    session_state = models.CharField(max_length=10, blank=True, default="")
    # A simulated participant of a pilot: kept out of real aggregates, coverage and quotas.
    pilot = models.ForeignKey(
        "Pilot", null=True, blank=True, on_delete=models.CASCADE, related_name="participants"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"],
                condition=~models.Q(external_id=""),
                name="one_participant_per_external_id",
            ),
            models.UniqueConstraint(
                fields=["study", "user"],
                condition=models.Q(user__isnull=False),
                name="one_participant_per_account",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id or f"participant {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("annotation:participant_trial", args=[self.token])

    @property
    def excluded(self) -> bool:
        return self.status == ParticipantStatus.EXCLUDED


class RefusedResume(models.Model):
    """Someone opened the study link with the recruiter id of a participant who had started
    already, in a browser that does not hold that participant's session. Recruiter ids are
    not secrets, so the session was not handed over (annotation/views.py, study_entry); the
    researcher sees each attempt on the study's page."""

    participant = models.ForeignKey(
        Participant, on_delete=models.CASCADE, related_name="refused_resumes"
    )
    external_id = models.CharField(max_length=200)  # as given (the participant's, trimmed)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"refused resume of {self.external_id} at {self.at:%Y-%m-%d %H:%M}"


class TrialRole(models.TextChoices):
    PRACTICE = "practice", "Practice"
    REGULAR = "regular", "Regular"
    REPEAT = "repeat", "Repeat (test-retest)"
    CATCH = "catch", "Catch"


class TrialStatus(models.TextChoices):
    ISSUED = "issued", "Issued"
    ANSWERED = "answered", "Answered"
    EXPIRED = "expired", "Expired"


class Trial(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="trials")
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=TrialRole.choices)
    item = models.ForeignKey(Item, on_delete=models.PROTECT, null=True, related_name="trials")
    # What was shown, in the order shown (left/right randomised): stimulus ids.
    shown = models.JSONField(default=list)
    shown_tags = models.JSONField(default=list)  # adaptive tag trials: tag ids, in order
    expected = models.JSONField(null=True, blank=True)  # catch trials: the right answer
    repeat_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(
        max_length=10, choices=TrialStatus.choices, default=TrialStatus.ISSUED
    )
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["position"]
        constraints = [
            # An expired trial gives its slot back: the participant gets a fresh trial there.
            models.UniqueConstraint(
                fields=["participant", "position"],
                condition=~models.Q(status="expired"),
                name="one_live_trial_per_slot",
            ),
        ]
        indexes = [models.Index(fields=["status", "expires_at"])]

    def __str__(self) -> str:
        return f"trial {self.position} of {self.participant_id} ({self.role})"


class Response(models.Model):
    trial = models.OneToOneField(Trial, on_delete=models.CASCADE, related_name="response")
    value = models.FloatField(null=True, blank=True)  # ratings
    chosen = models.ForeignKey(Stimulus, on_delete=models.PROTECT, null=True, related_name="+")
    rt_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=64, unique=True)
    flags = models.JSONField(default=list, blank=True)  # e.g. "too fast", "failed catch"
    # Multi-arrangement: [x, y, moves] per shown stimulus, in the trial's order; x and y in
    # arena radii from the centre (inside: x² + y² <= 1), moves the drags that placed it.
    arrangement = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"response to trial {self.trial_id}"


class TagStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    HIDDEN = "hidden", "Hidden (flagged)"
    FROZEN = "frozen", "Frozen (agreed)"


class Tag(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="tags")
    stimulus = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+")
    text = models.CharField(max_length=100)  # normalised: lower case, single spaces
    added_in = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="tags_added")
    status = models.CharField(max_length=10, choices=TagStatus.choices, default=TagStatus.ACTIVE)
    rating_count = models.PositiveIntegerField(default=0)
    rating_sum = models.FloatField(default=0)
    flag_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["stimulus", "text"]
        constraints = [
            models.UniqueConstraint(fields=["study", "stimulus", "text"], name="unique_tag"),
        ]

    def __str__(self) -> str:
        return self.text

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.rating_count if self.rating_count else None


class TagRating(models.Model):
    """A participant's rating (1-5) of an existing tag, or a flag (rating null)."""

    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="ratings")
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="tag_ratings")
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    flagged = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tag", "trial"], name="one_rating_per_tag_trial"),
        ]

    def __str__(self) -> str:
        return f"{self.tag_id}: {'flag' if self.flagged else self.rating}"


class PilotStatus(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"


class Pilot(models.Model):
    """Simulated participants sent through a study's real participant pages before anyone is
    paid (annotation/simulation.py): they answer from a model's embeddings with planted
    noise, speeders and inattentive bots. Their responses stay apart from the real data."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pilots")
    model = models.ForeignKey(
        "evaluation.PretrainedModel", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Bots present it at the study link: it admits them to a study that is not open yet.
    token = models.CharField(max_length=40, unique=True, default=new_token, editable=False)
    options = models.JSONField(default=dict)  # participants, noise, temperature, planted bots
    status = models.CharField(
        max_length=10, choices=PilotStatus.choices, default=PilotStatus.RUNNING
    )
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"pilot {self.pk} of {self.study_id}"


class Aggregation(models.Model):
    """A HumanJudgments version made from a study's responses, and what went into it."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="aggregations")
    judgments = models.OneToOneField(HumanJudgments, on_delete=models.CASCADE)
    # Made from a pilot's simulated participants (a researcher asked), not from people.
    pilot = models.ForeignKey(
        "Pilot", null=True, blank=True, on_delete=models.SET_NULL, related_name="aggregations"
    )
    responses = models.PositiveIntegerField()
    participants = models.PositiveIntegerField()
    excluded_participants = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.study_id} -> {self.judgments_id}"

    def summary(self) -> dict[str, Any]:
        return {
            "responses": self.responses,
            "participants": self.participants,
            "excluded_participants": self.excluded_participants,
        }
