"""Baselines registered like models: raw pixels for images, TF-IDF for texts.

Every comparison needs a floor: a model that does no better than pixels or word counts has
learned nothing the task needs. Identifiers: ``pixels`` or ``pixels-<size>`` (resized to
size x size RGB, default 32, flattened, scaled to [0, 1]); ``tfidf`` or ``tfidf-<features>``
(scikit-learn TfidfVectorizer fitted on the dataset's own texts, at most that many terms,
default 4096; l2-normalised rows); ``chargrams`` or ``chargrams-<features>``: TF-IDF over
character 2- to 4-grams within word boundaries (``analyzer="char_wb"``), which tells single
words apart by their spelling where word counts cannot (two different words share no word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import sklearn
import torch
from PIL import Image

from evaluation.engine.adapters.base import Adapter, open_rgb
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.specs import ModelSpec, StimulusInput

PIXELS = "pixels"
TFIDF = "tfidf"
CHARGRAMS = "chargrams"
TEXT_BASELINES = (TFIDF, CHARGRAMS)
CHARGRAM_RANGE = (2, 4)
_PATTERN = re.compile(r"^(pixels|tfidf|chargrams)(?:-(\d+))?$")


def parse_baseline(identifier: str) -> tuple[str, int]:
    match = _PATTERN.match(identifier)
    if not match:
        raise ModelSpecError(
            f"Unknown baseline {identifier!r}: use pixels, pixels-<size>, tfidf, tfidf-<terms>, "
            "chargrams or chargrams-<terms>."
        )
    kind, number = match.group(1), match.group(2)
    default = 32 if kind == PIXELS else 4096
    size = int(number) if number else default
    if not 1 <= size <= (512 if kind == PIXELS else 1_000_000):
        raise ModelSpecError(f"Baseline {identifier!r}: {size} is out of range.")
    return kind, size


class _Baseline(Adapter):
    source = "baseline"
    native_layers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        super().__init__(spec, device=device)
        self.kind, self.size = parse_baseline(spec.identifier)
        self.root = torch.nn.Identity()  # nothing to hook: a baseline has one "layer"

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        kind, _ = parse_baseline(spec.identifier)
        if (cls.modality == "image" and kind != PIXELS) or (
            cls.modality == "text" and kind not in TEXT_BASELINES
        ):
            raise ModelSpecError(f"{spec.identifier!r} is not a {cls.modality} baseline.")

    def hook_root(self) -> torch.nn.Module:
        return self.root

    def layer_names(self) -> list[str]:
        return [self.default_layer]

    def preprocessing_description(self) -> dict[str, Any]:
        return {"baseline": self.spec.identifier}


class PixelsBaseline(_Baseline):
    modality = "image"
    default_layer = "pixels"
    native_layers = ("pixels",)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        _, size = parse_baseline(spec.identifier)
        return {
            "weights_id": "baseline:pixels",
            "preprocessing": {"size": size, "mode": "RGB", "resample": "bilinear"},
        }

    def load_input(self, stimulus: StimulusInput) -> torch.Tensor:
        return self.preprocess_image(open_rgb(stimulus))

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        resized = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).flatten()

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixels": batch}


class TfidfBaseline(_Baseline):
    """Needs the whole corpus first: ``prepare`` fits the vocabulary on the dataset's texts."""

    modality = "text"
    default_layer = "tfidf"
    native_layers = ("tfidf",)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        _, terms = parse_baseline(spec.identifier)
        # Fitted on the dataset itself, whose hash is in the fingerprint already.
        return {
            "weights_id": f"baseline:tfidf:sklearn={sklearn.__version__}",
            "preprocessing": {"max_features": terms, "sublinear_tf": True, "norm": "l2"},
        }

    def prepare(self, stimuli: Sequence[StimulusInput]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(max_features=self.size, sublinear_tf=True, norm="l2")
        try:
            self.vectorizer.fit([s.text for s in stimuli])
        except ValueError as exc:  # e.g. every text is a stop word or punctuation
            raise StimulusError(f"TF-IDF cannot be fitted on these texts: {exc}") from None

    def load_input(self, stimulus: StimulusInput) -> str:
        return stimulus.text

    def collate(self, items: Any) -> list[str]:
        return list(items)

    def forward(self, batch: list[str]) -> dict[str, torch.Tensor]:
        matrix = self.vectorizer.transform(batch).toarray().astype(np.float32)
        return {"tfidf": torch.from_numpy(matrix)}


class CharNgramBaseline(TfidfBaseline):
    """TF-IDF over character n-grams (2-4, within word boundaries), fitted on the dataset's
    texts: single words get vectors from their spelling ("cat" and "cats" share most)."""

    default_layer = "chargrams"
    native_layers = ("chargrams",)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        _, terms = parse_baseline(spec.identifier)
        return {
            "weights_id": f"baseline:chargrams:sklearn={sklearn.__version__}",
            "preprocessing": {
                "analyzer": "char_wb",
                "ngram_range": list(CHARGRAM_RANGE),
                "max_features": terms,
                "sublinear_tf": True,
                "norm": "l2",
            },
        }

    def prepare(self, stimuli: Sequence[StimulusInput]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=CHARGRAM_RANGE,
            max_features=self.size,
            sublinear_tf=True,
            norm="l2",
        )
        try:
            self.vectorizer.fit([s.text for s in stimuli])
        except ValueError as exc:  # every text empty
            raise StimulusError(
                f"Character n-grams cannot be fitted on these texts: {exc}"
            ) from None

    def forward(self, batch: list[str]) -> dict[str, torch.Tensor]:
        matrix = self.vectorizer.transform(batch).toarray().astype(np.float32)
        return {"chargrams": torch.from_numpy(matrix)}
