"""Query filters of the list endpoints (django-filter).

A filter naming an object that does not exist (``?model=999``) is a 400 that says so, not
an empty list that looks like "no scores yet"; so is a blank one (``?model=``), which
django-filter would otherwise ignore and answer with everything.
"""

from __future__ import annotations

from typing import Any

import django_filters as filters
from django.db.models import QuerySet

from annotation.models import Study, StudyKind, StudyStatus
from evaluation.metrics import METRICS
from evaluation.models import (
    Dataset,
    EmbeddingSet,
    HumanJudgments,
    JudgmentKind,
    Modality,
    ModelSource,
    PretrainedModel,
    Run,
    RunStatus,
    Score,
    Split,
    Stimulus,
    Target,
    TargetKind,
)


class StrictFilterSet(filters.FilterSet):
    def is_valid(self) -> bool:
        valid = super().is_valid()
        blank = [
            name
            for name in self.filters
            if name in self.data and not str(self.data.get(name, "")).strip()
        ]
        for name in blank:  # this one message, rather than the field's own about ""
            self.form.errors.pop(name, None)
            self.form.add_error(name, "Blank value: give one, or leave the parameter out.")
        return valid and not blank


ARCHIVED_INCLUDED = ("1", "true")
ARCHIVED_LEFT_OUT = ("0", "false")


class HidesArchived(StrictFilterSet):
    """A list that leaves archived objects out unless asked for with ``?archived=1`` (an
    archived object stays reachable by its id)."""

    archived = filters.ChoiceFilter(
        choices=[(value, value) for value in ARCHIVED_INCLUDED + ARCHIVED_LEFT_OUT],
        method="keep_archived",
        help_text="`1` (or `true`) lists archived objects too; they are left out by default.",
    )
    # Where an object's archiving shows: its own field (and for targets, their dataset's).
    archived_fields: tuple[str, ...] = ("archived_at",)

    def keep_archived(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return queryset  # filter_queryset below leaves archived objects out, or not

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queryset = super().filter_queryset(queryset)
        if self.form.cleaned_data.get("archived") in ARCHIVED_INCLUDED:
            return queryset
        return queryset.filter(**{f"{field}__isnull": True for field in self.archived_fields})


class ModelFilter(HidesArchived):
    source = filters.ChoiceFilter(choices=ModelSource.choices)
    modality = filters.ChoiceFilter(choices=Modality.choices)
    name = filters.CharFilter(lookup_expr="icontains", help_text="Name contains (any case).")

    class Meta:
        model = PretrainedModel
        fields = ["source", "modality", "name"]


class DatasetFilter(HidesArchived):
    modality = filters.ChoiceFilter(choices=Modality.choices)
    name = filters.CharFilter(lookup_expr="icontains", help_text="Name contains (any case).")

    class Meta:
        model = Dataset
        fields = ["modality", "name"]


class StimulusFilter(StrictFilterSet):
    label = filters.CharFilter(help_text="Exact label.")
    split = filters.ChoiceFilter(choices=[(v, v) for v in Split.values if v])

    class Meta:
        model = Stimulus
        fields = ["label", "split"]


class RunFilter(StrictFilterSet):
    status = filters.ChoiceFilter(choices=RunStatus.choices)
    dataset = filters.ModelChoiceFilter(queryset=Dataset.objects.all())

    class Meta:
        model = Run
        fields = ["status", "dataset"]


class TargetFilter(HidesArchived):
    kind = filters.ChoiceFilter(choices=TargetKind.choices)
    dataset = filters.ModelChoiceFilter(queryset=Dataset.objects.all())
    archived_fields = ("archived_at", "dataset__archived_at")

    class Meta:
        model = Target
        fields = ["kind", "dataset"]


class ScoreFilter(HidesArchived):
    """Scores, without those of archived models, targets or datasets unless ``?archived=1``
    (the boards leave them out alike)."""

    archived_fields = ("model__archived_at", "target__archived_at", "target__dataset__archived_at")
    model = filters.ModelChoiceFilter(queryset=PretrainedModel.objects.all(), help_text="Model id.")
    target = filters.ModelChoiceFilter(queryset=Target.objects.all(), help_text="Target id.")
    dataset = filters.ModelChoiceFilter(
        field_name="target__dataset", queryset=Dataset.objects.all(), help_text="Dataset id."
    )
    run = filters.ModelChoiceFilter(queryset=Run.objects.all(), help_text="Run id.")
    metric = filters.ChoiceFilter(
        choices=[(name, info.label) for name, info in METRICS.items()],
        help_text="Metric name, e.g. `knn` (any parameters).",
    )
    metric_key = filters.CharFilter(help_text="Metric with parameters, e.g. `knn(k=5,split=loo)`.")
    layer = filters.CharFilter(help_text="Exact layer name, e.g. `pre_logits`.")

    class Meta:
        model = Score
        fields = ["model", "target", "dataset", "run", "metric", "metric_key", "layer"]


class EmbeddingSetFilter(StrictFilterSet):
    model = filters.ModelChoiceFilter(queryset=PretrainedModel.objects.all(), help_text="Model id.")
    dataset = filters.ModelChoiceFilter(queryset=Dataset.objects.all(), help_text="Dataset id.")
    layer = filters.CharFilter(help_text="Exact layer name.")

    class Meta:
        model = EmbeddingSet
        fields = ["model", "dataset", "layer"]


class StudyFilter(HidesArchived):
    kind = filters.ChoiceFilter(choices=StudyKind.choices)
    status = filters.ChoiceFilter(choices=StudyStatus.choices)
    dataset = filters.ModelChoiceFilter(queryset=Dataset.objects.all())

    class Meta:
        model = Study
        fields = ["kind", "status", "dataset"]


class JudgmentsFilter(StrictFilterSet):
    dataset = filters.ModelChoiceFilter(queryset=Dataset.objects.all())
    kind = filters.ChoiceFilter(choices=JudgmentKind.choices)
    name = filters.CharFilter(help_text="Exact name (every version).")

    class Meta:
        model = HumanJudgments
        fields = ["dataset", "kind", "name"]
