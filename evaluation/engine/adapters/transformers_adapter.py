"""Hugging Face transformers models: text (tokenizer + model) and vision (image processor +
model), from a hub id, a local directory written by ``save_pretrained``, or
``package:<name>`` for such a directory shipped in an installed package.

The native layer is ``last_hidden_state``; pooling turns it into one vector per stimulus:
by default a mask-aware mean over tokens for text, the class token for vision transformers
and a global average for convolutional feature maps. Any submodule can be hooked as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from evaluation.engine.adapters.base import (
    Adapter,
    open_rgb,
    require_existing_path,
    resolve_package_path,
    weights_hash,
)
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import ModelSpec, StimulusInput

LAST_HIDDEN_STATE = "last_hidden_state"
PREPROCESSING_FILES = ("tokenizer_config.json", "preprocessor_config.json", "config.json")


class _TransformersAdapter(Adapter):
    default_layer = LAST_HIDDEN_STATE
    native_layers: ClassVar[tuple[str, ...]] = (LAST_HIDDEN_STATE,)

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        from transformers import AutoModel

        self.location = str(_local_path(spec) or spec.identifier)
        try:
            self.model = AutoModel.from_pretrained(self.location, revision=spec.revision or None)
            self._load_preprocessor()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelSpecError(
                f"transformers could not load {spec.identifier!r}: {exc}"
            ) from None
        self.model.eval().to(device)

    def _load_preprocessor(self) -> None:
        raise NotImplementedError

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        if spec.weights == "checkpoint":
            raise ModelSpecError("transformers models load their own weights: use a directory.")
        _local_path(spec)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        cls.validate(spec)
        local = _local_path(spec)
        if local is None:
            return {
                "weights_id": f"hub:{spec.identifier}@{spec.revision or 'main'}",
                "preprocessing": {},
            }
        preprocessing = {
            name: json.loads((local / name).read_text())
            for name in PREPROCESSING_FILES
            if (local / name).exists()
        }
        return {"weights_id": "sha256:" + weights_hash(local), "preprocessing": preprocessing}

    def hook_root(self) -> torch.nn.Module:
        return self.model

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def preprocessing_description(self) -> dict[str, Any]:
        return {"transformers": self.location}


class TransformersTextAdapter(_TransformersAdapter):
    source = "transformers-text"
    modality = "text"

    def _load_preprocessor(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            self.location, revision=self.spec.revision or None
        )

    def load_input(self, stimulus: StimulusInput) -> str:
        if not stimulus.text.strip():
            raise StimulusError(f"Stimulus {stimulus.name!r} has no text to embed.")
        return stimulus.text

    def collate(self, items: Any) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(items), padding=True, truncation=True, return_tensors="pt"))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {key: value.to(self.device) for key, value in batch.items()}
        return {LAST_HIDDEN_STATE: self.model(**inputs).last_hidden_state}

    def pooling_context(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"attention_mask": batch["attention_mask"].to(self.device)}


class TransformersVisionAdapter(_TransformersAdapter):
    source = "transformers-vision"
    modality = "image"

    def _load_preprocessor(self) -> None:
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(
            self.location, revision=self.spec.revision or None
        )

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return self.preprocess_image(open_rgb(stimulus))

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def has_class_token(self) -> bool:
        # ViT-style models prepend a class token; convolutional ones return feature maps.
        return bool(
            getattr(self.model.config, "model_type", "")
            in {"vit", "deit", "beit", "dinov2", "data2vec-vision"}
        )

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {LAST_HIDDEN_STATE: self.model(pixel_values=self.to_device(batch)).last_hidden_state}


def _local_path(spec: ModelSpec) -> Path | None:
    if spec.is_package:  # a package that ships a save_pretrained directory
        return resolve_package_path(spec.identifier)
    if spec.is_local_path:
        return require_existing_path(spec.identifier, "model directory")
    return None
