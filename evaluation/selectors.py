"""Reads for pages and the API, each with a bounded number of queries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.utils import timezone

from evaluation.models import (
    Dataset,
    EmbeddingImport,
    EmbeddingSet,
    HumanJudgments,
    ModelSource,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    StepStatus,
    Stimulus,
    Target,
    TargetKind,
    Worker,
)

# A worker not seen for this many heartbeats is not counted as up (it may have been killed).
MISSED_HEARTBEATS = 3
# Steps with no work left; a cancelled one was stopped, so its progress stays where it was.
DONE_STEP_STATUSES = {StepStatus.SUCCEEDED, StepStatus.FAILED}


# --- Catalogue ---------------------------------------------------------------------------------
def models_all(*, include_archived: bool = False) -> QuerySet[PretrainedModel]:
    """The model list; archived models are left out unless asked for (their pages stay)."""
    models = PretrainedModel.objects.select_related("created_by").order_by("name", "id")
    return models if include_archived else models.filter(archived_at__isnull=True)


def models_in_order(ids: Sequence[int]) -> list[PretrainedModel]:
    """The models with these ids, in the order given (ids that match none are dropped)."""
    found = {model.pk: model for model in PretrainedModel.objects.filter(pk__in=ids)}
    return [found[pk] for pk in dict.fromkeys(ids) if pk in found]


def models_with_embeddings_of(dataset: Dataset | None) -> QuerySet[PretrainedModel]:
    """Models whose embeddings of the dataset are cached (what a comparison can use), not
    archived."""
    if dataset is None:
        return PretrainedModel.objects.none()
    return PretrainedModel.objects.filter(
        embedding_sets__dataset=dataset, archived_at__isnull=True
    ).distinct()


def models_with_default_embeddings_of(dataset: Dataset) -> list[PretrainedModel]:
    """Models with cached embeddings of the dataset at their default layer, by name."""
    return list(
        PretrainedModel.objects.filter(
            embedding_sets__dataset=dataset, embedding_sets__layer=F("default_layer")
        )
        .distinct()
        .order_by("name")
    )


def language_models_scored_on(target: Target) -> list[PretrainedModel]:
    return list(
        PretrainedModel.objects.filter(source=ModelSource.LANGUAGE, scores__target=target)
        .distinct()
        .only("name")
    )


def pair_targets_scored_for(model: PretrainedModel) -> list[Target]:
    return list(
        Target.objects.filter(kind=TargetKind.PAIRS, scores__model=model)
        .distinct()
        .select_related("judgments")  # simulated or not
    )


# People made them (labels have no judgments): a pilot's simulated participants did not.
MADE_BY_PEOPLE = Q(judgments__isnull=True) | Q(judgments__simulated=False)


def targets_scored_by_default(*, dataset: Dataset) -> QuerySet[Target]:
    """What a run on ``dataset`` scores unless it names its targets, and so the metrics it
    offers by default: every target of the dataset but the simulated ones (a study pilot's,
    scored only by a run that names them)."""
    return dataset.targets.filter(MADE_BY_PEOPLE).select_related("judgments").order_by("name", "id")


def targets_of(*, dataset: Dataset) -> QuerySet[Target]:
    """Every target of ``dataset``, simulated ones included (what a run may name)."""
    return dataset.targets.select_related("judgments").order_by("name", "id")


def targets_named(*, dataset: Dataset, ids: Sequence[int]) -> list[Target]:
    """The targets a run names by id, in order and each once; ValidationError for an id
    that is no target, or a target of another dataset than ``dataset``."""
    found = {t.pk: t for t in Target.objects.filter(pk__in=ids).select_related("dataset")}
    for pk in ids:
        target = found.get(pk)
        if target is None:
            raise ValidationError(f"No target with id {pk}.")
        if target.dataset_id != dataset.pk:
            raise ValidationError(
                f"Target {pk} ({target.name}) is a target of {target.dataset.name}, not of "
                f"the run's dataset {dataset.name}."
            )
    return [found[pk] for pk in dict.fromkeys(ids)]


def targets_with_datasets() -> QuerySet[Target]:
    return Target.objects.select_related("dataset", "judgments").order_by("dataset__name", "name")


# Targets listed to the public: neither the target nor its dataset is archived.
LISTED_TARGETS = Q(archived_at__isnull=True, dataset__archived_at__isnull=True)


def targets_to_compare() -> QuerySet[Target]:
    """The compare page's choice of targets: archived ones (or of archived datasets) are
    left out."""
    return targets_with_datasets().filter(LISTED_TARGETS)


def stimuli_preview(dataset: Dataset, *, limit: int) -> QuerySet[Stimulus]:
    return dataset.stimuli.order_by("order")[:limit]


def embedding_sets() -> QuerySet[EmbeddingSet]:
    return EmbeddingSet.objects.select_related("model", "dataset").order_by(
        "dataset__name", "model__name", "layer", "-created_at"
    )


def embedding_imports() -> QuerySet[EmbeddingImport]:
    return EmbeddingImport.objects.select_related("dataset", "model")


def judgment_sets() -> QuerySet[HumanJudgments]:
    return HumanJudgments.objects.select_related("dataset", "created_by", "target").order_by(
        "dataset__name", "name", "-version", "id"
    )


def scores_newest_first() -> QuerySet[Score]:
    return (
        Score.objects.select_related("model", "target__dataset", "target__judgments")
        .defer("resamples")  # 8 kB a score; the comparisons read them where they need them
        .order_by("-created_at", "-id")
    )


def targets_with_score_counts(*, include_archived: bool = False) -> QuerySet[Target]:
    """The leaderboards index; archived targets, and those of archived datasets, are left
    out unless asked for."""
    targets = (
        Target.objects.select_related("dataset", "judgments")  # judgments: simulated or not
        .annotate(score_count=Count("scores"))
        .order_by("dataset__name", "name")
    )
    return targets if include_archived else targets.filter(LISTED_TARGETS)


def datasets_with_counts(*, include_archived: bool = False) -> QuerySet[Dataset]:
    """The dataset list; archived datasets are left out unless asked for."""
    datasets = Dataset.objects.annotate(run_count=Count("runs", distinct=True)).order_by("name")
    return datasets if include_archived else datasets.filter(archived_at__isnull=True)


def dataset_label_counts(*, dataset: Dataset) -> list[tuple[str, int]]:
    counts = Counter(dataset.stimuli.values_list("label", flat=True))
    return sorted(counts.items())


# --- Runs --------------------------------------------------------------------------------------
def runs_with_steps() -> QuerySet[Run]:
    """Runs, newest first, with their steps' models (progress without a query per run)."""
    return (
        Run.objects.select_related("dataset", "created_by")
        .prefetch_related(Prefetch("steps", queryset=RunStep.objects.select_related("model")))
        .order_by("-created_at", "-id")
    )


