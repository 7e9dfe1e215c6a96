"""Request types for views' annotations."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware (in every request's path) leaves it: a view that
    reads ``request.htmx`` takes this type. Only for the type checker: requests stay
    Django's own."""

    htmx: HtmxDetails
