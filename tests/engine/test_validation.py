"""Every public metric function refuses what it cannot score with a MetricError that names
the argument and the problem, instead of scoring NaN, wrapping index -1 around, ranking a
NaN rating highest or crashing with an IndexError (issue 16, item 17)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics import human
from evaluation.engine.metrics.alignment import linear_alignment
from evaluation.engine.metrics.cka import cka, cka_matrix
from evaluation.engine.metrics.clustering import clustering_scores
from evaluation.engine.metrics.knn import knn_accuracy, knn_predict
from evaluation.engine.metrics.probes import (
    few_shot_accuracy,
    linear_probe_accuracy,
    nearest_class_mean_accuracy,
    nearest_class_mean_predict,
    weighted_knn_accuracy,
    weighted_knn_predict,
)
from evaluation.engine.metrics.retrieval import retrieval_scores
from evaluation.engine.metrics.reweighting import reweighted_pair_alignment
from evaluation.engine.metrics.rsa import rsa, rsa_between
from evaluation.engine.metrics.similarity import pairwise_similarity, rdm
from tests.conftest import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"public human data folder {SHARED_DATA} is absent"
)
N = 30


def clean() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 3
    return rng.normal(size=(3, 8))[labels] + 0.3 * rng.normal(size=(N, 8)), labels


def poisoned() -> np.ndarray:
    """Clean embeddings with NaN in rows 4 and 17 and an infinity in row 18."""
    x = clean()[0]
    x[4, 0] = x[17, 2] = np.nan
    x[18, 5] = np.inf
    return x


def pairs_of(x: np.ndarray) -> human.PairRatings:
    i, j = np.triu_indices(len(x), k=1)
    ratings = np.einsum("ij,ij->i", x[i], x[j])
    return human.aggregate_pairs(i, j, ratings)


def afc_items() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """200 valid 2AFC items (reference, first, second, share of votes for first): enough
    for the stimulus bootstrap, so that only the planted defect can make a call fail."""
    rng = np.random.default_rng(2)
    items = np.array([rng.choice(N, size=3, replace=False) for _ in range(200)])
    return items[:, 0], items[:, 1], items[:, 2], rng.random(200)


# --- NaN and infinite embeddings --------------------------------------------------------------

LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], object]] = {
    "knn": lambda x, y: knn_accuracy(x, y, k=3),
    "knn train/test": lambda x, y: knn_accuracy(x, y, k=3, test_mask=np.arange(N) < 10),
    "weighted knn": lambda x, y: weighted_knn_accuracy(x, y, k=3),
    "nearest class mean": lambda x, y: nearest_class_mean_accuracy(x, y),
    "linear probe": lambda x, y: linear_probe_accuracy(x, y, Cs=(1.0,)),
    "few-shot": lambda x, y: few_shot_accuracy(x, y, n_way=2, n_query=2, episodes=5),
    "retrieval": lambda x, y: retrieval_scores(x, y, ks=(1,)),
    "clustering": lambda x, y: clustering_scores(x, y, n_resamples=10),
}
UNLABELLED_METRICS: dict[str, Callable[[np.ndarray], object]] = {
    "cka": lambda x: cka(x, clean()[0]),
    "cka_matrix": lambda x: cka_matrix([clean()[0], x]),
    "rsa_between": lambda x: rsa_between(x, clean()[0]),
    "rdm": lambda x: rdm(x),
    "pairwise_similarity": lambda x: pairwise_similarity(x, kind="cosine"),
    "linear_alignment": lambda x: linear_alignment(x, clean()[0]),
    "pair_alignment": lambda x: human.pair_alignment(x, pairs_of(clean()[0]), n_boot=20),
    "reweighted pairs": lambda x: reweighted_pair_alignment(x, pairs_of(clean()[0]), n_boot=20),
    "triplets": lambda x: human.triplet_accuracy(x, [[0, 1, 2]], [2], n_boot=20),
    "2afc": lambda x: human.two_afc_accuracy(x, [0], [1], [2], [0.5], n_boot=20),
}


@pytest.mark.parametrize("name", list(LABEL_METRICS))
def test_label_metrics_refuse_nan_embeddings_naming_the_rows(name):
    _, labels = clean()
    with pytest.raises(MetricError, match=r"3 NaN or infinite values \(rows 4, 17, 18\)"):
        LABEL_METRICS[name](poisoned(), labels)


@pytest.mark.parametrize("name", list(UNLABELLED_METRICS))
def test_other_metrics_refuse_nan_embeddings_naming_the_rows(name):
    with pytest.raises(MetricError, match=r"3 NaN or infinite values \(rows 4, 17, 18\)"):
        UNLABELLED_METRICS[name](poisoned())


def test_knn_no_longer_scores_nan_embeddings():
    x, labels = clean()
    assert 0.0 <= knn_accuracy(x, labels, k=3).accuracy <= 1.0  # clean data is scored
    with pytest.raises(MetricError, match="embeddings: 3 NaN"):
        knn_accuracy(poisoned(), labels, k=3)


# --- Stimulus indices ---------------------------------------------------------------------------


def test_pair_index_minus_one_is_refused_not_wrapped_around():
    x = clean()[0]
    pairs = pairs_of(x)
    wrapped = human.PairRatings(
        np.r_[pairs.i[:-1], -1], pairs.j, pairs.mean, pairs.count, pairs.unit
    )
    with pytest.raises(
        MetricError, match=r"pairs.i holds index -1 \(at entry 434\), out of range 0..29"
    ):
        human.pair_alignment(x, wrapped, n_boot=20)
    with pytest.raises(MetricError, match="pairs.i holds index -1"):
        reweighted_pair_alignment(x, wrapped, n_boot=20)
    with pytest.raises(MetricError, match="a holds index -1"):
        human.aggregate_pairs([0, -1, 2], [1, 2, 3], [1.0, 2.0, 3.0])


def test_pair_indices_past_the_last_stimulus_are_refused():
    x = clean()[0]
    pairs = pairs_of(x)
    beyond = human.PairRatings(pairs.i, np.r_[pairs.j[:-1], N], pairs.mean, pairs.count, pairs.unit)
    with pytest.raises(MetricError, match=f"pairs.j holds index {N} .*out of range 0..{N - 1}"):
        human.pair_alignment(x, beyond, n_boot=20)


def test_fractional_indices_are_refused_not_truncated():
    with pytest.raises(MetricError, match="a must be stimulus indices"):
        human.aggregate_pairs([0.0, 1.5, 2.0], [1, 2, 3], [1.0, 2.0, 3.0])


def test_triplet_and_choice_index_minus_one_is_refused():
    x = clean()[0]
    references, firsts, seconds, _ = afc_items()
    triplets = np.stack([references, firsts, seconds], axis=1)
    chosen = triplets[:, 0].copy()
    human.triplet_accuracy(x, triplets, chosen, n_boot=20)
    triplets[1, 2] = -1
    with pytest.raises(MetricError, match=r"triplets holds index -1 \(at entry 1\)"):
        human.triplet_accuracy(x, triplets, chosen, n_boot=20)
    triplets[1, 2], chosen[1] = N - 1, -1
    with pytest.raises(MetricError, match="chosen holds index -1"):
        human.triplet_accuracy(x, triplets, chosen, n_boot=20)


@needs_shared_data
def test_real_one_based_things_triplets_are_refused_with_the_range():
    # THINGS odd-one-out (Hebart et al. 2020) numbers its 1,854 concepts from 1; passed as
    # they are, the last concept is out of range (numpy said "IndexError").
    rows = np.loadtxt(SHARED_DATA / "things_odd_one_out" / "test_triplets.csv", dtype=np.int64)
    triplets, position = rows[:, :3], rows[:, 3]
    chosen = triplets[np.arange(len(rows)), position - 1]
    embeddings = np.random.default_rng(0).normal(size=(1854, 16))
    with pytest.raises(MetricError, match=r"triplets holds index 1854 .*out of range 0..1853"):
        human.triplet_accuracy(embeddings, triplets, chosen, n_boot=20)
    result = human.triplet_accuracy(embeddings, triplets - 1, chosen - 1, n_boot=20)
    assert 0.2 < result.value < 0.5  # random embeddings: about chance (1/3)


def test_2afc_indices_are_checked():
    x = clean()[0]
    reference, first, second, share = afc_items()
    human.two_afc_accuracy(x, reference, first, second, share, n_boot=20)
    second[7] = -1
    with pytest.raises(MetricError, match=r"second holds index -1 \(at entry 7\)"):
        human.two_afc_accuracy(x, reference, first, second, share, n_boot=20)


# --- Values -------------------------------------------------------------------------------------


def simlex() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """SimLex-999 (Hill et al. 2015) as word indices and ratings."""
    text = (SHARED_DATA / "simlex999" / "EN-SIMLEX-999.faruqui.txt").read_text().split()
    words = np.array(text[0::3] + text[1::3])
    vocabulary, index = np.unique(words, return_inverse=True)
    return index[:999], index[999:], np.array(text[2::3], dtype=float), len(vocabulary)


@needs_shared_data
@pytest.mark.parametrize("correlation", ["spearman", "pearson"])
def test_a_nan_rating_is_refused_not_ranked_highest(correlation):
    a, b, ratings, n_words = simlex()
    embeddings = np.random.default_rng(1).normal(size=(n_words, 16))
    human.pair_alignment(embeddings, human.aggregate_pairs(a, b, ratings), n_boot=20)
    ratings[[10, 500]] = np.nan
    with pytest.raises(
        MetricError, match=r"values \(ratings\): 2 NaN or infinite values \(entries 10, 500\)"
    ):
        human.aggregate_pairs(a, b, ratings)
    # A PairRatings built by hand meets the same check inside the metric.
    pairs = human.aggregate_pairs(a[:100], b[:100], np.nan_to_num(ratings[:100]))
    broken = human.PairRatings(
        pairs.i, pairs.j, np.r_[np.nan, pairs.mean[1:]], pairs.count, pairs.unit
    )
    with pytest.raises(MetricError, match=r"pairs.mean \(mean ratings\): 1 NaN"):
        human.pair_alignment(embeddings, broken, correlation=correlation, n_boot=20)


@pytest.mark.parametrize("share", [1.7, -0.2, np.nan])
def test_2afc_vote_shares_outside_zero_to_one_are_refused(share):
    x = clean()[0]
    reference, first, second, shares = afc_items()
    shares[9] = share
    with pytest.raises(MetricError, match=r"share_first: 1 (value outside \[0, 1\]|NaN).*entry 9"):
        human.two_afc_accuracy(x, reference, first, second, shares, n_boot=20)


@pytest.mark.parametrize(("reference", "first", "second"), [(0, 0, 2), (0, 1, 0), (0, 1, 1)])
def test_2afc_items_that_repeat_a_stimulus_are_refused(reference, first, second):
    x = clean()[0]
    references, firsts, seconds, share = afc_items()
    references[3], firsts[3], seconds[3] = reference, first, second
    with pytest.raises(MetricError, match="2AFC items: 1 items show a stimulus twice"):
        human.two_afc_accuracy(x, references, firsts, seconds, share, n_boot=20)


def test_triplets_that_repeat_a_stimulus_are_refused():
    x = clean()[0]
    references, firsts, seconds, _ = afc_items()
    triplets = np.stack([references, firsts, seconds], axis=1)
    human.triplet_accuracy(x, triplets, firsts, n_boot=20)
    triplets[5] = [3, 3, 4]
    with pytest.raises(MetricError, match="triplets: 1 items show a stimulus twice"):
        human.triplet_accuracy(x, triplets, triplets[:, 2], n_boot=20)


def test_self_pairs_built_by_hand_are_scored_as_self_similarity():
    x = clean()[0]
    pairs = pairs_of(x)
    selfish = human.PairRatings(np.r_[pairs.j[:1], pairs.i[1:]], pairs.j, pairs.mean, pairs.count)
    result = human.pair_alignment(x, selfish, n_boot=20)
    assert result.details["self_pairs"] == 1


def test_rsa_refuses_vectors_that_are_not_a_condensed_rdm():
    with pytest.raises(MetricError, match=r"rdm_a has 5 dissimilarities, which is not n\(n-1\)/2"):
        rsa(np.arange(5.0), np.arange(5.0))
    with pytest.raises(MetricError, match="rdm_b has 14"):
        rsa(np.arange(15.0), np.arange(14.0))
    assert rsa(np.arange(15.0), np.arange(15.0)) == pytest.approx(1.0)  # 6 stimuli


# --- Mismatched lengths -------------------------------------------------------------------------


def test_mismatched_lengths_are_named_not_an_index_error():
    x = clean()[0]
    with pytest.raises(MetricError, match="reference has 2 entries but share_first has 1"):
        human.two_afc_accuracy(x, [0, 3], [1, 4], [2, 5], [0.5], n_boot=20)
    with pytest.raises(MetricError, match="reference has 2 entries but first has 1"):
        human.two_afc_accuracy(x, [0, 3], [1], [2, 5], [0.5, 0.5], n_boot=20)
    with pytest.raises(MetricError, match="triplets has 2 entries but chosen has 1"):
        human.triplet_accuracy(x, [[0, 1, 2], [3, 4, 5]], [0], n_boot=20)
    with pytest.raises(MetricError, match="a has 3 entries but values has 2"):
        human.aggregate_pairs([0, 1, 2], [1, 2, 3], [1.0, 2.0])
    with pytest.raises(MetricError, match="values has 24 entries but participants has 23"):
        human.split_half_reliability(
            np.repeat(np.arange(12), 2), np.repeat(np.arange(1, 13), 2), np.ones(24), ["p"] * 23
        )
    with pytest.raises(MetricError, match="item_keys has 3 entries but choices has 2"):
        human.leave_one_out_agreement(np.array([[0, 1, 2]] * 3), np.array([0, 1]))
    with pytest.raises(MetricError, match="i has 2 entries but j has 1"):
        human.model_pair_similarity(x, [0, 1], [2])
    with pytest.raises(MetricError, match=r"test_mask has shape \(10,\)"):
        knn_accuracy(x, clean()[1], k=3, test_mask=np.ones(10, bool))


def test_reliability_refuses_nan_ratings():
    a, b = np.repeat(np.arange(12), 2), np.repeat(np.arange(1, 13), 2)
    values = np.arange(24.0)
    values[7] = np.nan
    with pytest.raises(
        MetricError, match=r"values \(ratings\): 1 NaN or infinite value \(entry 7\)"
    ):
        human.split_half_reliability(a, b, values)


# --- Classifier building blocks and parameters -----------------------------------------------


@pytest.mark.parametrize(
    "predict",
    [
        lambda *a, **k: knn_predict(*a, k=1, **k),
        lambda *a, **k: weighted_knn_predict(*a, k=1, temperature=0.1, **k),
        lambda *a, **k: nearest_class_mean_predict(*a, **k),
    ],
)
def test_classifier_building_blocks_check_codes_and_widths(predict):
    x, labels = clean()
    with pytest.raises(MetricError, match="train_codes holds index 3 .*out of range 0..2"):
        predict(x, np.r_[labels[:-1], 3], x, n_classes=3)
    with pytest.raises(MetricError, match="query_x has 5 features but train_x 8"):
        predict(x, labels, x[:, :5], n_classes=3)
    with pytest.raises(MetricError, match="train_x has 30 rows but train_codes 29"):
        predict(x, labels[:-1], x, n_classes=3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: human.pair_alignment(x, pairs_of(x), n_boot=5), "n_boot must be at least 10"),
        (
            lambda x: human.pair_alignment(x, pairs_of(x), correlation="kendall"),
            "Unknown correlation",
        ),
        (
            lambda x: reweighted_pair_alignment(x, pairs_of(x), correlation="kendall", n_boot=20),
            "Unknown correlation 'kendall'",
        ),
        (lambda x: knn_accuracy(x, clean()[1], k=2.5), "k must be a whole number"),
        (lambda x: cka(x, x, kernel="rbf", rbf_sigma=np.inf), "bandwidth factor must be positive"),
        (
            lambda x: linear_alignment(x, x, alphas=[np.nan, 1.0]),
            "must be a non-empty list of positive numbers",
        ),
    ],
)
def test_parameters_are_checked(call, message):
    with pytest.raises(MetricError, match=message):
        call(clean()[0])
