"""open_clip models: the image tower and the text tower, each registered as its own model.

Identifiers: ``ARCH/TAG`` for published weights (e.g. ``ViT-B-32/laion2b_s34b_b79k``, see
``open_clip.list_pretrained()``), ``hf-hub:org/repo`` for a hub repository, or ``ARCH`` with
weights ``untrained`` (seeded) or ``checkpoint`` (a local state-dict file).

The native layers are the towers' own projected embeddings (``image_embedding``,
``text_embedding``); every submodule of the tower can be hooked as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from evaluation.engine.adapters.base import Adapter, open_rgb, require_existing_path, weights_hash
from evaluation.engine.errors import ModelSpecError, StimulusError, close_names
from evaluation.engine.specs import ModelSpec, StimulusInput

IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
HF_HUB_PREFIX = "hf-hub:"


def parse_identifier(identifier: str) -> tuple[str, str]:
    """``ARCH/TAG`` -> (ARCH, TAG); ``hf-hub:...`` and a bare ``ARCH`` have no tag."""
    if identifier.startswith(HF_HUB_PREFIX):
        return identifier, ""
    arch, _, tag = identifier.partition("/")
    return arch, tag


class _OpenClipAdapter(Adapter):
    tower_prefix: ClassVar[str]  # module-name prefix of this tower inside the CLIP model

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        import open_clip

        self.arch, _ = parse_identifier(spec.identifier)
        self.model: Any
        self.model, self.transform = _create_model(spec)
        self.model.eval().to(device)
        self.tokenizer = open_clip.get_tokenizer(self.arch)

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        import open_clip

        arch, tag = parse_identifier(spec.identifier)
        if arch.startswith(HF_HUB_PREFIX):
            if spec.weights != "pretrained":
                raise ModelSpecError("An hf-hub: open_clip model brings its own weights.")
            return
        known = open_clip.list_models()
        if arch not in known:
            raise ModelSpecError(
                f"open_clip has no architecture called {arch!r}.{close_names(arch, known)}"
            )
        if spec.weights == "pretrained":
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if not tag:
                raise ModelSpecError(
                    f"Name the pretrained weights as {arch}/TAG; {arch} has: {', '.join(tags)}."
                )
            if tag not in tags:
                raise ModelSpecError(
                    f"open_clip has no weights {tag!r} for {arch}.{close_names(tag, tags)}"
                )
        elif tag:
            raise ModelSpecError(f"{spec.weights} weights take the bare architecture ({arch}).")
        if spec.weights == "checkpoint":
            if not spec.checkpoint_path:
                raise ModelSpecError("Weights 'checkpoint' need a checkpoint file path.")
            require_existing_path(spec.checkpoint_path, "checkpoint file")

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        import open_clip

        cls.validate(spec)
        arch, tag = parse_identifier(spec.identifier)
        if spec.weights == "untrained":
            weights_id = f"untrained:seed={spec.seed}:open_clip={open_clip.__version__}"
        elif spec.weights == "checkpoint":
            weights_id = "sha256:" + weights_hash(Path(spec.checkpoint_path))
        else:
            weights_id = f"open_clip:{arch}/{tag}" if tag else arch
        config = open_clip.get_model_config(arch) if not arch.startswith(HF_HUB_PREFIX) else None
        return {"weights_id": weights_id, "preprocessing": {"model_config": config or {}}}

    def hook_root(self) -> torch.nn.Module:
        return self.model

    def layer_names(self) -> list[str]:
        # One CLIP module holds both towers; only this tower's modules run on its inputs.
        tower = [name for name, _ in self.model.named_modules() if name and self._in_tower(name)]
        return [*self.native_layers, *tower]

    def _in_tower(self, name: str) -> bool:
        return name.startswith(self.tower_prefix)

    def parameter_count(self) -> int:
        return sum(p.numel() for name, p in self.model.named_parameters() if self._in_tower(name))


class OpenClipImageAdapter(_OpenClipAdapter):
    source = "open_clip-image"
    modality = "image"
    default_layer = IMAGE_EMBEDDING
    native_layers = (IMAGE_EMBEDDING,)
    tower_prefix = "visual"

    def preprocessing_description(self) -> dict[str, Any]:
        return {"open_clip_transform": repr(self.transform)}

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return self.preprocess_image(open_rgb(stimulus))

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def has_class_token(self) -> bool:
        return hasattr(self.model.visual, "class_embedding")

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {IMAGE_EMBEDDING: self.model.encode_image(self.to_device(batch))}


class OpenClipTextAdapter(_OpenClipAdapter):
    source = "open_clip-text"
    modality = "text"
    default_layer = TEXT_EMBEDDING
    native_layers = (TEXT_EMBEDDING,)
    tower_prefix = ""  # the text tower's modules sit at the top level of CLIP

    def _in_tower(self, name: str) -> bool:
        return not name.startswith("visual")

    def preprocessing_description(self) -> dict[str, Any]:
        return {
            "open_clip_tokenizer": type(self.tokenizer).__name__,
            "context_length": getattr(self.tokenizer, "context_length", None),
        }

    def load_input(self, stimulus: StimulusInput) -> str:
        if not stimulus.text.strip():
            raise StimulusError(f"Stimulus {stimulus.name!r} has no text to embed.")
        return stimulus.text

    def collate(self, items: Any) -> torch.Tensor:
        return self.tokenizer(list(items))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {TEXT_EMBEDDING: self.model.encode_text(batch.to(self.device))}

    def pooling_context(self, batch: torch.Tensor) -> dict[str, Any]:
        # Hooked token sequences are averaged over real tokens only, not the padding.
        return {"attention_mask": (batch != _pad_id(self.tokenizer)).to(self.device)}


def _pad_id(tokenizer: Any) -> int:
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's wrapper around HF tokenizers
    pad = getattr(inner, "pad_token_id", None)
    return int(pad) if pad is not None else 0  # open_clip's own BPE tokenizer pads with 0


def _create_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any]:
    import open_clip

    arch, tag = parse_identifier(spec.identifier)
    try:
        if spec.weights == "untrained":
            # Seeded so that an untrained baseline is the same network on every worker.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=None)
        else:
            weights = spec.checkpoint_path if spec.weights == "checkpoint" else (tag or None)
            model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=weights)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ModelSpecError(
            f"open_clip could not load {spec.identifier!r} ({spec.weights} weights): {exc}"
        ) from None
    return model, transform
