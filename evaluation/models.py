"""Catalogue and run models.

PretrainedModel and Dataset/Stimulus form the catalogue; a Run evaluates models on a
dataset, one RunStep per model (extract, then score); EmbeddingSet rows key the embedding
cache by fingerprint; Score rows hold results with their confidence interval.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from evaluation.engine.specs import ModelSpec


class Modality(models.TextChoices):
    IMAGE = "image", "Image"
    TEXT = "text", "Text"
    AUDIO = "audio", "Audio"
    VIDEO = "video", "Video"


class ModelSource(models.TextChoices):
    TIMM = "timm", "timm"
    SENTENCE_TRANSFORMERS = "sentence-transformers", "sentence-transformers"
    TRANSFORMERS_TEXT = "transformers-text", "transformers (text: tokenizer + model)"
    TRANSFORMERS_VISION = "transformers-vision", "transformers (vision: image processor + model)"
    TRANSFORMERS_AUDIO = "transformers-audio", "transformers (audio: feature extractor + model)"
    TRANSFORMERS_VIDEO = "transformers-video", "transformers (video: processor + model)"
    OPEN_CLIP_IMAGE = "open_clip-image", "open_clip (image tower)"
    OPEN_CLIP_TEXT = "open_clip-text", "open_clip (text tower)"
    TORCHSCRIPT = "torchscript", "TorchScript file (images)"
    BASELINE = "baseline", "Baseline (pixels, tfidf, chargrams)"
    LANGUAGE = "language", "Language-based (words people used about each stimulus)"
    STACKED = "stacked", "Stacked (language + DNN embeddings; made on a leaderboard)"
    IMPORTED = "imported", "Imported embeddings (computed elsewhere)"


# Models that are not loaded, so never inspected: their embeddings come from elsewhere.
NEVER_INSPECTED = (ModelSource.STACKED, ModelSource.IMPORTED)


class Weights(models.TextChoices):
    PRETRAINED = "pretrained", "Pretrained"
    UNTRAINED = "untrained", "Untrained (random initialisation)"
    CHECKPOINT = "checkpoint", "Local checkpoint file"


class PretrainedModel(models.Model):
    name = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=40, choices=ModelSource.choices)
    identifier = models.CharField(
        max_length=500,
        help_text="timm architecture, hub id, local path, or package:<module> for shipped weights.",
    )
    weights = models.CharField(max_length=20, choices=Weights.choices, default=Weights.PRETRAINED)
    checkpoint_path = models.CharField(max_length=500, blank=True)
    revision = models.CharField(max_length=100, blank=True)
    seed = models.PositiveIntegerField(
        default=0, help_text="Initialisation seed for untrained weights."
    )
    modality = models.CharField(max_length=10, choices=Modality.choices)
    default_layer = models.CharField(max_length=200, blank=True)
    pooling = models.CharField(max_length=40, default="model-default")
    layers = models.JSONField(
        default=list, blank=True, help_text="Layers with output shapes, from a dry forward pass."
    )
    inspection_error = models.TextField(blank=True)
    # When the task that lists the layers was handed to the task queue; empty while it could
    # not be (the broker was unreachable at registration): the workers' sweep sends it then.
    inspection_sent_at = models.DateTimeField(null=True, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    embedding_size = models.PositiveIntegerField(null=True, blank=True)
    description = models.TextField(blank=True)
    # Imported embeddings: where they came from (free text, link, licence) and how the file
    # was read (format, matched by id, name or order).
    provenance = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when archived: left out of the public lists, kept with its scores.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:model_detail", args=[self.pk])

    @property
    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self.layers]

    @property
    def inspection_state(self) -> str:
        """Where the listing of its layers stands: 'done', 'failed', 'waiting_for_queue' (the
        task could not be handed to the queue yet) or 'pending' (a worker has it to do)."""
        if self.inspection_error:
            return "failed"
        if self.layers:
            return "done"
        return "waiting_for_queue" if self.inspection_waiting_for_queue else "pending"

    @property
    def inspection_waiting_for_queue(self) -> bool:
        """Its layers are not listed because the task that lists them could not be handed to
        the task queue yet (the workers send it once the broker answers again)."""
        return (
            self.inspection_sent_at is None
            and not self.layers
            and not self.inspection_error
            and self.source not in NEVER_INSPECTED
        )

    @property
    def is_untrained_baseline(self) -> bool:
        return self.weights == Weights.UNTRAINED

    @property
    def is_baseline(self) -> bool:
        return self.source == ModelSource.BASELINE

    @property
    def display_name(self) -> str:
        if self.is_untrained_baseline:
            return f"{self.name} (untrained baseline)"
        return f"{self.name} (baseline)" if self.is_baseline else self.name

    def spec(self) -> ModelSpec:
        return ModelSpec(
            source=self.source,
            identifier=self.identifier,
            weights=self.weights,
            checkpoint_path=self.checkpoint_path,
            revision=self.revision,
            seed=self.seed,
        )

    @property
    def revision_key(self) -> str:
        """Digest of what selects the model's weights and embeddings: a score records it, and
        goes stale when an edit of the model changes it."""
        return model_revision_key({f: getattr(self, f) for f in REVISION_FIELDS})


# The model fields that select its weights and how its embeddings are made.
REVISION_FIELDS = (
    "source",
    "identifier",
    "weights",
    "checkpoint_path",
    "revision",
    "seed",
    "pooling",
)


def model_revision_key(fields: dict[str, Any]) -> str:
    """``PretrainedModel.revision_key`` from those fields' values (a leaderboard has them as
    plain values, not model instances)."""
    canonical = json.dumps([fields[f] for f in REVISION_FIELDS], default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Dataset(models.Model):
    name = models.CharField(max_length=200, unique=True)
    modality = models.CharField(max_length=10, choices=Modality.choices)
    description = models.TextField(blank=True)
    origin = models.CharField(max_length=200, blank=True, help_text="Where the data came from.")
    content_hash = models.CharField(max_length=64, editable=False)
    # Video datasets: which frames of each clip models see (evaluation.engine.video
    # FrameSampling, e.g. {"frames": 8}); fixed at import, part of every embedding's
    # fingerprint and shown with every score. Empty for other modalities.
    frame_sampling = models.JSONField(default=dict, blank=True, editable=False)
    stimulus_count = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when archived: left out of the public lists, kept with its scores.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:dataset_detail", args=[self.pk])

    @property
    def model_modalities(self) -> tuple[str, ...]:
        """Which models embed these stimuli: those of its modality, and for video also
        image models, applied to each sampled frame and averaged over the frames."""
        if self.modality == Modality.VIDEO:
            return (Modality.VIDEO, Modality.IMAGE)
        return (self.modality,)

    @property
    def frame_sampling_label(self) -> str:
        """What models see of each clip, in words (video datasets; else empty)."""
        if not self.frame_sampling:
            return ""
        from evaluation.engine.video import FrameSampling

        return FrameSampling.from_description(self.frame_sampling).label()


def stimulus_upload_path(instance: Stimulus, filename: str) -> str:
    return f"datasets/{instance.dataset_id}/{filename}"


class Split(models.TextChoices):
    NONE = "", "—"
    TRAIN = "train", "Train"
    VAL = "val", "Validation"
    TEST = "test", "Test"


class Stimulus(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="stimuli")
    order = models.PositiveIntegerField()
    name = models.CharField(max_length=300)
    file = models.FileField(upload_to=stimulus_upload_path, max_length=500, blank=True)
    text = models.TextField(blank=True)
    label = models.CharField(max_length=200, blank=True)
    split = models.CharField(max_length=10, choices=Split.choices, blank=True)
    content_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["dataset", "order"]
        verbose_name_plural = "stimuli"
        constraints = [
            models.UniqueConstraint(fields=["dataset", "order"], name="stimulus_unique_order"),
        ]
        indexes = [models.Index(fields=["dataset", "label"])]

    def __str__(self) -> str:
        return self.name


class Description(models.Model):
    """A word or phrase people used about a stimulus: a tag from a tag study, or a caption.

    Descriptions come in named sets (``origin``: "tags of study 'Objects' v1", "captions.csv")
    that never change once stored, so a language-based model over one set has a stable
    identity in the embedding cache. Language-based methods embed these texts and average
    them per stimulus, weighted by ``weight`` (a tag's mean rating; 1 for captions)."""

    stimulus = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="descriptions")
    origin = models.CharField(max_length=200)
    text = models.CharField(max_length=500)
    weight = models.FloatField(default=1.0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["stimulus", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["origin", "stimulus", "text"], name="description_unique_text"
            ),
            models.CheckConstraint(condition=models.Q(weight__gt=0), name="description_weight"),
        ]
        indexes = [models.Index(fields=["origin"])]

    def __str__(self) -> str:
        return f"{self.text} ({self.origin})"


