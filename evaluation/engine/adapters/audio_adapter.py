"""Hugging Face transformers audio models that read raw waveforms (wav2vec2, HuBERT, WavLM,
data2vec-audio): a feature extractor + AutoModel, from a hub id or a local directory
written by ``save_pretrained``.

Stimuli are audio files decoded with soundfile, mixed to mono and resampled to the feature
extractor's rate. The native layer is ``last_hidden_state``, one vector per ~20 ms frame;
by default it is averaged over the frames of each clip's true length, so a clip's embedding
does not depend on the longer clips it happens to be batched with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from evaluation.engine.adapters.base import first_tensor, masked_mean
from evaluation.engine.adapters.transformers_adapter import LAST_HIDDEN_STATE, _TransformersAdapter
from evaluation.engine.audio import load_waveform
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import StimulusInput

# The convolutional front end; its layers' outputs have their own, longer time axes.
CONV_LAYER = re.compile(r"^feature_extractor(?:\.conv_layers\.(\d+))?(?:\.|$)")


class TransformersAudioAdapter(_TransformersAdapter):
    source = "transformers-audio"
    modality = "audio"

    def _load_preprocessor(self) -> None:
        from transformers import AutoFeatureExtractor

        self.feature_extractor = AutoFeatureExtractor.from_pretrained(
            self.location, revision=self.spec.revision or None
        )
        # Spectrogram models (Whisper, AST) take other inputs and often need a decoder.
        if "input_values" not in getattr(self.feature_extractor, "model_input_names", ()):
            raise ModelSpecError(
                f"{self.spec.identifier!r} does not take raw waveforms (input_values); only "
                "wav2vec2-style models (wav2vec2, HuBERT, WavLM, data2vec-audio) are supported."
            )
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        # Checkpoints whose extractor returns no mask (e.g. wav2vec2-base, with group norm
        # over time in its first conv layer) were trained without one and must not get one.
        self.takes_mask = bool(getattr(self.feature_extractor, "return_attention_mask", False))
        self.min_samples = self._min_samples()

    def _frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """How many output frames the model makes from clips of ``sample_lengths`` samples."""
        return self.model._get_feat_extract_output_lengths(sample_lengths).to(torch.long)

    def _min_samples(self) -> int:
        # The conv front end needs a full receptive field (400 samples for wav2vec2) per frame.
        lengths = torch.arange(1, 10 * self.sampling_rate)
        frames = self._frame_lengths(lengths)
        return int(lengths[frames >= 1][0])

    def load_input(self, stimulus: StimulusInput) -> np.ndarray:
        wave = load_waveform(stimulus.path, self.sampling_rate, name=stimulus.name)
        if len(wave) < self.min_samples:
            raise StimulusError(
                f"Audio {stimulus.name!r} is too short: {1000 * len(wave) / self.sampling_rate:.1f}"
                f" ms, and this model needs at least "
                f"{1000 * self.min_samples / self.sampling_rate:.1f} ms."
            )
        return wave

    def collate(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        waves = list(items)
        # Always ask for the mask: with it the extractor normalizes each clip over its own
        # samples only and pads with padding_value; without it the padding would shift every
        # clip's mean and variance. Whether the model gets the mask is decided in forward.
        features = self.feature_extractor(
            waves,
            sampling_rate=self.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_values": features["input_values"],
            "attention_mask": features["attention_mask"],
            "lengths": torch.tensor([len(wave) for wave in waves]),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {"input_values": batch["input_values"].to(self.device)}
        if self.takes_mask:
            inputs["attention_mask"] = batch["attention_mask"].to(self.device)
        return {LAST_HIDDEN_STATE: self.model(**inputs).last_hidden_state}

    def pooling_context(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        # The sample-level mask does not fit the hidden states: build one over frames, true
        # for the frames computed from each clip's own samples.
        padded = self._frame_lengths(torch.tensor(batch["input_values"].shape[1]))
        frames = self._frame_lengths(batch["lengths"])
        mask = torch.arange(int(padded))[None, :] < frames[:, None]
        return {
            "attention_mask": mask.to(self.device),
            "sample_lengths": batch["lengths"].to(self.device),
            "padded_samples": torch.tensor(batch["input_values"].shape[1], device=self.device),
        }

    def pool(self, layer: str, output: Any, pooling: str, context: dict[str, Any]) -> torch.Tensor:
        match = CONV_LAYER.match(layer)
        if match is None or pooling == "flatten":
            return super().pool(layer, output, pooling, context)
        # After conv stage i a clip has fewer samples than the padded batch: average over
        # the time steps made from its own samples, on whichever axis is time here
        # ((batch, channels, time) for convolutions, (batch, time, channels) inside norms).
        kernels, strides = self.model.config.conv_kernel, self.model.config.conv_stride
        stage = int(match.group(1)) if match.group(1) is not None else len(kernels) - 1
        padded = _conv_lengths(context["padded_samples"], kernels, strides, stage)
        lengths = _conv_lengths(context["sample_lengths"], kernels, strides, stage)
        mask = torch.arange(int(padded), device=self.device)[None, :] < lengths[:, None]
        tensor = first_tensor(output)
        if tensor is None or tensor.dim() != 3:
            raise ModelSpecError(f"Layer {layer!r} has no time axis to pool over.")
        time_axis = 2 if tensor.shape[2] == padded else 1
        if tensor.shape[time_axis] != padded:
            raise ModelSpecError(f"Layer {layer!r} has no time axis to pool over.")
        return masked_mean(tensor, mask, dim=time_axis)

    def embed(
        self,
        batch: dict[str, torch.Tensor],
        *,
        layers: Sequence[str],
        pooling: str = "model-default",
    ) -> dict[str, np.ndarray]:
        if self.takes_mask:
            return super().embed(batch, layers=layers, pooling=pooling)
        # A model without a mask sees the padding (group norm over time, attention to padded
        # frames), so a clip's embedding would depend on its batch-mates. Embed each set of
        # equal-length clips on its own, unpadded; fixed-length datasets stay one batch.
        lengths = batch["lengths"]
        parts, order = [], []
        for length in lengths.unique().tolist():
            index = torch.nonzero(lengths == length).flatten()
            group = {
                "input_values": batch["input_values"][index, :length],
                "attention_mask": batch["attention_mask"][index, :length],
                "lengths": lengths[index],
            }
            parts.append(super().embed(group, layers=layers, pooling=pooling))
            order.append(index)
        inverse = torch.argsort(torch.cat(order)).numpy()
        return {layer: np.concatenate([part[layer] for part in parts])[inverse] for layer in layers}

    def preprocessing_description(self) -> dict[str, Any]:
        settings = self.feature_extractor.to_dict()
        return {
            "transformers": self.location,
            "sampling_rate": self.sampling_rate,
            "decoding": "soundfile, channels averaged to mono, scipy resample_poly to the rate",
            "model_gets_attention_mask": self.takes_mask,
            "feature_extractor": {
                key: settings.get(key)
                for key in (
                    "feature_extractor_type",
                    "do_normalize",
                    "padding_value",
                    "padding_side",
                    "return_attention_mask",
                    "feature_size",
                )
            },
        }


def _conv_lengths(
    samples: torch.Tensor, kernels: Sequence[int], strides: Sequence[int], stage: int
) -> torch.Tensor:
    """Time steps left after conv stages 0..``stage`` (no padding: floor((n - k) / s) + 1)."""
    lengths = samples.to(torch.long)
    for kernel, stride in zip(kernels[: stage + 1], strides[: stage + 1], strict=True):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths
