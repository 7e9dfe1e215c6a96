"""Checking a hub model id when it is typed, without the network: the register form must
never wait on the hub. An id in this server's Hugging Face cache is known; one that is not,
but is close to one that is, is most likely a typo (refused with suggestions unless the
researcher says they mean it as typed); any other id is checked when a worker loads it, and
the form says so. timm and open_clip names are checked by their adapters' ``validate``
against the libraries' own lists (with close matches), when the model is registered."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants

from evaluation.models import ModelSource

HUB_SOURCES = frozenset(
    {
        ModelSource.SENTENCE_TRANSFORMERS,
        ModelSource.TRANSFORMERS_TEXT,
        ModelSource.TRANSFORMERS_VISION,
        ModelSource.TRANSFORMERS_AUDIO,
        ModelSource.TRANSFORMERS_VIDEO,
    }
)
# sentence-transformers' short names ("all-MiniLM-L6-v2") are ids under this organisation.
SENTENCE_TRANSFORMERS_ORG = "sentence-transformers"
CACHE_PREFIX = "models--"  # the hub cache's folder of a model: models--<org>--<name>


@dataclass(frozen=True)
class HubIdCheck:
    """What the form says about a hub id: a problem (a likely typo) or a note."""

    problem: str = ""
    note: str = ""


def hub_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cached_hub_models(cache: Path | None = None) -> list[str]:
    """Model ids in the local Hugging Face cache (its folder names: no network)."""
    folder = Path(cache or constants.HF_HUB_CACHE)
    try:
        entries = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    except OSError:  # no cache yet
        return []
    return [
        entry.removeprefix(CACHE_PREFIX).replace("--", "/")
        for entry in entries
        if entry.startswith(CACHE_PREFIX)
    ]


def is_hub_id(source: str, identifier: str) -> bool:
    """A hub id, not a local folder or a package:<name> (those are checked by the adapters)."""
    return (
        source in HUB_SOURCES
        and not identifier.startswith(("package:", "/", "./", "../", "~"))
        and identifier.count("/") <= 1
    )


def check_hub_id(source: str, identifier: str, *, cache: Path | None = None) -> HubIdCheck:
    """A hub id checked against the local cache: known, a likely typo of a cached id, or
    left to the worker that loads it (said in the note)."""
    if not is_hub_id(source, identifier):
        return HubIdCheck()
    cached = cached_hub_models(cache)
    names = {identifier}
    if source == ModelSource.SENTENCE_TRANSFORMERS and "/" not in identifier:
        names.add(f"{SENTENCE_TRANSFORMERS_ORG}/{identifier}")
    if names & set(cached):
        return HubIdCheck()
    close = difflib.get_close_matches(identifier, cached, n=5, cutoff=0.8)
    if source == ModelSource.SENTENCE_TRANSFORMERS:
        short = [c.removeprefix(f"{SENTENCE_TRANSFORMERS_ORG}/") for c in cached]
        close += [m for m in difflib.get_close_matches(identifier, short, n=5, cutoff=0.8)]
    if close:
        return HubIdCheck(
            problem=f"{identifier!r} is not in this server's model cache, but "
            f"{', '.join(repr(c) for c in dict.fromkeys(close))} "
            f"{'is' if len(set(close)) == 1 else 'are'}: a typo? If you mean {identifier!r} "
            "as typed, tick 'Register the id as typed'."
        )
    return HubIdCheck(note=later_check_note(identifier))


def later_check_note(identifier: str) -> str:
    if hub_offline():
        return (
            f"{identifier} is not in this server's model cache and the server is offline "
            "(HF_HUB_OFFLINE): the id will be checked when a worker loads it."
        )
    return (
        f"{identifier} is not in this server's model cache: the id will be checked when a "
        "worker loads it (and downloads it from the hub)."
    )
