"""Roles. A researcher is a staff account; anyone else sees public leaderboards only."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.http.response import HttpResponseBase

P = ParamSpec("P")
Request = TypeVar("Request", bound=HttpRequest)
Response = TypeVar("Response", bound=HttpResponseBase)


def is_researcher(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def researcher_required(
    view: Callable[Concatenate[Request, P], Response],
) -> Callable[Concatenate[Request, P], Response | HttpResponseRedirect]:
    """Anonymous visitors go to the login page; logged-in non-researchers get 403."""

    @wraps(view)
    def wrapper(
        request: Request, *args: P.args, **kwargs: P.kwargs
    ) -> Response | HttpResponseRedirect:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_researcher(request.user):
            raise PermissionDenied("Only researchers can do this.")
        return view(request, *args, **kwargs)

    return wrapper
