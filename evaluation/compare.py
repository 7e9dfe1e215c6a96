"""Side-by-side comparison of 2-4 models on one target, from their cached embeddings.

Nothing is extracted here: the page uses the EmbeddingSets that runs left behind, and says
which model still needs a run. The page is cut into sections (``SECTIONS``) that are
computed apart, each cached under a key naming everything it reads (the target's
judgments, the embedding sets, the options it depends on), so that the page can show its
form at once and load each section on its own (htmx), and a second view costs a cache read.

- matrices: cosine similarity of at most ``HEATMAP_STIMULI`` stimuli in one order for every
  model (by label, or by clustering the first model's similarities). On a target of pair
  ratings, the stimuli are those with the most judged pairs among themselves, and beside the
  models stand the people's matrix (mean rating per judged pair, unjudged pairs missing)
  and each model's residual (model minus people, both on the scale the chosen measure
  compares: fractional ranks, or z-scores for Pearson, over every judged pair).
- people: each model's similarity against the mean rating of every judged pair, with the
  chosen measure, and the pairs as a sortable table (CSV: every judged pair).
- models: the RSA of every pair of models (chosen measure) over up to ``RSA_STIMULI``
  sampled stimuli, the pairs the first two models rank most differently, and linear CKA of
  every cached layer of the first model against every one of the second.
- neighbours: a stimulus's nearest neighbours under each model.

Similarities of many pairs come from one matrix product per model (``_similarities``),
never by gathering a row per pair: on SimLex-999 with a TF-IDF baseline the gathering
version spent 38 of the page's 42 s copying rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max
from django.utils.safestring import SafeString, mark_safe
from scipy import sparse
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from scipy.stats import rankdata

from core import querystring as qs
from evaluation import figures, plots, selectors
from evaluation.engine.errors import EngineError, MetricError
from evaluation.engine.metrics import human as human_metrics
from evaluation.engine.metrics import rsa as rsa_metrics
from evaluation.engine.metrics.cka import cka_matrix
from evaluation.engine.metrics.human import PairRatings
from evaluation.judgments import target_data
from evaluation.metrics import PairsData
from evaluation.models import EmbeddingSet, PretrainedModel, Stimulus, Target

HEATMAP_STIMULI = 100  # 3 px a cell: the people's matrix and two models' fit side by side
MATRIX_PIXELS = 300  # a matrix's grid at most this wide
MAX_MODELS = 4
ORDERS = ("label", "cluster")  # the matrices' stimulus order
NEIGHBOURS = 5
MODEL_PAIRS = 2000  # pairs kept for the model-vs-model table (largest rank gaps)
TABLE_ROWS = 25  # rows shown of a pair table (the CSV has them all)
MAX_PAIRS_IN_SCATTER = 3000
RSA_STIMULI = 1000
CKA_STIMULI = 2000
CACHE_SECONDS = 6 * 3600
BOOTSTRAP = 1000  # stimulus resamples for the interval of a correlation with people
RANK_A_BUDGET = 5_000_000  # rho-a/tau-a pair-resamples per model (1-2 s)
RANK_A_MIN_RESAMPLES = 200
GRAM_ROWS = 3000  # stimuli whose full similarity matrix (72 MB) is the cheap way to pairs
SECTIONS = ("matrices", "people", "models", "neighbours")

# The comparison measures, as the engine's RSA names them, with the names people read.
MEASURES: dict[str, str] = {
    "spearman": "Spearman",
    "pearson": "Pearson",
    "rho_a": "rho-a",
    "kendall_tau_a": "tau-a",
}
MEASURE_HELP = (
    "Compares a model's similarities with people's ratings, and the models' RDMs with each "
    "other. Spearman and Pearson reward a model for predicting ties; where an RDM or the "
    "ratings have many (a coarse rating scale, a categorical or baseline model), prefer "
    "rho-a (Spearman's rho expected under random tie-breaking) or tau-a (Kendall's tau "
    "without tie correction), as rsatoolbox and Nili et al. (2014) recommend."
)


@dataclass
class Side:
    model: PretrainedModel
    layer: str
    embedding_set: EmbeddingSet | None
    layers_cached: list[str] = field(default_factory=list)
    layer_sets: dict[str, list[EmbeddingSet]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Options:
    order_by: str = "label"
    measure: str = "spearman"
    stimulus_id: int | None = None

    @property
    def measure_name(self) -> str:
        return MEASURES[self.measure]

    @property
    def residual_scale(self) -> str:
        """The scale model and people are put on before one is taken from the other: the
        one the chosen measure compares."""
        return "z-scores" if self.measure == "pearson" else "fractional ranks"


@dataclass
class PairTable:
    """Pairs of stimuli with values per pair, sortable by any column (``rows``); the CSV
    writes them all."""

    key: str  # names the table in URLs (sort_<key>=, table=<key>)
    columns: list[tuple[str, str]]  # (key, heading) of the value columns, in order
    stimuli: list[Stimulus]
    i: np.ndarray
    j: np.ndarray
    values: dict[str, np.ndarray]
    default_sort: str = "-size"  # "-column": descending; "size" is |last column|
    _name_ranks: np.ndarray | None = field(default=None, repr=False, compare=False)

    def sort_keys(self) -> list[str]:
        return ["pair", *(key for key, _ in self.columns), "size"]

    def order(self, sort: str) -> np.ndarray:
        """Row order for ``sort`` ("column" ascending, "-column" descending; unknown: the
        default), ties by pair."""
        descending = sort.startswith("-")
        column = sort.lstrip("-")
        if column not in self.sort_keys():
            return self.order(self.default_sort)
        names = self.name_ranks()
        if column == "pair":
            keys: np.ndarray = names.astype(np.float64)
        elif column == "size":
            keys = np.abs(self.values[self.columns[-1][0]])
        else:
            keys = self.values[column]
        keys = np.where(np.isfinite(keys), keys, -np.inf if descending else np.inf)
        order = np.lexsort((names, -keys if descending else keys))
        return order

    def name_ranks(self) -> np.ndarray:
        """Each pair's place in the order of its two names (dense ranks), built once per
        table: every sort breaks ties by it, and the text of every pair's names is the
        costly part (a table has every judged pair)."""
        if self._name_ranks is None:
            ranks = rankdata([stimulus.name for stimulus in self.stimuli], method="dense")
            first, second = ranks[self.i].astype(np.int64), ranks[self.j].astype(np.int64)
            self._name_ranks = rankdata(first * (len(self.stimuli) + 1) + second, method="dense")
        return self._name_ranks

    def rows(self, sort: str, limit: int | None = TABLE_ROWS) -> list[dict[str, Any]]:
        order = self.order(sort)[:limit]
        return [
            {
                "a": self.stimuli[self.i[k]],
                "b": self.stimuli[self.j[k]],
                "values": [float(self.values[key][k]) for key, _ in self.columns],
            }
            for k in order
        ]


@dataclass
class Comparison:
    target: Target
    sides: list[Side]
    missing: list[Side]
    options: Options = field(default_factory=Options)
    human: bool = False  # a target of pair ratings: the people's sections apply
    # matrices
    heatmaps: list[tuple[Side, figures.Figure]] = field(default_factory=list)
    human_heatmap: figures.Figure | None = None
    residuals: list[tuple[Side, figures.Figure]] = field(default_factory=list)
    matrix_stimuli: int = 0
    matrix_judged: int = 0  # judged pairs among the matrices' stimuli
    # people
    scatters: list[tuple[Side, float | None, figures.Figure]] = field(default_factory=list)
    intervals: dict[int, tuple[float, float] | None] = field(default_factory=dict)  # by model
    interval: Interval | None = None  # how they were drawn
    human_tables: list[tuple[Side, PairTable]] = field(default_factory=list)
    judged_pairs: int = 0
    # models
    rsa: figures.Figure | None = None
    rsa_values: list[list[float | None]] = field(default_factory=list)
    rsa_stimuli: int = 0
    cka: figures.Figure | None = None
    cka_pair: tuple[str, str] | None = None
    disagreements: PairTable | None = None
    # neighbours
    stimulus: Stimulus | None = None
    neighbours: list[tuple[Side, list[tuple[Stimulus, float]]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def order_by(self) -> str:
        return self.options.order_by

    @property
    def scatter_limit(self) -> int:
        """Judged pairs a scatter plots at most (a seeded sample beyond)."""
        return MAX_PAIRS_IN_SCATTER

    def figure_params(self, **extra: object) -> list[tuple[str, str]]:
        """The query that rebuilds this comparison's figures (the page's own parameters)."""
        params = [("target", str(self.target.pk))]
        params += [("models", str(side.model.pk)) for side in self.sides]
        params += [(f"layer_{side.model.pk}", side.layer) for side in self.sides]
        params += [("order", self.options.order_by), ("measure", self.options.measure)]
        return params + [(name, str(value)) for name, value in extra.items()]

    def figure(
        self, kind: str, svg: SafeString, columns: list[str], rows: list[list[Any]], **kw: Any
    ) -> figures.Figure:
        """A figure of this comparison; ``kw``: its ``caption``, the query parameters that
        pick it among the comparison's (``model``), and words for its file name (``name``).
        Side-by-side figures go without a caption (their title is in the SVG): a caption
        wider than the matrix would widen its figure and push the next one to a new row."""
        model = kw.get("model")
        picked = {"model": model.pk} if model is not None else {}
        return figures.Figure(
            kind=kind,
            svg=svg,
            columns=columns,
            rows=rows,
            filename=figures.file_stem(
                kind, self.target.name, kw.get("name", ""), self.options.measure_name
            ),
            params=self.figure_params(**picked),
            caption=kw.get("caption", ""),
            zoomable=True,  # every figure of the compare page is a matrix or a scatter
        )

    def table(self, key: str) -> PairTable | None:
        tables = [t for _, t in self.human_tables]
        if self.disagreements is not None:
            tables.append(self.disagreements)
        return next((t for t in tables if t.key == key), None)


def embedding_sets(model: PretrainedModel, target: Target) -> dict[str, list[EmbeddingSet]]:
    """Every EmbeddingSet of ``model`` on the target's dataset by layer (layers in the order
    first cached), newest first: one query, no file checked (on S3 a check is a request)."""
    sets: dict[str, list[EmbeddingSet]] = {}
    for embedding_set in EmbeddingSet.objects.filter(model=model, dataset=target.dataset).order_by(
        "created_at", "id"
    ):
        sets.setdefault(embedding_set.layer, []).insert(0, embedding_set)
    return sets


def stored_set(candidates: list[EmbeddingSet]) -> EmbeddingSet | None:
    """The newest of ``candidates`` whose file is still stored (older ones only where the
    newest's is gone)."""
    return next((s for s in candidates if s.is_stored()), None)


def latest_embeddings(model: PretrainedModel, target: Target) -> dict[str, EmbeddingSet]:
    """The newest stored EmbeddingSet per layer of ``model`` on the target's dataset (every
    layer's file checked: for CKA, which reads them all)."""
    stored = {layer: stored_set(sets) for layer, sets in embedding_sets(model, target).items()}
    return {layer: s for layer, s in stored.items() if s is not None}


def prepare(
    *,
    target: Target,
    models: list[PretrainedModel],
    layers: dict[int, str],
    options: Options | None = None,
) -> Comparison:
    """Which embeddings each chosen model has (cheap: no embedding is read, and only the
    chosen layer's file is checked; the other layers are offered as the database lists
    them)."""
    sides = []
    for model in models[:MAX_MODELS]:
        listed = embedding_sets(model, target)
        layer = layers.get(model.pk) or (
            model.default_layer if model.default_layer in listed else next(iter(listed), "")
        )
        chosen = stored_set(listed.get(layer, []))
        sides.append(Side(model, layer, chosen, sorted(listed), listed))
    ready = [side for side in sides if side.embedding_set is not None]
    missing = [side for side in sides if side.embedding_set is None]
    return Comparison(target, ready, missing, options or Options(), human=target.kind == "pairs")


def compare(
    *,
    target: Target,
    models: list[PretrainedModel],
    layers: dict[int, str],
    order_by: str = "label",
    stimulus_id: int | None = None,
    measure: str = "spearman",
    sections: tuple[str, ...] = SECTIONS,
) -> Comparison:
    """The comparison with ``sections`` computed (or read from the cache)."""
    options = Options(order_by=order_by, measure=measure, stimulus_id=stimulus_id)
    result = prepare(target=target, models=models, layers=layers, options=options)
    for name in sections:
        compute_section(result, name)
    return result


# --- Sections and their cache -------------------------------------------------------------------
SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "matrices": ("heatmaps", "human_heatmap", "residuals", "matrix_stimuli", "matrix_judged"),
    "people": ("scatters", "intervals", "interval", "human_tables", "judged_pairs"),
    "models": ("rsa", "rsa_values", "rsa_stimuli", "cka", "cka_pair", "disagreements"),
    "neighbours": ("stimulus", "neighbours"),
}
SECTION_OPTIONS: dict[str, tuple[str, ...]] = {
    "matrices": ("order_by", "measure"),
    "people": ("measure",),
    "models": ("measure",),
    "neighbours": ("stimulus_id",),
}


