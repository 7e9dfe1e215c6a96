"""Forms for designing a study (researcher) and for a participant's consent."""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass
from typing import Any

from django import forms
from django.utils.functional import cached_property

from annotation.models import Study, StudyKind
from annotation.services import design
from annotation.services.design import ALL_KINDS, CHOICE_KINDS, ITEM_KINDS
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


ITEM_FIELDS = ("item_mode", "item_count", "item_file", "seed")
# Which kinds use which fields: the design checks' own table (services.design), and the item
# fields for the kinds whose items are chosen. A field not named here is every kind's.
FIELD_KINDS: dict[str, frozenset[str]] = {
    **design.FIELD_KINDS,
    **dict.fromkeys(ITEM_FIELDS, ITEM_KINDS),
}


@dataclass(frozen=True)
class FieldGroup:
    """One fieldset of the study form; the kinds it is for are those of its fields."""

    legend: str
    fields: tuple[str, ...]
    note: str = ""

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset().union(*(FIELD_KINDS.get(name, ALL_KINDS) for name in self.fields))


FIELD_GROUPS = (
    FieldGroup(
        "Design",
        ("name", "kind", "dataset", "judgments_per_item", "trials_per_session", "practice_trials"),
    ),
    FieldGroup(
        "Items",
        ITEM_FIELDS,
        "Pair, triplet and 2AFC studies: which items are asked about. Tag and "
        "multi-arrangement studies always use every stimulus.",
    ),
    FieldGroup(
        "Rating scale",
        ("scale_min", "scale_max", "scale_min_label", "scale_max_label"),
    ),
    FieldGroup(
        "Tagging",
        (
            "tag_mode",
            "flags_to_hide",
            "ratings_to_freeze",
            "freeze_mean",
            "frozen_tags_to_complete",
            "max_iterations",
        ),
        "The numbers below apply to adaptive (STEP-Tag) mode only.",
    ),
    FieldGroup(
        "Multi-arrangement",
        ("arena_max_items", "evidence_threshold", "session_seconds", "min_pair_consistency"),
    ),
    FieldGroup(
        "Quality control",
        (
            "repeat_trials",
            "catch_trials",
            "min_response_ms",
            "max_catch_failures",
            "exclude_on_failure",
            "max_fast_share",
            "max_retest_difference",
            "min_retest_agreement",
            "trial_timeout_seconds",
        ),
    ),
    FieldGroup(
        "Participants",
        (
            "consent_md",
            "instructions_md",
            "require_playback",
            "redirect_url",
            "contact",
            "external_id_param",
        ),
    ),
)
LABELS = {
    "name": "Study name",
    "kind": "Kind of study",
    "judgments_per_item": "Judgments per item",
    "trials_per_session": "Trials per session",
    "practice_trials": "Practice trials per session",
    "scale_min": "Lowest rating",
    "scale_max": "Highest rating",
    "scale_min_label": "Label of the lowest rating",
    "scale_max_label": "Label of the highest rating",
    "tag_mode": "Tagging mode",
    "flags_to_hide": "Flags that hide a tag",
    "ratings_to_freeze": "Ratings that freeze a tag",
    "freeze_mean": "Mean rating that freezes a tag",
    "frozen_tags_to_complete": "Frozen tags that complete a stimulus",
    "max_iterations": "Most iterations per stimulus",
    "arena_max_items": "Most stimuli per session",
    "evidence_threshold": "Evidence that ends a session",
    "session_seconds": "Session time limit (seconds)",
    "min_pair_consistency": "Least consistency with the first arrangement",
    "require_playback": "Each clip plays to its end before answering",
    "consent_md": "Consent text (Markdown)",
    "instructions_md": "Instructions (Markdown)",
    "redirect_url": "Completion address",
    "contact": "Contact for participants",
    "external_id_param": "Participant id parameter in the link",
    "repeat_trials": "Repeated trials per session (test-retest)",
    "catch_trials": "Catch trials per session",
    "min_response_ms": "Fastest plausible answer (milliseconds)",
    "max_catch_failures": "Catch trials a participant may fail",
    "exclude_on_failure": "Exclude participants who break a rule",
    "max_fast_share": "Largest share of too-fast answers",
    "max_retest_difference": "Largest mean difference of repeated ratings",
    "min_retest_agreement": "Least agreement of repeated choices",
    "trial_timeout_seconds": "Trial timeout (seconds)",
}
HELP_TEXTS = {
    "name": "Shown to participants as the page title; unique.",
    "dataset": "The stimuli the study asks about.",
    "judgments_per_item": "How many different participants judge each item (default 5). "
    "Multi-arrangement: how many sessions arrange each stimulus.",
    "trials_per_session": "Including repeats and catch trials, excluding practice (default 20). "
    "Multi-arrangement: the most arrangements one session makes.",
    "practice_trials": "Shown first on random stimuli and never counted (default 0).",
    "scale_min": "The bottom of the rating scale (default 1).",
    "scale_max": "The top of the scale (default 7); a catch pair of a stimulus with itself "
    "expects this rating.",
    "scale_min_label": "Words beside the lowest rating (default 'Not at all similar').",
    "scale_max_label": "Words beside the highest rating (default 'Very similar').",
    "tag_mode": "Free: each participant writes tags. Adaptive (STEP-Tag): participants rate, "
    "flag and add tags over iterations.",
    "flags_to_hide": "Adaptive: a tag flagged as wrong this many times is hidden (default 2).",
    "ratings_to_freeze": "Adaptive: a tag rated this many times may freeze (default 3).",
    "freeze_mean": "Adaptive: ...when its mean rating (1 to 5) is at least this (default 3.0).",
    "frozen_tags_to_complete": "Adaptive: a stimulus is done once this many tags froze "
    "(default 2).",
    "max_iterations": "Adaptive: a stimulus' chain ends after this many participants (default 10).",
    "consent_md": "Shown before the study starts, with an 'I agree' box. Markdown: **bold**, "
    "lists, links; HTML is shown as text.",
    "instructions_md": "Shown under the consent text. Markdown as above.",
    "redirect_url": "Participants are sent here after their last trial, with the completion "
    "code appended (?cc=...). Blank: they see the code only.",
    "external_id_param": "The URL parameter holding a recruitment platform's participant id "
    "(default PROLIFIC_PID). Blank: none.",
    "catch_trials": "Trials with an obvious answer (a stimulus with itself, or two copies "
    "of one), per session (default 0).",
    "min_response_ms": "Answers faster than this many milliseconds are flagged as too fast "
    "(default 0: off). Multi-arrangement: per item the trial shows (10 items: under 10 times "
    "this).",
    "max_catch_failures": "Exclude a participant who fails more catch trials than this "
    "(default 0).",
    "max_fast_share": "Exclude when more than this share (0 to 1) of answers is too fast "
    "(default 0.2).",
    "max_retest_difference": "Ratings: exclude when repeated ratings differ by more than this "
    "many scale points on average (default 2.0).",
    "min_retest_agreement": "Triplets and 2AFC: exclude when fewer than this share (0 to 1) "
    "of repeated trials get the same answer (default 0.5).",
    "trial_timeout_seconds": "An unanswered trial returns to the pool after this many seconds "
    "(default 600).",
}


