"""Image models saved as TorchScript files (``torch.jit.save``), e.g. a lab's own network.

A TorchScript file carries no preprocessing, so it is read from a JSON file beside it
(``model.pt.json``) with timm's data-config keys (``input_size``, ``interpolation``,
``mean``, ``std``, ``crop_pct``); without one, ImageNet's defaults apply and are recorded
with every embedding. torch refuses forward hooks on ScriptModules, so only the model's own
output (``output``) can be extracted from a TorchScript file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm.data
import torch
from PIL import Image

from evaluation.engine.adapters.base import Adapter, open_rgb, require_existing_path, weights_hash
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.specs import ModelSpec, StimulusInput

OUTPUT = "output"
PREPROCESSING_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
IMAGENET_DEFAULTS: dict[str, Any] = {
    "input_size": [3, 224, 224],
    "interpolation": "bicubic",
    "mean": list(timm.data.IMAGENET_DEFAULT_MEAN),
    "std": list(timm.data.IMAGENET_DEFAULT_STD),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


class TorchScriptImageAdapter(Adapter):
    source = "torchscript"
    modality = "image"
    default_layer = OUTPUT
    native_layers = (OUTPUT,)

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        self.data_config = preprocessing_config(Path(spec.identifier))
        try:
            self.model = torch.jit.load(spec.identifier, map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ModelSpecError(
                f"{spec.identifier!r} is not a loadable TorchScript file: {exc}"
            ) from None
        self.transform = timm.data.create_transform(**self.data_config, is_training=False)
        # An empty module: hooks cannot be registered on a ScriptModule.
        self._no_hooks = torch.nn.Module()

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        if spec.weights != "pretrained":
            raise ModelSpecError(
                "A TorchScript file holds its own weights: use weights 'pretrained' and the "
                "file's path as the identifier."
            )
        path = require_existing_path(spec.identifier, "TorchScript file")
        if not path.is_file():
            raise ModelSpecError(f"{spec.identifier!r} is a directory, not a TorchScript file.")
        preprocessing_config(path)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        cls.validate(spec)
        path = Path(spec.identifier)
        return {
            "weights_id": "sha256:" + weights_hash(path),
            "preprocessing": preprocessing_config(path),
        }

    def preprocessing_description(self) -> dict[str, Any]:
        return {"data_config": self.data_config}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def hook_root(self) -> torch.nn.Module:
        return self._no_hooks

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return self.preprocess_image(open_rgb(stimulus))

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT: self.model(batch.to(self.device, non_blocking=True))}


def preprocessing_config(model_path: Path) -> dict[str, Any]:
    """The preprocessing in ``<file>.json`` beside the model, over ImageNet's defaults."""
    sidecar = model_path.with_name(model_path.name + ".json")
    if not sidecar.exists():
        return dict(IMAGENET_DEFAULTS)
    try:
        given = json.loads(sidecar.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"{sidecar.name} is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ModelSpecError(f"{sidecar.name} must hold a JSON object of preprocessing keys.")
    unknown = sorted(set(given) - set(PREPROCESSING_KEYS))
    if unknown:
        raise ModelSpecError(
            f"{sidecar.name} has unknown keys {', '.join(unknown)}; "
            f"known: {', '.join(PREPROCESSING_KEYS)}."
        )
    return {**IMAGENET_DEFAULTS, **given}
