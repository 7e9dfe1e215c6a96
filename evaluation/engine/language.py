"""Language-based and stacked approximations of human similarity, and judgment budgets.

Marjieh et al. (ICLR 2023, "Words are all you need?") found that the words people use
about stimuli (tags, captions), embedded by a language model, predict human similarity
judgments well, and that stacking those language embeddings with a vision (DNN) model's
does best. This module holds the pieces of that method:

- ``describe_stimuli``: one embedding per stimulus from the embeddings of its descriptions
  (each description unit-normalised, then a mean weighted by, e.g., the tag's rating);
- ``tfidf_similarity``: the word-frequency baseline (TF-IDF over the same descriptions),
  written as scikit-learn's ``TfidfVectorizer`` + ``cosine_similarity`` compute it;
- ``stack``, ``calibrate_language_weight``, ``calibration_split``, ``scored_pair_mask`` and
  ``stacked_gain``: the stacked method, its language weight tuned on a calibration subset
  of stimuli that is then left out of every score, and its gain over each component with
  a paired bootstrap interval;
- ``efficiency_curve_descriptions`` and ``efficiency_curve_ratings``: what the language
  method and direct ratings reach for a given number of human judgments, so both can be
  drawn on one axis of judgments consumed.

Correlations, pair aggregation, stimulus bootstrap and split-half reliability are the ones
of ``evaluation.engine.metrics.human``; nothing here re-implements them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import (
    CORRELATIONS,
    PairRatings,
    aggregate_pairs,
    bootstrap_pair_correlations,
    model_pair_similarity,
    percentile_interval,
    split_half_reliability,
    unit_rows,
    weighted_correlation,
)
from evaluation.engine.metrics.validation import IndexLike, ValueLike

LANGUAGE = "language"
STACKED = "stacked"
MIN_CALIBRATION_PAIRS = 10
DEFAULT_CALIBRATION_SIZE = 20
# Multipliers of the unit-normalised language block. The block enters the cosine of the
# stacked vectors with weight w^2 against 1 per DNN block, so this grid spans the language
# block counting from nothing (0, the DNNs alone) to 64 times a DNN.
DEFAULT_LANGUAGE_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
# scikit-learn's default token_pattern: words of two or more letters, digits or underscores.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


# --- Descriptions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Descriptions:
    """All descriptions of all stimuli, flattened: unit rows, owning stimulus, weights."""

    units: np.ndarray  # (total descriptions, d), unit length
    owner: np.ndarray  # (total,), stimulus index of each description
    weights: np.ndarray  # (total,), non-negative
    n_stimuli: int

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.owner, minlength=self.n_stimuli)


def _flatten_descriptions(
    tag_embeddings: Sequence[np.ndarray], tag_weights: Sequence[Sequence[float]] | None
) -> _Descriptions:
    n = len(tag_embeddings)
    if n == 0:
        raise MetricError("There are no stimuli to describe.")
    if tag_weights is not None and len(tag_weights) != n:
        raise MetricError(
            f"There are {n} stimuli but {len(tag_weights)} lists of description weights; "
            "give one weight list per stimulus (or none)."
        )
    blocks: list[np.ndarray] = []
    weight_blocks: list[np.ndarray] = []
    empty: list[int] = []
    dimension: int | None = None
    for index, raw in enumerate(tag_embeddings):
        block = np.asarray(raw, dtype=np.float64)
        if block.size == 0:
            empty.append(index)
            blocks.append(np.zeros((0, dimension or 0)))
            weight_blocks.append(np.zeros(0))
            continue
        if block.ndim != 2:
            raise MetricError(
                f"Stimulus {index}: description embeddings must be a (descriptions x "
                f"dimensions) array; got shape {block.shape}."
            )
        if dimension is None:
            dimension = block.shape[1]
        elif block.shape[1] != dimension:
            raise MetricError(
                f"Stimulus {index}: description embeddings have {block.shape[1]} dimensions, "
                f"the first stimulus's have {dimension}; all must come from one model."
            )
        if not np.isfinite(block).all():
            raise MetricError(f"Stimulus {index}: a description embedding has NaN or inf.")
        norms = np.linalg.norm(block, axis=1)
        if (norms == 0).any():
            raise MetricError(
                f"Stimulus {index}: description {int(np.argmin(norms))} has a zero embedding, "
                "which has no direction to normalise."
            )
        weights = _description_weights(index, len(block), tag_weights)
        if weights.sum() == 0:
            empty.append(index)
        blocks.append(block / norms[:, None])
        weight_blocks.append(weights)
    if empty:
        shown = ", ".join(str(i) for i in empty[:20]) + (" ..." if len(empty) > 20 else "")
        raise MetricError(
            f"{len(empty)} of {n} stimuli have no description (or only zero-weight ones): "
            f"indices {shown}. Every stimulus needs at least one tag or caption; a zero "
            "vector would make it look equally unlike everything."
        )
    assert dimension is not None  # every stimulus has a non-empty block here
    owner = np.repeat(np.arange(n), [len(b) for b in blocks])
    return _Descriptions(np.vstack(blocks), owner, np.concatenate(weight_blocks), n)


def _description_weights(
    index: int, count: int, tag_weights: Sequence[Sequence[float]] | None
) -> np.ndarray:
    if tag_weights is None:
        return np.ones(count)
    weights = np.asarray(tag_weights[index], dtype=np.float64).reshape(-1)
    if len(weights) != count:
        raise MetricError(
            f"Stimulus {index}: {count} descriptions but {len(weights)} weights; give one "
            "weight per description."
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise MetricError(
            f"Stimulus {index}: description weights must be finite and non-negative "
            f"(ratings such as 1-5); got {weights.tolist()}."
        )
    return weights


def _weighted_means(
    units: np.ndarray, owner: np.ndarray, weights: np.ndarray, n: int
) -> np.ndarray:
    """Weighted mean of the unit description rows of each stimulus (n x d)."""
    totals = np.bincount(owner, weights=weights, minlength=n)
    matrix = sparse.csr_matrix((weights, (owner, np.arange(len(owner)))), shape=(n, len(owner)))
    return np.asarray(matrix @ units) / totals[:, None]


def describe_stimuli(
    tag_embeddings: Sequence[np.ndarray], tag_weights: Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """One embedding per stimulus from the embeddings of its tags or captions.

    ``tag_embeddings[s]`` is an (n_s x d) array: the language model's embeddings of the n_s
    descriptions of stimulus s. Each is scaled to unit length (so a long caption does not
    outweigh a short tag) and the stimulus gets their mean, weighted by ``tag_weights[s]``
    where given (e.g. how well people rated each tag fits, 1-5). Returns an (n x d) float64
    array; compare rows by cosine. A stimulus without descriptions, or whose weights are all
    zero, is an error that names it.
    """
    flat = _flatten_descriptions(tag_embeddings, tag_weights)
    return _weighted_means(flat.units, flat.owner, flat.weights, flat.n_stimuli)


# --- TF-IDF baseline ---------------------------------------------------------------------------
def tfidf_vectors(
    documents: Sequence[str | Sequence[str]],
    *,
    smooth_idf: bool = True,
    sublinear_tf: bool = False,
    token_pattern: str = TOKEN_PATTERN,
) -> sparse.csr_matrix:
    """L2-normalised TF-IDF rows, one per stimulus, as ``TfidfVectorizer`` computes them.

    A stimulus's document is its string, or its strings (tags, captions) taken together.
    Tokens are the lowercased matches of ``token_pattern``. tf is the raw count, or
    1 + log(count) with ``sublinear_tf``; idf is ln((1 + n) / (1 + df)) + 1 with
    ``smooth_idf`` (as if one extra document held every term once), else ln(n / df) + 1.
    """
    pattern = re.compile(token_pattern)
    rows: list[int] = []
    tokens: list[str] = []
    empty: list[int] = []
    for index, document in enumerate(documents):
        text = document if isinstance(document, str) else "\n".join(document)
        found = pattern.findall(text.lower())
        if not found:
            empty.append(index)
        tokens.extend(found)
        rows.extend([index] * len(found))
    n = len(documents)
    if n == 0:
        raise MetricError("There are no documents to compare.")
    if empty:
        shown = ", ".join(str(i) for i in empty[:20]) + (" ..." if len(empty) > 20 else "")
        raise MetricError(
            f"{len(empty)} of {n} stimuli have no words in their descriptions: indices {shown}."
        )
    vocabulary, columns = np.unique(np.asarray(tokens), return_inverse=True)
    counts = sparse.csr_matrix(
        (np.ones(len(tokens)), (np.asarray(rows), columns.ravel())), shape=(n, len(vocabulary))
    )
    counts.sum_duplicates()
    tf = counts.astype(np.float64)
    if sublinear_tf:
        tf.data = 1.0 + np.log(tf.data)
    df = np.bincount(tf.indices, minlength=len(vocabulary)).astype(np.float64)
    idf = np.log((1 + n) / (1 + df)) + 1 if smooth_idf else np.log(n / df) + 1
    weighted = sparse.csr_matrix(tf @ sparse.diags(idf))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ weighted)


def tfidf_similarity(
    documents: Sequence[str | Sequence[str]],
    *,
    smooth_idf: bool = True,
    sublinear_tf: bool = False,
    token_pattern: str = TOKEN_PATTERN,
) -> np.ndarray:
    """Cosine similarity (n x n) of the stimuli's TF-IDF vectors; see ``tfidf_vectors``."""
    vectors = tfidf_vectors(
        documents, smooth_idf=smooth_idf, sublinear_tf=sublinear_tf, token_pattern=token_pattern
    )
    return np.asarray((vectors @ vectors.T).toarray())


