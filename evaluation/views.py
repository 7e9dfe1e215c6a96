"""Catalogue, run and leaderboard pages. htmx requests get partials; every page also
works as plain HTML without JavaScript."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    QueryDict,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_POST

from core import querystring as qs
from core.auth import is_researcher, researcher_required
from core.http import HtmxHttpRequest
from evaluation import (
    compare,
    comparisons,
    downloads,
    figures,
    hub_ids,
    selectors,
    services,
    stacking,
)
from evaluation import leaderboards as boards
from evaluation.archived_lists import list_with_archived
from evaluation.engine.errors import StorageError
from evaluation.engine.metrics.paired import ALPHA
from evaluation.figure_views import figure_response
from evaluation.forms import (
    DatasetImportForm,
    DescriptionsImportForm,
    EmbeddingsImportForm,
    JudgmentImportForm,
    ModelRegisterForm,
    PublishedCeilingForm,
    RunForm,
    StackForm,
)
from evaluation.imports import staging
from evaluation.imports.descriptions import description_sets, descriptions_import
from evaluation.imports.embeddings import embeddings_import_queue
from evaluation.imports.judgment_files import column_map_from, preview_judgment_file
from evaluation.imports.judgments import judgments_import_from, report_lines
from evaluation.imports.reading import ImportProblem
from evaluation.imports.stimuli import dataset_import_from
from evaluation.layer_choice import board_layer_choices, cross_validates, random_floor
from evaluation.layer_choice import engine as layer_engine
from evaluation.metrics import METRICS
from evaluation.models import (
    Dataset,
    ModelSource,
    PretrainedModel,
    Run,
    Stimulus,
    Target,
    TargetKind,
)
from evaluation.services.published_ceiling import published_ceiling_set
from evaluation.stimulus_views import media_response

STIMULI_PREVIEW = 48
PAIR_TABLE_MODELS = 5  # models offered in a leaderboard's per-pair table


# --- Leaderboards (public) ------------------------------------------------------------------------
def leaderboards(request: HttpRequest) -> HttpResponse:
    """The front page: how close models come to people first (each human target's best
    models with CI, ceiling, fraction of ceiling and chance), then the label boards, the
    targets still waiting for scores and the runs still working. A bounded number of
    queries whatever the data (the boards are cached until a score changes)."""
    front = boards.front_page()
    targets, archived = list_with_archived(request, selectors.targets_with_score_counts)
    return render(
        request,
        "evaluation/leaderboards.html",
        {
            "front": front,
            "ceilings": boards.front_ceilings(front),
            "targets": targets,  # ?archived=1: a researcher's list has the archived too
            "runs_working": boards.runs_working(),
            **archived,
        },
    )


def leaderboard(
    request: HtmxHttpRequest,
    target_id: int,
    ceiling_form: PublishedCeilingForm | None = None,
) -> HttpResponse:
    """One target's board; its state lives in the URL, CSV with ?format=csv. A researcher's
    published-ceiling form comes back here with its errors (``ceiling_form``).

    The page caches its rendered board (and filter form) under the board's key, which
    changes with the target's scores; a request that finds them cached never loads the board
    itself (unpickling 500 rows costs more than the rest of the request), hence the lazy
    objects."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    query = boards.BoardQuery.from_params(request.GET)
    key = boards.board_key(target=target, query=query)
    # The lazy objects stand in for what they wrap (templates and helpers read them alike).
    board = cast(
        boards.Board,
        SimpleLazyObject(lambda: boards.leaderboard(target=target, query=query, key=key)),
    )
    if qs.choice_param(request.GET, "format", ("csv",), "") == "csv":
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="leaderboard-{target.pk}.csv"'
        csv.writer(response).writerows(boards.board_csv_rows(board))
        return response
    template = "evaluation/leaderboard.html" + ("#board" if request.htmx else "")
    page = cast(boards.BoardPage, SimpleLazyObject(lambda: boards.board_page(board, query)))
    stackable: list[PretrainedModel] = []
    pair_downloads = None
    if target.kind == TargetKind.PAIRS and is_researcher(request.user) and not request.htmx:
        stackable = selectors.language_models_scored_on(target)
        models = selectors.models_with_default_embeddings_of(target.dataset)[:PAIR_TABLE_MODELS]
        pair_downloads = {"models": models, "model_ids": ",".join(str(m.pk) for m in models)}
    return render(
        request,
        template,
        {
            "board": board,
            "board_key": key,
            "target": target,
            "chances": boards.chances_for(target.kind),
            "ceiling_meaning": boards.CEILING_MEANING.get(target.kind, ""),
            # Outside the cached board: its form carries this visitor's CSRF token.
            "stale_scores": 0 if request.htmx else boards.stale_count(board, key=key),
            "query": query,
            "layer_choices": LAYER_LABELS,
            "sort_links": SimpleLazyObject(lambda: _sort_links(board, query)),
            "csv_link": "?" + "&".join(p for p in (query.as_params(page=1), "format=csv") if p),
            "page": page,
            "page_links": SimpleLazyObject(lambda: _page_links(page, query)),
            "stackable": stackable,
            "pair_downloads": pair_downloads,
            "ceilings": boards.target_ceilings(target),
            "ceiling_form": _ceiling_form(request, target, ceiling_form),
            # Inside the cached board: computed only when the board is rendered afresh.
            "random_floor": SimpleLazyObject(lambda: random_floor(target, board.sort_key)),
        },
        status=400 if ceiling_form is not None and ceiling_form.errors else 200,
    )


def leaderboard_layer_choice(request: HtmxHttpRequest, target_id: int) -> HttpResponse:
    """Best layer per model, chosen on half the stimuli and scored on the other half (both
    ways, over seeded random halvings), beside the board's optimistic choice."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    query = boards.BoardQuery.from_params(request.GET)
    board = boards.leaderboard(target=target, query=query)
    template = "evaluation/leaderboard_layer_choice.html" + ("#choices" if request.htmx else "")
    return render(
        request,
        template,
        {
            "target": target,
            "board": board,
            # None while a worker computes it: the page polls (htmx) until it is cached.
            "choices": board_layer_choices(
                target=target, metric_key=board.sort_key, partial=bool(request.htmx)
            ),
            "cross_validated": cross_validates(board.sort_key),
            "splits": layer_engine.CV_SPLITS,
            "seed": layer_engine.CV_SEED,
            "board_query": query.as_params(page=1),
        },
    )


def _ceiling_form(
    request: HttpRequest, target: Any, form: PublishedCeilingForm | None
) -> PublishedCeilingForm | None:
    """Researchers may enter a published ceiling on human targets (shown under the board)."""
    if form is not None:
        return form
    if target.judgments_id is None or not is_researcher(request.user):
        return None
    initial = {"value": target.published_ceiling, "source": target.published_ceiling_source}
    return PublishedCeilingForm(initial=initial, target=target)


@researcher_required
@require_POST
def leaderboard_published_ceiling(request: HtmxHttpRequest, target_id: int) -> HttpResponse:
    """Enter (or remove) a ceiling reported elsewhere for a human target, with its source."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    if target.judgments_id is None:
        messages.error(request, "Label targets have no human ceiling to publish.")
        return redirect(target)
    if request.POST.get("remove"):
        published_ceiling_set(target=target, value=None, source="")
        messages.success(request, "Removed the published ceiling.")
        return redirect(target)
    form = PublishedCeilingForm(request.POST, target=target)
    if not form.is_valid():
        return leaderboard(request, target_id, ceiling_form=form)
    published_ceiling_set(target=target, **form.cleaned_data)
    messages.success(
        request,
        f"Published ceiling {form.cleaned_data['value']:g} ({form.cleaned_data['source']}) "
        "is drawn on the board, marked as published.",
    )
    return redirect(target)


