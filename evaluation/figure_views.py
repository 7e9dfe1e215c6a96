"""Figure downloads from the pages: ``/figures/<kind>.<svg|png|csv>?<the figure's query>``.

The links come from ``Figure.downloads`` (``templates/evaluation/_figure.html`` draws them);
the API serves the same figures at ``/api/figures/<kind>/?format=...``."""

from __future__ import annotations

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
    if fmt not in figures.FORMATS:
        raise Http404(f"No figure format {fmt!r}; the formats are svg, png and csv.")
    if not spec.public and not is_researcher(request.user):
        if request.user.is_authenticated:
            raise PermissionDenied("Only researchers can download this figure.")
        return researcher_required(figure_download)(request, kind, fmt)  # to the login page
    try:
        figure = spec.build(request.GET)
    except figures.FigureNotFound as exc:
        raise Http404(str(exc)) from None
    except figures.FigureProblem as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    return figure_response(figure, fmt)


def figure_response(figure: figures.Figure, fmt: str) -> HttpResponse:
    response = HttpResponse(figure.content(fmt), content_type=figures.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{figure.filename}.{fmt}"'
    return response
