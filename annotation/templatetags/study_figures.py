"""The study page's figures, from what its view computed already (the trend is costly)."""

from __future__ import annotations

from typing import Any

from django import template

from annotation.figures import reliability_trend_figure
from annotation.models import Study
from evaluation.figures import Figure

register = template.Library()


@register.simple_tag
def trend_figure(study: Study, trend: list[dict[str, Any]]) -> Figure | None:
    """``{% trend_figure study trend as figure %}``: the reliability trend as a figure."""
    return reliability_trend_figure(study, trend)
