"""Model adapters: one class per model library, all with the same small interface.

An adapter loads a model once, turns raw stimuli into model inputs with the model's own
preprocessing, and embeds batches of them at a named layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evaluation.engine.adapters.base import Adapter, resolve_device, resolve_precision
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.specs import SOURCES, ModelSpec

if TYPE_CHECKING:  # video decoding (PyAV) is imported only where video is embedded
    from evaluation.engine.video import FrameSampling


def validate_spec(spec: ModelSpec) -> None:
    """Cheap checks (no weights loaded) that a spec can be loaded; raises ModelSpecError."""
    adapter_class(spec.source, spec.identifier).validate(spec)


def load_adapter(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: str = "auto",
    frame_sampling: FrameSampling | None = None,
) -> Adapter:
    """Load the model described by ``spec`` onto ``device``; raises ModelSpecError.

    ``frame_sampling`` is for video stimuli: an image model is returned wrapped in a
    FramesAdapter (each sampled frame embedded, then the mean over frames); a video model
    takes its frames by the sampling's policy and its own frame count; a model that embeds
    descriptions (language) is returned as it is; text and audio models cannot embed video.

    ``precision`` bf16 or fp16 runs the forward pass under autocast; embeddings are stored
    as float32 either way, and precision is part of the embedding fingerprint.
    ``channels_last`` (auto, on, off): auto uses the channels-last memory layout for
    convolutional networks, which oneDNN and cuDNN run faster (resnet50 on this project's
    CPU: 1.4x in fp32, 2.2x in bf16); it changes only rounding, not what is computed.
    """
    if channels_last not in ("auto", "on", "off"):
        raise ModelSpecError(f"channels_last must be auto, on or off, not {channels_last!r}.")
    cls = adapter_class(spec.source, spec.identifier)
    cls.validate(spec)
    resolved = resolve_device(device)
    dtype = resolve_precision(resolved, precision)
    adapter = cls(spec, device=resolved)
    adapter.autocast_dtype = dtype
    if channels_last == "on" or (channels_last == "auto" and adapter.has_convolutions()):
        adapter.use_channels_last()
    if frame_sampling is not None:
        return _for_video(adapter, frame_sampling)
    return adapter


def _for_video(adapter: Adapter, sampling: FrameSampling) -> Adapter:
    from evaluation.engine.adapters.video_adapter import FramesAdapter, TransformersVideoAdapter

    if isinstance(adapter, TransformersVideoAdapter):
        adapter.set_sampling(sampling)
        return adapter
    if adapter.modality == "image":
        return FramesAdapter(adapter, sampling)
    if adapter.modality in ("video", "any"):
        return adapter
    raise ModelSpecError(
        f"{adapter.spec.identifier} is a{'n' if adapter.modality[0] in 'aeiou' else ''} "
        f"{adapter.modality} model: it cannot embed video. Use an image model (applied to "
        "each frame) or a video model."
    )


def adapter_class(source: str, identifier: str = "") -> type[Adapter]:
    if source == "timm":
        from evaluation.engine.adapters.timm_adapter import TimmAdapter

        return TimmAdapter
    if source == "sentence-transformers":
        from evaluation.engine.adapters.sentence_transformers_adapter import (
            SentenceTransformersAdapter,
        )

        return SentenceTransformersAdapter
    if source in ("transformers-text", "transformers-vision"):
        from evaluation.engine.adapters.transformers_adapter import (
            TransformersTextAdapter,
            TransformersVisionAdapter,
        )

        return (
            TransformersTextAdapter if source == "transformers-text" else TransformersVisionAdapter
        )
    if source == "transformers-audio":
        from evaluation.engine.adapters.audio_adapter import TransformersAudioAdapter

        return TransformersAudioAdapter
    if source == "transformers-video":
        from evaluation.engine.adapters.video_adapter import TransformersVideoAdapter

        return TransformersVideoAdapter
    if source in ("open_clip-image", "open_clip-text"):
        from evaluation.engine.adapters.open_clip_adapter import (
            OpenClipImageAdapter,
            OpenClipTextAdapter,
        )

        return OpenClipImageAdapter if source == "open_clip-image" else OpenClipTextAdapter
    if source == "torchscript":
        from evaluation.engine.adapters.torchscript_adapter import TorchScriptImageAdapter

        return TorchScriptImageAdapter
    if source == "baseline":
        from evaluation.engine.adapters.baselines import (
            CHARGRAMS,
            PIXELS,
            CharNgramBaseline,
            PixelsBaseline,
            TfidfBaseline,
            parse_baseline,
        )

        kind, _ = parse_baseline(identifier)
        if kind == CHARGRAMS:
            return CharNgramBaseline
        return PixelsBaseline if kind == PIXELS else TfidfBaseline
    if source == "language":
        from evaluation.engine.adapters.language_adapter import LanguageAdapter

        return LanguageAdapter
    if source == "stacked":
        raise ModelSpecError(
            "A stacked model is made from other models' cached embeddings on a leaderboard "
            "(Stack), not registered or extracted itself."
        )
    raise ModelSpecError(f"Unknown model source {source!r}; known sources: {', '.join(SOURCES)}.")


__all__ = ["Adapter", "adapter_class", "load_adapter", "resolve_device", "validate_spec"]
