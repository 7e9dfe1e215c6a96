from django.contrib import admin

from evaluation.models import (
    Dataset,
    EmbeddingSet,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    Stimulus,
    Target,
)


@admin.register(PretrainedModel)
class PretrainedModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "source",
        "identifier",
        "weights",
        "modality",
        "parameter_count",
        "embedding_size",
    ]
    list_filter = ["source", "weights", "modality"]
    search_fields = ["name", "identifier"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "modality", "stimulus_count", "created_at"]
    list_filter = ["modality"]
    search_fields = ["name"]
    readonly_fields = ["content_hash", "stimulus_count"]


@admin.register(Stimulus)
class StimulusAdmin(admin.ModelAdmin):
    list_display = ["name", "dataset", "order", "label", "split"]
    list_filter = ["dataset", "split"]
    search_fields = ["name", "text", "label"]
    list_select_related = ["dataset"]


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "dataset"]
    list_select_related = ["dataset"]


@admin.register(EmbeddingSet)
class EmbeddingSetAdmin(admin.ModelAdmin):
    list_display = [
        "fingerprint",
        "model",
        "dataset",
        "layer",
        "precision",
        "count",
        "dim",
        "created_at",
    ]
    list_select_related = ["model", "dataset"]
    search_fields = ["fingerprint"]


STEP_FIELDS = (
    "model",
    "layers",
    "status",
    "processed",
    "total",
    "attempts",
    "claimed_by",
    "error_message",
)


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    fields = STEP_FIELDS
    readonly_fields = STEP_FIELDS


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset", "status", "created_by", "created_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["dataset", "created_by"]
    inlines = [RunStepInline]


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    list_display = ["model", "target", "layer", "metric_key", "value", "ci_low", "ci_high", "run"]
    list_filter = ["metric", "target"]
    list_select_related = ["model", "target", "run"]
