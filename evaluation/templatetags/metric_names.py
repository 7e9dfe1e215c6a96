"""A metric key as people read it, with the exact key on hover (evaluation.metrics.READINGS)."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from evaluation.metrics import metric_description
from evaluation.metrics import metric_name as readable_name

register = template.Library()


@register.filter
def metric_name(key: str) -> str:
    """The readable name alone (where the key is shown beside it already)."""
    return readable_name(key)


@register.filter
def metric_abbr(key: str) -> SafeString:
    """The readable name, its exact key and description on hover (the key is what the CSV,
    the API and ``manage.py evaluate --metric`` take)."""
    description = metric_description(key)
    title = f"{key}: {description}" if description else key
    return format_html(
        '<abbr class="metric" title="{}" data-metric-key="{}">{}</abbr>',
        title,
        key,
        readable_name(key),
    )


@register.filter
def fraction_of(value: float | None, ceiling: float | None) -> float | None:
    """``value / ceiling`` (a score as a fraction of a ceiling); None without a ceiling."""
    return value / ceiling if value is not None and ceiling else None