def compute_section(result: Comparison, name: str) -> None:
    """Fill ``result``'s fields of section ``name``, from the cache where it holds them."""
    if name not in SECTIONS:
        raise ValueError(f"Unknown section {name!r}; one of {', '.join(SECTIONS)}.")
    if not result.sides or (name == "models" and len(result.sides) < 2):
        return
    if name == "people" and not result.human:
        return
    key = section_key(result, name)
    cached = cache.get(key)
    if cached is None:
        scratch = Comparison(result.target, result.sides, result.missing, result.options)
        scratch.human = result.human
        try:
            SECTION_COMPUTE[name](scratch, Inputs(scratch))
        except EngineError as exc:  # e.g. all-zero embeddings: say so, show the rest
            scratch.problems.append(str(exc))
        cached = {f: getattr(scratch, f) for f in (*SECTION_FIELDS[name], "problems")}
        cache.set(key, cached, CACHE_SECONDS)
    for field_name, value in cached.items():
        if field_name == "problems":
            result.problems.extend(value)
        else:
            setattr(result, field_name, value)


def section_key(result: Comparison, name: str) -> str:
    """Everything the section reads: the target and its judgments (which, their scale, their
    number and newest row), each side's model (pk, name as titled), layer and embedding file
    (content-addressed; for CKA every cached layer's), the stimuli's order, and the
    section's options."""
    dataset = result.target.dataset
    parts: list[Any] = [name, result.target.pk, dataset.pk, dataset.content_hash]
    judgments = result.target.judgments if result.human else None
    if judgments is not None:
        rows = judgments.rows.aggregate(n=Count("id"), newest=Max("id"))
        parts += [judgments.pk, judgments.scale_min, judgments.scale_max]
        parts += [rows["n"], rows["newest"]]
    # The model's name and layer are drawn into titles; a set's file may be shared by models.
    parts += [
        (side.model.pk, side.model.name, side.layer, side.embedding_set.relative_path)
        for side in result.sides
        if side.embedding_set
    ]
    if name == "models":
        for side in result.sides[:2]:
            parts += sorted(sets[0].relative_path for sets in side.layer_sets.values())
    parts += [getattr(result.options, option) for option in SECTION_OPTIONS[name]]
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
    return f"compare:v2:{name}:{digest}"


