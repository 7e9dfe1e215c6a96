"""Figures a researcher can take away: each plot as SVG, as PNG and as the data behind it.

A ``Figure`` is the SVG text, the table it was drawn from and a file name. One function per
figure kind builds it from the same query parameters wherever it is shown, so the page, the
download view (``evaluation.figure_views``, ``/figures/<kind>.<svg|png|csv>?...``) and the
API (``/api/figures/<kind>/?format=...&...``) serve one and the same figure.

Adding a figure kind (the compare page's, say)::

    @figures.register(
        "similarity-matrix",
        summary="A model's cosine similarity matrix of the target's stimuli",
        params={"target": "target id", "model": "model id", "layer": "layer name"},
    )
    def similarity_matrix(params: Mapping[str, str]) -> figures.Figure:
        target = figures.object_param(params, "target", Target)
        ...
        return figures.Figure(kind="similarity-matrix", svg=plots.heatmap(...),
                              columns=[...], rows=[...], filename="...",
                              params=[("target", str(target.pk)), ...])

The module that registers must be imported at start-up (``EvaluationConfig.ready`` imports
``evaluation.figures`` and ``evaluation.compare``; annotation's kinds register in
``AnnotationConfig.ready``). The page then shows it with
``{% include "evaluation/_figure.html" with figure=the_figure id="..." %}``: the SVG, its
caption, and links to the three downloads (``Figure.downloads``). Researcher-only unless
registered with ``public=True`` (the page it comes from is public).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Count, Max
from django.urls import reverse
from django.utils.safestring import SafeString
from django.utils.text import slugify

from core import querystring as qs
from evaluation import comparisons, plots
from evaluation.metrics import metric_name
from evaluation.models import Description, PretrainedModel, Score, Target

FORMATS = {
    "svg": "image/svg+xml",
    "png": "image/png",
    "csv": "text/csv; charset=utf-8",
}
PNG_ZOOM = 2  # PNG pixels per SVG unit: sharp on high-density screens and in print drafts
# A larger PNG is drawn at a lower zoom (the SVG download keeps every detail): a 4000 x 4000
# matrix at 2x would take about 250 MB to render and to send.
PNG_MAX_PIXELS = 40_000_000
PNG_MIN_ZOOM = 0.5  # below this a PNG is unreadable: the download is refused (take the SVG)

# The engine adapters' own outputs (``native_layers``): the model's final embedding, listed
# first in ``PretrainedModel.layers`` but computed last. tests/evaluation/test_figures.py
# checks this list against the adapters.
FINAL_OUTPUTS = frozenset(
    {
        "pre_logits",  # timm
        "last_hidden_state",  # transformers
        "image_embedding",  # open_clip
        "text_embedding",  # open_clip
        "sentence_embedding",  # sentence-transformers
        "output",  # torchscript
        "video_embedding",  # X-CLIP
        "pixels",  # pixel baseline
        "tfidf",  # TF-IDF baseline
        "chargrams",  # character n-gram baseline
        "language",  # language-based models
        "embedding",  # imported embeddings
    }
)


class FigureNotFound(Exception):
    """No such figure kind, or no such object behind it (a 404)."""


class FigureProblem(Exception):
    """The parameters do not make a figure (a 400); the message says which and why."""


@dataclass(frozen=True)
class Figure:
    """One plot: its SVG, the rows it was drawn from (``columns`` name them, with units),
    a file name stem that says what it shows, and the query parameters that rebuild it."""

    kind: str
    svg: SafeString
    columns: list[str]
    rows: list[list[Any]]
    filename: str
    params: Sequence[tuple[str, str]] = ()
    caption: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # what a page shows beside it
    # Matrices and scatters: the page offers zoom buttons (static/js/figures.js).
    zoomable: bool = False

    @property
    def query(self) -> str:
        return urlencode(list(self.params))

    @property
    def html_id(self) -> str:
        """An id for the figure on its page: its kind and parameters."""
        return slugify("-".join([self.kind, *(value for _, value in self.params)]))[:100]

    def download_url(self, fmt: str) -> str:
        url = reverse("evaluation:figure_download", args=[self.kind, fmt])
        return f"{url}?{self.query}" if self.params else url

    @property
    def downloads(self) -> list[tuple[str, str, str]]:
        """(format, label, url) of each download, for the links under the figure."""
        return [
            ("svg", "SVG", self.download_url("svg")),
            ("png", "PNG", self.download_url("png")),
            ("csv", "CSV (the data)", self.download_url("csv")),
        ]

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([_csv_value(v) for v in row] for row in self.rows)
        return out.getvalue()

    def svg_document(self) -> str:
        return f'<?xml version="1.0" encoding="UTF-8"?>\n{plots.xml_safe(self.svg)}\n'

    @property
    def size(self) -> tuple[float, float]:
        """The SVG's width and height (its own units: pixels at zoom 1)."""
        found = re.search(r'<svg[^>]*? width="([\d.]+)" height="([\d.]+)"', self.svg)
        if found is None:
            raise FigureProblem("The figure's SVG gives no width and height to draw it at.")
        return float(found.group(1)), float(found.group(2))

    def png_zoom(self, zoom: float = PNG_ZOOM) -> float:
        """``zoom``, lowered where the PNG would exceed ``PNG_MAX_PIXELS``; a figure too large
        even at ``PNG_MIN_ZOOM`` is refused (FigureProblem) with the SVG offered instead."""
        width, height = self.size
        if width * height * zoom**2 <= PNG_MAX_PIXELS:
            return zoom
        fitting = math.sqrt(PNG_MAX_PIXELS / (width * height))
        if fitting < PNG_MIN_ZOOM:
            raise FigureProblem(
                f"The figure is {width:.0f} x {height:.0f} units: as a PNG it would exceed "
                f"{PNG_MAX_PIXELS / 1e6:.0f} million pixels even at {PNG_MIN_ZOOM}x. Download "
                "the SVG (it keeps every detail at any size), or show fewer rows."
            )
        return fitting

    def png(self, zoom: float = PNG_ZOOM) -> bytes:
        """The SVG rendered by resvg (no browser, no system library; fonts: DejaVu Sans,
        which the Docker image installs), on white; at a lower zoom where it would be too
        large (``png_zoom``). A figure the renderer refuses is a FigureProblem (a 400)."""
        import resvg_py  # imported here: only downloads need it

        zoom = self.png_zoom(zoom)
        try:
            return bytes(
                resvg_py.svg_to_bytes(
                    svg_string=plots.xml_safe(self.svg),
                    background="#ffffff",
                    zoom=zoom,
                    sans_serif_family="DejaVu Sans",
                )
            )
        except (ValueError, RuntimeError) as exc:  # resvg_py's "can't parse", "can't render"
            raise FigureProblem(
                f"This figure could not be drawn as a PNG ({exc}); its SVG and CSV downloads "
                "hold the same figure and data."
            ) from None

    def content(self, fmt: str) -> bytes:
        if fmt == "png":
            return self.png()
        text = self.csv_text() if fmt == "csv" else self.svg_document()
        return text.encode()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