class JudgmentKind(models.TextChoices):
    PAIRS = "pairs", "Pair ratings"
    TRIPLETS = "triplets", "Triplet odd-one-out"
    TWO_AFC = "2afc", "2AFC (reference and two candidates)"


class ScoringUnit(models.TextChoices):
    """What a pair-rating correlation counts as one observation (the published unit)."""

    PAIR = "pair", "per pair: repeated rows of a pair averaged first"
    ROW = "row", "per row: every row as published (MTEB's STS)"


class ValueMeaning(models.TextChoices):
    """What a pair's value says: how alike the two are, or how different (a distance)."""

    SIMILARITY = "similarity", "similarity: higher means more alike"
    DISSIMILARITY = "dissimilarity", "dissimilarity (a distance): higher means less alike"


class HumanJudgments(models.Model):
    """One version of a set of human judgments over a dataset's stimuli.

    New data make a new version (same name, version + 1); scores stay attached to the
    version they were computed on.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="judgment_sets")
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=10, choices=JudgmentKind.choices)
    scale_min = models.FloatField(null=True, blank=True, help_text="Pair ratings: scale start.")
    scale_max = models.FloatField(null=True, blank=True, help_text="Pair ratings: scale end.")
    origin = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    judgment_count = models.PositiveIntegerField(default=0)
    participant_count = models.PositiveIntegerField(default=0)
    reliability = models.JSONField(
        null=True, blank=True, help_text="Ceiling: split-half (ratings) or leave-one-out (choices)."
    )
    scoring_unit = models.CharField(
        max_length=4,
        choices=ScoringUnit.choices,
        default=ScoringUnit.PAIR,
        help_text="Pair ratings: what the correlation with a model counts as one observation.",
    )
    # Pair values kept as published; dissimilarities are negated where they are scored.
    value_meaning = models.CharField(
        max_length=13, choices=ValueMeaning.choices, default=ValueMeaning.SIMILARITY
    )
    # How the file was read and what the import kept: the CSV dialect, rows read, pairs of a
    # stimulus with itself kept or dropped, repeated pairs (shown with the data, exported).
    import_report = models.JSONField(default=dict, blank=True)
    # Made by simulated participants (a study's pilot), not people: its target is scored only
    # when a run names it, and is left off the boards across targets and the front page.
    simulated = models.BooleanField(
        default=False,
        help_text="Simulated participants' judgments (a pilot), not people's.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["dataset__name", "name", "-version"]
        verbose_name_plural = "human judgments"
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "name", "version"], name="judgments_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def ceiling(self) -> float | None:
        return self.reliability.get("mean") if self.reliability else None


class Judgment(models.Model):
    """One human response: a rating of (a, b), or a choice among (a, b, c).

    Triplets: ``chosen`` is the odd one out. 2AFC: ``a`` is the reference and ``chosen`` is
    b or c.
    """

    judgments = models.ForeignKey(HumanJudgments, on_delete=models.CASCADE, related_name="rows")
    a = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+")
    b = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+")
    c = models.ForeignKey(
        Stimulus, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    value = models.FloatField(null=True, blank=True)
    chosen = models.ForeignKey(
        Stimulus, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    participant = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [models.Index(fields=["judgments", "participant"])]

    def __str__(self) -> str:
        return f"{self.judgments}: {self.a_id}, {self.b_id}" + (
            f", {self.c_id}" if self.c_id else ""
        )


class TargetKind(models.TextChoices):
    LABELS = "labels", "Class labels"
    PAIRS = "pairs", "Human pair ratings"
    TRIPLETS = "triplets", "Human odd-one-out"
    TWO_AFC = "2afc", "Human 2AFC"


class Target(models.Model):
    """What a score measures agreement with: a dataset's labels or a judgments version."""

    kind = models.CharField(max_length=20, choices=TargetKind.choices)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="targets")
    judgments = models.OneToOneField(
        HumanJudgments, null=True, blank=True, on_delete=models.CASCADE, related_name="target"
    )
    name = models.CharField(max_length=300)
    published_ceiling = models.FloatField(
        null=True,
        blank=True,
        help_text="A noise ceiling reported elsewhere (e.g. the paper that published the data), "
        "for targets whose judgments cannot give one here.",
    )
    published_ceiling_source = models.CharField(
        max_length=300, blank=True, help_text="Where the published ceiling comes from."
    )
    archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when archived: left out of the public lists, kept with its scores.",
    )

    class Meta:
        ordering = ["dataset__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset"], condition=Q(kind="labels"), name="target_one_labels_per_dataset"
            ),
            models.CheckConstraint(
                condition=Q(kind="labels", judgments__isnull=True)
                | (~Q(kind="labels") & Q(judgments__isnull=False)),
                name="target_judgments_iff_not_labels",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("evaluation:leaderboard", args=[self.pk])

    @property
    def simulated(self) -> bool:
        """Its judgments were made by simulated participants (a pilot), not people."""
        return self.judgments is not None and self.judgments.simulated


class EmbeddingSet(models.Model):
    """A cached embeddings file, keyed by the fingerprint of everything that determines it."""

    fingerprint = models.CharField(max_length=64, unique=True)
    model = models.ForeignKey(
        PretrainedModel, on_delete=models.CASCADE, related_name="embedding_sets"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="embedding_sets")
    layer = models.CharField(max_length=200)
    pooling = models.CharField(max_length=40)
    precision = models.CharField(max_length=10, default="fp32")
    weights_id = models.CharField(max_length=300)
    preprocessing = models.JSONField(default=dict)
    relative_path = models.CharField(max_length=300)
    count = models.PositiveIntegerField()
    dim = models.PositiveIntegerField()
    extraction_seconds = models.FloatField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.model} / {self.dataset} / {self.layer} ({self.fingerprint[:12]})"

    def is_stored(self) -> bool:
        """Whether the embeddings storage holds the file (a row may outlive its file)."""
        from evaluation import storage

        return storage.exists(storage.EMBEDDINGS, self.relative_path)

    @property
    def path(self) -> Path:
        """The file on this machine's disk: in EMBEDDINGS_ROOT, or the cache's copy of the
        object store's, fetched on first use (the name is content-addressed: never stale)."""
        from evaluation import storage

        return storage.local_path(storage.EMBEDDINGS, self.relative_path)

    def load(self) -> np.ndarray:
        """The embeddings, memory-mapped from this machine's disk (see ``path``)."""
        return np.load(self.path, mmap_mode="r")

    def stored_shape(self) -> tuple[int, ...]:
        """The shape the stored file declares, read from its header alone."""
        from evaluation import storage

        return storage.npy_shape(storage.EMBEDDINGS, self.relative_path)

    def open_stream(self) -> Any:
        """The stored file's bytes, streamed from the store (never read whole); the caller
        closes it."""
        from evaluation import storage

        return storage.open_stream(storage.EMBEDDINGS, self.relative_path)