# --- Pair data -------------------------------------------------------------------------------
def _check_correlation(correlation: str) -> None:
    if correlation not in CORRELATIONS:
        raise MetricError(f"Unknown correlation {correlation!r}; use pearson or spearman.")


def _pair_ratings(
    pairs_a: IndexLike, pairs_b: IndexLike, human_values: ValueLike, n: int
) -> PairRatings:
    a, b = np.asarray(pairs_a, dtype=np.int64), np.asarray(pairs_b, dtype=np.int64)
    values = np.asarray(human_values, dtype=np.float64)
    if not (len(a) == len(b) == len(values)):
        raise MetricError("Pair judgments need one a, b and value per row.")
    bad = (a < 0) | (a >= n) | (b < 0) | (b >= n)
    if bad.any():
        raise MetricError(
            f"{int(bad.sum())} pair judgments name stimuli outside 0..{n - 1} (first: row "
            f"{int(np.argmax(bad))}); pairs index the stimuli's embeddings."
        )
    if not np.isfinite(values).all():
        raise MetricError("Some human pair values are NaN or infinite.")
    return aggregate_pairs(a, b, values)


def _correlation(model: np.ndarray, human: np.ndarray, correlation: str) -> float:
    return weighted_correlation(model, human, np.ones_like(model), correlation)


