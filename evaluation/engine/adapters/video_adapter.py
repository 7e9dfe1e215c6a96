"""Video models: any image model applied to sampled frames and averaged over them
(FramesAdapter), and transformers video models that take a clip whole
(TransformersVideoAdapter: VideoMAE, TimeSformer, ViViT, X-CLIP's vision tower).

Clips are decoded with PyAV (evaluation.engine.video); which frames a model sees is a
FrameSampling, recorded with the embeddings. A clip that cannot be decoded is a
StimulusError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from evaluation.engine.adapters.base import Adapter, first_tensor
from evaluation.engine.adapters.transformers_adapter import (
    LAST_HIDDEN_STATE,
    _local_path,
    _TransformersAdapter,
)
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.video import FrameSampling, VideoProblem, sample_frames

MEAN_OVER_FRAMES = "mean over frames"
VIDEO_EMBEDDING = "video_embedding"  # X-CLIP's clip embedding (its multi-frame integration)
VIDEO_MODEL_TYPES = ("videomae", "timesformer", "vivit", "xclip")
VIDEO_PREPROCESSING_FILES = ("video_preprocessor_config.json",)
# Model types whose token sequences start with a class token (VideoMAE has none: it is
# read by a mean over tokens).
_CLASS_TOKEN_TYPES = frozenset({"timesformer", "vivit", "xclip"})


def read_frames(
    stimulus: StimulusInput, sampling: FrameSampling, **options: Any
) -> list[Image.Image]:
    """The sampled frames of a clip, or a StimulusError naming it."""
    try:
        return sample_frames(stimulus.path, stimulus.name, sampling, **options)
    except VideoProblem as exc:
        raise StimulusError(str(exc)) from None


class FramesAdapter(Adapter):
    """An image model on video: each sampled frame goes through the image model with the
    model's own preprocessing, every layer of it is pooled per frame as the image model
    pools it, and a clip's embedding is the mean over its frames.

    Its layers are the image model's, under the same names; B clips of T frames run as one
    batch of B x T images."""

    source = "frames"
    modality = "video"
    default_layer = ""  # the image model's, set per instance

    def __init__(self, inner: Adapter, sampling: FrameSampling) -> None:
        if inner.modality != "image":
            raise ModelSpecError(
                f"{inner.spec.identifier} embeds {inner.modality}, not images: only an image "
                "model can be applied to the frames of a video."
            )
        super().__init__(inner.spec, device=inner.device)
        self.inner = inner
        self.sampling = sampling
        # The image model's layer names, so layers, defaults and cached sets line up.
        self.default_layer = inner.default_layer  # type: ignore[misc]
        self.native_layers = inner.native_layers  # type: ignore[misc]

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        raise ModelSpecError("Frames of a video are embedded by an image model: register that.")

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        raise ModelSpecError("Frames of a video are embedded by an image model: register that.")

    def hook_root(self) -> torch.nn.Module:
        return self.inner.hook_root()

    def layer_names(self) -> list[str]:
        return self.inner.layer_names()

    def parameter_count(self) -> int:
        return self.inner.parameter_count()

    def preprocessing_description(self) -> dict[str, Any]:
        return {
            **self.inner.preprocessing_description(),
            "frame_sampling": self.sampling.describe(),
            "frames": self.sampling.label(),
            "decoding": "PyAV (FFmpeg), frames upright and converted to RGB",
            "pooling_over_time": MEAN_OVER_FRAMES,
        }

    def describe_layers(self, sample: StimulusInput) -> list[dict[str, Any]]:
        """The image model's layers with their shapes for one frame; each is averaged over
        the sampled frames."""
        over = f"{MEAN_OVER_FRAMES} ({self.sampling.label()})"
        return [{**layer, "over_time": over} for layer in super().describe_layers(sample)]

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return torch.stack(
            [self.inner.preprocess_image(frame) for frame in read_frames(stimulus, self.sampling)]
        )

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        clips, frames = batch.shape[:2]
        native = self.inner.forward(batch.flatten(0, 1))
        return {
            name: output.reshape(clips, frames, *output.shape[1:]).mean(dim=1)
            for name, output in native.items()
        }

    def embed(
        self, batch: torch.Tensor, *, layers: Sequence[str], pooling: str = "model-default"
    ) -> dict[str, np.ndarray]:
        clips, frames = batch.shape[:2]
        per_frame = self.inner.embed(batch.flatten(0, 1), layers=layers, pooling=pooling)
        return {
            layer: vectors.reshape(clips, frames, -1)
            .mean(axis=1, dtype=np.float64)
            .astype(np.float32)
            for layer, vectors in per_frame.items()
        }


class TransformersVideoAdapter(_TransformersAdapter):
    """A transformers video model (VideoMAE, TimeSformer, ViViT, or X-CLIP's vision tower)
    with its own processor, from a hub id, a ``save_pretrained`` directory or a package.

    It sees as many frames as it was built for (``num_frames`` in its config), chosen by
    the sampling's policy (spread evenly, or 1/fps apart around the clip's middle). The
    native layer is ``last_hidden_state``, pooled as ``model-default``: the class token
    for TimeSformer, ViViT and X-CLIP (X-CLIP's per frame, then averaged over frames), the
    mean over tokens for VideoMAE; X-CLIP adds ``video_embedding``, its own clip
    embedding. Any module that runs can be hooked; outputs whose batch axis holds frames
    or patches (B x T, B x P) are pooled per item and averaged back to one row per clip."""

    source = "transformers-video"
    modality = "video"

    def __init__(
        self, spec: ModelSpec, *, device: torch.device, sampling: FrameSampling | None = None
    ) -> None:
        self.sampling = sampling or FrameSampling()
        super().__init__(spec, device=device)
        if self.is_xclip:
            self.native_layers = (LAST_HIDDEN_STATE, VIDEO_EMBEDDING)  # type: ignore[misc]

    def _load_preprocessor(self) -> None:
        from transformers import AutoImageProcessor, AutoVideoProcessor

        # Called once the model is loaded: check it is a video model before its processor.
        self.model_type = str(getattr(self.model.config, "model_type", ""))
        if self.model_type not in VIDEO_MODEL_TYPES:
            raise ModelSpecError(
                f"{self.spec.identifier!r} is a {self.model_type or 'transformers'} model, not "
                f"a video model this adapter knows ({', '.join(VIDEO_MODEL_TYPES)})."
            )
        self.is_xclip = self.model_type == "xclip"
        config = self.model.config.vision_config if self.is_xclip else self.model.config
        self.num_frames = int(config.num_frames)
        revision = self.spec.revision or None
        try:
            self.processor = AutoVideoProcessor.from_pretrained(self.location, revision=revision)
            self.takes_videos = True
        except (OSError, ValueError, KeyError):
            # X-CLIP checkpoints ship an image processor, applied to each frame.
            self.processor = AutoImageProcessor.from_pretrained(self.location, revision=revision)
            self.takes_videos = False

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        identity = super().identity(spec)
        local = _local_path(spec)
        if local is not None:
            for name in VIDEO_PREPROCESSING_FILES:
                if (local / name).exists():
                    identity["preprocessing"][name] = json.loads((local / name).read_text())
        return identity

    def set_sampling(self, sampling: FrameSampling) -> None:
        """Which frames to take (the count stays the model's)."""
        self.sampling = sampling

    def layer_names(self) -> list[str]:
        if not self.is_xclip:
            return super().layer_names()
        # One X-CLIP module holds text and vision: only the video path runs on clips.
        video = ("vision_model", "visual_projection", "mit")
        modules = [
            name for name, _ in self.model.named_modules() if name and name.split(".")[0] in video
        ]
        return [*self.native_layers, *modules]

    def preprocessing_description(self) -> dict[str, Any]:
        settings = self.processor.to_dict()
        return {
            "transformers": self.location,
            "processor": type(self.processor).__name__,
            "num_frames": self.num_frames,
            "frame_sampling": self.sampling.describe(),
            "frames": (
                f"{self.num_frames} frames spread evenly over each clip"
                if self.sampling.fps is None
                else f"{self.num_frames} frames, {self.sampling.fps:g} per second, around "
                "each clip's middle"
            ),
            "decoding": "PyAV (FFmpeg), frames upright and converted to RGB",
            "processor_settings": {
                key: settings.get(key)
                for key in ("size", "crop_size", "image_mean", "image_std", "resample")
                if key in settings
            },
        }

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        frames = read_frames(stimulus, self.sampling, clip_frames=self.num_frames)
        if self.takes_videos:
            pixels = self.processor(videos=[frames], return_tensors="pt")["pixel_values"]
        else:
            pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"]
        return pixels[0] if pixels.dim() == 5 else pixels  # (T, C, H, W)

    def has_class_token(self) -> bool:
        return self.model_type in _CLASS_TOKEN_TYPES

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = self.to_device(batch)
        if self.is_xclip:
            output = self.model.get_video_features(pixel_values=pixels)
            return {
                LAST_HIDDEN_STATE: output.last_hidden_state,
                VIDEO_EMBEDDING: output.pooler_output,
            }
        return {LAST_HIDDEN_STATE: self.model(pixel_values=pixels).last_hidden_state}

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True)

    def pooling_context(self, batch: torch.Tensor) -> dict[str, Any]:
        return {"clips": batch.shape[0]}

    def pool(self, layer: str, output: Any, pooling: str, context: dict[str, Any]) -> torch.Tensor:
        tensor = first_tensor(output)
        if tensor is not None and tensor.dim() == 5 and pooling in ("model-default", "gap"):
            pooled = tensor.mean(dim=(2, 3, 4))  # a 3-D convolution's (B, C, T, H, W)
        else:
            pooled = super().pool(layer, output, pooling, context)
        clips = context["clips"]
        if pooled.shape[0] != clips and pooled.shape[0] % clips == 0:
            # Frames or patches folded into the batch axis, clip by clip (B x T, ...).
            if pooling == "flatten":
                return pooled.reshape(clips, -1)
            return pooled.reshape(clips, -1, pooled.shape[-1]).mean(dim=1)
        return pooled
