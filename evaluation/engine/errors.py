"""Errors the engine raises for problems a researcher can act on.

Their messages are shown to users as they are, so each says what was wrong and what to do.
Anything else raised by the engine is a bug and is reported as an internal error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EngineError(Exception):
    """A problem with the inputs of an evaluation, explained in its message."""


class ModelSpecError(EngineError):
    """The model cannot be found or loaded as specified."""


class StimulusError(EngineError):
    """A stimulus cannot be read or does not fit the model."""


class MetricError(EngineError):
    """A metric cannot be computed on these embeddings or labels."""


class StorageError(EngineError):
    """A file could not be written: the disk is full, read-only, over quota or not writable
    by this process. The machine's or its administrator's problem, never a bug; the
    message names the condition and the path (see evaluation.engine.storage)."""


def close_names(name: str, candidates: Iterable[str], limit: int = 5) -> str:
    """Return ' Did you mean: a, b?' for the closest candidates, or '' if none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=limit, cutoff=0.6)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