def _select_pairs(pairs: PairRatings, keep: np.ndarray) -> PairRatings:
    return PairRatings(
        pairs.i[keep], pairs.j[keep], pairs.mean[keep], pairs.count[keep], pairs.unit
    )


# --- Stacking -------------------------------------------------------------------------------
def _blocks(dnn_embeddings: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(dnn_embeddings, np.ndarray):
        return [dnn_embeddings]
    return [np.asarray(block) for block in dnn_embeddings]


def stack(
    language: np.ndarray,
    dnn_embeddings: np.ndarray | Sequence[np.ndarray],
    language_weight: float,
) -> np.ndarray:
    """Stacked embeddings: [w * unit(language) | unit(dnn_1) | unit(dnn_2) ...].

    Each block's rows are scaled to unit length first, so a model's raw scale does not
    decide its share. The cosine of two stacked rows is then
    (w^2 cos_language + sum_k cos_dnn_k) / (w^2 + K): ``language_weight`` w sets how much
    the language block counts against each DNN block (0 drops it).
    """
    weight = float(language_weight)
    if not math.isfinite(weight) or weight < 0:
        raise MetricError(f"The language weight must be finite and >= 0; got {language_weight}.")
    blocks = _blocks(dnn_embeddings)
    if not blocks:
        raise MetricError("Stacking needs at least one DNN embedding next to the language one.")
    language = np.asarray(language)
    for index, block in enumerate(blocks):
        if block.ndim != 2 or len(block) != len(language):
            raise MetricError(
                f"DNN embedding {index} has shape {block.shape}; it needs one row per stimulus "
                f"({len(language)}, in the language embeddings' order)."
            )
    if language.ndim != 2:
        raise MetricError(f"The language embeddings must be 2-D; got shape {language.shape}.")
    return np.hstack([weight * unit_rows(language)] + [unit_rows(block) for block in blocks])


def calibration_split(
    n_stimuli: int, size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0
) -> np.ndarray:
    """A random calibration subset of ``size`` stimuli (sorted indices), drawn with ``seed``."""
    if size < 2 or size >= n_stimuli - 2:
        raise MetricError(
            f"A calibration subset of {size} of {n_stimuli} stimuli leaves nothing to tune or "
            "nothing to score: it needs at least 2 stimuli and must leave 3 out."
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_stimuli, size=size, replace=False))


