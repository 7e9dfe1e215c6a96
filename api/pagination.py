"""Page-number pagination that refuses nonsense instead of guessing.

DRF's paginator silently replaces a bad ``page_size`` with the default and answers a page
past the end with "Invalid page."; scripts are better served by a 400 that names the
allowed range and a 404 that names the last page.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.paginator import InvalidPage
from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = _int_or_none(raw)
        if size is None or not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"page_size must be a whole number from 1 to {self.max_page_size}; "
                        f"got {raw[:40]!r}."
                    ]
                }
            )
        return size

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        raw = request.query_params.get(self.page_query_param, "1")
        number = _int_or_none(raw)
        if number is None or number < 1:
            raise ValidationError(
                {self.page_query_param: [f"page must be a whole number from 1; got {raw[:40]!r}."]}
            )
        page_size = self.get_page_size(request)
        paginator = self.django_paginator_class(queryset, page_size)
        try:
            self.page = paginator.page(number)
        except InvalidPage:
            last = max(1, math.ceil(paginator.count / page_size))
            raise NotFound(f"Page {number} does not exist; the last page is {last}.") from None
        self.request = request
        return list(self.page)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(
                    minimum=1, maximum=self.max_page_size, default=self.page_size
                )
                parameter["description"] = (
                    f"Results per page (default {self.page_size}, at most {self.max_page_size})."
                )
        return parameters


def _int_or_none(raw: str) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None
