"""Reading a page's query string: the one place its values are parsed.

Anyone can type a query string, and a page's state lives in its URL so that views can be
shared: a value a parameter cannot take (a 400-digit page number, 1e309, NaN, a NUL byte,
digits of another script) falls back to the parameter's default instead of raising, so the
page still answers with its plain view; a number past a bound is read as that bound where
that is what its writer meant (page 10^400 is the last page). Numbers are read as ASCII decimals only
(``int()`` and ``float()`` accept ``'٣'``, ``'1e309'`` and ``'inf'``; ``str.isdigit()``
accepts ``'²'``, which neither parses). When several values are given, the last counts,
as with ``QueryDict.get``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any

# Digits with optional _ or , separators, an optional fraction and exponent: '1500',
# '1_000_000', '1,000', '2.5', '1e9'. Linear to match; the server caps a request line at a
# few kilobytes, and Decimal reads that many digits in microseconds.
_NUMBER = re.compile(r"[+-]?[0-9][0-9_,]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
# Database ids are PostgreSQL bigints.
MAX_ID = 2**63 - 1


def _last(params: Mapping[str, Any], name: str) -> str:
    """The parameter's last value as text ('' when absent)."""
    value = params.get(name, "")
    return value if isinstance(value, str) else str(value)


def _number(raw: str) -> Decimal | None:
    raw = raw.strip()
    if not _NUMBER.fullmatch(raw):
        return None
    return Decimal(raw.replace("_", "").replace(",", ""))


def int_param(
    params: Mapping[str, Any],
    name: str,
    *,
    minimum: int,
    maximum: int,
    default: int | None = None,
    clamp: bool = False,
) -> int | None:
    """A whole number (a fraction is dropped) within [minimum, maximum]; ``default`` for
    anything else, or with ``clamp`` the nearest bound for a number outside them."""
    number = _number(_last(params, name))
    if number is None:
        return default
    if not minimum <= number <= maximum:  # compared as decimals: 1e999999 never becomes an int
        if not clamp:
            return default
        number = Decimal(minimum) if number < minimum else Decimal(maximum)
    return int(number)


def id_param(params: Mapping[str, Any], name: str) -> int | None:
    """A database id (a positive bigint), or None."""
    return int_param(params, name, minimum=1, maximum=MAX_ID)


def id_list_param(params: Any, name: str, *, limit: int) -> list[int]:
    """The valid ids among a repeated parameter's values, in order, without repeats, at most
    ``limit`` of them. ``params`` is a QueryDict (``getlist``)."""
    ids: list[int] = []
    for raw in params.getlist(name):
        number = id_param({name: raw}, name)
        if number is not None and number not in ids:
            ids.append(number)
    return ids[:limit]


def choice_param(
    params: Mapping[str, Any], name: str, choices: Collection[str], default: str
) -> str:
    """One of ``choices``, exactly as written; ``default`` for anything else."""
    raw = _last(params, name)
    return raw if raw in choices else default


def text_param(params: Mapping[str, Any], name: str, *, max_length: int) -> str:
    """Free text from the query string: see ``clean_text``."""
    return clean_text(_last(params, name), max_length=max_length)


def clean_text(raw: str, *, max_length: int) -> str:
    """Free text, stripped, cut to ``max_length``, without control characters (PostgreSQL
    refuses NUL in text, and none of them belongs in a name, an id or a search)."""
    kept = "".join(c for c in raw[: max_length * 2] if unicodedata.category(c) != "Cc")
    return kept.strip()[:max_length]