def scored_pair_mask(pairs_a: IndexLike, pairs_b: IndexLike, calibration: IndexLike) -> np.ndarray:
    """True for the pairs that involve none of the calibration stimuli: the only ones scored."""
    members = np.asarray(calibration, dtype=np.int64)
    a, b = np.asarray(pairs_a, dtype=np.int64), np.asarray(pairs_b, dtype=np.int64)
    return ~(np.isin(a, members) | np.isin(b, members))


def _calibration_mask(pairs: PairRatings, calibration: np.ndarray) -> np.ndarray:
    return np.isin(pairs.i, calibration) & np.isin(pairs.j, calibration)


@dataclass(frozen=True)
class Calibration:
    """The language weight chosen on the calibration pairs, and the score of every weight."""

    weight: float
    scores: tuple[tuple[float, float], ...]  # (weight, correlation on the calibration pairs)
    n_pairs: int
    n_stimuli: int
    correlation: str


def calibrate_language_weight(
    language: np.ndarray,
    dnns: np.ndarray | Sequence[np.ndarray],
    pairs_a: IndexLike,
    pairs_b: IndexLike,
    human_values: ValueLike,
    calibration: IndexLike,
    *,
    weights: Sequence[float] = DEFAULT_LANGUAGE_WEIGHTS,
    correlation: str = "spearman",
) -> Calibration:
    """The language weight whose stacked embedding best matches people on calibration pairs.

    Only pairs with BOTH stimuli in ``calibration`` are used (their judgments are averaged
    per pair first). The weight is a fitted parameter: choosing it on the pairs that are
    then scored would let it fit their noise and inflate the score, all the more with a
    fine grid. Tuning it on a disjoint set of stimuli, and scoring only pairs that involve
    none of them (``scored_pair_mask``), keeps the score an honest estimate for stimuli
    the method has not seen. The first best weight in grid order wins a tie.
    """
    _check_correlation(correlation)
    language = np.asarray(language)
    members = np.unique(np.asarray(calibration, dtype=np.int64))
    pairs = _pair_ratings(pairs_a, pairs_b, human_values, len(language))
    chosen = _select_pairs(pairs, _calibration_mask(pairs, members))
    if len(chosen.mean) < MIN_CALIBRATION_PAIRS:
        raise MetricError(
            f"Only {len(chosen.mean)} pairs with human values have both stimuli in the "
            f"calibration subset of {len(members)} stimuli; tuning the language weight needs "
            f"at least {MIN_CALIBRATION_PAIRS}. Use a larger calibration subset, or judge "
            "more pairs among its stimuli."
        )
    grid = [float(w) for w in weights]
    if not grid:
        raise MetricError("The grid of language weights is empty.")
    scores: list[tuple[float, float]] = []
    for weight in grid:
        stacked = stack(language, dnns, weight)
        model = model_pair_similarity(stacked, chosen.i, chosen.j)
        scores.append((weight, _correlation(model, chosen.mean, correlation)))
    defined = [(w, r) for w, r in scores if np.isfinite(r)]
    if not defined:
        raise MetricError(
            "No language weight gives a defined correlation on the calibration pairs: the "
            "human values or the model similarities there are constant."
        )
    best = max(r for _, r in defined)
    weight = next(w for w, r in defined if r == best)
    return Calibration(weight, tuple(scores), len(chosen.mean), len(members), correlation)