class Inputs:
    """What the sections read, each loaded once on first use."""

    def __init__(self, result: Comparison) -> None:
        self.result = result
        self._stimuli: list[Stimulus] | None = None
        self._vectors: list[np.ndarray] | None = None
        self._pairs: PairRatings | bool | None = False

    @property
    def stimuli(self) -> list[Stimulus]:
        if self._stimuli is None:
            self._stimuli = list(self.result.target.dataset.stimuli.order_by("order"))
        return self._stimuli

    @property
    def vectors(self) -> list[np.ndarray]:
        """Each side's embeddings as the engine scores them: checked finite (a NaN is named,
        not left to fail in the clustering) and scaled to unit length (human.unit_rows)."""
        if self._vectors is None:
            self._vectors = [
                human_metrics.unit_rows(side.embedding_set.load())  # type: ignore[union-attr]
                for side in self.result.sides
            ]
        return self._vectors

    @property
    def pairs(self) -> PairRatings | None:
        if self._pairs is False:
            data = target_data(self.result.target) if self.result.human else None
            self._pairs = data.ratings if isinstance(data, PairsData) else None
        return self._pairs  # type: ignore[return-value]


# --- Shared arithmetic ----------------------------------------------------------------------
def _sample(n: int, size: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


def _similarities(unit: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of the unit rows ``index``: one matrix product, the
    diagonal by the engine's self-pair rule (1; 0 for an all-zero row)."""
    rows = unit[index]
    similarity = np.clip(rows @ rows.T, -1.0, 1.0)
    np.fill_diagonal(similarity, np.abs(rows).sum(axis=1) > 0)
    return similarity


def _pair_similarity(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit rows i[k] and j[k], the engine's own (human.pair_cosines:
    a self-pair's is exactly 1, as the leaderboard scores it), on the rows the pairs use;
    over ``GRAM_ROWS`` of them, a chunk of pairs at a time sized so that the two gathered
    rows per pair hold at most GRAM_ROWS**2 numbers (72 MB), whatever the dimension (a copy
    of two rows per pair at once is what made the old page slow: 500,000 pairs x 10,000
    TF-IDF dimensions)."""
    used, position = np.unique(np.concatenate([i, j]), return_inverse=True)
    left, right = position[: len(i)], position[len(i) :]
    rows = unit[used]
    if len(used) <= GRAM_ROWS:
        return human_metrics.pair_cosines(rows, left, right)
    chunk = max(1, GRAM_ROWS**2 // rows.shape[1])  # below len(used)**2: never the Gram matrix
    out = np.empty(len(i))
    for start in range(0, len(i), chunk):
        part = slice(start, start + chunk)
        out[part] = human_metrics.pair_cosines(rows, left[part], right[part])
    return out


def correlation(a: np.ndarray, b: np.ndarray, measure: str) -> float:
    """The engine's RSA measures (evaluation.engine.metrics.rsa) on two vectors of any
    length over the same pairs: the judged pairs are not an RDM's full triangle, so ``rsa``
    itself (which checks that) does not apply."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < rsa_metrics.MIN_ENTRIES:
        raise MetricError(f"{len(a)} judged pairs; a correlation needs at least 3.")
    if measure not in MEASURES:
        raise MetricError(f"Unknown measure {measure!r}; choose one of {', '.join(MEASURES)}.")
    return rsa_metrics.correlate(a, b, measure)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Interval:
    """How a correlation's interval is drawn: ``resamples`` stimulus resamples over
    ``pairs`` of the ``judged`` pairs (fewer for rho-a and tau-a on a large target, to
    bound the request's time)."""

    resamples: int
    pairs: int
    judged: int

    def describe(self) -> str:
        text = f"{self.resamples:,} resamples"
        if self.pairs < self.judged:
            text += f" of a seeded sample of {self.pairs:,} of the {self.judged:,} judged pairs"
        return text


def interval_plan(measure: str, n_pairs: int) -> Interval:
    """Spearman and Pearson: ``BOOTSTRAP`` resamples of every pair (the engine's compiled
    bootstrap). rho-a and tau-a are re-ranked per resample in numpy (1,000 resamples of
    50,000 pairs took 8 s for rho-a, 13 s for tau-a; a full RDM of 1,000 stimuli ten times
    that), so they get at most ``RANK_A_BUDGET`` pair-resamples: fewer resamples (not under
    ``RANK_A_MIN_RESAMPLES``), then a seeded sample of the pairs."""
    if measure not in ("rho_a", "kendall_tau_a") or n_pairs * BOOTSTRAP <= RANK_A_BUDGET:
        return Interval(BOOTSTRAP, n_pairs, n_pairs)
    resamples = max(RANK_A_MIN_RESAMPLES, RANK_A_BUDGET // n_pairs)
    return Interval(resamples, min(n_pairs, RANK_A_BUDGET // resamples), n_pairs)


def correlation_interval(
    model: np.ndarray, pairs: PairRatings, n_stimuli: int, measure: str
) -> tuple[float, float] | None:
    """The 95% percentile interval of ``correlation`` over stimulus resamples, the
    leaderboard's bootstrap (evaluation.engine.metrics.human: a pair of stimuli drawn c_i
    and c_j times enters c_i * c_j times): Spearman and Pearson by the engine's own
    resampling, rho-a from each resample's weighted ranks, tau-a on each resample's pairs
    repeated as often as they enter (``interval_plan`` bounds its cost). None where too few
    resamples are defined (a tiny target)."""
    plan = interval_plan(measure, len(model))
    if measure in human_metrics.CORRELATIONS:
        samples = human_metrics.bootstrap_pair_correlations(
            pairs.i, pairs.j, model, pairs.mean,
            correlation=measure, n_boot=BOOTSTRAP, seed=0, n_stimuli=n_stimuli,
        )  # fmt: skip
    elif measure == "rho_a":
        samples = _rho_a_resamples(model, pairs, n_stimuli, plan)
    else:
        samples = _tau_a_resamples(model, pairs, n_stimuli, plan)
    try:
        return human_metrics.percentile_interval(samples)
    except MetricError:
        return None


def _rho_a_resamples(
    model: np.ndarray, pairs: PairRatings, n_stimuli: int, plan: Interval
) -> np.ndarray:
    """rho-a of many resamples at once: a pair entering w times is w tied copies, so the
    repeated data's average ranks are the weighted average ranks and rho-a is
    12 sum w (r_a - m)(r_b - m) / (W^3 - W), m = (W + 1) / 2, W = sum w (equal to rho-a of
    the repeated pairs, tested). Resamples in chunks of at most BOOTSTRAP_CHUNK_CELLS."""
    kept = _sample(len(model), plan.pairs)
    model, human, i, j = model[kept], pairs.mean[kept], pairs.i[kept], pairs.j[kept]
    counts = human_metrics.resample_counts(n_stimuli, plan.resamples, 0)
    order_model = np.argsort(model, kind="stable")
    order_human = np.argsort(human, kind="stable")
    samples = np.full(plan.resamples, np.nan)
    step = max(1, human_metrics.BOOTSTRAP_CHUNK_CELLS // max(len(model), 1))
    for start in range(0, plan.resamples, step):
        weights = human_metrics.pair_weights(counts[start : start + step], i, j)
        total = weights.sum(axis=1)
        middle = ((total + 1) / 2)[:, None]
        ranks_model = human_metrics.weighted_ranks_rows(model, weights, order_model) - middle
        ranks_human = human_metrics.weighted_ranks_rows(human, weights, order_human)
        ranks_human -= middle
        with np.errstate(invalid="ignore", divide="ignore"):
            value = 12.0 * (weights * ranks_model * ranks_human).sum(axis=1) / (total**3 - total)
        samples[start : start + step] = np.where(total >= rsa_metrics.MIN_ENTRIES, value, np.nan)
    return samples


def _tau_a_resamples(
    model: np.ndarray, pairs: PairRatings, n_stimuli: int, plan: Interval
) -> np.ndarray:
    """tau-a on each resample's pairs repeated as often as they enter, over ``plan``'s
    resamples and pairs."""
    kept = _sample(len(model), plan.pairs)
    counts = human_metrics.resample_counts(n_stimuli, plan.resamples, 0)
    samples = np.full(plan.resamples, np.nan)
    for k in range(plan.resamples):
        weights = human_metrics.pair_weights(counts[k : k + 1], pairs.i[kept], pairs.j[kept])[0]
        rows = kept[np.repeat(np.arange(len(kept)), weights.astype(np.int64))]
        if len(rows) >= rsa_metrics.MIN_ENTRIES:
            samples[k] = correlation(model[rows], pairs.mean[rows], "kendall_tau_a")
    return samples


def comparable(values: np.ndarray, scale: str) -> np.ndarray:
    """``values`` on a scale shared by model and people: fractional ranks (0 lowest, 1
    highest, ties averaged) or z-scores (NaN where the values are constant)."""
    values = np.asarray(values, dtype=np.float64)
    if scale == "z-scores":
        spread = values.std()
        if spread == 0:
            return np.full_like(values, np.nan)
        return (values - values.mean()) / spread
    if len(values) < 2:
        return np.zeros_like(values)
    return (rankdata(values) - 1) / (len(values) - 1)


def _labels(stimuli: list[Stimulus], index: np.ndarray) -> list[str]:
    """A cell's hover names its two stimuli, with their labels where they have them."""
    return [_named(stimuli[i]) for i in index]


def _named(stimulus: Stimulus) -> str:
    return f"{stimulus.name} [{stimulus.label}]" if stimulus.label else stimulus.name


# --- Matrices -----------------------------------------------------------------------------------
def matrix_stimuli(n: int, pairs: PairRatings | None, size: int = HEATMAP_STIMULI) -> np.ndarray:
    """The stimuli the matrices show: a seeded sample, or on a target of pair ratings the
    ``size`` stimuli with the most judged pairs among themselves (greedily: start from the
    most judged stimulus, then add the one with most judged pairs to those chosen, ties by
    its judged pairs overall), so that the people's matrix is as full as it can be."""
    if pairs is None:
        return _sample(n, size)
    other = pairs.i != pairs.j
    i, j = pairs.i[other], pairs.j[other]
    judged = sparse.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    judged = (judged.tocsr() > 0).astype(np.int64)
    degree = np.asarray(judged.sum(axis=1)).ravel()
    if (degree > 0).sum() <= size:
        chosen = np.flatnonzero(degree > 0)
        return chosen if len(chosen) >= 2 else _sample(n, size)
    links = np.zeros(n, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    for _ in range(size):
        score = links * (n + 1) + degree
        score[taken] = -1
        k = int(np.argmax(score))
        taken[k] = True
        links += judged.getrow(k).toarray().ravel()
    return np.flatnonzero(taken)


def _matrices(result: Comparison, inputs: Inputs) -> None:
    stimuli, vectors, pairs = inputs.stimuli, inputs.vectors, inputs.pairs
    index = matrix_stimuli(len(stimuli), pairs)
    first = _similarities(vectors[0], index)
    if result.order_by == "cluster":
        distance = np.clip(1 - first, 0, None)
        np.fill_diagonal(distance, 0)
        order = leaves_list(linkage(squareform(distance, checks=False), method="average"))
    else:
        order = np.argsort([stimuli[i].label for i in index], kind="stable")
    index = index[order]
    labels = _labels(stimuli, index)
    result.matrix_stimuli = len(index)
    matrices = [_similarities(x, index) for x in vectors]
    upper = np.triu_indices(len(index), k=1)
    for side, matrix in zip(result.sides, matrices, strict=True):
        svg = plots.heatmap(
            matrix.tolist(),
            row_labels=labels,
            col_labels=labels,
            title=f"{side.model.name} · {side.layer}",
            low=-1.0 if matrix.min() < 0 else 0.0,
            high=1.0,
            value_label="cosine similarity",
            cell=_cell(len(index)),
        )
        rows = _matrix_rows(labels, upper, matrix[upper])
        figure = result.figure(
            "compare-similarity", svg, [*MATRIX_COLUMNS, "cosine similarity"], rows,
            model=side.model, name=f"{side.model.name} {side.layer}",
        )  # fmt: skip
        result.heatmaps.append((side, figure))
    if pairs is not None:
        _human_matrices(result, inputs, index, labels)


def _human_matrices(
    result: Comparison, inputs: Inputs, index: np.ndarray, labels: list[str]
) -> None:
    """The people's matrix over the shown stimuli, and each model's residual."""
    pairs = inputs.pairs
    assert pairs is not None
    position = np.full(len(inputs.stimuli), -1)
    position[index] = np.arange(len(index))
    shown = (position[pairs.i] >= 0) & (position[pairs.j] >= 0)
    cells = _CellMeans(position[pairs.i[shown]], position[pairs.j[shown]], len(index))
    result.matrix_judged = int((cells.rows != cells.cols).sum())
    scale = result.options.residual_scale
    judgments = result.target.judgments
    low = judgments.scale_min if judgments and judgments.scale_min is not None else None
    high = judgments.scale_max if judgments and judgments.scale_max is not None else None
    people = cells.mean(pairs.mean[shown])
    svg = sparse_heatmap(
        _cells(cells.matrix(people)),
        row_labels=labels,
        col_labels=labels,
        title=f"People: mean rating of {result.matrix_judged} judged pairs",
        low=low,
        high=high,
        value_label="mean human rating",
        cell=_cell(len(index)),
    )
    result.human_heatmap = result.figure(
        "compare-people", svg, [*MATRIX_COLUMNS, "mean human rating", "judgments"],
        _matrix_rows(labels, (cells.rows, cells.cols), people, cells.total(pairs.count[shown])),
        name="people",
    )  # fmt: skip
    human_scaled = comparable(pairs.mean, scale)
    for side, x in zip(result.sides, inputs.vectors, strict=True):
        model_scaled = comparable(_pair_similarity(x, pairs.i, pairs.j), scale)
        model_cell = cells.mean(model_scaled[shown])
        human_cell = cells.mean(human_scaled[shown])
        gap = cells.mean((model_scaled - human_scaled)[shown])
        svg = sparse_heatmap(
            _cells(cells.matrix(gap)),
            row_labels=labels,
            col_labels=labels,
            title=f"{side.model.name} minus people ({scale})",
            signed=True,
            value_label=f"model minus people ({scale})",
            cell=_cell(len(index)),
        )
        figure = result.figure(
            "compare-residual", svg,
            [*MATRIX_COLUMNS, f"model ({scale})", f"people ({scale})", "model minus people"],
            _matrix_rows(labels, (cells.rows, cells.cols), model_cell, human_cell, gap),
            model=side.model, name=f"{side.model.name} minus people",
        )  # fmt: skip
        result.residuals.append((side, figure))


class _CellMeans:
    """The cells of a symmetric matrix that entries (a[k], b[k]) fall in, each unordered pair
    once (row <= column). A target scored by row (scoring_unit "row") can hold a pair more
    than once, either way round: its cell shows the mean of its entries, not the last."""

    def __init__(self, a: np.ndarray, b: np.ndarray, size: int) -> None:
        self.size = size
        flat = np.minimum(a, b) * size + np.maximum(a, b)
        self.flat, self.cell_of = np.unique(flat, return_inverse=True)
        self.rows, self.cols = self.flat // size, self.flat % size
        self.entries = np.bincount(self.cell_of, minlength=len(self.flat))

    def total(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.cell_of, weights=values, minlength=len(self.flat))

    def mean(self, values: np.ndarray) -> np.ndarray:
        return self.total(values) / self.entries

    def matrix(self, per_cell: np.ndarray) -> np.ndarray:
        matrix = np.full((self.size, self.size), np.nan)
        matrix[self.rows, self.cols] = matrix[self.cols, self.rows] = per_cell
        return matrix


_CELL = re.compile(
    r'<rect x="([-\d.]+)" y="([-\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="([^"]+)">'
    r"<title>[^<]*</title></rect>"
)


def sparse_heatmap(matrix: list[list[float | None]], **kwargs: Any) -> SafeString:
    """``plots.heatmap`` with its missing cells drawn as one grey rectangle under the grid
    (hover: "not judged"), not a rectangle with its own hover title each: the people's
    matrix of a published pair list is nearly all unjudged pairs (SimLex-999: 131 of the
    4,950 pairs of 100 words), about 1 MB of SVG for the browser to lay out otherwise.
    Where the cells are not found (another heatmap markup), the figure is left as drawn."""
    svg = str(plots.heatmap(matrix, **kwargs))
    missing = getattr(plots, "MISSING", "#eee")
    cells = list(_CELL.finditer(svg))
    if not any(cell[5] == missing for cell in cells):
        return mark_safe(svg)
    left = min(float(cell[1]) for cell in cells)
    top = min(float(cell[2]) for cell in cells)
    right = max(float(cell[1]) + float(cell[3]) for cell in cells)
    bottom = max(float(cell[2]) + float(cell[4]) for cell in cells)
    background = (
        f'<rect x="{left:g}" y="{top:g}" width="{right - left:g}" height="{bottom - top:g}" '
        f'fill="{missing}"><title>not judged</title></rect>'
    )
    start = cells[0].start()
    kept = _CELL.sub(lambda cell: "" if cell[5] == missing else cell[0], svg[start:])
    return mark_safe(svg[:start] + background + kept)


MATRIX_COLUMNS = [
    "row (1 = top, the figure's order)",
    "column (1 = left)",
    "stimulus (row)",
    "stimulus (column)",
]


def _matrix_rows(
    labels: list[str], cells: tuple[np.ndarray, np.ndarray], *values: np.ndarray
) -> list[list[Any]]:
    """One CSV row per cell (row < column: each pair once), with its values."""
    rows, cols = cells
    return [
        [int(r) + 1, int(c) + 1, labels[r], labels[c], *(float(v[k]) for v in values)]
        for k, (r, c) in enumerate(zip(rows, cols, strict=True))
    ]


def _cell(n_stimuli: int) -> int:
    """Cell size in pixels of a matrix of ``n_stimuli`` (at least 2, at most 28)."""
    return max(2, min(28, MATRIX_PIXELS // max(n_stimuli, 1)))


def _cells(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix]


# --- People ------------------------------------------------------------------------------------
def _people(result: Comparison, inputs: Inputs) -> None:
    stimuli, pairs = inputs.stimuli, inputs.pairs
    if pairs is None:
        return
    result.judged_pairs = len(pairs.mean)
    result.interval = interval_plan(result.options.measure, len(pairs.mean))
    shown = _sample(len(pairs.i), MAX_PAIRS_IN_SCATTER)
    measure, scale = result.options.measure, result.options.residual_scale
    human_scaled = comparable(pairs.mean, scale)
    names = {k: f"{stimuli[pairs.i[k]].name} / {stimuli[pairs.j[k]].name}" for k in shown}
    for side, x in zip(result.sides, inputs.vectors, strict=True):
        model = _pair_similarity(x, pairs.i, pairs.j)
        try:
            value: float | None = correlation(model, pairs.mean, measure)
            interval = correlation_interval(model, pairs, len(stimuli), measure)
            result.intervals[side.model.pk] = interval
            heading = f"{side.model.name}: {result.options.measure_name} {value:.3f}"
            if interval is not None:
                heading += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        except MetricError as exc:
            value, heading = None, f"{side.model.name}: {result.options.measure_name} undefined"
            result.problems.append(_undefined(side, model, pairs.mean, measure, exc))
        points = [plots.Point(float(model[k]), float(pairs.mean[k]), names[k]) for k in shown]
        svg = plots.scatter(
            points, title=heading, x_label="model cosine similarity", y_label="mean human rating"
        )
        figure = result.figure(
            "compare-scatter", svg,
            ["stimulus_a", "stimulus_b", "model cosine similarity", "mean human rating"],
            [[stimuli[pairs.i[k]].name, stimuli[pairs.j[k]].name, float(model[k]),
              float(pairs.mean[k])] for k in shown],
            model=side.model, name=f"{side.model.name} against people",
        )  # fmt: skip
        result.scatters.append((side, value, figure))
        model_scaled = comparable(model, scale)
        result.human_tables.append(
            (
                side,
                PairTable(
                    key=f"people-{side.model.pk}",
                    columns=[
                        ("model", "Model similarity"),
                        ("human", "Human mean"),
                        ("model_scaled", f"Model ({scale})"),
                        ("human_scaled", f"Human ({scale})"),
                        ("residual", "Model minus human"),
                    ],
                    stimuli=stimuli,
                    i=pairs.i,
                    j=pairs.j,
                    values={
                        "model": model,
                        "human": pairs.mean,
                        "model_scaled": model_scaled,
                        "human_scaled": human_scaled,
                        "residual": model_scaled - human_scaled,
                    },
                ),
            )
        )


def _undefined(
    side: Side, model: np.ndarray, human: np.ndarray, measure: str, error: MetricError
) -> str:
    """Why a model's correlation with people is undefined, in the page's terms."""
    name = MEASURES[measure]
    if np.ptp(model) == 0:
        return (
            f"{side.model.name} gives every judged pair the same similarity "
            f"({model[0]:.3f}), so its {name} correlation with people is undefined; rho-a and "
            "tau-a score it 0."
        )
    if np.ptp(human) == 0:
        return f"Every judged pair has the same mean rating, so a {name} correlation is undefined."
    return f"{side.model.name}: {error}"


# --- Models ------------------------------------------------------------------------------------
def _models(result: Comparison, inputs: Inputs) -> None:
    stimuli, vectors = inputs.stimuli, inputs.vectors
    index = _sample(len(stimuli), RSA_STIMULI)
    upper = np.triu_indices(len(index), k=1)
    similarities = [_similarities(x, index)[upper] for x in vectors]
    _rsa(result, similarities, len(index))
    _disagreements(result, stimuli, similarities, index[upper[0]], index[upper[1]])
    _cka(result, result.target, len(stimuli))


def _rsa(result: Comparison, similarities: list[np.ndarray], n_stimuli: int) -> None:
    """RSA between the models' cosine-distance RDMs with the chosen measure, each pair once."""
    measure = result.options.measure
    k = len(similarities)
    values: list[list[float | None]] = [
        [1.0 if a == b else None for b in range(k)] for a in range(k)
    ]
    rdms = [1 - s for s in similarities]
    for a in range(k):
        for b in range(a + 1, k):
            try:
                value = rsa_metrics.rsa(rdms[a], rdms[b], method=measure)  # type: ignore[arg-type]
            except MetricError as exc:
                result.problems.append(
                    f"RSA of {result.sides[a].model.name} and {result.sides[b].model.name}: {exc}"
                )
                continue
            values[a][b] = values[b][a] = value
    result.rsa_values = values
    result.rsa_stimuli = n_stimuli
    names = [side.model.name for side in result.sides]
    svg = plots.heatmap(
        values,
        row_labels=names,
        col_labels=names,
        title=f"RSA ({result.options.measure_name}) between models",
        high=1.0,
        value_label=f"RSA ({result.options.measure_name})",
    )
    upper = np.triu_indices(k, k=1)
    result.rsa = result.figure(
        "compare-rsa", svg, ["model_a", "model_b", f"RSA ({result.options.measure_name})"],
        [[names[a], names[b], values[a][b]] for a, b in zip(*upper, strict=True)],
        name="rsa", caption=f"RSA ({result.options.measure_name}) over {n_stimuli} stimuli.",
    )  # fmt: skip


def _disagreements(
    result: Comparison,
    stimuli: list[Stimulus],
    similarities: list[np.ndarray],
    i: np.ndarray,
    j: np.ndarray,
) -> None:
    """The ``MODEL_PAIRS`` pairs ranked most differently by the first two models (ranks as a
    fraction of the pairs)."""
    first, second = similarities[:2]
    gap = (rankdata(first) - rankdata(second)) / len(first)
    keep = np.argsort(-np.abs(gap), kind="stable")[:MODEL_PAIRS]
    a, b = result.sides[0].model.name, result.sides[1].model.name
    result.disagreements = PairTable(
        key="models",
        columns=[("first", a), ("second", b), ("gap", "Rank gap")],
        stimuli=stimuli,
        i=i[keep],
        j=j[keep],
        values={"first": first[keep], "second": second[keep], "gap": gap[keep]},
    )


def _cka(result: Comparison, target: Target, n_stimuli: int) -> None:
    """Linear CKA (unbiased) of every cached layer of model A against every one of model B."""
    a, b = result.sides[:2]
    sets_a = _stored_layers(a)
    sets_b = _stored_layers(b)
    order_a = _depth_order(a.model, list(sets_a))
    order_b = _depth_order(b.model, list(sets_b))
    index = _sample(n_stimuli, CKA_STIMULI)
    load: Callable[[EmbeddingSet], np.ndarray] = lambda s: np.asarray(  # noqa: E731
        s.load(), dtype=np.float64
    )[index]
    matrix = cka_matrix([load(sets_a[n]) for n in order_a], [load(sets_b[n]) for n in order_b])
    result.cka_pair = (a.model.name, b.model.name)
    svg = plots.heatmap(
        matrix.tolist(),
        row_labels=order_a,
        col_labels=order_b,
        title=f"Linear CKA: {a.model.name} layers x {b.model.name} layers",
        low=0.0,
        high=1.0,
        value_label="linear CKA",
    )
    result.cka = result.figure(
        "compare-cka", svg, [f"layer of {a.model.name}", f"layer of {b.model.name}", "linear CKA"],
        [[la, lb, float(matrix[r, c])] for r, la in enumerate(order_a)
         for c, lb in enumerate(order_b)],
        name="cka", caption="Layers in network depth order.",
    )  # fmt: skip


def _stored_layers(side: Side) -> dict[str, EmbeddingSet]:
    stored = {layer: stored_set(sets) for layer, sets in side.layer_sets.items()}
    return {layer: s for layer, s in stored.items() if s is not None}


def _depth_order(model: PretrainedModel, names: list[str]) -> list[str]:
    return figures.depth_order(model, names)


# --- Neighbours --------------------------------------------------------------------------------
def _neighbours(result: Comparison, inputs: Inputs) -> None:
    stimuli = inputs.stimuli
    stimulus_id = result.options.stimulus_id
    position = next((i for i, s in enumerate(stimuli) if s.pk == stimulus_id), 0)
    result.stimulus = stimuli[position]
    for side, x in zip(result.sides, inputs.vectors, strict=True):
        similarity = x @ x[position]
        similarity[position] = -np.inf
        top = np.argsort(-similarity)[:NEIGHBOURS]
        result.neighbours.append((side, [(stimuli[i], float(similarity[i])) for i in top]))


SECTION_COMPUTE: dict[str, Callable[[Comparison, Inputs], None]] = {
    "matrices": _matrices,
    "people": _people,
    "models": _models,
    "neighbours": _neighbours,
}


# --- Figures to take away (evaluation.figures) ---------------------------------------------------
FIGURE_PARAMS = {
    "target": "target id",
    "models": "model id, two to four times (the compare page's models; layer_<model id>="
    "<layer> picks a layer other than the model's default)",
    "order": "label or cluster (the matrices' stimulus order)",
    "measure": "spearman, pearson, rho_a or kendall_tau_a",
}


def comparison_from_params(params: Any) -> Comparison:
    """The compare page's comparison from its query parameters, for a figure download."""
    target = figures.object_param(params, "target", Target, selectors.targets_with_datasets())
    ids = qs.id_list_param(params, "models", limit=MAX_MODELS) if hasattr(params, "getlist") else []
    models = selectors.models_in_order(ids)
    if len(models) < 2:
        raise figures.FigureProblem("Give models=<id> two to four times: the models compared.")
    options = Options(
        order_by=qs.choice_param(params, "order", ORDERS, "label"),
        measure=qs.choice_param(params, "measure", tuple(MEASURES), "spearman"),
    )
    layers = {m.pk: qs.text_param(params, f"layer_{m.pk}", max_length=200) for m in models}
    comparison = prepare(target=target, models=models, layers=layers, options=options)
    if len(comparison.sides) < 2:
        names = ", ".join(side.model.name for side in comparison.missing)
        raise figures.FigureProblem(f"No cached embeddings on {target.dataset.name}: {names}.")
    return comparison


def _model_figure(
    params: Any, section: str, pick: Callable[[Comparison], list[tuple[Any, ...]]], what: str
) -> figures.Figure:
    """The figure of ``model=`` among a section's per-model figures."""
    comparison = comparison_from_params(params)
    model_id = figures.id_param(params, "model")
    compute_section(comparison, section)
    found = [entry[-1] for entry in pick(comparison) if entry[0].model.pk == model_id]
    if found:
        return found[0]
    compared = ", ".join(str(side.model.pk) for side in comparison.sides)
    if any(side.model.pk == model_id for side in comparison.sides):
        raise figures.FigureProblem(_why_missing(comparison, what))
    raise figures.FigureProblem(
        f"No {what} figure: model {model_id} is not among the models compared ({compared})."
    )


def _comparison_figure(params: Any, section: str, name: str, what: str) -> figures.Figure:
    comparison = comparison_from_params(params)
    compute_section(comparison, section)
    figure = getattr(comparison, name)
    if figure is None:
        raise figures.FigureProblem(_why_missing(comparison, what))
    return figure


def _why_missing(comparison: Comparison, what: str) -> str:
    if what in PEOPLE_FIGURES and not comparison.human:
        reason = f"{comparison.target.name} is not a target of pair ratings"
    else:
        reason = "; ".join(comparison.problems) or "it could not be computed"
    return f"No {what} figure: {reason}."


PEOPLE_FIGURES = ("people's matrix", "residual", "scatter")
MODEL_PARAMS = {**FIGURE_PARAMS, "model": "model id: which of the compared models"}


@figures.register(
    "compare-similarity", summary="Compare page: a model's cosine similarity matrix",
    params=MODEL_PARAMS,
)  # fmt: skip
def similarity_figure(params: Any) -> figures.Figure:
    return _model_figure(params, "matrices", lambda c: c.heatmaps, "similarity matrix")


@figures.register(
    "compare-people", summary="Compare page: the people's matrix (mean rating per judged pair)",
    params=FIGURE_PARAMS,
)  # fmt: skip
def people_figure(params: Any) -> figures.Figure:
    return _comparison_figure(params, "matrices", "human_heatmap", "people's matrix")


@figures.register(
    "compare-residual", summary="Compare page: a model's similarity minus people's ratings",
    params=MODEL_PARAMS,
)  # fmt: skip
def residual_figure(params: Any) -> figures.Figure:
    return _model_figure(params, "matrices", lambda c: c.residuals, "residual")


@figures.register(
    "compare-scatter", summary="Compare page: a model's similarity against people's ratings",
    params=MODEL_PARAMS,
)  # fmt: skip
def scatter_figure(params: Any) -> figures.Figure:
    return _model_figure(params, "people", lambda c: c.scatters, "scatter")


@figures.register(
    "compare-rsa", summary="Compare page: RSA between the models", params=FIGURE_PARAMS
)
def rsa_figure(params: Any) -> figures.Figure:
    return _comparison_figure(params, "models", "rsa", "RSA")


@figures.register(
    "compare-cka", summary="Compare page: linear CKA of two models' layers", params=FIGURE_PARAMS
)
def cka_figure(params: Any) -> figures.Figure:
    return _comparison_figure(params, "models", "cka", "CKA")
