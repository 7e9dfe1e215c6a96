"""Small template helpers."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def dictget(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key)


@register.filter
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@register.filter
def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.0f}%"


@register.filter
def intcomma_short(number: int | None) -> str:
    """2_300_000 -> 2.3M, 11_700 -> 11.7k."""
    if number is None:
        return "—"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{suffix}"
    return str(number)
