"""The board labels its best-layer choice optimistic and links to the cross-validated choice,
computed from the embeddings the scores were computed on."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from evaluation import storage
from evaluation.judgments import JudgmentRow, judgments_create
from evaluation.models import EmbeddingSet, Target
from tests.conftest import make_text_dataset
from tests.evaluation.test_human_targets import text_dataset
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db
KEY = "pair_alignment(correlation=spearman)"


def stored_layer(model, dataset, layer: str, x: np.ndarray) -> EmbeddingSet:
    name = f"test/{model.pk}-{layer}.npy"
    scratch = storage.scratch_folder(storage.EMBEDDINGS)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        path = Path(folder) / "x.npy"
        np.save(path, x.astype(np.float32))
        storage.store_file(storage.EMBEDDINGS, name, path)
    return EmbeddingSet.objects.create(
        fingerprint=f"{model.pk}-{layer}", model=model, dataset=dataset, layer=layer,
        pooling="mean", weights_id="test", relative_path=name, count=len(x),
        dim=x.shape[1], extraction_seconds=0.0,
    )  # fmt: skip


def test_board_calls_best_layer_optimistic_and_cross_validates_it(client):
    rng = np.random.default_rng(1)
    n = 40
    truth = rng.normal(size=(n, 8))  # people's ratings follow this structure
    dataset = text_dataset("forty words", [f"word {k}" for k in range(n)])
    unit = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    rows = [
        JudgmentRow((i, j), value=float(unit[i] @ unit[j] + rng.normal(scale=0.3)))
        for i, j in itertools.combinations(range(n), 2)
    ]
    judgments = judgments_create(dataset=dataset, name="ratings", kind="pairs", rows=rows)
    target = Target.objects.get(judgments=judgments)
    model = PretrainedModelFactory(name="three-layer-net", modality="text")
    run = RunFactory(dataset=dataset)
    layers = {
        "block1": rng.normal(size=(n, 8)),  # unrelated to the ratings
        "block2": truth + rng.normal(scale=0.5, size=(n, 8)),  # related
        "block3": rng.normal(size=(n, 8)),
    }
    for value, (layer, x) in zip((0.05, 0.6, 0.04), layers.items(), strict=True):
        ScoreFactory(
            run=run, model=model, target=target, layer=layer, metric_key=KEY, value=value,
            embedding_set=stored_layer(model, dataset, layer, x),
        )  # fmt: skip
    board = client.get(target.get_absolute_url()).content.decode()
    assert "best of 3 layers · optimistic" in board
    link = reverse("evaluation:leaderboard_layer_choice", args=[target.pk])
    assert f'href="{link}?' in board and "the cross-validated layer choice" in board
    page = client.get(link)
    assert page.status_code == 200
    choice = page.context["choices"][0].choice
    assert choice.optimistic_layer == "block2" and choice.chosen == {"block2": 40}
    assert choice.cv_mean <= choice.same_halves_optimistic and choice.cv_mean > 0.3
    html = page.content.decode()
    assert "three-layer-net" in html and f"{choice.cv_mean:.3f}" in html
    assert "over 20 random halvings (seed 0)" in html


def test_label_boards_cross_validate_leave_one_out_knn(client):
    rng = np.random.default_rng(2)
    labels = [f"class {k % 4}" for k in range(80)]
    dataset = make_text_dataset("eighty", [(f"text {k}", label) for k, label in enumerate(labels)])
    target = Target.objects.get(dataset=dataset, kind="labels")
    centres = rng.normal(size=(4, 6))
    informative = np.array([centres[k % 4] for k in range(80)]) + rng.normal(size=(80, 6))
    model = PretrainedModelFactory(name="two-layer-net", modality="text")
    run = RunFactory(dataset=dataset)
    for value, layer, x in ((0.9, "late", informative), (0.3, "early", rng.normal(size=(80, 6)))):
        ScoreFactory(
            run=run, model=model, target=target, layer=layer, metric_key="knn(k=5,split=loo)",
            value=value, embedding_set=stored_layer(model, dataset, layer, x),
        )  # fmt: skip
    page = client.get(reverse("evaluation:leaderboard_layer_choice", args=[target.pk]))
    choice = page.context["choices"][0].choice
    assert choice.optimistic_layer == "late" and choice.chosen == {"late": 40}
    assert 0.5 < choice.cv_mean <= choice.same_halves_optimistic
    assert choice.items_per_half == 40  # each stimulus is an item: half of them per half
