"""Forms for designing a study (researcher) and for a participant's consent."""

from __future__ import annotations

import csv
import io
from typing import Any

from django import forms

from annotation.models import Study, StudyKind
from evaluation.models import Dataset, PretrainedModel, Target

DESIGN_FIELDS = [
    "judgments_per_item",
    "trials_per_session",
    "practice_trials",
    "scale_min",
    "scale_max",
    "scale_min_label",
    "scale_max_label",
    "tag_mode",
    "flags_to_hide",
    "ratings_to_freeze",
    "freeze_mean",
    "frozen_tags_to_complete",
    "max_iterations",
    "arena_max_items",
    "evidence_threshold",
    "session_seconds",
    "min_pair_consistency",
    "require_playback",
    "consent_md",
    "instructions_md",
    "redirect_url",
    "contact",
    "external_id_param",
    "repeat_trials",
    "catch_trials",
    "min_response_ms",
    "max_catch_failures",
    "exclude_on_failure",
    "max_fast_share",
    "max_retest_difference",
    "min_retest_agreement",
    "trial_timeout_seconds",
]
MAX_ITEM_LIST_BYTES = 5 * 1024 * 1024
HEADER_NAMES = {"a", "b", "c", "reference", "first", "second", "stimulus"}  # optional header


class StudyForm(forms.ModelForm):
    item_mode = forms.ChoiceField(
        choices=[
            ("all", "All pairs of the dataset's stimuli"),
            ("random", "A random subset of N items"),
            ("list", "An uploaded list (CSV of stimulus names, one item per row)"),
        ],
        initial="all",
        widget=forms.RadioSelect,
        help_text="Tag and multi-arrangement studies always use every stimulus.",
    )
    item_count = forms.IntegerField(min_value=1, required=False, label="N (random subset)")
    item_file = forms.FileField(required=False, label="Item list (CSV)")
    seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        initial=0,
        required=False,  # only a random subset uses it: blank is the default, 0
        help_text="Seed for random items.",
    )
    redirect_url = forms.URLField(
        required=False, assume_scheme="https", help_text="Sent here after completion."
    )

    class Meta:
        model = Study
        fields = ["name", "kind", "dataset", *DESIGN_FIELDS]
        widgets = {
            "consent_md": forms.Textarea(attrs={"rows": 4}),
            "instructions_md": forms.Textarea(attrs={"rows": 4}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dataset = self.fields["dataset"]
        assert isinstance(dataset, forms.ModelChoiceField)
        dataset.queryset = Dataset.objects.order_by("name")

    def clean_seed(self) -> int:
        seed = self.cleaned_data.get("seed")
        return 0 if seed is None else seed

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
        mode = data.get("item_mode")
        if data.get("kind") == StudyKind.TAGS:
            return data
        if mode == "random" and not data.get("item_count"):
            self.add_error("item_count", "Say how many random items to draw.")
        if mode == "list":
            upload = data.get("item_file")
            if upload is None:
                self.add_error("item_file", "Upload the list of items.")
            elif upload.size > MAX_ITEM_LIST_BYTES:
                self.add_error("item_file", "The item list is larger than 5 MB.")
            elif data.get("dataset") is not None:
                try:
                    data["item_orders"] = parse_item_list(upload.read(), data["dataset"])
                except forms.ValidationError as exc:
                    self.add_error("item_file", exc)
        return data

    def design(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in DESIGN_FIELDS}


def parse_item_list(data: bytes, dataset: Dataset) -> list[tuple[int, ...]]:
    """Rows of stimulus names (or texts) -> tuples of stimulus orders."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise forms.ValidationError("The item list is not UTF-8 text.") from None
    by_name: dict[str, int] = {}
    for order, name, stimulus_text in dataset.stimuli.values_list("order", "name", "text"):
        by_name.setdefault(name, order)
        if stimulus_text:
            by_name.setdefault(stimulus_text, order)
    items = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row if cell.strip()]
        if not cells or (number == 1 and {c.lower() for c in cells} <= HEADER_NAMES):
            continue
        unknown = [cell for cell in cells if cell not in by_name]
        if unknown:
            raise forms.ValidationError(
                f"Row {number}: {unknown[0]!r} is not a stimulus of {dataset.name}."
            )
        items.append(tuple(by_name[cell] for cell in cells))
    return items


class ConsentForm(forms.Form):
    consent = forms.BooleanField(
        required=True,
        label="I have read the information above and agree to take part.",
        error_messages={"required": "Please tick the box to agree before you start."},
    )


class ExcludeForm(forms.Form):
    excluded = forms.TypedChoiceField(choices=[("1", "exclude"), ("0", "include")], coerce=int)
    reason = forms.CharField(max_length=200, required=False)


class ProposeForm(forms.Form):
    """A study where models disagree: the target, the models, the design and its size."""

    target = forms.ModelChoiceField(queryset=Target.objects.all())
    models = forms.ModelMultipleChoiceField(queryset=PretrainedModel.objects.all())
    kind = forms.ChoiceField(choices=[("pairs", "pairs"), ("triplets", "triplets")])
    count = forms.IntegerField(min_value=5, max_value=2000, initial=50)
    judgments_per_item = forms.IntegerField(min_value=1, max_value=100, initial=5)
