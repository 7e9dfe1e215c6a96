"""Reads for pages and the API, each with a bounded number of queries."""

from __future__ import annotations

from collections import Counter

from django.db.models import Count, Prefetch, QuerySet

from evaluation.models import (
    Dataset,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    StepStatus,
    Target,
)
from evaluation.plots import Point

# Steps with no work left; a cancelled one was stopped, so its progress stays where it was.
DONE_STEP_STATUSES = {StepStatus.SUCCEEDED, StepStatus.FAILED}


def targets_with_score_counts() -> QuerySet[Target]:
    return (
        Target.objects.select_related("dataset")
        .annotate(score_count=Count("scores"))
        .order_by("dataset__name", "name")
    )


def datasets_with_counts() -> QuerySet[Dataset]:
    return Dataset.objects.annotate(run_count=Count("runs", distinct=True)).order_by("name")


def dataset_label_counts(*, dataset: Dataset) -> list[tuple[str, int]]:
    counts = Counter(dataset.stimuli.values_list("label", flat=True))
    return sorted(counts.items())


def runs_recent(*, limit: int = 100) -> QuerySet[Run]:
    return (
        Run.objects.select_related("dataset", "created_by")
        .prefetch_related(Prefetch("steps", queryset=RunStep.objects.select_related("model")))
        .order_by("-created_at", "-id")[:limit]
    )


def run_with_steps(*, run_id: int) -> Run:
    return (
        Run.objects.select_related("dataset")
        .prefetch_related(
            Prefetch(
                "steps",
                queryset=RunStep.objects.select_related("model").prefetch_related("embedding_sets"),
            ),
            Prefetch("scores", queryset=Score.objects.select_related("model", "target")),
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
    return model.scores.select_related("target__dataset", "run").order_by("-created_at")


def model_layer_curves(*, model: PretrainedModel) -> list[tuple[Target, dict[str, list[Point]]]]:
    """Per target, each metric's latest score against layer depth (only where a model was
    scored at two or more layers: one point is not a curve)."""
    depth = {layer["name"]: index for index, layer in enumerate(model.layers or [])}
    latest: dict[tuple[int, str, str], Score] = {}
    for score in model.scores.select_related("target").order_by("created_at", "id"):
        latest[(score.target_id, score.metric_key, score.layer)] = score
    by_target: dict[int, dict[str, list[Point]]] = {}
    targets: dict[int, Target] = {}
    for (target_id, metric_key, layer), score in latest.items():
        targets[target_id] = score.target
        by_target.setdefault(target_id, {}).setdefault(metric_key, []).append(
            Point(depth.get(layer, -1), score.value, layer, score.ci_low, score.ci_high)
        )
    curves = []
    for target_id, series in by_target.items():
        series = {key: points for key, points in series.items() if len(points) > 1}
        if series:
            curves.append((targets[target_id], series))
    return curves
