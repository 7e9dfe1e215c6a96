"""The Content-Security-Policy of every response (django-csp; the policy itself is
CONTENT_SECURITY_POLICY in settings), with the relaxations the API documentation needs.

Swagger UI and Redoc (drf-spectacular, assets served locally by its sidecar) insert <style>
elements while they run, and Redoc builds its search worker from a blob: on those pages
only, style-src also allows inline styles and (Redoc) worker-src allows blob:. Script stays
'self' everywhere: Swagger UI's start-up script is served as a file
(SpectacularSwaggerSplitView), and Redoc's page starts from a custom element."""

from __future__ import annotations

from typing import Any

from csp.constants import SELF, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.http import HttpRequest, HttpResponseBase

# Views (by URL name) whose pages are third-party apps, and what each adds to the policy.
POLICY_UPDATES: dict[str, dict[str, Any]] = {
    "api:docs": {"style-src": [SELF, UNSAFE_INLINE]},
    "api:redoc": {"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]},
}


class LikenessCSPMiddleware(CSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        match = getattr(request, "resolver_match", None)
        update = POLICY_UPDATES.get(match.view_name) if match is not None else None
        if update is not None and parts.update is None:
            parts.update = update
        return parts