@researcher_required
@require_POST
def leaderboard_rescore(request: HttpRequest, target_id: int) -> HttpResponse:
    """Re-score the target's stale scores in one run (cached embeddings are reused)."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    try:
        rescoring = services.scores_rescore_stale(target=target, created_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(target)
    run = rescoring.run
    left = (
        f" {len(rescoring.left)} stale score(s) at another precision are left: re-score them "
        "from a worker extracting at that precision."
        if rescoring.left
        else ""
    )
    messages.success(
        request,
        f"Re-scoring {run.steps.count()} model(s) on {target.dataset}; cached embeddings are "
        f"reused where the model did not change.{left}",
    )
    return redirect(run)


def target_differences(request: HttpRequest, target_id: int) -> HttpResponse:
    """Every pairwise paired difference among a target's top models on one metric: a
    heatmap and a table, with tie groups; CSV with ?format=csv (the figure's CSV, the one
    file the page links to)."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    page = comparisons.differences_page(target, request.GET)
    query, board, table = page.query, page.board, page.table
    # The board's view (layers, order, filters) carries over to the form and the CSV.
    kept, shown = page.kept, page.shown
    figure = figures.differences_figure(target, table, shown)
    if qs.choice_param(request.GET, "format", ("csv",), "") == "csv":
        if figure is None:
            return HttpResponseBadRequest(table.reason, content_type="text/plain; charset=utf-8")
        return figure_response(figure, "csv")
    return render(
        request,
        "evaluation/differences.html",
        {
            "target": target,
            "board": board,
            "table": table,
            "kept": kept,
            "figure": figure,
            "csv_url": figure.download_url("csv") if figure is not None else "",
            "board_query": query.as_params(sort=board.sort_key, page=1),
            "max_models": comparisons.DIFFERENCES_MAX_MODELS,
            "default_models": comparisons.DIFFERENCES_DEFAULT_MODELS,
            "alpha": ALPHA,
        },
    )


