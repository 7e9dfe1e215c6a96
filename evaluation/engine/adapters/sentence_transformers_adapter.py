"""sentence-transformers text models: hub id, local directory, or a package that ships one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from evaluation.engine.adapters.base import (
    Adapter,
    require_existing_path,
    resolve_package_path,
    weights_hash,
)
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import ModelSpec, StimulusInput

SENTENCE_EMBEDDING = "sentence_embedding"


class SentenceTransformersAdapter(Adapter):
    source = "sentence-transformers"
    modality = "text"
    default_layer = SENTENCE_EMBEDDING
    native_layers = (SENTENCE_EMBEDDING,)

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        from sentence_transformers import SentenceTransformer

        self.local_path = _local_path(spec)
        try:
            self.model = SentenceTransformer(
                str(self.local_path) if self.local_path else spec.identifier,
                device=str(device),
                revision=spec.revision or None,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelSpecError(
                f"sentence-transformers could not load {spec.identifier!r}: {exc}"
            ) from None
        self.model.eval()

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        if spec.weights != "pretrained":
            raise ModelSpecError(
                "sentence-transformers models are loaded with their own weights; "
                "use weights 'pretrained' (a hub id, a local directory or package:<module>)."
            )
        _local_path(spec)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        cls.validate(spec)
        local_path = _local_path(spec)
        if local_path is None:
            return {
                "weights_id": f"hub:{spec.identifier}@{spec.revision or 'main'}",
                "preprocessing": {},
            }
        config_file = local_path / "sentence_bert_config.json"
        preprocessing = json.loads(config_file.read_text()) if config_file.exists() else {}
        return {"weights_id": "sha256:" + weights_hash(local_path), "preprocessing": preprocessing}

    def preprocessing_description(self) -> dict[str, Any]:
        return {
            "max_seq_length": self.model.max_seq_length,
            "modules": [type(module).__name__ for module in self.model],
        }

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def load_input(self, stimulus: StimulusInput) -> str:
        if not stimulus.text.strip():
            raise StimulusError(f"Stimulus {stimulus.name!r} has no text to embed.")
        return stimulus.text

    def collate(self, items: Any) -> dict[str, Any]:
        # sentence-transformers 5.2+ calls it preprocess; earlier releases, tokenize.
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        return prepare(list(items))

    def hook_root(self) -> torch.nn.Module:
        return self.model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        features = {
            key: value.to(self.device) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
        }
        return {SENTENCE_EMBEDDING: self.model(features)[SENTENCE_EMBEDDING]}

    def pooling_context(self, batch: dict[str, Any]) -> dict[str, Any]:
        # Token layers are averaged over real tokens only, not padding.
        return {"attention_mask": batch["attention_mask"].to(self.device)}


def _local_path(spec: ModelSpec) -> Path | None:
    if spec.is_package:
        return resolve_package_path(spec.identifier)
    if spec.is_local_path:
        return require_existing_path(spec.identifier, "model directory")
    return None
