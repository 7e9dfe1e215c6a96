"""API endpoints. Each view checks its input with a serializer and calls one service or
selector; none of them holds business logic of its own.

Researchers only, except the leaderboard data (scores and their targets), which anyone may
read; see ``api.permissions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.urls import Resolver404, resolve, reverse
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotation import exports as study_exports
from annotation import selectors as study_selectors
from annotation.models import Study
from api import exports, filters, serializers
from api.archive_views import ArchiveActions
from api.errors import Conflict, ErrorSerializer, UploadTooLarge
from api.parsers import JSONParser
from api.permissions import IsResearcher, PublicReadResearcherWrite
from core.auth import is_researcher
from evaluation import comparisons, downloads, selectors, services
from evaluation import leaderboards as boards
from evaluation.imports.embeddings import embeddings_import_queue
from evaluation.imports.judgments import judgments_import_from
from evaluation.imports.stimuli import dataset_import_from
from evaluation.models import (
    Dataset,
    EmbeddingImport,
    EmbeddingSet,
    HumanJudgments,
    PretrainedModel,
    Run,
    Split,
    Target,
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class _ById(viewsets.GenericViewSet):
    """Objects by numeric id; an unknown id is a 404 that names what was looked for."""

    permission_classes = [IsResearcher]
    lookup_value_converter = "int"
    noun = "object"

    def get_object(self) -> Any:
        # Not filtered by the list's query filters: those apply to lists only.
        pk = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        found = self.get_queryset().filter(pk=pk).first()
        if found is None:
            raise NotFound(f"No {self.noun} with id {pk}.")
        self.check_object_permissions(self.request, found)
        return found

    def created(self, instance: Any, serializer_class: type, location: str) -> Response:
        data = serializer_class(instance, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": location})


class _ServerChoosesFormat(BaseContentNegotiation):
    """Exports answer in the format asked for by ``?format=``, whatever the Accept header;
    errors are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        first = next(iter(renderers))
        return first, first.media_type