@dataclass(frozen=True)
class Estimate:
    """A correlation (or a difference of two) on the scored pairs, with a 95% interval."""

    value: float
    ci_low: float
    ci_high: float
    n_pairs: int


@dataclass(frozen=True)
class StackedGain:
    """The stacked method against its components, all on the same scored pairs."""

    calibration: Calibration
    stacked: Estimate
    components: dict[str, Estimate]  # "language" and each DNN's name, alone
    gains: dict[str, Estimate]  # stacked minus each component (paired bootstrap)
    n_stimuli: int  # stimuli in the scored pairs
    correlation: str


def stacked_gain(
    language: np.ndarray,
    dnns: Mapping[str, np.ndarray],
    pairs_a: IndexLike,
    pairs_b: IndexLike,
    human_values: ValueLike,
    calibration: IndexLike,
    *,
    weights: Sequence[float] = DEFAULT_LANGUAGE_WEIGHTS,
    correlation: str = "spearman",
    n_boot: int = 1000,
    seed: int = 0,
) -> StackedGain:
    """How much stacking language with the DNNs beats each of them alone.

    The language weight is calibrated on the pairs within ``calibration`` (see
    ``calibrate_language_weight``); every score then uses only the pairs that touch no
    calibration stimulus. Intervals bootstrap over *stimuli* (of the scored pairs), not
    pairs: pairs sharing a stimulus are not independent, and new stimuli are what the
    method is meant to generalise to. The bootstrap is paired: every method is scored on
    the very same resamples (``bootstrap_pair_correlations`` with one seed), and the gain's
    interval is the percentile interval of the per-resample differences. The weight is held
    at its calibrated value in every resample (its own uncertainty is not propagated).
    """
    _check_correlation(correlation)
    if not dnns:
        raise MetricError("Stacking needs at least one DNN embedding next to the language one.")
    reserved = {LANGUAGE, STACKED} & set(dnns)
    if reserved:
        raise MetricError(
            f"{sorted(reserved)[0]!r} names a block of the result; give the DNNs other names."
        )
    language = np.asarray(language)
    blocks = [np.asarray(block) for block in dnns.values()]
    calibrated = calibrate_language_weight(
        language,
        blocks,
        pairs_a,
        pairs_b,
        human_values,
        calibration,
        weights=weights,
        correlation=correlation,
    )
    pairs = _pair_ratings(pairs_a, pairs_b, human_values, len(language))
    members = np.unique(np.asarray(calibration, dtype=np.int64))
    scored = _select_pairs(pairs, ~(np.isin(pairs.i, members) | np.isin(pairs.j, members)))
    if len(scored.mean) < 3:
        raise MetricError(
            f"Only {len(scored.mean)} pairs touch no calibration stimulus; scoring needs at "
            "least 3. Use a smaller calibration subset or more judged pairs."
        )
    stimuli, compact = np.unique(np.concatenate([scored.i, scored.j]), return_inverse=True)
    ci, cj = compact[: len(scored.i)], compact[len(scored.i) :]
    methods: dict[str, np.ndarray] = {
        STACKED: stack(language, blocks, calibrated.weight),
        LANGUAGE: language,
        **{name: np.asarray(block) for name, block in dnns.items()},
    }
    values: dict[str, float] = {}
    samples: dict[str, np.ndarray] = {}
    for name, embeddings in methods.items():
        model = model_pair_similarity(embeddings, scored.i, scored.j)
        values[name] = _correlation(model, scored.mean, correlation)
        samples[name] = bootstrap_pair_correlations(
            ci,
            cj,
            model,
            scored.mean,
            correlation=correlation,
            n_boot=n_boot,
            seed=seed,
            n_stimuli=len(stimuli),
        )
    n_pairs = len(scored.mean)

    def estimate(value: float, draws: np.ndarray) -> Estimate:
        low, high = percentile_interval(draws)
        return Estimate(float(value), low, high, n_pairs)

    components = {
        name: estimate(values[name], samples[name]) for name in methods if name != STACKED
    }
    gains = {
        name: estimate(values[STACKED] - values[name], samples[STACKED] - samples[name])
        for name in components
    }
    return StackedGain(
        calibration=calibrated,
        stacked=estimate(values[STACKED], samples[STACKED]),
        components=components,
        gains=gains,
        n_stimuli=len(stimuli),
        correlation=correlation,
    )


