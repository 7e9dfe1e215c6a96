"""The figures of the pages through the API: ``/api/figures/<kind>/?format=svg|png|csv&...``,
the same figure (``evaluation.figures``) that the page shows and its links download."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from api.errors import ErrorSerializer
from api.permissions import IsResearcher
from api.views import _ServerChoosesFormat
from evaluation import figures
from evaluation.figure_views import figure_file


def _parameters() -> list[OpenApiParameter]:
    """The kind, the format, and every kind's own parameters (each says which kinds take
    it), from the registry: a kind registered anywhere is documented here."""
    takers: dict[str, list[str]] = {}
    meanings: dict[str, str] = {}
    for kind in figures.KINDS.values():
        for name, meaning in kind.params.items():
            takers.setdefault(name, []).append(kind.name)
            meanings.setdefault(name, meaning)
    kinds = "; ".join(
        f"`{k.name}`: {k.summary}{' (public)' if k.public else ''}"
        for k in sorted(figures.KINDS.values(), key=lambda k: k.name)
    )
    return [
        OpenApiParameter(
            "kind",
            str,
            OpenApiParameter.PATH,
            enum=sorted(figures.KINDS),
            description=f"Which figure: {kinds}.",
        ),
        OpenApiParameter(
            "format",
            str,
            enum=list(figures.FORMATS),
            default="svg",
            description="svg: the figure as the page draws it; png: the same SVG rendered "
            f"at {figures.PNG_ZOOM}x (lower where that would exceed "
            f"{figures.PNG_MAX_PIXELS // 1_000_000} million pixels; refused, 400, where even "
            f"{figures.PNG_MIN_ZOOM}x would); csv: the data behind it (a header row naming "
            "each column and its unit).",
        ),
        *(
            OpenApiParameter(
                name,
                str,
                description=f"{meanings[name]} (kinds: {', '.join(sorted(kinds_))})",
            )
            for name, kinds_ in sorted(takers.items())
        ),
    ]


class _ResearcherUnlessPublic(BasePermission):
    message = IsResearcher.message

    def has_permission(self, request: Request, view: Any) -> bool:
        kind = figures.KINDS.get(view.kwargs.get("kind", ""))
        if kind is not None and kind.public:
            return AllowAny().has_permission(request, view)
        return IsResearcher().has_permission(request, view)


class FigureView(APIView):
    """One figure of the web pages (score by layer, judgment efficiency, reliability trend,
    paired differences, and the compare page's) as SVG, PNG or CSV."""

    permission_classes = [_ResearcherUnlessPublic]
    content_negotiation_class = _ServerChoosesFormat

    @extend_schema(
        summary="A figure as SVG, PNG or the CSV of its data (researchers; public figures: anyone)",
        description="The same figure as on the web page, built from the same parameters: "
        "the page's download links carry them (`/figures/<kind>.<format>?...`).",
        parameters=_parameters(),
        responses={
            (200, "image/svg+xml"): OpenApiResponse(OpenApiTypes.STR, description="SVG."),
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="PNG."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV."),
            400: OpenApiResponse(
                ErrorSerializer,
                description="A format or parameters that make no figure, or a PNG too large.",
            ),
            404: OpenApiResponse(ErrorSerializer, description="No such kind or object."),
        },
    )
    def get(self, request: Request, kind: str) -> HttpResponse:
        fmt = request.query_params.get("format", "svg")
        try:
            return figure_file(kind, fmt, request.query_params)
        except figures.FigureNotFound as exc:
            raise NotFound(str(exc)) from None
        except figures.FigureProblem as exc:
            raise ValidationError(str(exc)) from None