# --- Built figures, kept ------------------------------------------------------------------------
FIGURE_CACHE_SECONDS = 24 * 3600  # a key names its data (the stamp): new data, a new key


def cached_figure(kind: str, stamp: str, build: Callable[[], Figure]) -> Figure:
    """``build()``'s figure, kept for the expensive kinds (the efficiency curve embeds every
    description, the reliability trend recomputes split-halves at each point): the page, its
    three downloads and the API then build it once. ``stamp`` names the figure's parameters
    and the state of the data it is drawn from (counts, last ids), so that a new response,
    description or judgment makes a new key. Refusals (FigureProblem) are not kept."""
    key = f"figure:{kind}:" + hashlib.sha1(stamp.encode()).hexdigest()
    figure = cache.get(key)
    if figure is None:
        figure = build()
        cache.set(key, figure, FIGURE_CACHE_SECONDS)
    return figure


# --- The registry of figure kinds -------------------------------------------------------------
@dataclass(frozen=True)
class FigureKind:
    name: str
    build: Callable[[Mapping[str, Any]], Figure]
    summary: str
    params: dict[str, str]  # query parameter -> what it is, for the API's documentation
    public: bool = False


KINDS: dict[str, FigureKind] = {}


def register(
    name: str, *, summary: str, params: dict[str, str], public: bool = False
) -> Callable[[Callable[[Mapping[str, Any]], Figure]], Callable[[Mapping[str, Any]], Figure]]:
    def decorate(
        build: Callable[[Mapping[str, Any]], Figure],
    ) -> Callable[[Mapping[str, Any]], Figure]:
        KINDS[name] = FigureKind(name, build, summary, params, public)
        return build

    return decorate