# --- Judgment-efficiency curves -------------------------------------------------------------------
@dataclass(frozen=True)
class EfficiencyPoint:
    per_item: int  # descriptions per stimulus, or ratings per pair, asked for
    judgments: float  # human judgments consumed in all (mean over draws)
    mean: float  # mean score over the random draws
    ci_low: float  # 2.5th percentile of the draws
    ci_high: float  # 97.5th percentile of the draws
    draws: int  # draws that gave a defined score


@dataclass(frozen=True)
class EfficiencyCurve:
    kind: str  # "descriptions" or "ratings"
    measure: str
    points: tuple[EfficiencyPoint, ...]


def _rank_within_groups(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of the rows within each group: 0, 1, ... per group."""
    order = np.lexsort((rng.random(len(group)), group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
    lengths = np.diff(np.r_[starts, len(group)])
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(starts, lengths)
    return rank


def _check_draws(n_draws: int) -> None:
    if n_draws < 10:
        raise MetricError(f"An efficiency curve needs at least 10 random draws; got {n_draws}.")


def efficiency_curve_descriptions(
    tag_embeddings: Sequence[np.ndarray],
    pairs_a: IndexLike,
    pairs_b: IndexLike,
    human_values: ValueLike,
    *,
    tag_weights: Sequence[Sequence[float]] | None = None,
    max_per_stimulus: int | None = None,
    n_draws: int = 20,
    seed: int = 0,
    correlation: str = "spearman",
) -> EfficiencyCurve:
    """The language method's score against the number of descriptions it consumed.

    For k = 1 .. K descriptions per stimulus (K: the most any stimulus has, or
    ``max_per_stimulus``), each of ``n_draws`` draws keeps k random descriptions of every
    stimulus (all of them where it has fewer), builds ``describe_stimuli`` from them and
    correlates the cosine similarity with the mean human value of every judged pair. A
    point gives the mean over draws and the 2.5-97.5 percentile range of the draws (the
    spread due to which descriptions were drawn), and ``judgments``: descriptions used.
    Descriptions of weight zero are never drawn.
    """
    _check_correlation(correlation)
    _check_draws(n_draws)
    flat = _flatten_descriptions(tag_embeddings, tag_weights)
    # A zero-weight description adds nothing to a mean; drawing one alone would leave a
    # stimulus without a direction, so only weighted descriptions are drawn.
    useful = flat.weights > 0
    flat = _Descriptions(
        flat.units[useful], flat.owner[useful], flat.weights[useful], flat.n_stimuli
    )
    pairs = _pair_ratings(pairs_a, pairs_b, human_values, flat.n_stimuli)
    if len(pairs.mean) < 3:
        raise MetricError(f"Only {len(pairs.mean)} distinct pairs: a correlation needs 3.")
    most = int(flat.counts.max())
    top = most if max_per_stimulus is None else min(int(max_per_stimulus), most)
    if top < 1:
        raise MetricError("max_per_stimulus must be at least 1.")
    rng = np.random.default_rng(seed)
    ranks = [_rank_within_groups(flat.owner, rng) for _ in range(n_draws)]
    points = []
    for k in range(1, top + 1):
        scores = np.empty(n_draws)
        for draw, rank in enumerate(ranks):
            keep = rank < k
            means = _weighted_means(
                flat.units[keep], flat.owner[keep], flat.weights[keep], flat.n_stimuli
            )
            model = model_pair_similarity(means, pairs.i, pairs.j)
            scores[draw] = _correlation(model, pairs.mean, correlation)
        low, high = percentile_interval(scores)
        used = float(np.minimum(flat.counts, k).sum())
        defined = int(np.isfinite(scores).sum())
        points.append(EfficiencyPoint(k, used, float(np.nanmean(scores)), low, high, defined))
    return EfficiencyCurve(
        "descriptions",
        f"{correlation} correlation of the language method with the mean human value per pair",
        tuple(points),
    )


def efficiency_curve_ratings(
    pairs_a: IndexLike,
    pairs_b: IndexLike,
    values: ValueLike,
    participants: Sequence[str] | None = None,
    *,
    max_per_pair: int | None = None,
    n_draws: int = 20,
    n_splits: int = 20,
    seed: int = 0,
    correlation: str = "spearman",
) -> EfficiencyCurve:
    """The reliability direct ratings reach with m ratings per pair, m = 2 .. M.

    Each of ``n_draws`` draws keeps m random judgments of every pair (all of them where it
    has fewer) and takes ``split_half_reliability`` of what it kept: the Spearman-Brown
    corrected correlation between halves, i.e. the expected agreement of two independent
    sets of m ratings per pair. ``judgments`` counts the ratings kept, which grow with the
    number of *pairs* (quadratic in stimuli), against descriptions, which grow with the
    number of stimuli. Points where fewer than 10 draws give a reliability are left out;
    if none is left, the error says why.
    """
    _check_correlation(correlation)
    _check_draws(n_draws)
    a, b = np.asarray(pairs_a, dtype=np.int64), np.asarray(pairs_b, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if not (len(a) == len(b) == len(v)):
        raise MetricError("Pair judgments need one a, b and value per row.")
    who = None if participants is None else np.asarray(participants, dtype=object)
    if who is not None and len(who) != len(v):
        raise MetricError("Give one participant per judgment, or none.")
    keep_rows = a != b  # catch trials are not data
    a, b, v = a[keep_rows], b[keep_rows], v[keep_rows]
    who = None if who is None else who[keep_rows]
    _, pair = np.unique(
        np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0, return_inverse=True
    )
    pair = pair.ravel()
    counts = np.bincount(pair)
    most = int(counts.max()) if len(counts) else 0
    top = most if max_per_pair is None else min(int(max_per_pair), most)
    if top < 2:
        raise MetricError(
            "Reliability needs pairs judged at least twice; no pair has two judgments."
        )
    rng = np.random.default_rng(seed)
    ranks = [_rank_within_groups(pair, rng) for _ in range(n_draws)]
    points = []
    reason = ""
    for m in range(2, top + 1):
        reliabilities = []
        for draw, rank in enumerate(ranks):
            keep = rank < m
            result = split_half_reliability(
                a[keep],
                b[keep],
                v[keep],
                None if who is None else who[keep].tolist(),
                correlation=correlation,
                n_splits=n_splits,
                seed=seed + draw,
            )
            mean = result["mean"]
            if isinstance(mean, float):
                reliabilities.append(mean)
            else:
                reason = str(result.get("reason", ""))
        if len(reliabilities) < 10:
            continue
        draws = np.asarray(reliabilities)
        low, high = percentile_interval(draws)
        used = float(np.minimum(counts, m).sum())
        points.append(EfficiencyPoint(m, used, float(draws.mean()), low, high, len(draws)))
    if not points:
        raise MetricError(f"No number of ratings per pair gives a reliability: {reason}")
    return EfficiencyCurve(
        "ratings",
        f"split-half {correlation} reliability of the mean rating per pair (Spearman-Brown)",
        tuple(points),
    )