@dataclass(frozen=True)
class RunProgress:
    run: Run
    progress: float


def runs_recent(*, limit: int = 100) -> list[RunProgress]:
    return [RunProgress(run, run_progress_fraction(run)) for run in runs_with_steps()[:limit]]


def run_with_steps(*, run_id: int) -> Run:
    return (
        Run.objects.select_related("dataset")
        .prefetch_related(
            Prefetch(
                "steps",
                queryset=RunStep.objects.select_related("model").prefetch_related("embedding_sets"),
            ),
            Prefetch(
                "scores",
                queryset=Score.objects.select_related("model", "target").defer("resamples"),
            ),
        )
        .get(pk=run_id)
    )


def run_progress_fraction(run: Run) -> float:
    steps = list(run.steps.all())
    if steps and all(step.status in DONE_STEP_STATUSES for step in steps):
        return 1.0  # a failed model has nothing left to do either
    return sum(step.fraction_done for step in steps) / len(steps) if steps else 0.0


def run_step_counts(run: Run) -> list[tuple[str, str, int]]:
    """(status, label, number of models) for each status present, in the order of work: a
    sweep over hundreds of models reads at a glance."""
    counts = Counter(step.status for step in run.steps.all())
    return [
        (status, label, counts[status]) for status, label in StepStatus.choices if status in counts
    ]


def run_seconds_left(run: Run, progress: float) -> float | None:
    """Remaining time if the rest goes as fast as what is done (after the first 5%)."""
    elapsed = run.elapsed_seconds
    if run.is_finished or elapsed is None or progress < 0.05:
        return None
    return elapsed * (1 - progress) / progress


def model_scores(*, model: PretrainedModel) -> QuerySet[Score]:
    return (
        model.scores.select_related("target__dataset", "target__judgments", "run")
        .defer("resamples")
        .order_by("-created_at")
    )


# --- Workers -----------------------------------------------------------------------------------
def workers_up() -> list[Worker]:
    """Workers that have not stopped and were seen within the last few heartbeats."""
    return list(Worker.objects.filter(stopped_at__isnull=True, last_seen_at__gte=_seen_since()))


def worker_is_up(worker: Worker) -> bool:
    return worker.stopped_at is None and worker.last_seen_at >= _seen_since()


def _seen_since() -> datetime:
    return timezone.now() - timedelta(seconds=MISSED_HEARTBEATS * settings.WORKER_HEARTBEAT_SECONDS)


def run_steps_ran_on(run: Run) -> dict[int, str]:
    """Where each step of the run ran, by step id: the worker holding it now, or the ones
    that extracted and scored it, with their SLURM job where they had one."""
    steps = list(run.steps.values_list("pk", "claimed_by", "extracted_by", "scored_by"))
    names = {name for _, *names in steps for name in names if name}
    workers = {worker.name: worker.where for worker in Worker.objects.filter(name__in=names)}
    ran_on = {}
    for pk, claimed_by, extracted_by, scored_by in steps:
        parts = []
        if extracted_by:
            parts.append(f"extracted on {workers.get(extracted_by, extracted_by)}")
        if scored_by:
            parts.append(f"scored on {workers.get(scored_by, scored_by)}")
        if claimed_by:
            parts.append(f"now on {workers.get(claimed_by, claimed_by)}")
        ran_on[pk] = "; ".join(parts)
    return ran_on
