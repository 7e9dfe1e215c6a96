"""OpenAPI schema generation (drf-spectacular) with the API's error responses.

Every operation documents the errors it can answer with, in the one error body of
``api.errors``: 401 and 403 everywhere (a bad token is refused even on public reads), 400
where there is a body or query parameters to get wrong, 404 where the path names an object
or a list can be paged past its end, 413 and 415 where a body is read, 507 where files are
uploaded, and 503 everywhere (an outage of the database, the task queue or the object store). Operations add
their own (409, 429) with ``extend_schema``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse

from api.errors import ErrorSerializer
from api.permissions import PublicReadResearcherWrite

DESCRIPTIONS = {
    "400": "Invalid input: the message names each problem, `fields` holds them per field.",
    "401": "No credentials, or a bad or inactive token.",
    "403": "Logged in, but not a researcher (or, with session login, no CSRF token).",
    "404": "No such object, or a page past the last.",
    "413": "The body is larger than the configured limit; it was not read.",
    "415": "Unsupported Content-Type for this endpoint.",
    "503": "The database, the task queue or the object store is unreachable (an outage): try "
    "again after `Retry-After` seconds.",
    "507": "The server's disk is full, read-only or over quota: the message names the storage "
    "and what to do; nothing was kept.",
}


class AutoSchema(SpectacularAutoSchema):
    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=DESCRIPTIONS[code]), code
                )
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def get_auth(self) -> list[dict[str, Any]]:
        auth = super().get_auth()
        public = any(isinstance(p, PublicReadResearcherWrite) for p in self.view.get_permissions())
        if public and self.method == "GET" and {} not in auth:
            auth.append({})  # anyone may read leaderboard data
        return auth

    def _error_codes(self, operation: dict[str, Any]) -> list[str]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        codes = ["401", "403"] if self.view.get_authenticators() else []
        if has_body or any(p["in"] == "query" for p in parameters):
            codes.append("400")
        if any(p["in"] == "path" for p in parameters) or self._is_list_view():
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
            if "multipart/form-data" in operation["requestBody"].get("content", {}):
                codes.append("507")
        codes.append("503")
        return codes
