"""The metrics a run can ask for: their names, parameters, validation and computation.

Each metric is computed by the engine; this module turns a run's stored metric entry
(``{"name": ..., "params": {...}}``) and a target into engine calls and Score values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.clustering import clustering_scores
from evaluation.engine.metrics.human import (
    PairRatings,
    pair_alignment,
    triplet_accuracy,
    two_afc_accuracy,
)
from evaluation.engine.metrics.knn import knn_accuracy
from evaluation.engine.metrics.probes import (
    few_shot_accuracy,
    linear_probe_accuracy,
    nearest_class_mean_accuracy,
    weighted_knn_accuracy,
)
from evaluation.engine.metrics.results import MetricResult
from evaluation.engine.metrics.retrieval import retrieval_scores
from evaluation.engine.metrics.reweighting import reweighted_pair_alignment

HOLDOUT_TEST_FRACTION = 0.25
HOLDOUT_SEED = 0


@dataclass(frozen=True)
class Parameter:
    """One parameter of a metric: the form field, the API field and the CLI's ``key=value``
    are all built from this, so a metric's parameters are declared here and nowhere else."""

    name: str  # the key in the run entry's params
    kind: type[int] | type[str]
    default: int | str
    help: str  # the API's help text
    field: str = ""  # the run form's field (metrics may share one); blank: not on the form
    label: str = ""  # the run form's label
    choices: tuple[tuple[int | str, str], ...] = ()  # (value, label); empty: any in bounds
    minimum: int | None = None
    maximum: int | None = None
    # The form's message when the field is left blank; None: blank means the default.
    required_message: str | None = None

    def check(self, value: Any) -> Any:
        """The value, or MetricError naming what is wrong with it."""
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise MetricError(f"{self.name} must be a whole number, not {value!r}.")
        if self.kind is str and not isinstance(value, str):
            raise MetricError(f"{self.name} must be text, not {value!r}.")
        if self.choices and value not in {choice for choice, _ in self.choices}:
            allowed = ", ".join(str(choice) for choice, _ in self.choices)
            raise MetricError(f"{self.name} must be one of {allowed}.")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise MetricError(f"{self.name} must be between {self.minimum} and {self.maximum}.")
        return value


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    target_kinds: tuple[str, ...]
    description: str
    higher_is_better: bool = True
    parameters: tuple[Parameter, ...] = ()
    form_label: str = ""  # the run form's checkbox, where it says more than the label
    form_help: str = ""  # the run form's note under the metric
    checked_on_form: bool = False  # ticked on a new run form
    # The values the metric can take (a published ceiling entered for it must lie within).
    value_range: tuple[float, float] = (0.0, 1.0)
    # The metric a target of this kind is scored with when no metric is named (CLI).
    main_for: str = ""
    # The version of the metric's code: bump it in the same change as anything that can
    # change its value, interval or resamples (the engine function, its defaults, the data it
    # is given). Every score records it; a score of an older version shows as stale and is
    # re-scored from its cached embeddings in one action.
    version: int = 1


CORRELATION = Parameter(
    name="correlation",
    kind=str,
    default="spearman",
    help="pair_alignment, reweighted_pair_alignment: `spearman` (default) or `pearson`.",
    field="pair_correlation",
    label="Correlation",
    choices=(("spearman", "Spearman (scale-free)"), ("pearson", "Pearson")),
)


