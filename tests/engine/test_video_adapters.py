"""Video models: image models over sampled frames (FramesAdapter), transformers video models
built tiny with from_config, and extraction that decodes clips in threads, in order."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.engine import extraction
from evaluation.engine.adapters import adapter_class, load_adapter
from evaluation.engine.adapters.base import Adapter
from evaluation.engine.adapters.video_adapter import (
    FramesAdapter,
    TransformersVideoAdapter,
)
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.extraction import decoded_ahead, extract_layers
from evaluation.engine.specs import MODALITIES, SOURCES, ModelSpec, StimulusInput
from evaluation.engine.video import FrameSampling, sample_frames
from tests import videos

COLOURS = {"red": (230, 30, 30), "blue": (30, 30, 230), "green": (30, 200, 30)}


@pytest.fixture(scope="module")
def coloured_clips(tmp_path_factory):
    """Six clips: three colours, each moving left and right."""
    folder = tmp_path_factory.mktemp("clips")
    stimuli = []
    for colour, rgb in COLOURS.items():
        for motion in ("left", "right"):
            path = videos.synthetic_clip(
                folder / f"{colour}-{motion}.webm", colour=rgb, motion=motion
            )
            stimuli.append(StimulusInput(path=str(path), meta={"name": path.name, "label": colour}))
    return stimuli


def cosine(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit @ unit.T


def assert_same_colour_nearest(rows: np.ndarray, stimuli: list[StimulusInput]) -> None:
    similarity = cosine(rows)
    labels = [s.meta["label"] for s in stimuli]
    for i, label in enumerate(labels):
        same = [similarity[i, j] for j in range(len(labels)) if j != i and labels[j] == label]
        other = [similarity[i, j] for j in range(len(labels)) if labels[j] != label]
        assert min(same) > max(other), f"{stimuli[i].name} is nearer another colour"


# --- an image model over frames --------------------------------------------------------
def test_pixels_over_frames_put_clips_of_one_colour_together(coloured_clips, tmp_path):
    adapter = load_adapter(
        ModelSpec(source="baseline", identifier="pixels-16"), frame_sampling=FrameSampling(frames=4)
    )
    assert isinstance(adapter, FramesAdapter) and adapter.modality == "video"
    out = tmp_path / "pixels.npy"
    extract_layers(adapter, coloured_clips, out_paths={"pixels": out}, batch_size=4)
    rows = np.load(out)
    assert rows.shape == (6, 16 * 16 * 3)
    assert_same_colour_nearest(rows, coloured_clips)


def test_an_image_model_over_frames_is_the_mean_of_its_frames(coloured_clips, tmp_path):
    """Each frame embedded as the image model embeds an image file, pooled as it pools,
    then averaged: the same numbers as the image model on the frames saved losslessly."""
    spec = ModelSpec(source="timm", identifier="test_efficientnet", weights="untrained")
    sampling = FrameSampling(frames=3)
    frames_adapter = load_adapter(spec, frame_sampling=sampling)
    image_adapter = load_adapter(spec)
    assert frames_adapter.layer_names() == image_adapter.layer_names()
    assert frames_adapter.default_layer == image_adapter.default_layer == "pre_logits"
    layers = ["pre_logits", "blocks.1", "conv_stem"]
    clips = coloured_clips[:4]
    ours = {layer: tmp_path / f"v-{layer}.npy" for layer in layers}
    extract_layers(frames_adapter, clips, out_paths=ours, batch_size=3)

    pictures = []
    for index, clip in enumerate(clips):
        for k, frame in enumerate(sample_frames(clip.path, clip.name, sampling)):
            path = tmp_path / f"{index}-{k}.png"
            frame.save(path)
            pictures.append(StimulusInput(path=str(path)))
    per_image = {layer: tmp_path / f"i-{layer}.npy" for layer in layers}
    extract_layers(image_adapter, pictures, out_paths=per_image, batch_size=5)
    for layer in layers:
        expected = np.load(per_image[layer]).reshape(len(clips), 3, -1).mean(axis=1)
        np.testing.assert_allclose(np.load(ours[layer]), expected, rtol=1e-4, atol=1e-5)


def test_an_image_model_over_frames_says_how_it_pools(coloured_clips):
    spec = ModelSpec(source="timm", identifier="test_efficientnet", weights="untrained")
    adapter = load_adapter(spec, frame_sampling=FrameSampling(frames=2, fps=1))
    described = adapter.preprocessing_description()
    assert described["timm_data_config"]["input_size"] == [3, 160, 160]
    assert described["frame_sampling"] == {"fps": 1.0, "frames": 2}
    assert described["pooling_over_time"] == "mean over frames"
    layers = {layer["name"]: layer for layer in adapter.describe_layers(coloured_clips[0])}
    assert layers["pre_logits"]["shape"] == [256]  # test_efficientnet's head width
    assert layers["conv_stem"]["over_time"] == ("mean over frames (1 frame per second, at most 2)")


def test_frame_preprocessing_is_the_image_models_own(tmp_path):
    """For each kind of image adapter, a decoded picture is preprocessed exactly as the
    adapter preprocesses the same picture read from a file."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    scripted.save(str(tmp_path / "net.pt"))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    picture.save(tmp_path / "picture.png")
    stimulus = StimulusInput(path=str(tmp_path / "picture.png"))
    specs = [
        ModelSpec(source="timm", identifier="test_vit", weights="untrained"),
        ModelSpec(source="transformers-vision", identifier=str(tmp_path / "vit")),
        ModelSpec(source="torchscript", identifier=str(tmp_path / "net.pt")),
        ModelSpec(source="baseline", identifier="pixels-8"),
        ModelSpec(source="open_clip-image", identifier="ViT-S-32", weights="untrained"),
    ]
    for spec in specs:
        adapter = load_adapter(spec)
        torch.testing.assert_close(adapter.preprocess_image(picture), adapter.load_input(stimulus))


