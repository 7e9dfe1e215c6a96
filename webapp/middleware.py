"""Pages for an outage of a service the site depends on: a web page that hits an unreachable
database or task queue answers 503 with Retry-After and says what happened, instead of
Django's bare "Server Error (500)". The API answers the same outages in api/errors.py; which
errors are outages is decided once, in core/outages.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from core.outages import RETRY_AFTER_SECONDS, outage_of

logger = logging.getLogger(__name__)


class OutageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        outage = outage_of(exc)
        if outage is None:
            return None  # Django's handler: logged and reported as an internal error
        logger.warning(
            "%s unreachable on %s %s: %s", outage.service, request.method, request.path, exc
        )
        # Rendered without the request: the page must not touch the session or the user,
        # which live in the database that is away.
        page = render_to_string("outage.html", {"message": outage.message})
        response = HttpResponse(page, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
