"""The study page's figure: reliability as responses arrived (see ``evaluation.figures``
for what a figure is and how the page, its downloads and the API share it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Count, Max

from annotation import selectors
from annotation.models import Participant, Response, Study
from evaluation import figures, plots

TREND_COLUMNS = [
    "after (regular responses; multi-arrangement: completed participants)",
    "reliability (split-half, Spearman-Brown corrected; choice studies: leave-one-out agreement)",
    "sd over random splits",
]


def reliability_trend_figure(study: Study, trend: list[dict[str, Any]]) -> figures.Figure | None:
    """``trend``: ``annotation.selectors.reliability_trend(study)``; None where no point has
    a value (nothing to draw)."""
    if not any(point["mean"] is not None for point in trend):
        return None
    unit = "participants" if study.is_arrangement else "responses"
    points = [
        plots.Point(
            point["responses"],
            point["mean"],
            f"after {point['responses']} {unit}",
            point["mean"] - point["sd"] if point["sd"] is not None else None,
            point["mean"] + point["sd"] if point["sd"] is not None else None,
        )
        for point in trend
        if point["mean"] is not None
    ]
    splits = _splits(trend)
    svg = plots.line_chart(
        {"reliability": points},
        title=f"{study.name}: reliability as {unit} arrived",
        x_label=f"{unit} so far",
        y_label="reliability",
        band_label="shaded: ± 1 SD over random splits",
    )
    return figures.Figure(
        kind="reliability-trend",
        svg=svg,
        columns=TREND_COLUMNS,
        rows=[[point["responses"], point["mean"], point["sd"]] for point in trend],
        filename=figures.file_stem("reliability-trend", study.name),
        params=[("study", str(study.pk))],
        caption=(
            f"Shaded: ± 1 SD of the split-half value over random splits of {splits}. "
            if any(point["sd"] is not None for point in trend)
            else ""
        )
        + "Hover a point for its value.",
    )


# What the split-half value splits (``split_half_reliability``'s "split_by"), in words.
SPLITS = {
    "participant": "the participants",
    "judgment within pair": "each pair's judgments (too few participants to split them)",
}


def _splits(trend: list[dict[str, Any]]) -> str:
    """What the trend's points split, in words: the participants, or each pair's judgments
    where a point had too few participants (the early points can differ from the later)."""
    found = [str(p["split_by"]) for p in trend if p["sd"] is not None and p.get("split_by")]
    kinds = list(dict.fromkeys(found))  # in the order the points meet them
    if not kinds:
        return "the data"
    words = [SPLITS.get(kind, kind) for kind in kinds]
    if len(words) == 1:
        return words[0]
    return " at first, then of ".join(words)


@figures.register(
    "reliability-trend",
    summary="A study's reliability as responses (or sessions) arrived",
    params={"study": "study id"},
)
def reliability_trend(params: Mapping[str, Any]) -> figures.Figure:
    study = figures.object_param(params, "study", Study)

    def build() -> figures.Figure:
        figure = reliability_trend_figure(study, selectors.reliability_trend(study))
        if figure is None:
            raise figures.FigureProblem(
                f"{study.name} has no reliability yet: items need at least two responses each."
            )
        return figure

    return figures.cached_figure("reliability-trend", _trend_stamp(study), build)


def _trend_stamp(study: Study) -> str:
    """What the trend is drawn from: the study's responses and its participants' states
    (an exclusion or a completed session changes the trend without a new response)."""
    responses = Response.objects.filter(trial__participant__study=study).aggregate(
        n=Count("id"), last=Max("id")
    )
    participants = (
        Participant.objects.filter(study=study)
        .order_by("status")
        .values_list("status")
        .annotate(n=Count("id"), completed=Max("completed_at"))
    )
    return repr((study.pk, study.name, sorted(responses.items()), [tuple(p) for p in participants]))