@researcher_required
@require_POST
def leaderboard_stack(request: HttpRequest, target_id: int) -> HttpResponse:
    """Stack a language-based model with the board's top DNNs (by its default sort)."""
    target = get_object_or_404(selectors.targets_with_datasets(), pk=target_id)
    form = StackForm(request.POST, target=target)
    if not form.is_valid():
        messages.error(
            request, "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
        return redirect(target)
    board = boards.leaderboard(target=target, query=boards.BoardQuery())
    top_ids = [r.model_id for r in board.rows if not r.is_derived and not r.is_baseline]
    top_ids = top_ids[: form.cleaned_data["top"]]
    dnns = selectors.models_in_order(top_ids)
    try:
        score = stacking.stacked_create(
            target=target,
            language=form.cleaned_data["language"],
            dnns=dnns,
            calibration_size=form.cleaned_data["calibration"],
            created_by=request.user,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(target)
    gains = "; ".join(
        f"over {name} {g['value']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]"
        for name, g in score.details["gains"].items()
    )
    messages.success(
        request,
        f"{score.model.name}: {score.value:.3f} [{score.ci_low:.3f}, {score.ci_high:.3f}] on "
        f"{score.n} held-out pairs (language weight {score.details['language_weight']:g}); "
        f"gain {gains}.",
    )
    return redirect(target)


def _sort_links(board: boards.Board, query: boards.BoardQuery) -> dict[str, str]:
    flipped = "asc" if query.order == "desc" else "desc"
    return {
        key: "?"
        + query.as_params(sort=key, order=flipped if key == board.sort_key else "desc", page=1)
        for key in board.metric_keys
    }


def _page_links(page: boards.BoardPage, query: boards.BoardQuery) -> dict[str, Any]:
    return {
        "previous": "?" + query.as_params(page=page.number - 1),
        "next": "?" + query.as_params(page=page.number + 1),
        "sizes": [
            (size or "all", "?" + query.as_params(per_page=size, page=1))
            for size in (*boards.PAGE_SIZES, 0)
        ],
    }


LAYER_LABELS = [
    ("best", "best layer per model (optimistic: chosen on the scored data)"),
    ("default", "each model's default layer"),
    ("all", "every scored layer"),
]


def leaderboard_overall(request: HttpRequest) -> HttpResponse:
    """Mean normalised rank per model, label accuracy and human alignment apart; CSV too."""
    board = boards.overall_board()
    if qs.choice_param(request.GET, "format", ("csv",), "") == "csv":
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="leaderboard-overall.csv"'
        csv.writer(response).writerows(boards.overall_csv_rows(board))
        return response
    return render(request, "evaluation/leaderboard_overall.html", {"board": board})


# --- Compare (researchers: it shows stimuli) -----------------------------------------------------
@dataclass
class _CompareChoice:
    """The compare page's query, read once for the page, its sections and its CSVs."""

    targets: Any
    target: Any
    chosen: list[int]
    available: Any
    options: compare.Options
    comparison: compare.Comparison | None
    problem: str
    query: str  # the choice as a query string, without section, sort or sync


def _compare_choice(request: HttpRequest) -> _CompareChoice:
    targets = selectors.targets_to_compare()  # archived targets are no choice in the select
    target_id = qs.id_param(request.GET, "target")
    # ... but stay reachable by their address, as their board is
    listed_or_not = selectors.targets_with_datasets()
    target = listed_or_not.filter(pk=target_id).first() if target_id is not None else None
    chosen_ids = qs.id_list_param(request.GET, "models", limit=compare.MAX_MODELS)
    models = selectors.models_in_order(chosen_ids)
    options = compare.Options(
        order_by=qs.choice_param(request.GET, "order", compare.ORDERS, "label"),
        measure=qs.choice_param(request.GET, "measure", tuple(compare.MEASURES), "spearman"),
        stimulus_id=qs.id_param(request.GET, "stimulus"),
    )
    comparison = None
    problem = ""
    if target and len(models) >= 2:
        layers = {m.pk: qs.text_param(request.GET, f"layer_{m.pk}", max_length=200) for m in models}
        comparison = compare.prepare(target=target, models=models, layers=layers, options=options)
    elif request.GET:
        problem = "Choose a target and two to four models."
    kept = [
        (name, value)
        for name, value in request.GET.lists()
        if name not in ("section", "sync", "table") and not name.startswith("sort_")
    ]
    query = urlencode([(name, v) for name, values in kept for v in values])
    return _CompareChoice(
        targets,
        target,
        chosen_ids,
        selectors.models_with_embeddings_of(target.dataset if target else None),
        options,
        comparison,
        problem,
        query,
    )


def _compare_context(request: HttpRequest, choice: _CompareChoice) -> dict[str, Any]:
    return {
        "targets": choice.targets,
        "target": choice.target,
        "available": choice.available,
        "chosen": choice.chosen,
        "comparison": choice.comparison,
        "problem": choice.problem,
        "order": choice.options.order_by,
        "measure": choice.options.measure,
        "measures": compare.MEASURES,
        "measure_help": compare.MEASURE_HELP,
        "sections": compare.SECTIONS,
        "query": choice.query,
        "sync": request.GET.get("sync") == "1",
        **_compare_link_queries(request, choice),
        "tables": _pair_table_views(request, choice.comparison) if choice.comparison else {},
    }


def _compare_link_queries(request: HttpRequest, choice: _CompareChoice) -> dict[str, Any]:
    """The queries of the page's own links, each without the value it sets (a neighbour's
    stimulus=, a layer's layer_<model>=), so that clicking them does not pile up values, and
    with sync=1 where the page was asked for so (the page without JavaScript)."""

    def without(name: str) -> str:
        params = [(key, value) for key, value in parse_qsl(choice.query) if key != name]
        if request.GET.get("sync") == "1":
            params.append(("sync", "1"))
        return urlencode(params)

    sides = choice.comparison.sides if choice.comparison else []
    return {
        "neighbour_query": without("stimulus"),
        "layer_queries": {side.model.pk: without(f"layer_{side.model.pk}") for side in sides},
    }


def _pair_table_views(
    request: HttpRequest, comparison: compare.Comparison
) -> dict[str, dict[str, Any]]:
    """Each computed pair table as the template shows it: its rows in the order its
    sort_<key> parameter asks, headers that link to the other orders (server-side, so they
    work without JavaScript) and its CSV link."""
    tables = [table for _, table in comparison.human_tables]
    if comparison.disagreements is not None:
        tables.append(comparison.disagreements)
    views = {}
    for table in tables:
        name = f"sort_{table.key}"
        sort = qs.text_param(request.GET, name, max_length=40)
        if sort.lstrip("-") not in table.sort_keys():
            sort = table.default_sort
        params = request.GET.copy()
        params.pop("section", None)
        headers = []
        for key, heading in [("pair", "Pair"), *table.columns]:
            current = sort.lstrip("-") == key
            descending = sort.startswith("-")
            # First click: pairs A to Z, numbers largest first; a second click reverses.
            first = key if key == "pair" else f"-{key}"
            following = (key if descending else f"-{key}") if current else first
            params[name] = following
            headers.append(
                {
                    "heading": heading,
                    "href": "?" + params.urlencode(),
                    "sorted": ("descending" if descending else "ascending") if current else "",
                    "numeric": key != "pair",
                }
            )
        params[name] = sort
        params["table"] = table.key
        views[table.key] = {
            "table": table,
            "headers": headers,
            "rows": table.rows(sort),
            "sort": sort,
            "csv": reverse("evaluation:compare_pairs_csv") + "?" + params.urlencode(),
        }
    return views


@researcher_required
def compare_page(request: HttpRequest) -> HttpResponse:
    """2-4 models side by side on one target, from their cached embeddings. The page is
    the form and a placeholder per section, which htmx fills from compare_section; with
    ?sync=1 (the placeholders link to it, for browsers without JavaScript) every section
    is computed and shown at once."""
    choice = _compare_choice(request)
    if choice.comparison is not None and request.GET.get("sync") == "1":
        for name in compare.SECTIONS:
            compare.compute_section(choice.comparison, name)
    return render(request, "evaluation/compare.html", _compare_context(request, choice))


@gzip_page  # matrices as SVG: about a tenth of their size compressed (no secrets in them)
@researcher_required
def compare_section(request: HttpRequest) -> HttpResponse:
    """One section of the compare page (?section=), computed or read from the cache."""
    choice = _compare_choice(request)
    section = qs.choice_param(request.GET, "section", compare.SECTIONS, "")
    if choice.comparison is None or not section:
        return HttpResponse(
            f"Choose a target, two to four models and a section: {', '.join(compare.SECTIONS)}.",
            status=400,
            content_type="text/plain",
        )
    compare.compute_section(choice.comparison, section)
    context = _compare_context(request, choice)
    return render(request, f"evaluation/_compare_{section}.html", context)


@researcher_required
def compare_pairs_csv(request: HttpRequest) -> HttpResponse:
    """A pair table of the compare page as CSV (?table=people-<model id> or models), every
    pair it holds, in the order chosen on the page (?sort_<table>=)."""
    choice = _compare_choice(request)
    key = qs.text_param(request.GET, "table", max_length=40)
    section = "models" if key == "models" else "people"
    table = None
    if choice.comparison is not None:
        compare.compute_section(choice.comparison, section)
        table = choice.comparison.table(key)
    if table is None:
        return HttpResponse(
            "No such pair table: choose a target, two to four models and table=models or "
            "table=people-<model id> (a target of pair ratings).",
            status=400,
            content_type="text/plain",
        )
    sort = qs.text_param(request.GET, f"sort_{key}", max_length=40) or table.default_sort
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="compare-{key}.csv"'
    writer = csv.writer(response)
    writer.writerow(["stimulus_a", "stimulus_b", *(key for key, _ in table.columns)])
    for row in table.rows(sort, limit=None):
        writer.writerow([row["a"].name, row["b"].name, *(f"{v:.10g}" for v in row["values"])])
    return response


# --- Models ---------------------------------------------------------------------------------------
@researcher_required
def model_list(request: HttpRequest) -> HttpResponse:
    models, archived = list_with_archived(request, selectors.models_all)  # ?archived=1
    return render(request, "evaluation/model_list.html", {"models": models, **archived})


def _efficiency_context(request: HttpRequest, model: PretrainedModel) -> dict[str, Any]:
    """Language-based models: links to each pair target's judgment-efficiency curve, and the
    curve asked for (computed on request: it embeds every description once more)."""
    if model.source != ModelSource.LANGUAGE:
        return {}
    targets = selectors.pair_targets_scored_for(model)
    context: dict[str, Any] = {"efficiency_targets": targets}
    chosen = next((t for t in targets if t.pk == qs.id_param(request.GET, "efficiency")), None)
    if chosen is None:
        return context
    try:
        chart = figures.efficiency_of(model, chosen)  # kept: its downloads reuse it
    except figures.FigureProblem as exc:
        context["efficiency_problem"] = str(exc)
        return context
    context.update(
        efficiency_target=chosen,
        efficiency_chart=chart,
        efficiency_problem=chart.extra["problem"],
    )
    return context


@researcher_required
def model_create(request: HttpRequest) -> HttpResponse:
    form = ModelRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = services.model_register(**form.register_fields(), created_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Registered {model.display_name}.")
            if form.hub_note:
                messages.info(request, form.hub_note)
            return redirect(model)
    context = {"form": form, "hub_offline": hub_ids.hub_offline()}
    return render(request, "evaluation/model_form.html", context)


@researcher_required
def embeddings_import_view(request: HttpRequest) -> HttpResponse:
    """Embeddings computed elsewhere, as a model whose runs score them. The upload is
    streamed to disk and read by a worker; its page shows the progress."""
    form = EmbeddingsImportForm(request.POST or None, request.FILES or None)
    if not _upload_refused(request, form) and request.method == "POST" and form.is_valid():
        try:
            job = embeddings_import_queue(form.cleaned_data, created_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        except StorageError as exc:  # a full or read-only MEDIA_ROOT: named, nothing kept
            form.add_error(None, str(exc))
        else:
            return redirect(job)
    return render(request, "evaluation/embeddings_form.html", {"form": form})


@researcher_required
def embeddings_import_detail(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(selectors.embedding_imports(), pk=job_id)
    template = "evaluation/embeddings_import.html" + ("#job" if request.htmx else "")
    return render(request, template, {"job": job})


@researcher_required
def model_detail(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(PretrainedModel, pk=model_id)
    return render(
        request,
        "evaluation/model_detail.html",
        {
            "model": model,
            "scores": selectors.model_scores(model=model),
            "embedding_sets": selectors.embedding_sets().filter(model=model),
            "embedding_formats": downloads.EMBEDDING_FORMATS,
            "matrix_formats": downloads.MATRIX_FORMATS,
            "curves": figures.layer_curve_figures(model),
            **_efficiency_context(request, model),
        },
    )


# --- Datasets -------------------------------------------------------------------------------------
@researcher_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    datasets, archived = list_with_archived(request, selectors.datasets_with_counts)
    return render(request, "evaluation/dataset_list.html", {"datasets": datasets, **archived})


def _upload_refused(request: HttpRequest, form: Any) -> bool:
    """Show the upload handler's refusal (file too large, read before the view) on the form."""
    refused = getattr(request, "upload_refused", None)
    if refused:
        form.is_valid()
        form.errors.pop("file", None)
        form.add_error("file", refused)
    return bool(refused)


@researcher_required
def dataset_create(request: HttpRequest) -> HttpResponse:
    form = DatasetImportForm(request.POST or None, request.FILES or None)
    if not _upload_refused(request, form) and request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_import_from(form.cleaned_data, created_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        except StorageError as exc:  # a full or read-only MEDIA_ROOT: named, nothing kept
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Imported {dataset.stimulus_count} stimuli into {dataset}.")
            return redirect(dataset)
    return render(request, "evaluation/dataset_form.html", {"form": form})


@researcher_required
def judgments_import_view(request: HttpRequest) -> HttpResponse:
    """Published judgments (pairs, triplets, 2AFC, a matrix) as a scoring target. A file
    that failed to import stays chosen (staged) for the next attempt."""
    files, token = _with_staged_file(request)
    form = JudgmentImportForm(request.POST or None, files or None)
    staged = staging.staged_name(request.session, token) if token else None
    if not _upload_refused(request, form) and request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            judgments = judgments_import_from(data, created_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if token:
                staging.discard(request.session, token)
            messages.success(
                request,
                " ".join(
                    [
                        f"Imported {judgments.judgment_count} judgments as {judgments.name} "
                        f"v{judgments.version}.",
                        *report_lines(judgments),
                    ]
                ),
            )
            return redirect(judgments.dataset)
    if request.method == "POST" and "file" in request.FILES:  # failed: keep it for the next try
        token = staging.stage(request.session, request.FILES["file"])
        staged = staging.staged_name(request.session, token)
    if staged:  # the staged file stands in for the file input: the browser may leave it empty
        form.use_required_attribute = False
    context = {"form": form, "staged_token": token if staged else "", "staged_name": staged}
    return render(request, "evaluation/judgments_form.html", context)


def _with_staged_file(request: HttpRequest) -> tuple[Any, str]:
    """The request's files, with the staged file from an earlier attempt where none was
    chosen this time; and that staged file's token (blank where there is none)."""
    token = request.POST.get("staged_file", "") if request.method == "POST" else ""
    if "file" in request.FILES or not token:
        return request.FILES, "" if "file" in request.FILES else token
    staged = staging.open_staged(request.session, token)
    if staged is None:
        return request.FILES, ""
    files = request.FILES.copy()
    files["file"] = staged
    return files, token


@researcher_required
@require_POST
def judgments_preview(request: HttpRequest) -> HttpResponse:
    """The file's first rows as the import would read them, with the columns each role
    takes (htmx: refreshed as the file, the format or the column map change)."""
    files, _ = _with_staged_file(request)
    upload = files.get("file")
    context: dict[str, Any] = {}
    if upload is None:
        context["problem"] = "Choose a file to see its first rows."
    else:
        try:
            columns = column_map_from(
                {**request.POST.dict(), "names_file": request.FILES.get("names_file")}
            )
            context["preview"] = preview_judgment_file(
                upload, format=request.POST.get("format", ""), columns=columns
            )
        except ImportProblem as exc:
            context["problem"] = str(exc)
        except ValidationError as exc:
            context["problem"] = " ".join(exc.messages)
    return render(request, "evaluation/_judgments_preview.html", context)


@researcher_required
def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    return render(
        request,
        "evaluation/dataset_detail.html",
        {
            "dataset": dataset,
            "stimuli": selectors.stimuli_preview(dataset, limit=STIMULI_PREVIEW),
            "label_counts": selectors.dataset_label_counts(dataset=dataset),
            "targets": selectors.targets_of(dataset=dataset),
            "description_sets": description_sets(dataset=dataset),
            "descriptions_form": DescriptionsImportForm(),
        },
    )


@researcher_required
@require_POST
def descriptions_import_view(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """A description set (captions or tags) for this dataset's stimuli, from a CSV."""
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    form = DescriptionsImportForm(request.POST, request.FILES)
    if _upload_refused(request, form) or not form.is_valid():
        messages.error(
            request, "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
        return redirect(dataset)
    try:
        count = descriptions_import(
            dataset=dataset,
            upload=form.cleaned_data["file"],
            origin=form.cleaned_data["name"],
            match=form.cleaned_data["match"],
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Stored {count} descriptions as {form.cleaned_data['name']!r}; register a "
            "language-based model over them to score them.",
        )
    return redirect(dataset)


@researcher_required
def stimulus_file(request: HttpRequest, stimulus_id: int) -> HttpResponseBase:
    """Stimulus files are research data: served to researchers only, never as public media;
    in byte ranges when asked (players seek and loop clips so)."""
    stimulus = get_object_or_404(Stimulus, pk=stimulus_id)
    if not stimulus.file:
        raise Http404("This stimulus is a text, not a file.")
    return media_response(request, stimulus.file)


# --- Runs -----------------------------------------------------------------------------------------
@researcher_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    runs = selectors.runs_recent()
    template = "evaluation/run_list.html" + ("#runs-table" if request.htmx else "")
    any_running = any(not row.run.is_finished for row in runs)
    context = {"runs": runs, "any_running": any_running, "workers": selectors.workers_up()}
    return render(request, template, context)


@researcher_required
def run_create(request: HtmxHttpRequest) -> HttpResponse:
    submitted = request.method == "POST"
    form = RunForm(request.POST if submitted else None, initial=_run_initial(request.GET))
    if request.htmx and not submitted:
        # The dataset (or the targets ticked) changed: re-render the fields that depend on it
        # (the page keeps the metrics' part when the targets changed).
        return render(request, "evaluation/run_form.html#run-fields", {"form": form})
    if submitted and form.is_valid():
        try:
            run = services.run_create(
                dataset=form.cleaned_data["dataset"],
                models=list(form.cleaned_data["models"]),
                metrics=form.metric_entries(),
                layers=form.layer_choices(),
                created_by=request.user,
                targets=list(form.cleaned_data["targets"]) or None,  # none ticked: the default
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Run {run.pk} queued.")
            return redirect(run)
    return render(request, "evaluation/run_form.html", {"form": form})


def _run_initial(query: QueryDict) -> dict[str, Any]:
    """The new-run form's first choices: ?dataset=, with the targets of ?targets= ticked (the
    page's own link to show the metrics of the targets ticked, which also carries the ticks
    of the metrics it showed), or ?target= (a leaderboard's, or a study's just aggregated,
    simulated or not): its dataset, that target ticked, and the metrics that score that kind
    of target ticked and the others not."""
    initial: dict[str, Any] = {
        "dataset": qs.id_param(query, "dataset"),
        "targets": [pk for pk in query.getlist("targets") if pk.isascii() and pk.isdigit()],
    }
    target_id = qs.id_param(query, "target")
    target = Target.objects.filter(pk=target_id).first() if target_id else None
    if target is not None:
        initial["dataset"] = target.dataset_id
        initial["targets"] = [target.pk]
        for name, info in METRICS.items():
            initial[f"metric_{name}"] = target.kind in info.target_kinds
    # Re-rendered because the targets ticked changed: the metrics that were on the page keep
    # the ticks the researcher gave them (a metric newly offered starts at its default).
    for name in set(query.getlist("shown_metric")) & METRICS.keys():
        initial[f"metric_{name}"] = f"metric_{name}" in query
    return initial


@researcher_required
def run_detail(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(run_id)
    template = (
        "evaluation/run_detail.html#run-progress" if request.htmx else "evaluation/run_detail.html"
    )
    progress = selectors.run_progress_fraction(run)
    return render(
        request,
        template,
        {
            "run": run,
            "progress": progress,
            "remaining": selectors.run_seconds_left(run, progress),
            "step_counts": selectors.run_step_counts(run),
            "ran_on": selectors.run_steps_ran_on(run),
        },
    )


@researcher_required
@require_POST
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    count = services.run_retry(run=run)
    if count:
        messages.info(request, f"Queued {count} model(s) of run {run.pk} again.")
    else:
        messages.warning(
            request, "Nothing to retry: only finished runs with failed or cancelled models."
        )
    return redirect(run)


@researcher_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    if services.run_cancel(run=run):
        messages.info(request, f"Run {run.pk} cancelled.")
    else:
        messages.warning(request, f"Run {run.pk} had already finished.")
    return redirect(run)


def _run_or_404(run_id: int) -> Run:
    try:
        return selectors.run_with_steps(run_id=run_id)
    except Run.DoesNotExist:
        raise Http404("No such run.") from None
