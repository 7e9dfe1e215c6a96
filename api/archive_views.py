"""Archive, unarchive and delete through the API, for models, datasets, targets and studies:
the same services as the web pages (evaluation/services/archive.py,
annotation/services/archive.py). A mixin of those four viewsets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import IntegrityError
from django.db.models import ProtectedError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.services.archive import (
    dataset_delete,
    model_delete,
    refused_on_conflict,
    study_delete,
)
from api.errors import Conflict, ErrorSerializer
from evaluation.services.archive import DeleteRefused, archive_set, target_delete


class ArchiveStateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    archived_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was archived; null: listed."
    )


class DeleteQuerySerializer(serializers.Serializer):
    delete_scores = serializers.BooleanField(
        default=False,
        help_text="Agree to delete the scores that go with it (required when it has any). "
        "Studies: also delete the judgment sets and targets aggregated from it, with their "
        "scores (otherwise those are kept).",
    )


DELETES: dict[str, Callable[[Any, bool], None]] = {
    "model": lambda obj, tick: model_delete(obj, delete_scores=tick),
    "dataset": lambda obj, tick: dataset_delete(obj, delete_scores=tick),
    "target": lambda obj, tick: target_delete(obj, delete_scores=tick),
    "study": lambda obj, tick: study_delete(obj, delete_targets=tick),
}


class ArchiveActions:
    """``POST {id}/archive/``, ``POST {id}/unarchive/`` and ``DELETE {id}/``. Mixed into a
    viewset with ``noun`` and ``get_object`` (api.views._ById)."""

    noun: str
    get_object: Callable[[], Any]

    def _state(self, obj: Any, archived: bool) -> Response:
        archive_set(obj, archived=archived)
        return Response({"id": obj.pk, "archived_at": obj.archived_at})

    @extend_schema(
        summary="Archive it: left out of the lists (unless ?archived=1), kept with its scores",
        request=None,
        responses={200: ArchiveStateSerializer},
    )
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, pk: str) -> Response:
        return self._state(self.get_object(), True)

    @extend_schema(
        summary="Unarchive it: listed again",
        request=None,
        responses={200: ArchiveStateSerializer},
    )
    @action(detail=True, methods=["post"])
    def unarchive(self, request: Request, pk: str) -> Response:
        return self._state(self.get_object(), False)

    @extend_schema(
        summary="Delete it, with what depends on it (see the web page's list)",
        description="In one transaction; its stored files (embeddings, stimulus media) are "
        "removed after it committed. Refused (409, with what blocks it) while a run on it "
        "is unfinished, a study on it is open or a pilot runs (on it, or from a model's "
        "embeddings), or when it has scores and "
        "`delete_scores` is not true. Archiving keeps everything instead.",
        parameters=[DeleteQuerySerializer],
        request=None,
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(ErrorSerializer, description="Why it cannot be deleted now."),
        },
    )
    def destroy(self, request: Request, pk: str) -> Response:
        obj = self.get_object()
        query = DeleteQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        try:
            DELETES[self.noun](obj, query.validated_data["delete_scores"])
        except (ProtectedError, IntegrityError) as exc:  # a target's delete, raced
            refusal = refused_on_conflict(f"{self.noun.capitalize()} {obj}", exc)
            raise Conflict(str(refusal)) from exc
        except DeleteRefused as exc:
            raise Conflict(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
