"""``?archived=1`` on the web lists (models, datasets, studies, the leaderboards index): a
researcher sees the archived objects too, marked, and each list links to them with how
many there are. Everyone else sees the listed ones only, as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from core.auth import is_researcher

ARCHIVED_PARAM = "archived"
YES = ("1", "true", "yes")


def archived_asked(request: HttpRequest) -> bool:
    """Whether the list should show the archived objects too: a researcher asked for it."""
    return is_researcher(request.user) and request.GET.get(ARCHIVED_PARAM, "").lower() in YES


def list_with_archived(
    request: HttpRequest, rows: Callable[..., QuerySet[Any]]
) -> tuple[QuerySet[Any], dict[str, Any]]:
    """The list's rows (``rows(include_archived=...)``, a selector) and its context for
    templates/evaluation/_archived_link.html: whether the archived are shown, how many."""
    shown = archived_asked(request)
    context: dict[str, Any] = {"archived_shown": shown, "archived_count": 0}
    if is_researcher(request.user):
        context["archived_count"] = rows(include_archived=True).count() - rows().count()
    return rows(include_archived=shown), context
