from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from core.auth import is_researcher


def roles(request: HttpRequest) -> dict[str, Callable[[], bool]]:
    # Lazy: evaluated only by templates that use it, so pages that never do (participant
    # pages) do not load the session and the user.
    return {"is_researcher": lambda: is_researcher(request.user)}