def test_models_that_cannot_embed_video_are_refused():
    with pytest.raises(ModelSpecError, match="is a text model: it cannot embed video"):
        load_adapter(
            ModelSpec(source="baseline", identifier="tfidf"), frame_sampling=FrameSampling()
        )
    assert "transformers-video" in SOURCES and "video" in MODALITIES


def test_a_clip_that_does_not_decode_fails_the_extraction_with_its_name(coloured_clips, tmp_path):
    broken = videos.corrupt_mp4(tmp_path / "broken.mp4")
    stimuli = [
        *coloured_clips[:3],
        StimulusInput(path=str(broken), meta={"name": "cats/broken.mp4"}),
    ]
    stimuli += coloured_clips[3:]
    adapter = load_adapter(
        ModelSpec(source="baseline", identifier="pixels-8"), frame_sampling=FrameSampling(frames=2)
    )
    out = tmp_path / "e.npy"
    with pytest.raises(StimulusError, match=r"Video 'cats/broken.mp4' is corrupt or truncated"):
        extract_layers(adapter, stimuli, out_paths={"pixels": out}, batch_size=2)
    assert not out.exists() and not list(tmp_path.glob("e.npy.partial*"))


# --- threaded decoding -----------------------------------------------------------------
class SlowVideo(Adapter):
    """A stand-in video model whose clips take random times to decode: row i is [i]."""

    source = "test"
    modality = "video"
    default_layer = "index"
    native_layers = ("index",)

    def __init__(self) -> None:
        super().__init__(ModelSpec(source="test", identifier="slow"), device=torch.device("cpu"))
        self.root = torch.nn.Identity()
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.threads: set[str] = set()
        self.random = np.random.default_rng(0)

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        pass

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict:
        return {"weights_id": "slow", "preprocessing": {}}

    def preprocessing_description(self) -> dict:
        return {}

    def hook_root(self) -> torch.nn.Module:
        return self.root

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        index = int(stimulus.text)
        with self.lock:
            self.started.append(index)
            self.threads.add(threading.current_thread().name)
            pause = float(self.random.uniform(0, 0.004))
        if stimulus.meta.get("bad"):
            raise StimulusError(f"Video {stimulus.name!r} cannot be decoded.")
        time.sleep(pause)
        return torch.tensor([float(index)])

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"index": batch}


def test_threaded_decoding_keeps_the_order(tmp_path):
    adapter = SlowVideo()
    stimuli = [StimulusInput(text=str(i)) for i in range(103)]
    out = tmp_path / "i.npy"
    extract_layers(
        adapter, stimuli, out_paths={"index": out}, batch_size=8, chunk_size=40, num_workers=4
    )
    np.testing.assert_array_equal(np.load(out)[:, 0], np.arange(103))
    assert len({name for name in adapter.threads if name.startswith("likeness-decode")}) > 1


