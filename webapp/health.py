"""Liveness probe for Docker health checks and load balancers: ``GET /healthz``.

Answered before host validation and every other middleware, so a probe needs neither an
allowed Host header nor a session; it says whether the database answers.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != "/healthz":
            return self.get_response(request)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            return HttpResponse("database unreachable", status=503, content_type="text/plain")
        return HttpResponse("ok", content_type="text/plain")