def figure_kind(name: str) -> FigureKind:
    kind = KINDS.get(name)
    if kind is None:
        raise FigureNotFound(f"No figure kind {name!r}; the kinds are {', '.join(sorted(KINDS))}.")
    return kind


def figure_from_params(name: str, params: Mapping[str, Any]) -> Figure:
    """The figure of kind ``name`` from query parameters (a QueryDict or a dict)."""
    return figure_kind(name).build(params)


def id_param(params: Mapping[str, Any], name: str) -> int:
    value = qs.id_param(params, name)
    if value is None:
        raise FigureProblem(
            f"Give {name}=<id>, a positive whole number (got {params.get(name)!r})."
        )
    return value


def object_param(params: Mapping[str, Any], name: str, model: Any, queryset: Any = None) -> Any:
    pk = id_param(params, name)
    found = (queryset if queryset is not None else model.objects).filter(pk=pk).first()
    if found is None:
        raise FigureNotFound(f"No {name} with id {pk}.")
    return found


def file_stem(*parts: object) -> str:
    """A file name from what the figure shows, e.g. 'score-by-layer_resnet50_things-pairs'
    (each part in letters, digits and hyphens; parts joined by underscores)."""
    words = (slugify(re.sub(r"[^0-9A-Za-z]+", "-", str(p)))[:60].strip("-") for p in parts)
    return "_".join(w for w in words if w) or "figure"


# --- Layers in network depth order --------------------------------------------------------------
def is_final_output(layer: str) -> bool:
    return layer in FINAL_OUTPUTS


def depth_order(model: PretrainedModel, names: Sequence[str]) -> list[str]:
    """``names`` in the order the network computes them: modules by their place in the
    model's layer list, then layers the list does not know, then the model's final
    embedding (listed first by the adapters, computed last)."""
    depth = {layer["name"]: k for k, layer in enumerate(model.layers or [])}
    return sorted(
        dict.fromkeys(names),
        key=lambda name: (is_final_output(name), depth.get(name, len(depth)), _natural(name)),
    )


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Names the layer list does not know, in natural order: blocks.2 before blocks.10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def layer_tick(layer: str) -> str:
    return f"final embedding ({layer})" if is_final_output(layer) else layer


# --- Score by layer (the model page) -----------------------------------------------------------
LAYER_COLUMNS = [
    "model",
    "target",
    "metric",
    "metric (name)",
    "layer",
    "depth order (1 = shallowest; the final embedding last)",
    "score (the metric's unit)",
    "ci_low (95%)",
    "ci_high (95%)",
    "n (test items)",
    "ceiling (the metric's unit; empty: none; the target's published one where none is computed)",
]


def layer_curve_figures(model: PretrainedModel, *, target_id: int | None = None) -> list[Figure]:
    """Per target, each metric's latest score at every layer scored (only where a metric
    was scored at two or more layers: one point is not a curve), in depth order."""
    latest: dict[tuple[int, str, str], Score] = {}
    scores = model.scores.select_related("target").defer("resamples", "details", "provenance")
    if target_id is not None:
        scores = scores.filter(target_id=target_id)
    for score in scores.order_by("created_at", "id"):
        latest[(score.target_id, score.metric_key, score.layer)] = score
    by_target: dict[int, dict[str, list[Score]]] = {}
    for (target_id_, metric_key, _), score in latest.items():
        by_target.setdefault(target_id_, {}).setdefault(metric_key, []).append(score)
    figures = []
    for series in by_target.values():
        series = {key: scores for key, scores in series.items() if len(scores) > 1}
        if series:
            figures.append(_layer_curve_figure(model, series))
    return figures