METRICS: dict[str, MetricInfo] = {
    "knn": MetricInfo(
        name="knn",
        label="k-NN accuracy",
        target_kinds=("labels",),
        description="Cosine k-nearest-neighbour classification accuracy (Wilson 95% CI).",
        parameters=(
            Parameter(
                name="k",
                kind=int,
                default=5,
                help="knn: neighbours (default 5).",
                field="knn_k",
                label="k",
                minimum=1,
                maximum=1000,
                required_message="Give k, the number of neighbours, for k-NN accuracy.",
            ),
            Parameter(
                name="split",
                kind=str,
                default="loo",
                help="knn: `loo` (default) or `holdout`.",
                field="knn_split",
                label="Split",
                choices=(
                    ("loo", "leave-one-out"),
                    (
                        "holdout",
                        "train/test split (the dataset's, else a stratified 25% test split)",
                    ),
                ),
                required_message="Choose the split for k-NN accuracy.",
            ),
        ),
        form_help="Cosine k-NN on the dataset's labels, majority vote; 95% Wilson interval "
        "over test stimuli.",
        checked_on_form=True,
        main_for="labels",
    ),
    "weighted_knn": MetricInfo(
        name="weighted_knn",
        label="Weighted k-NN accuracy (DINO)",
        target_kinds=("labels",),
        description="k=20 cosine neighbours voting with weight exp(sim / 0.07), leave-one-out.",
    ),
    "nearest_class_mean": MetricInfo(
        name="nearest_class_mean",
        label="Nearest-class-mean accuracy",
        target_kinds=("labels",),
        description="Cosine distance to class means, leave-one-out (Wilson 95% CI).",
    ),
    "linear_probe": MetricInfo(
        name="linear_probe",
        label="Linear probe accuracy",
        target_kinds=("labels",),
        description="Logistic regression on standardised features, C by inner CV, 5-fold outer CV.",
    ),
    "few_shot": MetricInfo(
        name="few_shot",
        label="Few-shot accuracy",
        target_kinds=("labels",),
        description="n-way k-shot prototype episodes (mean and t-interval over 600 episodes).",
        parameters=(
            Parameter(
                name="n_way",
                kind=int,
                default=5,
                help="few_shot: 5 (the only choice).",
                choices=((5, "5-way"),),
            ),
            Parameter(
                name="k_shot",
                kind=int,
                default=1,
                help="few_shot: 1 or 5.",
                field="few_shot_k",
                label="Shots",
                choices=((1, "1-shot"), (5, "5-shot")),
            ),
        ),
        form_label="Few-shot accuracy (5-way)",
    ),
    "retrieval_map": MetricInfo(
        name="retrieval_map",
        label="Retrieval mAP",
        target_kinds=("labels",),
        description="Same-label retrieval by cosine similarity; recall@k in details.",
    ),
    "kmeans_nmi": MetricInfo(
        name="kmeans_nmi",
        label="k-means NMI",
        target_kinds=("labels",),
        description="NMI of k-means clusters (k = number of labels) with the labels; ARI in details.",
    ),
    "pair_alignment": MetricInfo(
        name="pair_alignment",
        value_range=(-1.0, 1.0),
        label="Correlation with human pair ratings",
        target_kinds=("pairs",),
        description="Correlation of cosine similarity with the mean rating per pair "
        "(bootstrap CI over stimuli; ceiling: split-half reliability).",
        parameters=(CORRELATION,),
        form_help="Cosine similarity against the mean rating per pair; bootstrap CI over "
        "stimuli; split-half ceiling.",
        main_for="pairs",
    ),
    "reweighted_pair_alignment": MetricInfo(
        name="reweighted_pair_alignment",
        value_range=(-1.0, 1.0),
        label="Reweighted correlation with pair ratings",
        target_kinds=("pairs",),
        description="Peterson et al. 2018: ridge-fitted weights per dimension, scored on "
        "held-out stimuli (5 stimulus folds); bootstrap CI over stimuli.",
        parameters=(CORRELATION,),
        form_help="Weights per dimension fitted by ridge regression on other stimuli's pairs "
        "(Peterson et al. 2018).",
    ),
    "odd_one_out": MetricInfo(
        name="odd_one_out",
        label="Odd-one-out agreement",
        target_kinds=("triplets",),
        description="Share of human odd-one-out responses the model agrees with "
        "(bootstrap CI over stimuli; ceiling: leave-one-out agreement).",
        main_for="triplets",
    ),
    "two_afc": MetricInfo(
        name="two_afc",
        label="2AFC agreement",
        target_kinds=("2afc",),
        description="Mean human vote share of the model's choice, ties 0.5 "
        "(bootstrap CI over stimuli; ceiling: leave-one-out agreement).",
        main_for="2afc",
    ),
}

