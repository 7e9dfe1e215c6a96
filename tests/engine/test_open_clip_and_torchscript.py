"""open_clip towers and TorchScript files, offline: untrained seeded models and local files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from evaluation.engine.adapters import load_adapter, validate_spec
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.extraction import extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput

ARCH = "ViT-S-32"  # the smallest ViT CLIP that open_clip defines


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for index, size in enumerate([(40, 60), (64, 64), (90, 50)]):
        path = tmp_path / f"img{index}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def clip_reference():
    import open_clip

    torch.manual_seed(0)
    model, _, transform = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    return model.eval(), transform, open_clip.get_tokenizer(ARCH)


def test_image_tower_embeds_like_encode_image(images, tmp_path, clip_reference):
    model, transform, _ = clip_reference
    adapter = load_adapter(
        ModelSpec(source="open_clip-image", identifier=ARCH, weights="untrained")
    )
    assert adapter.layer_names()[0] == "image_embedding"
    assert all(name.startswith("visual") for name in adapter.layer_names()[1:])
    out = {
        "image_embedding": tmp_path / "e.npy",
        "visual.transformer.resblocks.3": tmp_path / "b3.npy",
    }
    extract_layers(adapter, [StimulusInput(path=str(p)) for p in images], out_paths=out)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    with torch.inference_mode():
        expected = model.encode_image(batch).numpy()
    np.testing.assert_allclose(np.load(out["image_embedding"]), expected, rtol=1e-4, atol=1e-5)
    # A hooked ViT block is a token sequence: the class token is its model-default pooling.
    assert np.load(out["visual.transformer.resblocks.3"]).shape == (3, 384)


def test_text_tower_embeds_like_encode_text_and_masks_padding(tmp_path, clip_reference):
    model, _, tokenizer = clip_reference
    texts = ["a photo of a dog", "a small red bicycle leaning on a wall by the sea"]
    adapter = load_adapter(ModelSpec(source="open_clip-text", identifier=ARCH, weights="untrained"))
    assert not any(name.startswith("visual") for name in adapter.layer_names())
    out = {"text_embedding": tmp_path / "t.npy", "transformer.resblocks.0": tmp_path / "r0.npy"}
    extract_layers(adapter, [StimulusInput(text=t) for t in texts], out_paths=out, batch_size=2)
    with torch.inference_mode():
        expected = model.encode_text(tokenizer(texts)).numpy()
    np.testing.assert_allclose(np.load(out["text_embedding"]), expected, rtol=1e-4, atol=1e-5)

    # The hooked block is averaged over the real tokens, not the 77-token padding.
    tokens = tokenizer(texts[:1])
    captured = {}
    block = model.transformer.resblocks[0]
    handle = block.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.inference_mode():
        model.encode_text(tokens)
    handle.remove()
    real = int((tokens != 0).sum())
    expected_mean = captured["x"][0, :real].mean(dim=0).numpy()
    np.testing.assert_allclose(np.load(out["transformer.resblocks.0"])[0], expected_mean, atol=1e-5)


def test_open_clip_checkpoint_file_loads_the_saved_weights(images, tmp_path, clip_reference):
    model, _, _ = clip_reference
    checkpoint = tmp_path / "clip.pt"
    torch.save(model.state_dict(), checkpoint)
    spec = ModelSpec(
        source="open_clip-image",
        identifier=ARCH,
        weights="checkpoint",
        checkpoint_path=str(checkpoint),
    )
    from_file = load_adapter(spec)
    untrained = load_adapter(
        ModelSpec(source="open_clip-image", identifier=ARCH, weights="untrained")
    )
    batch = from_file.collate([from_file.load_input(StimulusInput(path=str(images[0])))])
    with torch.inference_mode():
        a = from_file.embed(batch, layers=["image_embedding"])["image_embedding"]
        b = untrained.embed(batch, layers=["image_embedding"])["image_embedding"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("identifier", "weights", "message"),
    [
        ("ViT-B-33", "untrained", "Did you mean: ViT-B-32"),
        ("ViT-B-32", "pretrained", "Name the pretrained weights as ViT-B-32/TAG"),
        ("ViT-B-32/laion2b_s34b_b78k", "pretrained", "laion2b_s34b_b79k"),
        ("ViT-B-32/openai", "untrained", "bare architecture"),
    ],
)
def test_open_clip_specs_are_checked_before_loading(identifier, weights, message):
    with pytest.raises(ModelSpecError, match=message):
        validate_spec(ModelSpec(source="open_clip-image", identifier=identifier, weights=weights))


@pytest.fixture
def scripted_resnet(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    path = tmp_path / "resnet.pt"
    torch.jit.save(torch.jit.script(model), path)
    return model, path


def test_torchscript_file_embeds_with_its_sidecar_preprocessing(images, tmp_path, scripted_resnet):
    model, path = scripted_resnet
    config = {"input_size": [3, 96, 96], "crop_pct": 1.0, "interpolation": "bilinear"}
    path.with_name(path.name + ".json").write_text(json.dumps(config))
    adapter = load_adapter(ModelSpec(source="torchscript", identifier=str(path)))
    assert adapter.layer_names() == ["output"]
    assert [row["name"] for row in adapter.describe_layers(StimulusInput(path=str(images[0])))] == [
        "output"
    ]
    out = tmp_path / "o.npy"
    extract_layers(adapter, [StimulusInput(path=str(p)) for p in images], out_paths={"output": out})
    transform = timm.data.create_transform(
        input_size=(3, 96, 96), crop_pct=1.0, interpolation="bilinear", is_training=False
    )
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    with torch.inference_mode():
        expected = model(batch).numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-5)


def test_torchscript_problems_are_named(tmp_path, scripted_resnet):
    _, path = scripted_resnet
    with pytest.raises(ModelSpecError, match="does not exist"):
        validate_spec(ModelSpec(source="torchscript", identifier=str(tmp_path / "missing.pt")))
    path.with_name(path.name + ".json").write_text('{"size": 3}')
    with pytest.raises(ModelSpecError, match="unknown keys size"):
        validate_spec(ModelSpec(source="torchscript", identifier=str(path)))
    not_script = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, not_script)
    with pytest.raises(ModelSpecError, match="not a loadable TorchScript file"):
        load_adapter(ModelSpec(source="torchscript", identifier=str(not_script)))