def test_threaded_decoding_stays_a_few_batches_ahead():
    adapter = SlowVideo()
    stimuli = [StimulusInput(text=str(i)) for i in range(100)]
    batches = decoded_ahead(adapter, stimuli, batch_size=5, threads=3, ahead=2)
    seen = 0
    for batch in batches:
        seen += len(batch)
        # While the model runs a batch, the next ones decode (waited for: the machine may
        # be busy) ...
        deadline = time.monotonic() + 5
        while len(adapter.started) < min(seen + 5, 100) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)  # ... and a slow model does not let decoding run off:
        assert min(seen + 5, 100) <= len(adapter.started) <= seen + 2 * 5  # two batches ahead
    assert seen == 100 and sorted(adapter.started) == list(range(100))


def test_threaded_decoding_stops_at_the_first_bad_clip(tmp_path):
    adapter = SlowVideo()
    stimuli = [StimulusInput(text=str(i), meta={"name": f"c{i}.mp4"}) for i in range(200)]
    stimuli[13] = StimulusInput(text="13", meta={"name": "c13.mp4", "bad": "1"})
    with pytest.raises(StimulusError, match="'c13.mp4' cannot be decoded"):
        extract_layers(adapter, stimuli, out_paths={"index": tmp_path / "i.npy"}, batch_size=4)
    time.sleep(0.05)
    assert len(adapter.started) < 60, "queued clips went on decoding after the failure"
    assert not [t for t in threading.enumerate() if t.name.startswith("likeness-")]


def test_other_modalities_still_use_the_dataloader(monkeypatch, tmp_path):
    def no_threads(*args, **kwargs):
        raise AssertionError("images went through the video decoding threads")

    monkeypatch.setattr(extraction, "decoded_ahead", no_threads)
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    adapter = load_adapter(ModelSpec(source="baseline", identifier="pixels-4"))
    extract_layers(
        adapter, [StimulusInput(path=str(path))], out_paths={"pixels": tmp_path / "p.npy"}
    )
    np.testing.assert_allclose(np.load(tmp_path / "p.npy")[0, :3], np.array([1, 2, 3]) / 255)


# --- transformers video models ---------------------------------------------------------
TINY: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
CROP: dict[str, Any] = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}


