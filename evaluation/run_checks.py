"""Whether a model can score a dataset's targets at all, said before a run starts: a model of
another modality, a language-based model over descriptions the dataset's stimuli do not
have, or the word TF-IDF baseline on stimuli that are single words (two different words share
no word, so every pair would score 0 and nothing could be ranked)."""

from __future__ import annotations

from evaluation.models import Dataset, Description, Modality, ModelSource, PretrainedModel

LANGUAGE_SEPARATOR = " | "  # evaluation.engine.adapters.language_adapter.SEPARATOR


def cannot_score(model: PretrainedModel, dataset: Dataset) -> str:
    """Why ``model`` cannot score ``dataset``'s targets; blank where it can."""
    if model.modality not in dataset.model_modalities:
        return (
            f"{model.display_name} embeds {model.get_modality_display().lower()}; "
            f"{dataset.name} holds {dataset.get_modality_display().lower()} stimuli, so it "
            "cannot score this dataset's targets."
        )
    if model.source == ModelSource.LANGUAGE:
        return _descriptions_problem(model, dataset)
    if model.source == ModelSource.BASELINE and model.identifier.split("-")[0] == "tfidf":
        if dataset.modality == Modality.TEXT and single_words(dataset):
            return (
                f"{model.display_name} compares texts by the words they share; every stimulus "
                f"of {dataset.name} is a single word, so every pair of different words scores "
                "0 and it cannot rank them. Register the character n-gram baseline "
                "(identifier chargrams, source baseline) for single words instead."
            )
    return ""


def single_words(dataset: Dataset) -> bool:
    """No stimulus text holds two words (whitespace between two non-space characters)."""
    return not dataset.stimuli.filter(text__regex=r"\S\s+\S").exists()


def _descriptions_problem(model: PretrainedModel, dataset: Dataset) -> str:
    origin = model.identifier.rpartition(LANGUAGE_SEPARATOR)[0].strip()
    if Description.objects.filter(stimulus__dataset=dataset, origin=origin).exists():
        return ""
    sets = list(
        Description.objects.filter(stimulus__dataset=dataset)
        .values_list("origin", flat=True)
        .distinct()
        .order_by("origin")[:5]
    )
    has = f"it has {', '.join(repr(s) for s in sets)}" if sets else "it has no descriptions"
    return (
        f"{model.display_name} is made from the descriptions in {origin!r}, and no stimulus "
        f"of {dataset.name} has one there ({has}), so it cannot score this dataset."
    )