KNN_SPLITS = dict(METRICS["knn"].parameters[1].choices)


# --- Names people read ----------------------------------------------------------------------------
# The one table from a metric key (``knn(k=5,split=loo)``, ``odd_one_out``) to the words shown
# for it: on boards, model and run pages, in CSV and the API, each beside the exact key.
@dataclass(frozen=True)
class Reading:
    name: str  # a format string over the key's parameters, in their words (PARAMETER_WORDS)
    description: str  # what the number is, in a sentence


READINGS: dict[str, Reading] = {
    "knn": Reading(
        "k-NN accuracy, k={k}, {split}",
        "Share of stimuli whose k nearest neighbours (cosine) vote for their own label; "
        "Wilson 95% interval over test stimuli.",
    ),
    "weighted_knn": Reading(
        "weighted k-NN accuracy (DINO), k=20, leave-one-out",
        "k=20 cosine neighbours voting with weight exp(similarity / 0.07), each stimulus left "
        "out in turn.",
    ),
    "nearest_class_mean": Reading(
        "nearest-class-mean accuracy, leave-one-out",
        "Share of stimuli closest (cosine) to their own label's mean, each left out of it.",
    ),
    "linear_probe": Reading(
        "linear-probe accuracy, 5-fold cross-validated",
        "Logistic regression on standardised features, C chosen by inner cross-validation, "
        "each stimulus predicted once by a 5-fold outer cross-validation.",
    ),
    "few_shot": Reading(
        "few-shot accuracy, {n_way}-way {k_shot}-shot",
        "Nearest-prototype accuracy over 600 random episodes (mean and t-interval).",
    ),
    "retrieval_map": Reading(
        "same-label retrieval mAP",
        "Mean average precision of retrieving stimuli of the same label by cosine similarity.",
    ),
    "kmeans_nmi": Reading(
        "k-means NMI with the labels",
        "Normalised mutual information between k-means clusters (k = number of labels) and "
        "the labels.",
    ),
    "pair_alignment": Reading(
        "{correlation} with human pair ratings",
        "Correlation of the model's cosine similarity with the mean human rating of each "
        "pair; bootstrap 95% interval over stimuli.",
    ),
    "reweighted_pair_alignment": Reading(
        "{correlation} with human pair ratings, dimensions reweighted",
        "Peterson et al. 2018: one weight per embedding dimension fitted by ridge regression "
        "on other stimuli's pairs, scored on held-out stimuli (5 folds).",
    ),
    "odd_one_out": Reading(
        "odd-one-out agreement",
        "Share of human odd-one-out choices the model makes too (the pair it finds most "
        "similar is the one people kept); bootstrap 95% interval over stimuli.",
    ),
    "two_afc": Reading(
        "2AFC agreement with people's choices",
        "Mean human vote share of the candidate the model finds closer to the reference "
        "(ties 0.5); bootstrap 95% interval over stimuli.",
    ),
}
# A parameter value in words, where the bare value does not read well.
PARAMETER_WORDS: dict[str, dict[str, str]] = {
    "split": {"loo": "leave-one-out", "holdout": "held-out test split"},
    "correlation": {"spearman": "Spearman", "pearson": "Pearson"},
}


def parse_metric_key(key: str) -> tuple[str, dict[str, str]]:
    """A key such as ``knn(k=5,split=loo)`` as its metric name and parameter values (text,
    as the key spells them): the inverse of ``models.metric_key``."""
    name, _, inner = key.partition("(")
    params = dict(part.split("=", 1) for part in inner.rstrip(")").split(",") if "=" in part)
    return name, params