def save_tiny(kind: str, folder):
    """A tiny randomly initialised ``kind`` model with its processor, as save_pretrained
    writes it."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "videomae":
        videomae = tf.VideoMAEConfig(
            image_size=32, patch_size=8, num_frames=4, tubelet_size=2, **TINY
        )
        tf.VideoMAEModel(videomae).save_pretrained(folder)
        tf.VideoMAEVideoProcessor(**CROP).save_pretrained(folder)
    elif kind == "timesformer":
        timesformer = tf.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, **TINY)
        tf.TimesformerModel(timesformer).save_pretrained(folder)
        tf.TimesformerVideoProcessor(**CROP).save_pretrained(folder)
    elif kind == "vivit":
        vivit = tf.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], **TINY)
        tf.VivitModel(vivit).save_pretrained(folder)
        tf.VivitVideoProcessor(**CROP).save_pretrained(folder)
    else:
        xclip = tf.XCLIPConfig(
            text_config={**TINY, "num_hidden_layers": 1, "vocab_size": 100},
            vision_config={
                "image_size": 32,
                "patch_size": 8,
                "num_frames": 4,
                "mit_hidden_size": 16,  # the multi-frame transformer works in projection_dim
                "mit_num_hidden_layers": 1,
                "mit_num_attention_heads": 2,
                "mit_intermediate_size": 32,
                **TINY,
            },
            projection_dim=16,
            prompt_layers=1,
            prompt_num_attention_heads=2,
        )
        tf.XCLIPModel(xclip).save_pretrained(folder)
        tf.CLIPImageProcessor(**CROP).save_pretrained(folder)  # X-CLIP: frames as images
    return folder


def reference(kind: str, folder, clips: list[StimulusInput]) -> dict[str, np.ndarray]:
    """The clips embedded by hand: the model's own classes, the frames the adapter should
    take (4 spread evenly), the documented pooling."""
    import transformers as tf

    model = tf.AutoModel.from_pretrained(folder).eval()
    rows: dict[str, list[np.ndarray]] = {"last_hidden_state": [], "video_embedding": []}
    for clip in clips:
        frames = sample_frames(clip.path, clip.name, FrameSampling(frames=4))
        with torch.inference_mode():
            if kind == "xclip":
                pixels = tf.CLIPImageProcessor.from_pretrained(folder)(
                    images=frames, return_tensors="pt"
                )
                output = model.get_video_features(pixel_values=pixels["pixel_values"][None])
                rows["last_hidden_state"].append(output.last_hidden_state[:, 0].mean(0).numpy())
                rows["video_embedding"].append(output.pooler_output[0].numpy())
                continue
            processor = tf.AutoVideoProcessor.from_pretrained(folder)
            pixels = processor(videos=[frames], return_tensors="pt")["pixel_values"]
            hidden = model(pixel_values=pixels).last_hidden_state[0]
            rows["last_hidden_state"].append(
                hidden.mean(0).numpy() if kind == "videomae" else hidden[0].numpy()
            )
    return {layer: np.stack(r) for layer, r in rows.items() if r}


@pytest.mark.parametrize(
    ("kind", "hooked", "width"),
    [
        ("videomae", "encoder.layer.0", 32),
        ("videomae", "embeddings.patch_embeddings.projection", 32),  # a 3-D convolution
        ("timesformer", "encoder.layer.1.temporal_attention", 32),  # patches folded in batch
        ("vivit", "layers.0.mlp", 32),
        ("xclip", "vision_model.encoder.layers.0", 32),  # frames folded into the batch
    ],
)
def test_video_models_embed_clips_like_their_own_code(
    kind, hooked, width, coloured_clips, tmp_path
):
    folder = save_tiny(kind, tmp_path / kind)
    spec = ModelSpec(source="transformers-video", identifier=str(folder))
    assert adapter_class(spec.source) is TransformersVideoAdapter
    adapter = load_adapter(spec, frame_sampling=FrameSampling(frames=8))
    assert adapter.modality == "video" and adapter.num_frames == 4
    assert hooked in adapter.layer_names()
    expected = reference(kind, folder, coloured_clips)
    out = {layer: tmp_path / f"{layer}.npy" for layer in [*expected, hooked]}
    extract_layers(adapter, coloured_clips, out_paths=out, batch_size=4)
    for layer, rows in expected.items():
        np.testing.assert_allclose(np.load(out[layer]), rows, rtol=1e-4, atol=1e-5)
    hooked_rows = np.load(out[hooked])
    assert hooked_rows.shape == (len(coloured_clips), width) and np.isfinite(hooked_rows).all()
    # One row per clip whatever the batch: the first clip alone gives the same numbers.
    alone = {layer: tmp_path / f"alone-{layer}.npy" for layer in out}
    extract_layers(adapter, coloured_clips[:1], out_paths=alone, batch_size=1)
    for layer in out:
        np.testing.assert_allclose(
            np.load(alone[layer])[0], np.load(out[layer])[0], rtol=1e-4, atol=1e-5
        )


def test_xclip_lists_only_its_video_path(tmp_path):
    folder = save_tiny("xclip", tmp_path / "xclip")
    adapter = load_adapter(ModelSpec(source="transformers-video", identifier=str(folder)))
    names = adapter.layer_names()
    assert names[:2] == ["last_hidden_state", "video_embedding"]
    assert "mit.encoder.layers.0" in names and "visual_projection" in names
    assert not [name for name in names if name.startswith(("text_model", "prompts_generator"))]


def test_video_model_sampling_by_rate_takes_its_own_frame_count(coloured_clips, tmp_path):
    folder = save_tiny("videomae", tmp_path / "videomae")
    spec = ModelSpec(source="transformers-video", identifier=str(folder))
    adapter = load_adapter(spec, frame_sampling=FrameSampling(fps=4))
    assert adapter.load_input(coloured_clips[0]).shape == (4, 3, 32, 32)
    described = adapter.preprocessing_description()
    assert described["num_frames"] == 4 and described["frame_sampling"] == {"fps": 4.0, "frames": 8}
    assert described["frames"] == "4 frames, 4 per second, around each clip's middle"
    identity = TransformersVideoAdapter.identity(spec)
    assert identity["weights_id"].startswith("sha256:")
    assert identity["preprocessing"]["video_preprocessor_config.json"]["crop_size"] == {
        "height": 32,
        "width": 32,
    }


def test_an_image_model_is_not_a_video_model(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(image_size=32, patch_size=8, **TINY)).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelSpecError, match="is a vit model, not a video model"):
        load_adapter(ModelSpec(source="transformers-video", identifier=str(tmp_path / "vit")))
