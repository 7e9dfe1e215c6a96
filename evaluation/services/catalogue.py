"""Registering models and listing their layers (a worker's job, sent by name)."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from evaluation.engine import adapters
from evaluation.engine.errors import EngineError, ModelSpecError, StorageError
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.storage import writing
from evaluation.models import Description, Modality, PretrainedModel
from evaluation.services.failures import internal_error
from evaluation.services.queue import INSPECT_TASK, send

logger = logging.getLogger(__name__)


def model_register(
    *,
    name: str,
    source: str,
    identifier: str,
    weights: str = "pretrained",
    checkpoint_path: str = "",
    revision: str = "",
    seed: int = 0,
    description: str = "",
    modality: str = "",
    created_by: Any = None,
) -> PretrainedModel:
    """Register a model after checking, without loading weights, that it can be loaded.

    ``modality`` is needed only for language-based models (source ``language``), which
    embed the descriptions of stimuli of any modality: the modality of those stimuli."""
    name = name.strip()
    if PretrainedModel.objects.filter(name=name).exists():
        raise ValidationError({"name": f"A model called {name!r} is already registered."})
    spec = ModelSpec(
        source=source,
        identifier=identifier.strip(),
        weights=weights,
        checkpoint_path=checkpoint_path.strip(),
        revision=revision.strip(),
        seed=seed,
    )
    try:
        adapter_class = adapters.adapter_class(spec.source, spec.identifier)
        adapter_class.validate(spec)
    except ModelSpecError as exc:
        field = (
            "checkpoint_path"
            if weights == "checkpoint" and "checkpoint" in str(exc)
            else "identifier"
        )
        raise ValidationError({field: str(exc)}) from None
    if adapter_class.modality == "any":
        modality = _check_language_model(spec.identifier, modality)
    else:
        modality = adapter_class.modality
    model = PretrainedModel.objects.create(
        name=name,
        source=spec.source,
        identifier=spec.identifier,
        weights=spec.weights,
        checkpoint_path=spec.checkpoint_path,
        revision=spec.revision,
        seed=seed,
        modality=modality,
        default_layer=adapter_class.default_layer,
        description=description,
        provenance=adapter_class.provenance(spec),
        created_by=created_by,
    )
    # Listing layers needs the weights and a forward pass: a worker's job, not the request's.
    # The model is the user's intent: it is stored even when the broker does not answer, and
    # its inspection is sent by the workers' sweep once it does (models_resend_inspections).
    transaction.on_commit(lambda: send(INSPECT_TASK, model.pk))
    return model


def _check_language_model(identifier: str, modality: str) -> str:
    from evaluation.engine.adapters.language_adapter import parse_language

    origin, _ = parse_language(identifier)
    if not Description.objects.filter(origin=origin).exists():
        known = list(Description.objects.values_list("origin", flat=True).distinct()[:10])
        raise ValidationError(
            {
                "identifier": f"No description set called {origin!r}."
                + (f" Known sets: {', '.join(known)}." if known else " Import descriptions first.")
            }
        )
    if modality not in Modality.values:
        raise ValidationError(
            {"modality": "Say which stimuli the descriptions are of: image, text, audio or video."}
        )
    return modality


def model_inspect(*, model_id: int) -> None:
    """Load the model once, list its layers with output shapes, its size and embedding size."""
    model = PretrainedModel.objects.filter(pk=model_id).first()
    if model is None:
        return
    try:
        adapter = adapters.load_adapter(model.spec(), device=settings.EXTRACTION_DEVICE)
        with _sample_folder() as folder:
            sample = _sample_stimulus(model.modality, folder)
            adapter.prepare([sample])
            layers = adapter.describe_layers(sample)
    except EngineError as exc:
        if isinstance(exc, StorageError):  # the administrator's to fix: say it in their log
            logger.warning("Listing the layers of model %s stopped: %s", model_id, exc)
        PretrainedModel.objects.filter(pk=model_id).update(inspection_error=str(exc))
        return
    except Exception as exc:
        # Still an outcome: the model page says so instead of waiting for layers forever.
        logger.exception("Listing the layers of model %s failed", model_id)
        PretrainedModel.objects.filter(pk=model_id).update(
            inspection_error=internal_error("listing the model's layers", exc)
        )
        return
    default = next((layer for layer in layers if layer["name"] == adapter.default_layer), None)
    PretrainedModel.objects.filter(pk=model_id).update(
        layers=layers,
        inspection_error="",
        parameter_count=adapter.parameter_count() or None,
        embedding_size=int(np.prod(default["shape"])) if default else None,
    )


_SAMPLE_WRITE = "write a sample stimulus to list the model's layers"


@contextmanager
def _sample_folder() -> Iterator[Path]:
    """A scratch folder for the sample stimulus, removed afterwards."""
    scratch = Path(tempfile.gettempdir())
    with writing(scratch, place=f"TMPDIR ({scratch})", doing=_SAMPLE_WRITE):
        folder = Path(tempfile.mkdtemp(prefix="likeness-inspect-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sample_stimulus(modality: str, folder: Path) -> StimulusInput:
    # A full or read-only scratch disk is named (only here: other errors of the inspection
    # are about other places).
    with writing(folder, place=f"TMPDIR ({folder.parent})", doing=_SAMPLE_WRITE):
        stimulus = _sample_of(modality, folder)
    # Language-based models embed descriptions, whatever the stimulus is.
    return replace(stimulus, descriptions=(("a short description of the sample", 1.0),))


def _sample_of(modality: str, folder: Path) -> StimulusInput:
    if modality == Modality.IMAGE:
        from PIL import Image

        path = folder / "sample.png"
        Image.new("RGB", (224, 224), (128, 128, 128)).save(path)
        return StimulusInput(path=str(path))
    if modality == Modality.AUDIO:
        import soundfile

        path = folder / "sample.wav"
        seconds = np.arange(16000) / 16000
        encoded = io.BytesIO()  # written by Python, whose OSError says why (libsndfile's not)
        soundfile.write(encoded, 0.5 * np.sin(2 * np.pi * 440 * seconds), 16000, format="WAV")
        path.write_bytes(encoded.getvalue())
        return StimulusInput(path=str(path))
    if modality == Modality.VIDEO:
        from evaluation.engine.video import write_clip

        path = folder / "sample.webm"
        grey = np.full((224, 224, 3), 128, dtype=np.uint8)
        write_clip(path, [grey] * 16, fps=8)  # two seconds: frames enough for any sampling
        return StimulusInput(path=str(path))
    return StimulusInput(text="A short sentence to trace the model's layers.")