def metric_name(key: str) -> str:
    """The name people read for a metric key, e.g. ``pair_alignment(correlation=spearman)``
    -> "Spearman with human pair ratings"; an unknown key reads as itself."""
    name, params = parse_metric_key(key)
    reading = READINGS.get(name)
    if reading is None:
        return key
    given = {**{p.name: str(p.default) for p in METRICS[name].parameters}, **params}
    words = {k: PARAMETER_WORDS.get(k, {}).get(v, v) for k, v in given.items()}
    try:
        return reading.name.format(**words)
    except (KeyError, IndexError):  # a key from before a parameter existed
        return key


def metric_family_name(name: str) -> str:
    """The name people read for a metric whatever its parameters (each read as its own
    name: "correlation with human pair ratings"), from the same table as metric_name."""
    reading = READINGS.get(name)
    if reading is None:
        return name
    generic = {p.name: p.name.replace("_", " ") for p in METRICS[name].parameters}
    try:
        return reading.name.format(**generic)
    except (KeyError, IndexError):
        return name


def metric_description(key: str) -> str:
    """What the number of a metric key is, in a sentence (blank for an unknown key)."""
    reading = READINGS.get(parse_metric_key(key)[0])
    return reading.description if reading else ""


@dataclass(frozen=True)
class Chance:
    value: float
    how: str  # what a model at chance does


# Chance for the human-alignment metrics, whatever the data: a model whose similarities are
# unrelated to the stimuli picks the odd one out of three (or one of two) at random, and its
# similarities do not correlate with people's ratings.
CHANCE = {
    "odd_one_out": Chance(1 / 3, "one of the three picked at random"),
    "two_afc": Chance(1 / 2, "one of the two picked at random"),
    "pair_alignment": Chance(0.0, "similarities unrelated to the ratings"),
    "reweighted_pair_alignment": Chance(0.0, "similarities unrelated to the ratings"),
}


def ceiling_check(metric: str, value: float) -> str:
    """Why ``value`` cannot be a ceiling of ``metric``; blank where it can. A ceiling is the
    best score people reach, so it lies in the metric's range and above chance (0 for a
    correlation, 1/3 for the odd one out of three, 1/2 for one of two)."""
    low, high = METRICS[metric].value_range
    chance = CHANCE[metric].value if metric in CHANCE else 0.0
    if not (math.isfinite(value) and chance < value <= high):
        return (
            f"A ceiling of {metric_name(metric)} lies above {_number(chance)} (chance) and at "
            f"most {high:g} (the metric runs from {low:g} to {high:g}); {value:g} is not."
        )
    return ""


def _number(value: float) -> str:
    """1/3 as a fraction, other chance levels as numbers."""
    return "1/3" if math.isclose(value, 1 / 3) else f"{value:g}"


BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class StimulusFacts:
    label: str
    split: str


@dataclass(frozen=True)
class LabelsData:
    stimuli: Sequence[StimulusFacts]


@dataclass(frozen=True)
class PairsData:
    ratings: PairRatings
    ceiling: float | None


@dataclass(frozen=True)
class TripletsData:
    triplets: np.ndarray  # (n, 3) stimulus rows
    chosen: np.ndarray  # the stimulus row picked as odd one out, per response
    ceiling: float | None


@dataclass(frozen=True)
class TwoAfcData:
    reference: np.ndarray
    first: np.ndarray
    second: np.ndarray
    share_first: np.ndarray  # human vote share of ``first`` per item
    ceiling: float | None


TargetData = LabelsData | PairsData | TripletsData | TwoAfcData


# --- Run entries: the one place a metric name and parameters become a run's entry ----------------
# The run form, the API's run serializer and `manage.py evaluate --metric` all end here.
METRIC_SPEC = re.compile(r"^\s*([a-z_0-9]+)\s*(?:[(:](.*?)\)?)?\s*$")


