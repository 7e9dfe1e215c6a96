"""One error body for every API error, whatever raised it.

Every 4xx and 5xx answer of the API is ``{"error": {"code", "message", "fields"}}``:
``code`` is a stable machine-readable word, ``message`` a sentence a researcher can act on
(for validation errors, every problem prefixed by where it is, e.g.
``metrics[0].params.k: ...``) and ``fields`` the per-field errors (empty when the problem
is not about one field). Django ``ValidationError``s raised by services become 400s with
the service's own message, ``Http404`` becomes 404, an unreachable database or task queue a
503 with Retry-After (an outage, not a bug: core/outages.py), a full, read-only or
forbidden disk (``StorageError``) a 507 naming it, and anything unexpected a logged 500 with
the same shape (and no traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import got_request_exception
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from core.outages import RETRY_AFTER_SECONDS, outage_of
from core.uploads import human_bytes
from evaluation.engine.errors import StorageError
from evaluation.engine.storage import storage_error

logger = logging.getLogger(__name__)

NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "upload_too_large"


class ServiceUnavailable(exceptions.APIException):
    """A service the API depends on is away (an outage): try again later."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service Likeness depends on is unreachable."
    default_code = "service_unavailable"

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail, code)
        self.wait = RETRY_AFTER_SECONDS  # becomes the Retry-After header


class InsufficientStorage(exceptions.APIException):
    """The server's disk cannot take what the request needs written (full, read-only,
    forbidden): the administrator's to fix, named by evaluation/engine/storage.py."""

    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    default_detail = "The server cannot store what this request needs written."
    default_code = "insufficient_storage"


class Conflict(exceptions.APIException):
    """The request is well formed but the object is not in a state that allows it."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the object's current state."
    default_code = "conflict"


def error_body(*, code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    exc = _as_api_exception(exc)
    if not isinstance(exc, exceptions.APIException):
        return _server_error(exc, context)
    headers = {}
    if auth_header := getattr(exc, "auth_header", None):  # set by DRF on a 401
        headers["WWW-Authenticate"] = auth_header
    if wait := getattr(exc, "wait", None):  # Throttled
        headers["Retry-After"] = str(int(wait))
    set_rollback()
    return Response(_describe(exc), status=exc.status_code, headers=headers)


def _as_api_exception(exc: Exception) -> Exception:
    if isinstance(exc, DjangoValidationError):
        # A service refused the input: its message is the one to show.
        return exceptions.ValidationError(detail=as_serializer_error(exc))
    if isinstance(exc, Http404):
        return exceptions.NotFound(str(exc) or None)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        return UploadTooLarge(
            f"The request body is larger than {human_bytes(limit)} "
            "(DATA_UPLOAD_MAX_MEMORY_SIZE); it was not read. Upload files as multipart."
        )
    if isinstance(exc, SuspiciousOperation):  # e.g. too many form fields or files
        return exceptions.ParseError(str(exc))
    if (outage := outage_of(exc)) is not None:
        logger.warning("%s unreachable: %s", outage.service, exc)
        return ServiceUnavailable(outage.message, outage.code)
    if isinstance(exc, OSError) and (named := storage_error(exc)) is not None:
        exc = named  # a disk condition met outside the services (an upload spooled to /tmp)
    if isinstance(exc, StorageError):  # the machine's condition, named: not a bug
        logger.warning("Storage condition: %s", exc)
        return InsufficientStorage(str(exc))
    return exc


def _describe(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = (
            {str(key): _plain(value) for key, value in detail.items() if key != NON_FIELD}
            if isinstance(detail, dict)
            else {}
        )
        problems = _flatten(detail)
        message = " ".join(problems) if problems else "The request is invalid."
        return error_body(code="invalid", message=message, fields=fields)
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return error_body(code=code, message=str(exc.detail))


def _plain(detail: Any) -> Any:
    """ErrorDetail strings and nested containers as plain JSON values."""
    if isinstance(detail, dict):
        if list(detail) == [NON_FIELD]:  # a nested field's own error, e.g. not a list
            return _plain(detail[NON_FIELD])
        return {str(key): _plain(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_plain(item) for item in detail]
    return str(detail)


def _flatten(detail: Any, where: str = "") -> list[str]:
    """Every message, prefixed by its place: ``name: ...``, ``metrics[1].params.k: ...``."""
    if isinstance(detail, dict):
        problems = []
        for key, value in detail.items():
            if key == NON_FIELD:
                inner = where
            elif isinstance(key, int):  # DRF keys list items' errors by their index
                inner = f"{where}[{key}]"
            else:
                inner = f"{where}.{key}" if where else str(key)
            problems.extend(_flatten(value, inner))
        return problems
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [_sentence(f"{where}: {item}" if where else str(item)) for item in detail]
        problems = []
        for index, item in enumerate(detail):
            problems.extend(_flatten(item, f"{where}[{index}]"))
        return problems
    return [_sentence(f"{where}: {detail}" if where else str(detail))]


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def _server_error(exc: Exception, context: dict[str, Any]) -> Response:
    """An unexpected error: logged with its traceback, answered without one."""
    request = context.get("request")
    logger.exception("Unhandled error in the API", exc_info=exc)
    # Django's test client re-raises errors announced this way, so tests still see them.
    got_request_exception.send(sender=None, request=getattr(request, "_request", request))
    set_rollback()
    return Response(
        error_body(
            code="server_error",
            message="Internal error. This is a bug in Likeness, not in your request; "
            "the server log has the details.",
        ),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


# --- Schema of the error body ------------------------------------------------------------------
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. `invalid`.")
    message = serializers.CharField(help_text="What went wrong, in words.")
    # DRF's metaclass moves a declared field off the class: this one does not replace the
    # serializer's own ``fields``, whatever the stubs say.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.JSONField(),
        help_text="Errors per request field (lists of messages, nested like the request); "
        "empty when the problem is not about one field.",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
