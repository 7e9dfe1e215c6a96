from __future__ import annotations

from django.http import HttpRequest

from webapp.auth import is_researcher


def roles(request: HttpRequest) -> dict[str, bool]:
    return {"is_researcher": is_researcher(request.user)}