def _layer_curve_figure(model: PretrainedModel, series: dict[str, list[Score]]) -> Figure:
    target = next(iter(series.values()))[0].target
    layers = depth_order(model, [s.layer for scores in series.values() for s in scores])
    position = {layer: k for k, layer in enumerate(layers)}
    points: dict[str, list[plots.Point]] = {}
    references = []
    rows: list[list[Any]] = []
    names = _series_names(list(series))
    computed = any(s.ceiling is not None for scores in series.values() for s in scores)
    published = _published_ceiling(target, computed=computed)
    for index, (key, scores) in enumerate(sorted(series.items())):
        scores = sorted(scores, key=lambda s: position[s.layer])
        points[names[key]] = [
            plots.Point(position[s.layer], s.value, s.layer, s.ci_low, s.ci_high) for s in scores
        ]
        ceiling = next((s.ceiling for s in reversed(scores) if s.ceiling is not None), None)
        if ceiling is not None:
            colour = plots.PALETTE[index % len(plots.PALETTE)]
            references.append(plots.Reference(ceiling, f"ceiling of {names[key]}", colour))
        rows += [
            [model.name, target.name, key, names[key], s.layer, position[s.layer] + 1,
             s.value, s.ci_low, s.ci_high, s.n,
             s.ceiling if published is None else target.published_ceiling]
            for s in scores
        ]  # fmt: skip
    if published is not None:
        references.append(published)
    svg = plots.line_chart(
        points,
        title=f"{model.name} on {target.name}: score by layer",
        x_label="layer, in network depth order (the final embedding last)",
        y_label="score",
        x_categories=[layer_tick(layer) for layer in layers],
        references=references,
    )
    return Figure(
        kind="score-by-layer",
        svg=svg,
        columns=LAYER_COLUMNS,
        rows=rows,
        filename=file_stem("score-by-layer", model.name, target.name),
        params=[("model", str(model.pk)), ("target", str(target.pk))],
        caption="Shaded: 95% CI; dashed: the target's noise ceiling where it has one "
        "(computed from its judgments, else the published one with its source). "
        "Hover a point for its layer and value.",
        extra={"target": target},
    )


def _published_ceiling(target: Target, *, computed: bool) -> plots.Reference | None:
    """The target's published noise ceiling as a reference line, where no score carries a
    computed one (a computed ceiling, from the judgments themselves, comes first)."""
    if computed or target.published_ceiling is None:
        return None
    source = f", {target.published_ceiling_source}" if target.published_ceiling_source else ""
    return plots.Reference(target.published_ceiling, f"ceiling (published{source})", "#6b7280")


def _series_names(keys: list[str]) -> dict[str, str]:
    """Each metric key's readable name, with the key where two keys read alike."""
    names = {key: metric_name(key) for key in keys}
    alike = [name for name in names.values() if list(names.values()).count(name) > 1]
    return {key: f"{name} ({key})" if name in alike else name for key, name in names.items()}


@register(
    "score-by-layer",
    summary="A model's scores on one target at each layer scored, in network depth order",
    params={"model": "model id", "target": "target id"},
)
def score_by_layer(params: Mapping[str, Any]) -> Figure:
    model = object_param(params, "model", PretrainedModel)
    target = object_param(params, "target", Target)
    found = layer_curve_figures(model, target_id=target.pk)
    if not found:
        raise FigureProblem(
            f"{model.name} has no metric scored at two or more layers on {target.name}: "
            "one point is not a curve."
        )
    return found[0]


# --- Judgment efficiency (a language-based model's page) ----------------------------------------
EFFICIENCY_COLUMNS = [
    "series",
    "per item (descriptions per stimulus, or ratings per pair)",
    "human judgments consumed (count, mean over draws)",
    "value (Spearman with people, or split-half reliability)",
    "ci_low (2.5th percentile of draws)",
    "ci_high (97.5th percentile of draws)",
    "draws",
]


def efficiency_figure(model: PretrainedModel, target: Target, curves: Any) -> Figure:
    """``curves``: ``evaluation.efficiency.EfficiencyCurves`` of ``model`` on ``target``."""
    described = f"{model.name} (k descriptions per stimulus)"
    series = {
        described: [
            plots.Point(p.judgments, p.mean, f"{p.per_item} per stimulus", p.ci_low, p.ci_high)
            for p in curves.descriptions.points
        ]
    }
    rows = [
        [described, p.per_item, p.judgments, p.mean, p.ci_low, p.ci_high, p.draws]
        for p in curves.descriptions.points
    ]
    if curves.ratings is not None:
        rated = "direct ratings (reliability, m per pair)"
        series[rated] = [
            plots.Point(p.judgments, p.mean, f"{p.per_item} per pair", p.ci_low, p.ci_high)
            for p in curves.ratings.points
        ]
        rows += [
            [rated, p.per_item, p.judgments, p.mean, p.ci_low, p.ci_high, p.draws]
            for p in curves.ratings.points
        ]
    svg = plots.line_chart(
        series,
        title=f"{target.name}: what each judgment buys",
        x_label="human judgments consumed",
        y_label="Spearman with people / reliability",
        band_label="shaded: 95% range over draws",
    )
    return Figure(
        kind="efficiency",
        svg=svg,
        columns=EFFICIENCY_COLUMNS,
        rows=rows,
        filename=file_stem("efficiency", model.name, target.name),
        params=[("model", str(model.pk)), ("target", str(target.pk))],
        caption="Shaded: 95% range over random draws of descriptions (or ratings).",
        extra={"problem": curves.ratings_problem},
    )


