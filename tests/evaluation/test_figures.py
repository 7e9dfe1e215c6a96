"""Figures to take away: each plot as SVG, PNG and the CSV of its data, from the page's links
and the API, built by one function per kind; and plots readable by default (layers in depth
order with the final embedding last, colour bars with their limits, a colour scale for the
data's range, CI bands under the points, the ceiling dashed)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import struct
from types import SimpleNamespace
from xml.etree import ElementTree

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from django.utils.safestring import mark_safe

from annotation import selectors
from annotation import services as study_services
from annotation.services import Answer, ItemPlan
from evaluation import figures, plots, services
from evaluation.models import Description, Score, Target
from tests.api.conftest import token_client
from tests.conftest import make_text_dataset
from tests.evaluation.test_language_models import MINILM, men_words  # noqa: F401 (fixture)
from tests.evaluation.test_paired_leaderboard import board_of_20  # noqa: F401 (fixture)
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = pytest.mark.django_db
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEY = "pair_alignment(correlation=spearman)"
NAME = "Spearman with human pair ratings"  # the metric as people read it


@pytest.fixture
def layered():
    """A timm-like model whose layer list starts with its final embedding (as the adapters
    list it), scored at three layers, the deepest module twice (the latest counts)."""
    model = PretrainedModelFactory(
        name="layered-net",
        layers=[{"name": n, "shape": [8]} for n in ("pre_logits", "stem", "blocks.0", "blocks.1")],
    )
    dataset = make_text_dataset(name="layered words")
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    for layer, value in (
        ("pre_logits", 0.61),
        ("blocks.1", 0.4),
        ("stem", 0.2),
        ("blocks.1", 0.5123),
    ):
        ScoreFactory(
            run=RunFactory(dataset=dataset) if layer == "blocks.1" and value > 0.5 else run,
            model=model, target=target, layer=layer, metric_key=KEY, value=value,
            half_width=0.05, ceiling=0.8, n=120,
        )  # fmt: skip
    return model, target


def svg_size(svg: str) -> tuple[int, int]:
    width, height = re.search(r'<svg[^>]* width="(\d+)" height="(\d+)"', svg).groups()
    return int(width), int(height)


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- Score by layer -----------------------------------------------------------------------------
def test_layers_run_in_depth_order_with_the_final_embedding_last(layered):
    model, _ = layered
    (figure,) = figures.layer_curve_figures(model)
    rows = csv_rows(figure.csv_text())
    assert [r[4] for r in rows[1:]] == ["stem", "blocks.1", "pre_logits"]
    assert [r[5] for r in rows[1:]] == ["1", "2", "3"]
    ticks = re.findall(
        r'<text x="([\d.]+)"[^>]*rotate\(-45[^>]*><title>([^<]+)</title>', figure.svg
    )
    assert [name for _, name in ticks] == ["stem", "blocks.1", "final embedding (pre_logits)"]
    xs = [float(x) for x, _ in ticks]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert "layer, in network depth order (the final embedding last)" in figure.svg
    assert figure.filename == "score-by-layer_layered-net_layered-words-labels"


def test_the_csv_holds_the_numbers_the_page_shows(layered, researcher_client):
    model, target = layered
    page = researcher_client.get(
        reverse("evaluation:model_detail", args=[model.pk])
    ).content.decode()
    shown = dict(re.findall(rf"{NAME} · ([\w.]+): (0\.\d{{3}} \[0\.\d{{3}}, 0\.\d{{3}}\])", page))
    assert shown == {
        "stem": "0.200 [0.150, 0.250]",
        "blocks.1": "0.512 [0.462, 0.562]",  # the latest score of that layer
        "pre_logits": "0.610 [0.560, 0.660]",
    }
    (figure,) = figures.layer_curve_figures(model)
    header, *rows = csv_rows(figure.csv_text())
    assert header == figures.LAYER_COLUMNS
    for row in rows:
        value, low, high = (float(v) for v in row[6:9])
        assert shown[row[4]] == f"{value:.3f} [{low:.3f}, {high:.3f}]"
        assert (row[0], row[1], row[2], row[3], row[9], row[10]) == (
            model.name,
            target.name,
            KEY,
            NAME,
            "120",
            "0.8",
        )
    assert float(rows[1][6]) == 0.5123  # full precision in the CSV


def test_bands_lie_under_the_points_and_the_ceiling_is_dashed(layered):
    (figure,) = figures.layer_curve_figures(layered[0])
    svg = str(figure.svg)
    assert svg.index("<polygon") < svg.index("<polyline") < svg.index("<circle")
    assert 'fill-opacity="0.15"' in svg.split("<polygon")[1].split(">")[0]
    ceiling = re.search(r'<path d="M[\d.]+,([\d.]+)H[\d.]+"[^>]*stroke-dasharray="6 4"[^>]*>'
                        r"<title>ceiling of ([^:]+): 0.800</title>", svg)  # fmt: skip
    assert ceiling and ceiling.group(2) == NAME
    # The ceiling (0.8) is drawn above the best point (0.61): a smaller y in SVG.
    top_point = min(float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg))
    assert float(ceiling.group(1)) < top_point
    assert f"ceiling of {NAME} (0.800)" in svg  # the legend names it, uncut


def test_the_png_is_the_svg_rendered_at_twice_its_size(layered):
    (figure,) = figures.layer_curve_figures(layered[0])
    png = figure.png()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == tuple(2 * v for v in svg_size(figure.svg))
    # Text is drawn (a font was found): the same SVG without its text renders smaller.
    bare = figures.Figure("x", re.sub(r"<text.*?</text>", "", str(figure.svg)), [], [], "x")
    assert len(bare.png()) < len(png) * 0.8


def test_layers_the_model_does_not_list_follow_in_natural_order(layered):
    model, _ = layered
    names = ["blocks.10", "pre_logits", "blocks.2", "stem", "blocks.1"]
    # stem and blocks.1 are listed; blocks.2 and blocks.10 are not (inspected before a change).
    assert figures.depth_order(model, names) == [
        "stem", "blocks.1", "blocks.2", "blocks.10", "pre_logits",
    ]  # fmt: skip


def test_final_outputs_are_the_adapters_own_layers():
    from evaluation.engine.adapters import (
        baselines,
        language_adapter,
        open_clip_adapter,
        sentence_transformers_adapter,
        timm_adapter,
        torchscript_adapter,
        transformers_adapter,
        video_adapter,
    )
    from evaluation.imports.embeddings import DEFAULT_LAYER

    natives = {DEFAULT_LAYER, video_adapter.VIDEO_EMBEDDING}
    for module in (baselines, language_adapter, open_clip_adapter, sentence_transformers_adapter,
                   timm_adapter, torchscript_adapter, transformers_adapter):  # fmt: skip
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                natives |= set(getattr(value, "native_layers", ()))
                default = getattr(value, "default_layer", "")
                natives |= {default} if isinstance(default, str) and default else set()
    assert natives == set(figures.FINAL_OUTPUTS)


# --- Matrices ---------------------------------------------------------------------------------
def test_a_small_matrix_names_its_stimuli_and_carries_a_colour_bar():
    names = [f"stimulus {k}" for k in range(6)]
    matrix = np.corrcoef(np.random.default_rng(0).normal(size=(6, 20))).tolist()
    svg = str(plots.heatmap(matrix, row_labels=names, col_labels=names, title="t",
                            value_label="cosine similarity"))  # fmt: skip
    assert svg.count("<rect") == 36  # the cells; the colour bar is a path
    assert 'class="axis-labels"' in svg and svg.count(">stimulus 3</text>") == 2
    bar = svg.split('class="colour-bar"')[1]
    low, high = float(np.min(matrix)), float(np.max(matrix))  # 36 values: the data's range
    assert f">{low:.3g}</text>" in bar and f">{high:.3g}</text>" in bar
    assert "cosine similarity (colour)" in bar and "the data&#x27;s range" in bar


def test_a_large_matrix_names_stimuli_on_hover_and_uses_robust_limits():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(80, 80))
    matrix[0, 0] = 50.0  # one outlier must not wash out the rest
    names = [f"s{k}" for k in range(80)]
    svg = str(plots.heatmap(matrix.tolist(), row_labels=names, col_labels=names, title="t"))
    assert 'class="axis-labels"' not in svg
    assert "<title>s3 x s7: " in svg
    assert "robust limits: 2nd to 98th percentile" in svg
    p98 = np.percentile(matrix, 98)
    assert f">{p98:.3g}</text>" in svg.split('class="colour-bar"')[1]


def test_values_crowded_in_a_band_are_rank_scaled():
    rng = np.random.default_rng(2)
    values = np.r_[0.9 + 0.001 * rng.random(950), rng.random(50)]  # most crowd near 0.9
    scale = plots.colour_scale(values.tolist())
    assert scale.how.startswith("rank-scaled")
    colours = {scale.colour(scale.unit(v)) for v in values[:950]}
    assert len(colours) > 100  # the crowd is told apart, not one colour
    signed = plots.colour_scale((values - 0.9).tolist(), signed=True)
    assert signed.how.startswith("rank-scaled") and [p for p, _ in signed.ticks] == [
        0.0, 0.25, 0.5, 0.75, 1.0,
    ]  # fmt: skip
    assert signed.ticks[2][1] == 0.0 and signed.ticks[0][1] == -signed.ticks[4][1]
    assert plots.colour_scale([0.0, 0.5, 1.0], low=0.0, high=1.0).how == "fixed limits"


# --- Downloads: page links, the view, the API ---------------------------------------------------
def test_the_model_page_links_each_figure_to_its_three_downloads(layered, researcher_client):
    model, target = layered
    page = researcher_client.get(
        reverse("evaluation:model_detail", args=[model.pk])
    ).content.decode()
    query = f"model={model.pk}&amp;target={target.pk}"
    for fmt in ("svg", "png", "csv"):
        assert f'href="/figures/score-by-layer.{fmt}?{query}" download' in page


@pytest.mark.parametrize(
    ("fmt", "content_type", "start"),
    [("svg", "image/svg+xml", b"<?xml"), ("png", "image/png", PNG_SIGNATURE),
     ("csv", "text/csv; charset=utf-8", b"model,target,metric,metric (name),layer")],
)  # fmt: skip
def test_the_download_view_serves_each_format(layered, researcher_client, fmt, content_type, start):
    model, target = layered
    url = reverse("evaluation:figure_download", args=["score-by-layer", fmt])
    response = researcher_client.get(url, {"model": model.pk, "target": target.pk})
    assert response.status_code == 200 and response["Content-Type"] == content_type
    assert response.content.startswith(start)
    assert response["Content-Disposition"] == (
        f'attachment; filename="score-by-layer_layered-net_layered-words-labels.{fmt}"'
    )


def test_the_download_view_refuses_what_makes_no_figure(layered, researcher_client, outsider):
    model, target = layered
    url = reverse("evaluation:figure_download", args=["score-by-layer", "svg"])
    missing = researcher_client.get(url, {"model": model.pk})
    assert missing.status_code == 400 and missing.content.decode().startswith("Give target=<id>")
    assert researcher_client.get(url, {"model": model.pk, "target": 999999}).status_code == 404
    unknown = reverse("evaluation:figure_download", args=["pie-chart", "svg"])
    assert researcher_client.get(unknown).status_code == 404
    gif = reverse("evaluation:figure_download", args=["score-by-layer", "gif"])
    assert researcher_client.get(gif, {"model": model.pk, "target": target.pk}).status_code == 400
    client = Client()  # researcher_client is the default client, logged in
    anonymous = client.get(url, {"model": model.pk, "target": target.pk})
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    client.force_login(outsider)
    assert client.get(url, {"model": model.pk, "target": target.pk}).status_code == 403


def test_the_api_serves_the_same_figure_to_researchers(layered, researcher, anonymous_api):
    model, target = layered
    api = token_client(researcher)
    url = reverse("api:figure", args=["score-by-layer"])
    params = {"model": model.pk, "target": target.pk}
    (figure,) = figures.layer_curve_figures(model)
    csv_response = api.get(url, {**params, "format": "csv"})
    assert csv_response.status_code == 200
    assert csv_response.content.decode() == figure.csv_text()
    png = api.get(url, {**params, "format": "png"})
    assert png["Content-Type"] == "image/png" and png.content.startswith(PNG_SIGNATURE)
    svg = api.get(url, params)  # SVG unless asked otherwise
    assert svg["Content-Type"] == "image/svg+xml" and b"score by layer" in svg.content
    bad = api.get(url, {**params, "format": "gif"})
    assert bad.status_code == 400 and "Choose svg, png or csv" in bad.json()["error"]["message"]
    absent = api.get(url, {"model": model.pk, "target": 999999})
    assert (
        absent.status_code == 404
        and absent.json()["error"]["message"] == "No target with id 999999."
    )
    assert anonymous_api.get(url, params).status_code == 401


def test_the_api_documents_every_figure_kind(researcher):
    response = token_client(researcher).get(
        "/api/schema/?format=json", HTTP_ACCEPT="application/json"
    )
    schema = json.loads(response.content)
    operation = schema["paths"]["/api/figures/{kind}/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters["kind"]["schema"]["enum"]) >= {
        "score-by-layer", "efficiency", "differences", "reliability-trend",
    }  # fmt: skip
    assert sorted(parameters["format"]["schema"]["enum"]) == ["csv", "png", "svg"]
    assert {"model", "target", "study", "metric", "top"} <= set(parameters)
    assert set(operation["responses"]["200"]["content"]) == {
        "image/svg+xml",
        "image/png",
        "text/csv",
    }


@pytest.fixture
def anonymous_api():
    from rest_framework.test import APIClient

    return APIClient()


# --- The differences heatmap (public) and the reliability trend ----------------------------------
def test_the_differences_figure_is_public_and_its_csv_is_the_pages(client, board_of_20):  # noqa: F811
    target = board_of_20
    page = client.get(reverse("evaluation:target_differences", args=[target.pk]), {"top": 4})
    html = page.content.decode()
    link = (
        re.search(r'href="(/figures/differences\.csv\?[^"]+)"', html).group(1).replace("&amp;", "&")
    )
    assert "top=4" in link and f"target={target.pk}" in link
    response = client.get(link)
    assert response.status_code == 200
    rows = csv_rows(response.content.decode())
    page_csv = client.get(reverse("evaluation:target_differences", args=[target.pk]),
                          {"top": 4, "format": "csv"})  # fmt: skip
    assert rows == csv_rows(page_csv.content.decode()) and len(rows) == 1 + 4 * 3
    svg = client.get(link.replace("differences.csv", "differences.svg")).content.decode()
    assert svg.count("<rect") == 16 and 'class="colour-bar"' in svg
    assert "difference, row model minus column model (colour)" in svg


keys = (f"figure-key-{n}" for n in itertools.count())


@pytest.fixture
def trend_study(researcher):
    """A pair-rating study of four participants whose ratings follow the pair (plus noise):
    a reliability that can be drawn as it grows."""
    study = study_services.study_create(
        dataset=make_text_dataset(name="sentences for a trend"),
        name="Trend study",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=4,
        trials_per_session=28,
        created_by=researcher,
    )
    study_services.study_set_status(study=study, status="open")
    rng = np.random.default_rng(0)
    for k in range(4):
        participant = study_services.participant_start(study=study, external_id=f"P{k}")
        while (trial := study_services.trial_current(participant=participant)) is not None:
            a, b = trial.item.a_id, trial.item.b_id
            value = int(np.clip(round((a * 7 + b * 3) % 7 + 1 + rng.normal(0, 0.5)), 1, 7))
            study_services.response_submit(
                participant=participant,
                answer=Answer(
                    trial_id=trial.pk, idempotency_key=next(keys), value=value, rt_ms=900
                ),
            )
    return study


def test_the_study_page_draws_the_reliability_trend_with_its_downloads(
    trend_study, researcher_client
):
    study = trend_study
    html = researcher_client.get(study.get_absolute_url()).content.decode()
    figure_html = html.split('id="trend-figure"')[1].split("</figure>")[0]
    assert "reliability as responses arrived" in figure_html
    link = re.search(r'href="(/figures/reliability-trend\.csv\?study=\d+)"', figure_html).group(1)
    rows = csv_rows(researcher_client.get(link).content.decode())
    assert rows[0] == [
        "after (regular responses; multi-arrangement: completed participants)",
        "reliability (split-half, Spearman-Brown corrected; choice studies: leave-one-out agreement)",
        "sd over random splits",
    ]
    table = re.findall(r'<tr><td class="num">(\d+)</td><td class="num">([-\d.\N{EN DASH}]+)</td></tr>',
                       html.split('id="trend"')[1])  # fmt: skip
    assert [(r[0], f"{float(r[1]):.3f}" if r[1] else "\N{EN DASH}") for r in rows[1:]] == table


def test_the_efficiency_curve_downloads_with_its_draws(men_words, researcher_client):  # noqa: F811
    _, judgments = men_words
    language = services.model_register(
        name="tags by minilm", source="language", identifier=f"tags v1 | {MINILM}", modality="text"
    )
    url = reverse("evaluation:figure_download", args=["efficiency", "csv"])
    response = researcher_client.get(url, {"model": language.pk, "target": judgments.target.pk})
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="efficiency_tags-by-minilm_men-words-men-among-the-tagged-v1.csv"'
    )
    header, *rows = csv_rows(response.content.decode())
    assert header == figures.EFFICIENCY_COLUMNS
    # MEN holds one mean per pair: the descriptions' curve only, k = 1, 2, ... per stimulus.
    assert {r[0] for r in rows} == {"tags by minilm (k descriptions per stimulus)"}
    assert [int(r[1]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3
    for row in rows:
        low, mean, high = float(row[4]), float(row[3]), float(row[5])
        assert low <= mean <= high and int(row[6]) == 20  # 20 random draws each
    not_language = researcher_client.get(
        url, {"model": PretrainedModelFactory().pk, "target": judgments.target.pk}
    )
    assert not_language.status_code == 400 and "is not a language-based model" in (
        not_language.content.decode()
    )


# --- Review fixes (issue 23): text, ids, margins, sizes, values, wording ------------------------
def parsed(svg: str) -> ElementTree.Element:
    """The SVG as XML (raises where it is not well-formed)."""
    return ElementTree.fromstring(svg)


def test_names_with_control_characters_make_a_valid_svg_and_png(layered, researcher_client):
    model, target = layered
    model.name = "layered\x01net\x0b\x1f"
    model.save(update_fields=["name"])
    (figure,) = figures.layer_curve_figures(model)
    assert "layerednet on" in figure.svg and "\x01" not in figure.svg
    parsed(figure.svg_document().split("\n", 1)[1])
    url = reverse("evaluation:figure_download", args=["score-by-layer", "png"])
    png = researcher_client.get(url, {"model": model.pk, "target": target.pk})
    assert png.status_code == 200 and png.content.startswith(PNG_SIGNATURE)
    matrix = plots.heatmap(
        [[0.1, 0.2], [0.3, None]],
        row_labels=["a\x02", "b\x0c"],
        col_labels=["c\x0e", "d"],
        title="t\x08",
        notes=[["", "n\x03"], ["", ""]],
    )
    assert [t.text for t in parsed(matrix).iter("{http://www.w3.org/2000/svg}title")][:2] == [
        "t",
        "a x c: 0.100",
    ]


def test_a_figure_the_renderer_refuses_is_a_clear_problem_not_a_server_error():
    broken = figures.Figure(
        kind="x", svg=mark_safe('<svg width="10" height="10"><g></svg>'), columns=[], rows=[],
        filename="x",
    )  # fmt: skip
    with pytest.raises(figures.FigureProblem, match="could not be drawn as a PNG"):
        broken.png()


def test_colour_bar_gradients_have_one_fixed_id_per_ramp():
    def draw(signed: bool) -> str:
        return str(plots.heatmap([[-0.5, 0.25], [0.5, 1.0]], row_labels=["a", "b"],
                                 col_labels=["a", "b"], title="m", signed=signed))  # fmt: skip

    assert draw(False) == draw(False)  # the same figure twice: the same text
    assert re.findall(r'linearGradient id="([^"]+)"', draw(False)) == ["colour-bar-viridis"]
    assert re.findall(r'linearGradient id="([^"]+)"', draw(True)) == ["colour-bar-diverging"]


LONG_LAYERS = [f"encoder.layer.{k}.attention.output.dense" for k in range(12)]


def test_rotated_layer_names_fit_left_and_keep_their_end():
    points = {"score": [plots.Point(k, 0.1 * k, name) for k, name in enumerate(LONG_LAYERS)]}
    svg = str(plots.line_chart(points, title="t", x_label="layer", y_label="score",
                               x_categories=LONG_LAYERS))  # fmt: skip
    ticks = re.findall(
        r'<text x="([\d.]+)"[^>]*rotate\(-45[^>]*><title>([^<]+)</title>([^<]+)</text>', svg
    )
    assert [title for _, title, _ in ticks] == LONG_LAYERS
    first_x, _, first_name = ticks[0]
    assert first_name == "\N{HORIZONTAL ELLIPSIS}layer.0.attention.output.dense"
    assert ticks[-1][2] == "\N{HORIZONTAL ELLIPSIS}layer.11.attention.output.dense"
    assert all(len(n) <= 32 and n.endswith(".attention.output.dense") for *_, n in ticks)
    assert plots._cut_middle("model.backbone.stages.3.blocks.27.mlp.fc2", 32) == (
        "model\N{HORIZONTAL ELLIPSIS}stages.3.blocks.27.mlp.fc2"
    )
    # The first name reaches width * sin 45 left of its anchor: still inside the figure.
    assert float(first_x) - plots.text_width(first_name) * plots.SIN_45 >= 0


def test_line_charts_and_scatters_leave_out_values_that_are_not_finite():
    nan, inf = float("nan"), float("inf")
    lines = str(plots.line_chart(
        {"s": [plots.Point(0, 0.2, "a", 0.1, inf), plots.Point(1, nan, "b"),
               plots.Point(2, 0.4, "c", 0.3, 0.5)]},
        title="t", x_label="x", y_label="y", references=[plots.Reference(nan, "ceiling")],
    ))  # fmt: skip
    assert lines.count("<circle") == 2 and "nan" not in lines and "inf" not in lines
    assert 'class="reference"' not in lines
    scatter = str(plots.scatter([plots.Point(0.1, 0.2, "a"), plots.Point(nan, 0.3, "b"),
                                 plots.Point(0.5, -inf, "c"), plots.Point(0.9, 0.7, "d")],
                                title="t", x_label="x", y_label="y"))  # fmt: skip
    assert scatter.count("<circle") == 2 and "nan" not in scatter and "inf" not in scatter
    assert "0.900, 0.700" in scatter


def test_the_colour_bar_says_which_limits_are_fixed_and_what_a_signed_scale_ranks():
    upper = plots.colour_scale([0.2, 0.5, 0.7], high=1.0)
    assert (upper.low, upper.high) == (0.2, 1.0)
    assert upper.how == "upper limit fixed, lower limit: the data's minimum"
    assert plots.colour_scale([0.2, 0.5], low=0.0, high=1.0).how == "fixed limits"
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 1, 400)
    robust = plots.colour_scale(list(spread), signed=True, scale="robust")
    assert "98th percentile of |value|" in robust.how
    assert robust.high == pytest.approx(np.percentile(np.abs(spread), 98))
    crowded = [0.0] * 150 + list(rng.normal(0, 0.01, 250))
    rank = plots.colour_scale(crowded, signed=True, scale="rank")
    assert rank.colour(rank.unit(0.0)) == "#ffffff"  # no difference is white
    assert rank.colour(rank.unit(0.02)) != "#ffffff"


def test_zoomable_is_said_by_the_figure_not_guessed_from_its_svg(layered, board_of_20):  # noqa: F811
    model, _ = layered
    matrix = plots.heatmap([[0.1]], row_labels=["a"], col_labels=["a"], title="m")
    assert figures.Figure(kind="x", svg=matrix, columns=[], rows=[], filename="x").zoomable is False
    assert figures.layer_curve_figures(model)[0].zoomable is False
    shown = figures.figure_from_params("differences", {"target": board_of_20.pk, "top": 3})
    assert shown.zoomable is True


def test_the_differences_heatmap_names_a_models_layer_where_its_name_repeats(board_of_20):  # noqa: F811
    leader = Score.objects.get(target=board_of_20, model__name="m00")
    leader.pk, leader.layer, leader.value = None, "blocks.3", leader.value - 1e-4
    leader.save()
    figure = figures.figure_from_params(
        "differences", {"target": board_of_20.pk, "top": 3, "layers": "all"}
    )
    svg_ns = "{http://www.w3.org/2000/svg}"
    labels = [t.find(f"{svg_ns}title").text for t in parsed(figure.svg).iter(f"{svg_ns}text")
              if t.find(f"{svg_ns}title") is not None]  # fmt: skip
    assert "m00 · out" in labels and "m00 · blocks.3" in labels and "m01" in labels
    assert "m00" not in labels


def test_a_png_over_the_pixel_cap_is_drawn_smaller_and_a_huge_one_refused():
    def blank(width: int, height: int) -> figures.Figure:
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
               '<path d="M0,0h10v10z"/></svg>')  # fmt: skip
        return figures.Figure(kind="x", svg=mark_safe(svg), columns=[], rows=[], filename="x")

    assert blank(400, 300).png_zoom() == 2
    large = blank(4000, 3000)
    assert large.png_zoom() == pytest.approx((figures.PNG_MAX_PIXELS / 12e6) ** 0.5)
    width, height = struct.unpack(">II", large.png()[16:24])
    assert 4000 < width and width * height <= figures.PNG_MAX_PIXELS * 1.001
    with pytest.raises(figures.FigureProblem, match="Download the SVG"):
        blank(20000, 20000).png()


def test_score_by_layer_draws_the_published_ceiling_where_none_is_computed(layered):
    model, target = layered
    target.published_ceiling, target.published_ceiling_source = 0.7, "Bruni et al. 2014"
    target.save()
    (computed,) = figures.layer_curve_figures(model)  # scores carry a computed one: it wins
    assert "published" not in computed.svg
    Score.objects.filter(model=model).update(ceiling=None)
    (figure,) = figures.layer_curve_figures(model)
    assert re.search(
        r'class="reference"><title>ceiling \(published, Bruni et al\. 2014\): 0\.700</title>',
        figure.svg,
    )
    assert {row[-1] for row in csv_rows(figure.csv_text())[1:]} == {"0.7"}


def test_the_trend_caption_says_what_the_splits_split(trend_study):
    from annotation.figures import reliability_trend_figure

    real = reliability_trend_figure(trend_study, selectors.reliability_trend(trend_study))
    assert "over random splits of the participants." in real.caption
    trend = [{"responses": n, "mean": 0.5, "sd": 0.1, "split_by": "judgment within pair"}
             for n in (10, 20)]  # fmt: skip
    within = reliability_trend_figure(trend_study, trend)
    assert "over random splits of each pair's judgments" in within.caption
    assert "participants." not in within.caption


def test_the_differences_page_links_one_csv_and_both_routes_serve_it(client, board_of_20):  # noqa: F811
    url = reverse("evaluation:target_differences", args=[board_of_20.pk])
    html = client.get(url, {"top": 3}).content.decode()
    link = re.search(r'<a href="([^"]+)" id="differences-csv">', html).group(1)
    link = link.replace("&amp;", "&")
    assert link.startswith("/figures/differences.csv?")
    figure_csv = client.get(link)
    page_csv = client.get(url, {"top": 3, "format": "csv"})
    assert page_csv.content == figure_csv.content
    assert page_csv["Content-Disposition"] == figure_csv["Content-Disposition"]


def test_the_page_and_the_api_refuse_a_format_with_one_message(
    layered, researcher, researcher_client
):
    model, target = layered
    params = {"model": model.pk, "target": target.pk}
    page = researcher_client.get(
        reverse("evaluation:figure_download", args=["score-by-layer", "gif"]), params
    )
    api = token_client(researcher).get(
        reverse("api:figure", args=["score-by-layer"]), {**params, "format": "gif"}
    )
    assert page.status_code == api.status_code == 400
    assert (
        page.content.decode()
        == api.json()["error"]["message"]
        == ("Choose svg, png or csv (got 'gif').")
    )


def fake_curves(mean: float = 0.5) -> SimpleNamespace:
    points = [SimpleNamespace(per_item=k, judgments=10 * k, mean=mean, ci_low=mean - 0.1,
                              ci_high=mean + 0.1, draws=20) for k in (1, 2)]  # fmt: skip
    return SimpleNamespace(
        descriptions=SimpleNamespace(points=points), ratings=None, ratings_problem=""
    )


def test_the_efficiency_figure_is_built_once_until_its_data_change(monkeypatch, researcher_client):
    from evaluation import efficiency

    calls = []
    monkeypatch.setattr(
        efficiency, "efficiency_curves", lambda **kw: calls.append(kw) or fake_curves()
    )
    model = PretrainedModelFactory(name="kept-language-model")
    target = Target.objects.get(dataset=make_text_dataset(name="kept words"))
    params = {"model": model.pk, "target": target.pk}
    url = reverse("evaluation:figure_download", args=["efficiency", "csv"])
    first = researcher_client.get(url, params)
    assert first.status_code == 200 and "kept-language-model" in first["Content-Disposition"]
    assert researcher_client.get(url.replace(".csv", ".svg"), params).status_code == 200
    assert len(calls) == 1  # the SVG after the CSV: the same figure, kept
    stimulus = target.dataset.stimuli.first()
    Description.objects.create(stimulus=stimulus, origin="tags v1", text="a new description")
    assert researcher_client.get(url, params).status_code == 200
    assert len(calls) == 2  # a new description: a new figure


def test_a_text_model_that_cannot_load_is_a_clear_refusal(monkeypatch, researcher_client):
    from evaluation import efficiency

    def fails(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")

    monkeypatch.setattr(efficiency, "efficiency_curves", fails)
    model = PretrainedModelFactory(name="offline-model", identifier="tags v1 | some/model")
    target = Target.objects.get(dataset=make_text_dataset(name="offline words"))
    url = reverse("evaluation:figure_download", args=["efficiency", "svg"])
    response = researcher_client.get(url, {"model": model.pk, "target": target.pk})
    assert response.status_code == 400
    assert response.content.decode() == (
        "offline-model's text model (tags v1 | some/model) could not be loaded or run here: "
        "OSError: We couldn't connect to 'https://huggingface.co' to load this file"
    )


def test_the_reliability_trend_is_built_once_until_a_participant_changes(monkeypatch, trend_study):
    real, calls = selectors.reliability_trend, []
    monkeypatch.setattr(selectors, "reliability_trend", lambda s: calls.append(s) or real(s))
    params = {"study": trend_study.pk}
    first = figures.figure_from_params("reliability-trend", params)
    assert figures.figure_from_params("reliability-trend", params).svg == first.svg
    assert len(calls) == 1
    participant = trend_study.participants.order_by("pk").first()
    participant.status = "excluded"
    participant.save(update_fields=["status"])
    figures.figure_from_params("reliability-trend", params)
    assert len(calls) == 2