def _kind_labels(kinds: frozenset[str]) -> str:
    """'Pair rating, Tagging' for a group some kinds use; '' for one every kind uses."""
    if kinds == ALL_KINDS:
        return ""
    return ", ".join(StudyKind(kind).label for kind in StudyKind.values if kind in kinds)


class StudyForm(forms.ModelForm):
    """A study's design, in fieldsets by study kind (FIELD_GROUPS). A page opened for one
    kind (?kind=) shows that kind's fields; without a kind it shows every group and
    static/js/study_form.js hides (and disables) the ones the chosen kind does not use.
    Fields a page did not send take their defaults; a field the posted kind does not use
    may be left blank (its default) and any other value is refused by the design checks
    (services.design), so the form is right without JavaScript too."""

    item_mode = forms.ChoiceField(
        choices=[
            ("all", "All pairs of the dataset's stimuli"),
            ("random", "A random subset of N items"),
            ("list", "An uploaded list (CSV of stimulus names, one item per row)"),
        ],
        initial="all",
        widget=forms.RadioSelect,
        label="Which items",
        help_text="'All pairs' is for pair studies; triplets and 2AFC draw a random subset or "
        "take a list.",
    )
    item_count = forms.IntegerField(min_value=1, required=False, label="Number of random items (N)")
    item_file = forms.FileField(
        required=False,
        label="Item list (CSV)",
        help_text="One item per row: two, three (2AFC: reference first) stimulus names or texts.",
    )
    seed = forms.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        initial=0,
        required=False,  # only a random subset uses it: blank is the default, 0
        label="Random seed",
        help_text="Which random subset is drawn (default 0); the same seed draws the same items.",
    )
    redirect_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label=LABELS["redirect_url"],
        help_text=HELP_TEXTS["redirect_url"],
    )

    class Meta:
        model = Study
        fields = ["name", "kind", "dataset", *DESIGN_FIELDS]
        labels = LABELS
        help_texts = HELP_TEXTS
        widgets = {
            "consent_md": forms.Textarea(attrs={"rows": 4}),
            "instructions_md": forms.Textarea(attrs={"rows": 4}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dataset = self.fields["dataset"]
        assert isinstance(dataset, forms.ModelChoiceField)
        dataset.queryset = Dataset.objects.order_by("name")
        for name in FIELD_KINDS.keys() & self.fields.keys():
            if self.chosen_kind not in FIELD_KINDS[name]:
                self.fields[name].required = False  # blank: its default (see clean())
        if self.page_kind in CHOICE_KINDS:
            self.fields["item_mode"].initial = "random"  # 'all pairs' is for pair studies
        if self.is_bound:
            self.data = self._with_defaults()

    @cached_property
    def page_kind(self) -> str:
        """The kind the page was opened for (?kind=), which decides the fields it shows;
        '' for the page of every kind."""
        kind = self.initial.get("kind")
        return kind if kind in StudyKind.values else ""

    @cached_property
    def chosen_kind(self) -> str:
        """The kind posted, else the page's; '' if neither."""
        kind = self.data.get("kind") if self.is_bound else self.page_kind
        return kind if kind in StudyKind.values else ""

    def _with_defaults(self) -> Any:
        """The posted data, with the fields it left out at their defaults: those of other
        kinds than the page's, and those study_form.js disabled for the chosen kind (as a
        model form keeps a column's default for a field left out; a checkbox is never left
        out, since an unticked box is not sent)."""
        data: Any = copy.copy(self.data)  # a QueryDict's copy is mutable
        for name, field in self.fields.items():
            key = self.add_prefix(name)
            default = self._default(name)
            if default is not None and field.widget.value_omitted_from_data(
                self.data, self.files, key
            ):
                data[key] = default
        return data

    def used_by_page_kind(self, name: str) -> bool:
        return not self.page_kind or self.page_kind in FIELD_KINDS.get(name, ALL_KINDS)

    def fieldsets(self) -> list[dict[str, Any]]:
        """The groups to render: on a page for one kind only its fields, else every group,
        marked with the kinds that use it (data-kinds): after a refused submit too, so that
        the kind can still be changed on the page."""
        groups = []
        for group in FIELD_GROUPS:
            fields = [
                {"field": self[name], "kinds": " ".join(sorted(FIELD_KINDS.get(name, ALL_KINDS)))}
                for name in group.fields
                if self.used_by_page_kind(name)
            ]
            if fields:
                groups.append(
                    {
                        "legend": group.legend,
                        "note": group.note,
                        "kinds": " ".join(sorted(group.kinds)),
                        "for_kinds": _kind_labels(group.kinds),
                        "fields": fields,
                    }
                )
        return groups

    def clean_seed(self) -> int:
        seed = self.cleaned_data.get("seed")
        return 0 if seed is None else seed

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean returns
        kind = data.get("kind")
        if not kind:
            return data
        for name in design.FIELD_KINDS.keys() & data.keys():
            if kind not in FIELD_KINDS[name] and data[name] in (None, ""):
                data[name] = self._default(name)  # left blank: the kind does not use it
        if kind not in ITEM_KINDS:
            for name in ITEM_FIELDS:  # the items are every stimulus (said on the page)
                self.errors.pop(name, None)
                data[name] = self._default(name)
            return data
        mode = data.get("item_mode")
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

    def _default(self, name: str) -> Any:
        if name in DESIGN_FIELDS:
            return design.field_default(name)
        if name == "item_mode" and self.chosen_kind in CHOICE_KINDS:
            return "random"  # 'all pairs' is for pair studies
        return self.fields[name].initial  # the item fields: the form's own (None: none)

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
