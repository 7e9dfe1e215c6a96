"""Addresses of the REST API, mounted at /api/ (see webapp/urls.py)."""

from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import SimpleRouter

from api import figure_views, token_views, views

app_name = "api"

router = SimpleRouter(use_regex_path=False)  # ids as <int:pk>: integers in the schema
router.register("models", views.ModelViewSet, basename="model")
router.register("datasets", views.DatasetViewSet, basename="dataset")
router.register("runs", views.RunViewSet, basename="run")
router.register("scores", views.ScoreViewSet, basename="score")
router.register("targets", views.TargetViewSet, basename="target")
router.register("studies", views.StudyViewSet, basename="study")
router.register("judgments", views.JudgmentsViewSet, basename="judgments")
router.register("embeddings", views.EmbeddingSetViewSet, basename="embeddings")
router.register("embedding-imports", views.EmbeddingImportViewSet, basename="embedding-import")

urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="token"),
    # The researcher's tokens page (HTML): make, list, revoke named tokens.
    path("tokens/", token_views.token_list, name="tokens"),
    path("tokens/<int:token_id>/revoke/", token_views.token_revoke, name="token_revoke"),
    path(
        "tokens/password-login/revoke/",
        token_views.login_token_revoke,
        name="login_token_revoke",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path(
        "redoc/",
        # The package's page loads Google Fonts; ours loads nothing from outside.
        SpectacularRedocView.as_view(url_name="api:schema", template_name="api/redoc.html"),
        name="redoc",
    ),
    path("figures/<slug:kind>/", figure_views.FigureView.as_view(), name="figure"),
    *router.urls,
    # Last: any other address under /api/ gets a JSON 404, not Django's HTML page.
    re_path(r"^.*$", views.UnknownEndpointView.as_view(), name="unknown"),
]