class EmbeddingImport(models.Model):
    """An upload of embeddings computed elsewhere, waiting for or being read by a worker (the
    web process only streams the file to disk). ``processed`` of ``total`` rows are written."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting for a worker"
        RUNNING = "running", "Importing"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    match = models.CharField(max_length=10, default="auto")
    provenance = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True)
    licence = models.CharField(max_length=200, blank=True)
    file_name = models.CharField(max_length=300)
    staged_path = models.CharField(max_length=500)  # under MEDIA_ROOT
    ids_path = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    processed = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error_message = models.TextField(blank=True)
    model = models.ForeignKey(
        PretrainedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message_sent_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import of {self.name} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:embeddings_import_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def fraction_done(self) -> float:
        return self.processed / self.total if self.total else 0.0


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    # Finished with some models failed and at least one scored: the scores it has are valid
    # (they count on leaderboards like any other), but the run is not a success.
    PARTLY_FAILED = "partly_failed", "Partly failed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Run(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="runs")
    targets = models.ManyToManyField(Target, related_name="runs")
    metrics = models.JSONField(help_text='List of {"name": ..., "params": {...}}.')
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"Run {self.pk} on {self.dataset}"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:run_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    @property
    def metric_keys(self) -> list[str]:
        return [metric_key(entry["name"], entry["params"]) for entry in self.metrics]

    @property
    def status_summary(self) -> str:
        """The status in words, with the failed models counted where some failed
        ("Partly failed: 3 of 4 models failed"); reads ``steps`` (prefetch them on lists)."""
        label = str(self.get_status_display())
        if self.status not in (RunStatus.PARTLY_FAILED, RunStatus.FAILED):
            return label
        steps = list(self.steps.all())
        failed = sum(step.status == StepStatus.FAILED for step in steps)
        return f"{label}: {failed} of {len(steps)} model{'s' if len(steps) != 1 else ''} failed"

    @property
    def waiting_for_queue(self) -> bool:
        """Some model waits for a worker, but its task could not be handed to the task queue
        (the broker was unreachable): the workers send it once the broker answers again.
        Reads ``steps`` (prefetch them on lists)."""
        return not self.is_finished and any(
            step.message_sent_at is None
            and step.status in (StepStatus.QUEUED, StepStatus.EXTRACTED)
            and not step.claimed_by
            for step in self.steps.all()
        )

    @property
    def elapsed_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


FINISHED_RUN_STATUSES = {
    RunStatus.SUCCEEDED,
    RunStatus.PARTLY_FAILED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
}


class StepStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    EXTRACTING = "extracting", "Extracting embeddings"
    EXTRACTED = "extracted", "Waiting for scoring"
    SCORING = "scoring", "Scoring"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STEP_STATUSES = {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED}
# Statuses that a worker holds while it works; the step is orphaned if that worker dies.
CLAIMED_STEP_STATUSES = {StepStatus.EXTRACTING, StepStatus.SCORING}


class RunStep(models.Model):
    """One model of a run: extract its embeddings (gpu queue), then score them (cpu queue)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    model = models.ForeignKey(PretrainedModel, on_delete=models.PROTECT, related_name="run_steps")
    layers = models.JSONField(
        default=list, blank=True, help_text="Layers to extract in one pass; empty: the default."
    )
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.QUEUED)
    processed = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    embedding_sets = models.ManyToManyField(EmbeddingSet, blank=True, related_name="+")
    reused_embeddings = models.BooleanField(default=False)
    claimed_by = models.CharField(max_length=200, blank=True)
    # The Celery node names of the workers that finished each phase (see Worker for where
    # they ran: host, SLURM job).
    extracted_by = models.CharField(max_length=200, blank=True)
    scored_by = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims in the current phase.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    extract_seconds = models.FloatField(null=True, blank=True)
    # Of extract_seconds, the time spent building the model and loading its weights: in a
    # sweep over many models it can rival the forward passes.
    load_seconds = models.FloatField(null=True, blank=True)
    score_seconds = models.FloatField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    # When the task message of the step's current phase was last handed to the broker; null
    # while none has been (the broker was unreachable): the lost-message sweep sends it then.
    message_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "model"], name="runstep_unique_model"),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.run} / {self.model}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STEP_STATUSES

    @property
    def fraction_done(self) -> float:
        """Extraction is most of the work; scoring counts for the last tenth."""
        if self.status == StepStatus.SUCCEEDED:
            return 1.0
        if self.status in (StepStatus.EXTRACTED, StepStatus.SCORING):
            return 0.9
        return 0.9 * (self.processed / self.total) if self.total else 0.0