def metric_entry(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's stored entry ``{"name": ..., "params": {...}}``: every parameter of the
    metric, checked, the ones not given at their default. MetricError says what is wrong."""
    info = METRICS.get(name)
    if info is None:
        raise MetricError(f"Unknown metric {name!r}; choose from {', '.join(METRICS)}.")
    given = dict(params or {})
    allowed = [parameter.name for parameter in info.parameters]
    extra = sorted(set(given) - set(allowed))
    if extra:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no parameters"
        raise MetricError(f"{name} {takes}; {', '.join(extra)} do(es) not apply.")
    return {
        "name": name,
        "params": {p.name: p.check(given.get(p.name, p.default)) for p in info.parameters},
    }


def parse_metric(spec: str) -> dict[str, Any]:
    """``name`` or ``name(key=value,...)`` (also ``name:key=value,...``) as a run entry."""
    match = METRIC_SPEC.match(spec)
    if not match or match.group(1) not in METRICS:
        name = match.group(1) if match else spec
        raise MetricError(f"Unknown metric {name!r}; choose from {', '.join(METRICS)}.")
    name, raw = match.group(1), match.group(2) or ""
    parameters = {parameter.name: parameter for parameter in METRICS[name].parameters}
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or key not in parameters:
            accepted = ", ".join(parameters) or "no parameters"
            raise MetricError(f"{spec}: {name} takes {accepted}; {part!r} is not one of them.")
        if parameters[key].kind is int:
            try:
                params[key] = int(value)
            except ValueError:
                raise MetricError(f"{spec}: {key} must be a whole number, not {value!r}.") from None
        else:
            params[key] = value
    try:
        return metric_entry(name, params)
    except MetricError as exc:
        raise MetricError(f"{spec}: {exc}") from None


def main_metrics(target_kinds: set[str]) -> list[str]:
    """Each offered kind of target's main metric (what a run scores when none is named)."""
    return [name for name, info in METRICS.items() if info.main_for in target_kinds]


def knn_entry(*, k: int, split: str) -> dict[str, Any]:
    return metric_entry("knn", {"k": k, "split": split})


def pair_alignment_entry(*, correlation: str = "spearman") -> dict[str, Any]:
    return metric_entry("pair_alignment", {"correlation": correlation})


def reweighted_pair_alignment_entry(*, correlation: str = "pearson") -> dict[str, Any]:
    return metric_entry("reweighted_pair_alignment", {"correlation": correlation})


def odd_one_out_entry() -> dict[str, Any]:
    return metric_entry("odd_one_out")


def two_afc_entry() -> dict[str, Any]:
    return metric_entry("two_afc")


def compute(entry: dict[str, Any], embeddings: np.ndarray, data: TargetData) -> MetricResult:
    name, params = entry["name"], entry["params"]
    if name == "knn" and isinstance(data, LabelsData):
        return _knn(embeddings, data.stimuli, **params)
    if isinstance(data, LabelsData) and name in LABEL_PROBES:
        return _labelled(embeddings, data.stimuli, LABEL_PROBES[name], params)
    if name == "pair_alignment" and isinstance(data, PairsData):
        return pair_alignment(
            embeddings,
            data.ratings,
            correlation=params["correlation"],
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    if name == "reweighted_pair_alignment" and isinstance(data, PairsData):
        return reweighted_pair_alignment(
            embeddings,
            data.ratings,
            correlation=params["correlation"],
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    if name == "odd_one_out" and isinstance(data, TripletsData):
        return triplet_accuracy(
            embeddings, data.triplets, data.chosen, n_boot=BOOTSTRAP_RESAMPLES, ceiling=data.ceiling
        )
    if name == "two_afc" and isinstance(data, TwoAfcData):
        return two_afc_accuracy(
            embeddings,
            data.reference,
            data.first,
            data.second,
            data.share_first,
            n_boot=BOOTSTRAP_RESAMPLES,
            ceiling=data.ceiling,
        )
    raise MetricError(f"The metric {name!r} does not apply to this target.")


def _labelled(
    embeddings: np.ndarray,
    stimuli: Sequence[StimulusFacts],
    probe: Callable[..., MetricResult],
    params: dict[str, Any],
) -> MetricResult:
    """Run a label probe on the labelled stimuli (unlabelled ones are left out)."""
    labels = np.array([s.label for s in stimuli], dtype=object)
    labelled = labels != ""
    if not labelled.any():
        raise MetricError("The dataset has no labels.")
    return probe(np.asarray(embeddings)[labelled], labels[labelled].astype(str), **params)


def _retrieval_map(embeddings: np.ndarray, labels: np.ndarray) -> MetricResult:
    scores = retrieval_scores(embeddings, labels)
    result = scores["map"]
    recall = {key: value.value for key, value in scores.items() if key != "map"}
    return replace(result, details={**result.details, **recall})


def _kmeans_nmi(embeddings: np.ndarray, labels: np.ndarray) -> MetricResult:
    scores = clustering_scores(embeddings, labels)
    ari = scores["ari"]
    return replace(
        scores["nmi"],
        details={**scores["nmi"].details, "ari": ari.value, "ari_ci": [ari.ci_low, ari.ci_high]},
    )


LABEL_PROBES: dict[str, Callable[..., MetricResult]] = {
    "weighted_knn": weighted_knn_accuracy,
    "nearest_class_mean": nearest_class_mean_accuracy,
    "linear_probe": linear_probe_accuracy,
    "few_shot": few_shot_accuracy,
    "retrieval_map": _retrieval_map,
    "kmeans_nmi": _kmeans_nmi,
}


def probe_entry(name: str, **params: Any) -> dict[str, Any]:
    if name not in LABEL_PROBES:
        raise MetricError(f"Unknown label metric {name!r}.")
    return {"name": name, "params": params}


def _knn(
    embeddings: np.ndarray, stimuli: Sequence[StimulusFacts], *, k: int, split: str
) -> MetricResult:
    labels = np.array([s.label for s in stimuli], dtype=object)
    labelled = labels != ""
    if not labelled.any():
        raise MetricError("The dataset has no labels, so k-NN accuracy cannot be computed.")
    notes: dict[str, Any] = {"unlabelled_excluded": int((~labelled).sum())}
    if split == "loo":
        x, y, test_mask = embeddings[labelled], labels[labelled], None
    else:
        x, y, test_mask, notes["split_source"] = _holdout(embeddings, labels, stimuli, labelled)
    result = knn_accuracy(np.asarray(x), y.astype(str), k=k, test_mask=test_mask)
    return MetricResult(
        value=result.accuracy,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        n=result.n_test,
        details={**result.details, **notes, "n_train": result.n_train, "correct": result.correct},
    )


def _holdout(
    embeddings: np.ndarray,
    labels: np.ndarray,
    stimuli: Sequence[StimulusFacts],
    labelled: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    splits = np.array([s.split for s in stimuli], dtype=object)
    if (splits[labelled] == "test").any():
        keep = labelled & np.isin(splits, ["train", "test"])
        if not (splits[keep] == "train").any():
            raise MetricError("The dataset has a test split but no train split.")
        return embeddings[keep], labels[keep], splits[keep] == "test", "dataset"
    indices = np.flatnonzero(labelled)
    try:
        _, test_indices = train_test_split(
            indices,
            test_size=HOLDOUT_TEST_FRACTION,
            random_state=HOLDOUT_SEED,
            stratify=labels[indices],
        )
    except ValueError as exc:
        raise MetricError(f"Cannot make a stratified train/test split: {exc}") from None
    test_mask = np.isin(indices, test_indices)
    source = f"stratified random {int(HOLDOUT_TEST_FRACTION * 100)}% test, seed {HOLDOUT_SEED}"
    return embeddings[indices], labels[indices], test_mask, source
