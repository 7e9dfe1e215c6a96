"""Checking a hub model id when it is typed, without the network: the register form must
never wait on the hub. An id in this server's Hugging Face cache is known; one that is not,
but is a tiny edit of one of the same organisation (two letters at most, no digit and no
variant word such as base or large changed), is most likely a typo (refused with
suggestions unless the researcher says they mean it as typed); any other id is checked when
a worker loads it, and the form says so. timm and open_clip names are checked by their
adapters' ``validate`` against the libraries' own lists (with close matches), when the
model is registered."""

from __future__ import annotations

import re
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
    close = likely_typos(identifier, cached, short_org=_short_org(source, identifier))
    if close:
        return HubIdCheck(
            problem=f"{identifier!r} is not in this server's model cache, but "
            f"{', '.join(repr(c) for c in close)} "
            f"{'is' if len(close) == 1 else 'are'}: a typo? If you mean {identifier!r} "
            "as typed, tick 'Register the id as typed'."
        )
    return HubIdCheck(note=later_check_note(identifier))


def _short_org(source: str, identifier: str) -> str:
    """The organisation an id without one stands for: sentence-transformers' short names
    are its organisation's ids; other libraries take such ids as they are."""
    if source == ModelSource.SENTENCE_TRANSFORMERS and "/" not in identifier:
        return SENTENCE_TRANSFORMERS_ORG
    return ""


# Words that name a variant of a model, not a spelling of its name: one edit turns
# bert-base-cased into bert-base-uncased, or vit-base into vit-huge, and both are real.
# Digits are a variant too (L6 and L12, patch16 and patch32, v1 and v2), compared apart.
VARIANT_WORDS = frozenset(
    {
        "tiny",
        "mini",
        "small",
        "base",
        "medium",
        "large",
        "huge",
        "giant",
        "xs",
        "xl",
        "xxl",
        "cased",
        "uncased",
    }
)
MAX_TYPO_EDITS = 2
_WORDS = re.compile(r"[a-z]+")
_DIGITS = re.compile(r"[0-9]+")
_SEPARATORS = re.compile(r"[-_.]")


def likely_typos(identifier: str, cached: list[str], *, short_org: str = "") -> list[str]:
    """The cached ids that ``identifier`` is most likely a mistyping of, closest first, as
    the researcher would type them (short names stay short): ids of the same organisation
    whose name is at most two edits away (a letter added, dropped, changed or two swapped:
    optimal string alignment distance) with the same digits, no variant word that the
    cached name lacks, and no short word swapped for another ('en-de' and 'en-fr' are two
    models)."""
    org, _, name = identifier.rpartition("/")
    org = org or short_org
    found = []
    for other in cached:
        other_org, _, other_name = other.rpartition("/")
        if other_org.lower() != org.lower() or not _is_typo_of(name, other_name):
            continue
        shown = other_name if "/" not in identifier else other
        found.append((osa_distance(name.lower(), other_name.lower()), shown))
    return [shown for _, shown in sorted(found)][:5]


def _is_typo_of(typed: str, known: str) -> bool:
    typed, known = typed.lower(), known.lower()
    if osa_distance(typed, known) > MAX_TYPO_EDITS:
        return False
    if _DIGITS.findall(typed) != _DIGITS.findall(known):
        return False  # L6 and L12, v2 and v3: other models
    typed_variants, known_variants = (
        set(_WORDS.findall(n)) & VARIANT_WORDS for n in (typed, known)
    )
    if typed_variants - known_variants:
        return False  # cased for uncased, large for base: another model (a misspelt one is not)
    return not _swaps_a_word(_SEPARATORS.split(typed), _SEPARATORS.split(known))


def _swaps_a_word(typed: list[str], known: list[str]) -> bool:
    """Whether a word of the name is replaced whole by another of the same place ('de' by
    'fr'), rather than misspelt (only when both names have the same number of words)."""
    if len(typed) != len(known):
        return False
    return any(
        a != b and osa_distance(a, b) >= min(len(a), len(b))
        for a, b in zip(typed, known, strict=True)
    )


def osa_distance(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``: insertions, deletions, substitutions and swaps of two
    neighbouring characters (the optimal string alignment form of Damerau-Levenshtein)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ca != cb),
            )
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


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