def metric_key(name: str, params: dict[str, Any]) -> str:
    """Canonical name of a metric with its parameters, e.g. 'knn(k=5,split=loo)'."""
    inner = ",".join(f"{key}={params[key]}" for key in sorted(params))
    return f"{name}({inner})" if inner else name


class Worker(models.Model):
    """A Celery worker as it registered itself when it started (workers/presence.py), seen
    again every ``WORKER_HEARTBEAT_SECONDS`` while it lives. Read by the runs list (how many
    are up) and the run page (where each step ran)."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery node name.")
    queues = models.CharField(max_length=200)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    # Set when the worker runs as a SLURM job (slurm_workers submits them).
    slurm_job_id = models.CharField(max_length=40, blank=True)
    slurm_job_name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["stopped_at", "last_seen_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def where(self) -> str:
        """The worker as the run page names it: its name, and its SLURM job if any."""
        return f"{self.name} (SLURM job {self.slurm_job_id})" if self.slurm_job_id else self.name


class Score(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="scores")
    model = models.ForeignKey(PretrainedModel, on_delete=models.CASCADE, related_name="scores")
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="scores")
    layer = models.CharField(max_length=200)
    metric = models.CharField(max_length=50)
    metric_key = models.CharField(max_length=200)
    params = models.JSONField(default=dict)
    value = models.FloatField()
    ci_low = models.FloatField()
    ci_high = models.FloatField()
    ceiling = models.FloatField(null=True, blank=True)
    n = models.PositiveIntegerField(help_text="Number of test items behind the value.")
    embedding_set = models.ForeignKey(
        EmbeddingSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="scores"
    )
    details = models.JSONField(default=dict)
    # The value in each bootstrap resample (float64, little-endian), for paired comparisons
    # of models scored on the same resamples (same ``resampling``); null where the metric's
    # interval is not a bootstrap.
    resamples = models.BinaryField(null=True, blank=True, editable=False)
    resampling = models.CharField(max_length=100, blank=True)
    # What determined the value (evaluation.provenance.score_provenance): the model's
    # revision and weights, the dataset's content, the judgments' version, the metric, its
    # parameters and its code version. Empty on scores from before it was recorded.
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-value"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "model", "layer", "metric_key", "target"], name="score_unique_result"
            ),
        ]
        indexes = [models.Index(fields=["target", "metric_key"])]

    def __str__(self) -> str:
        return f"{self.model} {self.metric_key} = {self.value:.4f}"

    @property
    def normalized(self) -> float | None:
        """Value as a fraction of the target's ceiling, where the target has one."""
        return self.value / self.ceiling if self.ceiling else None

    @property
    def resample_values(self) -> np.ndarray | None:
        return resamples_from_bytes(self.resamples)


def resamples_to_bytes(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<f8").tobytes()


def resamples_from_bytes(raw: bytes | memoryview | None) -> np.ndarray | None:
    return None if raw is None else np.frombuffer(bytes(raw), dtype="<f8")
