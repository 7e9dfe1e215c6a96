"""A JSON parser whose errors say what is wrong and where.

DRF's says "JSON parse error - Expecting value: line 1 column 1 (char 0)". Bodies are
bounded before this parser runs: DRF reads JSON through ``request.body``, which refuses a
body over DATA_UPLOAD_MAX_MEMORY_SIZE (a 413, see ``api.errors``) before reading it.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class MalformedJSON(ParseError):
    default_code = "malformed_json"


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        context = parser_context or {}
        encoding = context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise MalformedJSON(
                f"Malformed JSON: the body is not valid {encoding} text ({exc.reason} at byte "
                f"{exc.start})."
            ) from None
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise MalformedJSON(
                f"Malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None
        except ValueError as exc:
            raise MalformedJSON(f"Malformed JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null.")
