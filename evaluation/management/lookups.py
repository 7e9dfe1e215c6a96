"""The base of the evaluation app's commands: the engine's errors are the user's to fix
(an unknown model, a corrupt stimulus, a full disk), and models, datasets and users are
found from what a researcher types (an id or a name)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from django.core.management.base import CommandError
from django.db.models import QuerySet

from core.cli import LikenessCommand
from evaluation.engine.errors import EngineError, close_names
from evaluation.models import Dataset, PretrainedModel


class EvaluationCommand(LikenessCommand):
    user_errors = (EngineError,)


def model_lookup(reference: str) -> PretrainedModel:
    """A model by id, name or (when only one model has it) identifier."""
    reference = reference.strip()
    if reference.isdigit():
        found = PretrainedModel.objects.filter(pk=int(reference)).first()
        if found is not None:
            return found
    found = PretrainedModel.objects.filter(name=reference).first()
    if found is not None:
        return found
    by_identifier = list(PretrainedModel.objects.filter(identifier=reference)[:6])
    if len(by_identifier) == 1:
        return by_identifier[0]
    if by_identifier:
        names = ", ".join(f"{m.name} (id {m.pk})" for m in by_identifier)
        raise CommandError(
            f"{reference!r} is the identifier of several models ({names}); give a name or id."
        )
    known = PretrainedModel.objects.values_list("name", flat=True)
    raise CommandError(
        f"No model with id, name or identifier {reference!r}.{close_names(reference, known)}"
    )


def models_lookup(references: Sequence[str], *, modality: str = "") -> list[PretrainedModel]:
    """Models by id, name or identifier; a reference with * or ? is a pattern over names
    (of the given modality), e.g. 'resnet*'. Each model once, in the order given."""
    chosen: dict[int, PretrainedModel] = {}
    for reference in references:
        if any(c in reference for c in "*?["):
            candidates: QuerySet[PretrainedModel] = PretrainedModel.objects.order_by("name")
            if modality:
                candidates = candidates.filter(modality=modality)
            matched = [m for m in candidates if fnmatch.fnmatchcase(m.name, reference)]
            if not matched:
                where = f" among the {modality} models" if modality else ""
                raise CommandError(f"No model name matches {reference!r}{where}.")
            for model in matched:
                chosen.setdefault(model.pk, model)
        else:
            model = model_lookup(reference)
            chosen.setdefault(model.pk, model)
    return list(chosen.values())


def dataset_lookup(reference: str) -> Dataset:
    reference = reference.strip()
    if reference.isdigit():
        found = Dataset.objects.filter(pk=int(reference)).first()
        if found is not None:
            return found
    found = Dataset.objects.filter(name=reference).first()
    if found is None:
        names = Dataset.objects.values_list("name", flat=True)
        raise CommandError(
            f"No dataset with id or name {reference!r}.{close_names(reference, names)}"
        )
    return found
