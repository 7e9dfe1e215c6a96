"""Figure downloads from the pages: ``/figures/<kind>.<svg|png|csv>?<the figure's query>``.

The links come from ``Figure.downloads`` (``templates/evaluation/_figure.html`` draws them);
the API serves the same figures at ``/api/figures/<kind>/?format=...``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase

from core.auth import is_researcher, researcher_required
from evaluation import figures


def figure_download(request: HttpRequest, kind: str, fmt: str) -> HttpResponseBase:
    """One figure as SVG, PNG or CSV; researchers only, unless its kind is public (as the
    page it comes from is)."""
    try:
        spec = figures.figure_kind(kind)
    except figures.FigureNotFound as exc:
        raise Http404(str(exc)) from None
    if not spec.public and not is_researcher(request.user):
        if request.user.is_authenticated:
            raise PermissionDenied("Only researchers can download this figure.")
        return researcher_required(figure_download)(request, kind, fmt)  # to the login page
    try:
        return figure_file(kind, fmt, request.GET)
    except figures.FigureNotFound as exc:
        raise Http404(str(exc)) from None
    except figures.FigureProblem as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


def figure_file(kind: str, fmt: str, params: Mapping[str, Any]) -> HttpResponse:
    """The one home of a figure download, for the pages' links and the API: the format
    checked, the figure built from ``params`` and drawn in it. Raises
    ``figures.FigureNotFound`` (a 404: no such kind or object) or ``figures.FigureProblem``
    (a 400: a format, parameters or a size that make no such file; the message says which)."""
    if fmt not in figures.FORMATS:
        raise figures.FigureProblem(f"Choose svg, png or csv (got {fmt!r}).")
    return figure_response(figures.figure_from_params(kind, params), fmt)


def figure_response(figure: figures.Figure, fmt: str) -> HttpResponse:
    response = HttpResponse(figure.content(fmt), content_type=figures.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{figure.filename}.{fmt}"'
    return response
