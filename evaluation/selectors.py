"""Reads for pages and the API, each with a bounded number of queries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.db.models import Count, Prefetch, QuerySet

from evaluation.models import (
    Dataset,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    Target,
)


@dataclass
class LeaderboardRow:
    model: PretrainedModel
    layer: str
    precision: str
    cells: dict[str, Score] = field(default_factory=dict)
    separable_from_leader: bool = True


@dataclass
class Leaderboard:
    target: Target
    metric_keys: list[str]
    sort_key: str
    rows: list[LeaderboardRow]


def leaderboard_for_target(*, target: Target, sort_key: str | None = None) -> Leaderboard:
    """The latest score per (model, layer, precision, metric) on ``target``, sorted by one metric.

    A row whose CI overlaps the leader's on the sort metric is marked not separable from it.
    Missing scores stay missing (no cell), never zero.
    """
    scores = (
        Score.objects.filter(target=target)
        .select_related("model", "embedding_set")
        .order_by("created_at", "id")
    )
    rows: dict[tuple[int, str, str], LeaderboardRow] = {}
    for score in scores:  # later scores replace earlier ones
        precision = score.embedding_set.precision if score.embedding_set else ""
        row = rows.setdefault(
            (score.model_id, score.layer, precision),
            LeaderboardRow(score.model, score.layer, precision),
        )
        row.cells[score.metric_key] = score
    metric_keys = sorted({key for row in rows.values() for key in row.cells})
    if sort_key not in metric_keys:
        sort_key = metric_keys[0] if metric_keys else ""
    ordered = sorted(
        rows.values(),
        key=lambda r: (
            sort_key not in r.cells,
            -(r.cells[sort_key].value if sort_key in r.cells else 0),
        ),
    )
    _mark_separability(ordered, sort_key)
    return Leaderboard(target=target, metric_keys=metric_keys, sort_key=sort_key, rows=ordered)


def _mark_separability(rows: list[LeaderboardRow], key: str) -> None:
    leader = rows[0].cells.get(key) if rows else None
    for row in rows:
        cell = row.cells.get(key)
        row.separable_from_leader = not (
            leader is not None and cell is not None and cell.ci_high >= leader.ci_low
        )


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
    return sum(step.fraction_done for step in steps) / len(steps) if steps else 0.0


def model_scores(*, model: PretrainedModel) -> QuerySet[Score]:
    return model.scores.select_related("target__dataset", "run").order_by("-created_at")