@register(
    "efficiency",
    summary="A language-based model's judgment-efficiency curves on a pair target "
    "(computed on request: it embeds every description)",
    params={"model": "model id (a language-based model)", "target": "target id (pair ratings)"},
)
def efficiency(params: Mapping[str, Any]) -> Figure:
    model = object_param(params, "model", PretrainedModel)
    target = object_param(params, "target", Target)
    return efficiency_of(model, target)


def efficiency_of(model: PretrainedModel, target: Target) -> Figure:
    """The efficiency figure of ``model`` on ``target``, kept until its data change (see
    ``cached_figure``); FigureProblem where it cannot be drawn, with the reason."""
    from evaluation.efficiency import efficiency_curves  # loads torch: only when asked

    def build() -> Figure:
        try:
            curves = efficiency_curves(target=target, language=model)
        except ValidationError as exc:
            raise FigureProblem(" ".join(exc.messages)) from None
        except (OSError, ImportError, RuntimeError, MemoryError) as exc:
            # The text model failed to load or run where its adapter does not say why
            # itself (missing files offline, a library not installed, out of memory).
            raise FigureProblem(
                f"{model.name}'s text model ({model.identifier}) could not be loaded or run "
                f"here: {type(exc).__name__}: {exc}"
            ) from None
        return efficiency_figure(model, target, curves)

    return cached_figure("efficiency", _efficiency_stamp(model, target), build)


def _efficiency_stamp(model: PretrainedModel, target: Target) -> str:
    """The efficiency curve's inputs: the model, the target's stimuli and ratings, and the
    dataset's descriptions."""
    descriptions = Description.objects.filter(stimulus__dataset_id=target.dataset_id).aggregate(
        n=Count("id"), last=Max("id")
    )
    ratings = (
        target.judgments.rows.aggregate(n=Count("id"), last=Max("id"))
        if target.judgments is not None
        else None
    )
    return repr(
        (model.pk, model.identifier, target.pk, target.dataset.content_hash,
         target.judgments_id, sorted(descriptions.items()),
         sorted(ratings.items()) if ratings else None)
    )  # fmt: skip


# --- Paired differences (the public differences page) ------------------------------------------
def differences_figure(
    target: Target, differences: Any, params: Sequence[tuple[str, str]]
) -> Figure | None:
    """``differences``: ``evaluation.comparisons.Differences``; None where it has no table.
    ``params``: the page's query (metric, top and the board's view) that rebuilds it."""
    svg = differences.heatmap()
    if svg is None:
        return None
    rows = comparisons.differences_csv_rows(differences)
    return Figure(
        kind="differences",
        svg=svg,
        columns=rows[0],
        rows=rows[1:],
        filename=file_stem(
            "differences", target.name, differences.metric, f"top-{len(differences.models)}"
        ),
        params=[("target", str(target.pk)), *params],
        caption="Blue: the row model scores higher; red: lower. Hover a cell for its interval "
        "and p-value.",
        zoomable=True,
    )


@register(
    "differences",
    summary="Paired differences among a target's top models on one metric (public)",
    params={
        "target": "target id",
        "metric": "metric key (default: the board's sort)",
        "top": "how many of the board's top models (2 to 40)",
        "layers": "the board's layer choice: best, default or all",
    },
    public=True,
)
def differences(params: Mapping[str, Any]) -> Figure:
    target = object_param(params, "target", Target, Target.objects.select_related("dataset"))
    page = comparisons.differences_page(target, params)
    figure = differences_figure(target, page.table, page.shown)
    if figure is None:
        raise FigureProblem(page.table.reason)
    return figure