DOWNLOAD_RESPONSES = {
    (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="npy."),
    (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="npz."),
    (200, "application/vnd.apache.parquet"): OpenApiResponse(
        OpenApiTypes.BINARY, description="Parquet."
    ),
    (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, streamed."),
}


def _refuse_oversize_upload(request: Request) -> None:
    """The upload handler stopped reading a file over DATASET_UPLOAD_MAX_BYTES (see
    core/uploads.py); parsing the body is what runs it, so call this after ``request.data``."""
    refused = getattr(request._request, "upload_refused", None)
    if refused:
        raise UploadTooLarge(refused)


def _upload_fields(
    request: Request, serializer_class: type[serializers.serializers.Serializer]
) -> Any:
    """A multipart upload's fields, validated: an oversize file refused first (413)."""
    data = request.data  # parsing the body runs the upload handler
    _refuse_oversize_upload(request)
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class _UploadParsers:
    """Creating (the only POST) takes a multipart upload; nothing else reads a body.

    Decided by the method: DRF picks the parsers before it sets ``self.action``."""

    def get_parsers(self) -> list[BaseParser]:
        if getattr(getattr(self, "request", None), "method", "") == "POST":
            return [MultiPartParser()]
        return [JSONParser()]


# --- Auth ---------------------------------------------------------------------------------------
class ObtainTokenView(APIView):
    """Exchange a researcher's username and password for their API token.

    Send it as ``Authorization: Token <token>``. The same token is returned until it is
    deleted (``manage.py drf_create_token -r <username>`` replaces it)."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    parser_classes = [JSONParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth-token"

    @extend_schema(
        operation_id="auth_token_create",
        request=AuthTokenSerializer,
        responses={
            200: serializers.TokenSerializer,
            400: _error("Missing fields, or the username and password do not match."),
            403: _error("The account is not a researcher's."),
            429: _error("Too many attempts; try again after Retry-After seconds."),
        },
        auth=[],
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        if not is_researcher(user):
            raise PermissionDenied("Only researchers (active staff accounts) can get an API token.")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key, "username": user.get_username()})


# --- Models -------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List registered models"),
    retrieve=extend_schema(summary="A model's card"),
)
class ModelViewSet(ArchiveActions, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """The model catalogue: pretrained models, untrained and simple baselines."""

    queryset = selectors.models_all(include_archived=True)  # lists: see ModelFilter
    serializer_class = serializers.ModelSerializer
    filterset_class = filters.ModelFilter
    noun = "model"

    @extend_schema(
        summary="Register a model",
        description="Names and paths are checked at once, without loading weights; a worker "
        "then loads the model and lists its layers (see the layers endpoint).",
        request=serializers.ModelRegisterSerializer,
        responses={201: serializers.ModelSerializer},
        examples=[
            OpenApiExample(
                "untrained timm baseline",
                value={
                    "name": "resnet18-untrained",
                    "source": "timm",
                    "identifier": "resnet18",
                    "weights": "untrained",
                },
                request_only=True,
            )
        ],
    )
    def create(self, request: Request) -> Response:
        serializer = serializers.ModelRegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model = services.model_register(**serializer.validated_data, created_by=request.user)
        return self.created(
            model,
            serializers.ModelSerializer,
            reverse("api:model-detail", args=[model.pk]),
        )

    @extend_schema(
        summary="A model's layers with output shapes",
        description="Listed by a worker after registration (`inspection` is `pending` until "
        "then); any of them can be picked for a run.",
        responses={200: serializers.ModelLayersSerializer},
    )
    @action(detail=True, methods=["get"])
    def layers(self, request: Request, pk: str) -> Response:
        model = self.get_object()
        layers = [
            {
                "index": index,
                "name": layer["name"],
                "shape": layer.get("shape", []),
                "is_default": layer["name"] == model.default_layer,
            }
            for index, layer in enumerate(model.layers or [])
        ]
        return Response(
            {
                "model": model.pk,
                "inspection": model.inspection_state,
                "inspection_error": model.inspection_error,
                "default_layer": model.default_layer,
                "layers": layers,
            }
        )


# --- Datasets -----------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List datasets"),
    retrieve=extend_schema(summary="A dataset, with its label counts and targets"),
)
class DatasetViewSet(
    ArchiveActions, _UploadParsers, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById
):
    """Stimulus datasets (images, texts, audio, video) and their stimuli."""

    serializer_class = serializers.DatasetSerializer
    filterset_class = filters.DatasetFilter
    noun = "dataset"

    def get_queryset(self) -> QuerySet[Dataset]:
        return (
            selectors.datasets_with_counts(include_archived=True)  # lists: DatasetFilter
            .select_related("created_by")
            .prefetch_related(
                Prefetch("targets", queryset=Target.objects.select_related("judgments"))
            )
            .order_by("name", "id")
        )

    def get_serializer_class(self) -> type:
        if self.action == "retrieve":
            return serializers.DatasetDetailSerializer
        if self.action == "stimuli":
            return serializers.StimulusSerializer
        return serializers.DatasetSerializer

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="Import a dataset (multipart upload)",
        description="Images, audio or video: a zip of folders named by label (`cat/001.png`, "
        "`run/clip.mp4`, optionally under `train/` and `test/`; video takes a "
        "`frame_sampling`, default `frames=8`). Texts: a UTF-8 CSV with a header. All or "
        "nothing: a bad member or row is named in the error and nothing is kept. Files over "
        "DATASET_UPLOAD_MAX_BYTES are refused (413) before they are read.",
        request={"multipart/form-data": serializers.DatasetUploadSerializer},
        responses={201: serializers.DatasetDetailSerializer},
    )
    def create(self, request: Request) -> Response:
        fields = _upload_fields(request, serializers.DatasetUploadSerializer)
        dataset = dataset_import_from(fields, created_by=request.user)
        dataset = self.get_queryset().get(pk=dataset.pk)
        return self.created(
            dataset,
            serializers.DatasetDetailSerializer,
            reverse("api:dataset-detail", args=[dataset.pk]),
        )

    @extend_schema(
        summary="A dataset's stimuli, in order (paginated)",
        parameters=[
            OpenApiParameter("label", str, description="Exact label."),
            OpenApiParameter("split", str, enum=[v for v in Split.values if v]),
        ],
        responses={200: serializers.StimulusSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def stimuli(self, request: Request, pk: str) -> Response:
        dataset = self.get_object()
        # The viewset's filters are about datasets; these are about the stimuli.
        stimuli = filters.StimulusFilter(
            request.query_params, queryset=dataset.stimuli.order_by("order")
        )
        if not stimuli.is_valid():
            raise ValidationError(stimuli.errors)
        queryset = stimuli.qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# --- Runs ---------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List runs, newest first, with their progress"),
    retrieve=extend_schema(
        summary="A run's progress",
        description="Per model: status, stimuli processed, progress and timings; for the "
        "run: progress, elapsed seconds and an estimate of the seconds left.",
    ),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Evaluations of models on a dataset: one step per model, run by the workers."""

    serializer_class = serializers.RunSerializer
    filterset_class = filters.RunFilter
    noun = "run"

    def get_queryset(self) -> QuerySet[Run]:
        return selectors.runs_with_steps()

    @extend_schema(
        summary="Launch a run",
        description="Validated as the *New run* form validates: the dataset, models of its "
        "modality, metrics that apply to the targets scored (those named in `targets`, else "
        "every target of the dataset but a study pilot's simulated ones), layers the models "
        "have. One step per "
        "model is queued for the workers. A 201 means the run is stored: when the task queue "
        "is unreachable it is still created (`waiting_for_queue` is true) and starts once the "
        "queue is back, so a client must not create it again.",
        request=serializers.RunCreateSerializer,
        responses={201: serializers.RunSerializer},
        examples=[
            OpenApiExample(
                "k-NN on one model",
                value={
                    "dataset": 1,
                    "models": [2],
                    "metrics": [{"name": "knn", "params": {"k": 5, "split": "loo"}}],
                },
                request_only=True,
            )
        ],
    )
    def create(self, request: Request) -> Response:
        serializer = serializers.RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        run = services.run_create(
            dataset=fields["dataset"],
            models=fields["models"],
            metrics=fields["metrics"],
            layers=fields["layers"],
            created_by=request.user,
            targets=fields.get("targets"),  # left out: the dataset's default targets
        )
        return self.created(
            selectors.runs_with_steps().get(pk=run.pk),
            serializers.RunSerializer,
            reverse("api:run-detail", args=[run.pk]),
        )

    @extend_schema(
        summary="Cancel a run",
        description="Workers stop at their next progress report.",
        request=None,
        responses={
            200: serializers.RunSerializer,
            409: _error("The run had already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        if not services.run_cancel(run=run):
            raise Conflict(f"Run {run.pk} had already finished ({run.status}).")
        return Response(self.get_serializer(selectors.runs_with_steps().get(pk=run.pk)).data)

    @extend_schema(
        summary="Queue a finished run's failed and cancelled models again",
        description="Cached embeddings are reused, so only what is missing is redone.",
        request=None,
        responses={
            200: serializers.RunRetrySerializer,
            409: _error("Nothing to retry: the run is unfinished, or no model failed."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        queued = services.run_retry(run=run)
        if not queued:
            raise Conflict(
                f"Nothing to retry in run {run.pk}: only finished runs with failed or "
                "cancelled models can be retried."
            )
        return Response(
            {
                "queued": queued,
                "run": self.get_serializer(selectors.runs_with_steps().get(pk=run.pk)).data,
            }
        )


# --- Leaderboard data (public) --------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        summary="List scores (public)",
        description="The numbers the public leaderboards show, with their 95% interval, "
        "the target's ceiling and the value as a fraction of it. Newest first.",
    ),
    retrieve=extend_schema(summary="A score (public)"),
)
class ScoreViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Scores of models on targets: public, like the leaderboards that show them."""

    permission_classes = [PublicReadResearcherWrite]
    queryset = selectors.scores_newest_first()
    serializer_class = serializers.ScoreSerializer
    filterset_class = filters.ScoreFilter
    noun = "score"


@extend_schema_view(
    list=extend_schema(summary="List targets (public): what scores measure agreement with"),
    retrieve=extend_schema(summary="A target (public)"),
)
class TargetViewSet(ArchiveActions, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """What scores measure agreement with: a dataset's labels or a judgments version."""

    permission_classes = [PublicReadResearcherWrite]
    serializer_class = serializers.TargetSerializer
    filterset_class = filters.TargetFilter
    noun = "target"

    def get_queryset(self) -> QuerySet[Target]:
        return selectors.targets_with_score_counts(include_archived=True).order_by(
            "dataset__name", "name", "id"
        )

    @extend_schema(
        summary="A pair target's human data, as the metrics score it (researchers; streamed)",
        parameters=[serializers.HumanQuerySerializer],
        responses=DOWNLOAD_RESPONSES,
    )
    @action(
        detail=True,
        methods=["get"],
        permission_classes=[IsResearcher],
        content_negotiation_class=_ServerChoosesFormat,
    )
    def human(self, request: Request, pk: str) -> StreamingHttpResponse:
        query = _query(serializers.HumanQuerySerializer, request)
        return _download(
            downloads.human_download(self.get_object(), shape=query["shape"], fmt=query["format"])
        )

    @extend_schema(
        summary="Per pair: the human value and each model's cosine similarity (researchers)",
        parameters=[serializers.PairTableQuerySerializer],
        responses=DOWNLOAD_RESPONSES,
    )
    @action(
        detail=True,
        methods=["get"],
        permission_classes=[IsResearcher],
        content_negotiation_class=_ServerChoosesFormat,
    )
    def pairs(self, request: Request, pk: str) -> StreamingHttpResponse:
        query = _query(serializers.PairTableQuerySerializer, request)
        target = self.get_object()
        return _download(downloads.pair_table_download(target, _models(query["models"])))

    @extend_schema(
        summary="Paired differences among the best models on a metric (public)",
        description="The board's best models whose scores share the leader's bootstrap "
        "resamples, in score order, each with its 95% rank interval and tie group; and every "
        "ordered pair with the difference, its 95% interval, and its two-sided p-value, raw "
        "and Holm-adjusted over all pairs shown. `reason` says why there are none (the "
        "metric keeps no resamples, or the scores predate them: re-score them).",
        parameters=[serializers.ComparisonQuerySerializer],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def comparisons(self, request: Request, pk: str) -> Response:
        query = _query(serializers.ComparisonQuerySerializer, request)
        target = self.get_object()
        board = boards.leaderboard(target=target, query=boards.BoardQuery(sort=query["metric"]))
        if query["metric"] and query["metric"] != board.sort_key:
            raise ValidationError(
                {
                    "metric": f"No scores on {query['metric']!r} here; "
                    f"the board has {', '.join(board.metric_keys) or 'none'}."
                }
            )
        differences = comparisons.board_differences(board, top=query["top"])
        return Response(comparisons.differences_json(differences))


@extend_schema_view(
    list=extend_schema(summary="List cached embeddings (model x dataset x layer)"),
    retrieve=extend_schema(summary="A cached embedding set"),
)
class EmbeddingSetViewSet(_UploadParsers, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Cached embeddings, to continue in a notebook: download them or their similarity
    matrix (streamed); and embeddings computed elsewhere, imported as a model."""

    serializer_class = serializers.EmbeddingSetSerializer
    filterset_class = filters.EmbeddingSetFilter
    noun = "embedding set"

    def get_queryset(self) -> QuerySet[EmbeddingSet]:
        return selectors.embedding_sets()

    @extend_schema(
        summary="Import embeddings computed elsewhere as a model (multipart; read by a worker)",
        description="npy, npz, thingsvision's txt/hdf5/mat, parquet or csv; rows matched to "
        "the dataset's stimuli by id, name or order. The file is streamed to disk and read by "
        "a worker: poll the import (Location) until its status is succeeded (its model is "
        "then set) or failed (its error_message says why; nothing was stored).",
        request={"multipart/form-data": serializers.EmbeddingsImportSerializer},
        responses={202: serializers.EmbeddingImportSerializer},
    )
    def create(self, request: Request) -> Response:
        fields = _upload_fields(request, serializers.EmbeddingsImportSerializer)
        job = embeddings_import_queue(fields, created_by=request.user)
        body = serializers.EmbeddingImportSerializer(job).data
        location = reverse("api:embedding-import-detail", args=[job.pk])
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    @extend_schema(
        summary="The embeddings, one row per stimulus in dataset order (streamed)",
        parameters=[serializers.EmbeddingDownloadQuerySerializer],
        responses=DOWNLOAD_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=_ServerChoosesFormat)
    def download(self, request: Request, pk: str) -> StreamingHttpResponse:
        query = _query(serializers.EmbeddingDownloadQuerySerializer, request)
        return _download(downloads.embeddings_download(self.get_object(), query["format"]))

    @extend_schema(
        summary="The cosine similarity matrix of the stimuli (n x n float32, streamed)",
        parameters=[serializers.MatrixQuerySerializer],
        responses=DOWNLOAD_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=_ServerChoosesFormat)
    def similarity(self, request: Request, pk: str) -> StreamingHttpResponse:
        query = _query(serializers.MatrixQuerySerializer, request)
        return _download(downloads.similarity_download(self.get_object(), query["format"]))


@extend_schema_view(
    list=extend_schema(summary="List embedding imports, newest first"),
    retrieve=extend_schema(summary="An embedding import's progress"),
)
class EmbeddingImportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Uploads of embeddings being read by a worker, with their progress."""

    serializer_class = serializers.EmbeddingImportSerializer
    noun = "embedding import"

    def get_queryset(self) -> QuerySet[EmbeddingImport]:
        return selectors.embedding_imports().order_by("-created_at", "-id")


def _query(serializer_class: type[serializers.serializers.Serializer], request: Request) -> Any:
    # A plain dict: from a QueryDict, DRF would read a blank ?format= as "not given".
    query = serializer_class(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return query.validated_data


def _models(ids: str) -> list[PretrainedModel]:
    wanted = [part.strip() for part in ids.split(",") if part.strip()]
    if not wanted or not all(part.isdigit() for part in wanted):
        raise ValidationError({"models": "Give model ids separated by commas, e.g. 3,7."})
    found = selectors.models_in_order([int(part) for part in wanted])
    missing = sorted(set(map(int, wanted)) - {m.pk for m in found})
    if missing:
        raise NotFound(f"No model with id {missing[0]}.")
    return found


def _download(download: downloads.Download) -> StreamingHttpResponse:
    response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    return response


# --- Studies --------------------------------------------------------------------------------------
def _stream(rows: Any, fields: list[str] | None, fmt: str, filename: str) -> StreamingHttpResponse:
    body = study_exports.as_csv(rows, fields) if fmt == "csv" else study_exports.as_json(rows)
    response = StreamingHttpResponse(
        body, content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


EXPORT_RESPONSES = {
    (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, streamed."),
    (200, "application/json"): OpenApiResponse(
        {"type": "array", "items": {"type": "object"}}, description="JSON array, streamed."
    ),
}


@extend_schema_view(
    list=extend_schema(summary="List studies with participant and item counts"),
    retrieve=extend_schema(summary="A study: coverage, participants, reliability and aggregations"),
)
class StudyViewSet(ArchiveActions, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Human studies (pair ratings, triplets, 2AFC, tags) and their data."""

    serializer_class = serializers.StudySerializer
    filterset_class = filters.StudyFilter
    noun = "study"

    def get_queryset(self) -> QuerySet[Study]:
        return study_selectors.study_list(include_archived=True).order_by("-created_at", "-id")

    def get_serializer_class(self) -> type:
        return (
            serializers.StudyDetailSerializer
            if self.action == "retrieve"
            else serializers.StudySerializer
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        study = self.get_object()
        context = {**self.get_serializer_context(), "summary": study_selectors.study_summary(study)}
        return Response(self.get_serializer(study, context=context).data)

    @extend_schema(
        summary="Export a study's responses, per-item aggregates or tags (streamed)",
        parameters=[serializers.StudyExportQuerySerializer],
        responses=EXPORT_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=_ServerChoosesFormat)
    def export(self, request: Request, pk: str) -> StreamingHttpResponse:
        study = self.get_object()
        # A plain dict: from a QueryDict, DRF would read a blank ?format= as "not given".
        query = serializers.StudyExportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        what, fmt = query.validated_data["data"], query.validated_data["format"]
        export = study_exports.EXPORTS[what]
        return _stream(export.rows(study), export.fields, fmt, f"study-{study.pk}-{what}")


# --- Human judgments ------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List human judgment sets (every version)"),
    retrieve=extend_schema(summary="A judgment set: counts, scale and reliability ceiling"),
)
class JudgmentsViewSet(_UploadParsers, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ById):
    """Human judgments (pairs, triplets, 2AFC), versioned; each version is a target."""

    serializer_class = serializers.JudgmentsSerializer
    filterset_class = filters.JudgmentsFilter
    noun = "judgment set"

    def get_queryset(self) -> QuerySet[HumanJudgments]:
        return selectors.judgment_sets()

    @extend_schema(
        summary="Import published judgments (multipart CSV)",
        description="Pairs (`a, b, value[, participant]`), triplets (`a, b, c, choice`), "
        "2AFC (`reference, first, second, choice`) or a square similarity matrix, matched "
        "to an existing dataset's stimuli or made into a new text dataset. A name that "
        "exists becomes its next version. All or nothing.",
        request={"multipart/form-data": serializers.JudgmentsImportSerializer},
        responses={201: serializers.JudgmentsSerializer},
    )
    def create(self, request: Request) -> Response:
        fields = _upload_fields(request, serializers.JudgmentsImportSerializer)
        judgments = judgments_import_from(fields, created_by=request.user)
        return self.created(
            self.get_queryset().get(pk=judgments.pk),
            serializers.JudgmentsSerializer,
            reverse("api:judgments-detail", args=[judgments.pk]),
        )

    @extend_schema(
        summary="Export the judgments (streamed), in the columns their import reads",
        description="Stimuli are given by id (re-import with `match=id`) and, in `*_name` "
        "columns, by name.",
        parameters=[serializers.JudgmentsExportQuerySerializer],
        responses=EXPORT_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=_ServerChoosesFormat)
    def export(self, request: Request, pk: str) -> StreamingHttpResponse:
        judgments = self.get_object()
        # A plain dict: from a QueryDict, DRF would read a blank ?format= as "not given".
        query = serializers.JudgmentsExportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        name = slugify(judgments.name) or "judgments"
        return _stream(
            exports.judgment_rows(judgments),
            exports.judgment_fields(judgments),
            query.validated_data["format"],
            f"judgments-{judgments.pk}-{name}-v{judgments.version}",
        )


# --- Anything else under /api/ ------------------------------------------------------------------
class UnknownEndpointView(APIView):
    """A JSON 404 for addresses under /api/ that name no endpoint (Django's would be HTML)."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    schema = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        path = request.path
        hint = ""
        if not path.endswith("/"):
            try:
                resolved = resolve(path + "/")
            except Resolver404:
                resolved = None
            if resolved is not None and getattr(resolved.func, "cls", None) is not type(self):
                hint = f" Did you mean {path}/ (with the trailing slash)?"
        raise NotFound(f"No API endpoint at {path}.{hint} The endpoints are listed at /api/docs/.")
