"""Figure downloads in a real browser: on the model page (score by layer), the study page
(reliability trend) and the public differences page, each figure's SVG, PNG and CSV links
download files named for what they show, whose content is the figure on the page, under the
Content-Security-Policy."""

from __future__ import annotations

import csv
import io
import re
import struct
from pathlib import Path

import pytest

from evaluation.figures import file_stem
from tests.e2e.conftest import screenshot
from tests.e2e.test_csp import assert_enforced, watch_violations
from tests.e2e.test_dashboard import log_in
from tests.evaluation.test_figures import (  # noqa: F401 (layered, trend_study: fixtures)
    PNG_SIGNATURE,
    layered,
    trend_study,
)
from tests.evaluation.test_paired_leaderboard import board_of_20  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def download_all(page, figure) -> dict[str, tuple[str, bytes]]:
    """Click each download link under ``figure``: {format: (file name, content)}."""
    files = {}
    for fmt in ("svg", "png", "csv"):
        with page.expect_download() as info:
            figure.locator(f'.figure-downloads a[data-format="{fmt}"]').click()
        download = info.value
        assert download.failure() is None
        files[fmt] = (download.suggested_filename, Path(download.path()).read_bytes())
    return files


def check_files(files: dict[str, tuple[str, bytes]], stem: str, shown_svg: str) -> list[list[str]]:
    """The three files are the figure shown: the same SVG, that SVG as a PNG twice its size,
    and a CSV; returns the CSV's rows."""
    assert {fmt: name for fmt, (name, _) in files.items()} == {
        fmt: f"{stem}.{fmt}" for fmt in ("svg", "png", "csv")
    }
    svg = files["svg"][1].decode()
    assert svg.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg')
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    assert re.search(r'width="(\d+)" height="(\d+)"', shown_svg).groups() == (
        str(width),
        str(height),
    )
    png = files["png"][1]
    assert png.startswith(PNG_SIGNATURE)
    assert struct.unpack(">II", png[16:24]) == (2 * width, 2 * height)
    return list(csv.reader(io.StringIO(files["csv"][1].decode())))


def test_the_score_by_layer_figure_downloads_as_svg_png_and_csv(
    page,
    live_server,
    researcher,
    layered,  # noqa: F811
):
    model, _ = layered
    violations = watch_violations(page)
    log_in(page, live_server, f"/models/{model.pk}/")
    figure = page.locator("#layer-curves figure")
    assert figure.count() == 1
    figure.scroll_into_view_if_needed()
    screenshot(page, "score-by-layer")
    shown = figure.locator("svg").evaluate("svg => svg.outerHTML")
    ticks = figure.locator("svg g.x-ticks text title").all_text_contents()
    assert ticks == ["stem", "blocks.1", "final embedding (pre_logits)"]
    files = download_all(page, figure)
    rows = check_files(files, "score-by-layer_layered-net_layered-words-labels", shown)
    assert rows[0][4:7] == ["layer", "depth order (1 = shallowest; the final embedding last)",
                            "score (the metric's unit)"]  # fmt: skip
    shown_points = figure.locator("svg circle title").all_text_contents()
    assert [f"{float(r[6]):.3f}" for r in rows[1:]] == [
        re.search(r": (\d\.\d{3}) \[", title).group(1) for title in shown_points
    ]
    assert "score by layer" in files["svg"][1].decode()
    assert_enforced(page, violations)


def test_the_reliability_trend_downloads_from_the_study_page(page, live_server, trend_study):  # noqa: F811
    log_in(page, live_server, trend_study.get_absolute_url())
    figure = page.locator("#trend-figure")
    figure.scroll_into_view_if_needed()
    shown = figure.locator("svg").evaluate("svg => svg.outerHTML")
    rows = check_files(download_all(page, figure), "reliability-trend_trend-study", shown)
    table = page.locator("#trend tbody tr").all_inner_texts()
    shown_values = [f"{float(r[1]):.3f}" if r[1] else "\N{EN DASH}" for r in rows[1:]]
    assert [f"{r[0]}\t{v}" for r, v in zip(rows[1:], shown_values, strict=True)] == table
    assert any(r[1] for r in rows[1:])


def test_the_differences_heatmap_downloads_without_logging_in(page, live_server, board_of_20):  # noqa: F811
    violations = watch_violations(page)
    page.goto(f"{live_server.url}/leaderboards/{board_of_20.pk}/differences/?top=5")
    figure = page.locator("#differences-heatmap figure")
    shown = figure.locator("svg").evaluate("svg => svg.outerHTML")
    assert figure.locator("svg g.colour-bar").count() == 1
    assert figure.locator("svg g.axis-labels text").count() == 10  # 5 rows, 5 columns named
    files = download_all(page, figure)
    stem = file_stem(
        "differences", board_of_20.name, "pair_alignment(correlation=spearman)", "top-5"
    )
    assert stem.endswith("_pair-alignment-correlation-spearman_top-5")
    rows = check_files(files, stem, shown)
    assert len(rows) == 1 + 5 * 4 and rows[0][5] == "difference (a - b)"
    # One CSV of the table: the page's own link is the figure's download.
    assert page.locator("#differences-csv").get_attribute("href") == figure.locator(
        '.figure-downloads a[data-format="csv"]'
    ).get_attribute("href")
    # Zoom (static/js/figures.js) moves the viewBox; Reset gives the whole figure back.
    svg = figure.locator("svg")
    whole = svg.get_attribute("viewBox")
    width, height = (float(v) for v in whole.split()[2:])
    figure.get_by_role("button", name="+").click()
    x, y, w, h = (float(v) for v in svg.get_attribute("viewBox").split())
    assert (w, h) == (width / 2, height / 2) and (x, y) == (width / 4, height / 4)
    box = svg.bounding_box()
    zoomed = svg.get_attribute("viewBox")
    # A right-button drag is no pan (figures.js pans with the main button only): the
    # pointer events as a right-button drag sends them.
    svg.evaluate(
        """(svg, box) => {
          const at = (type, dx, buttons) => svg.dispatchEvent(new PointerEvent(type, {
            bubbles: true, pointerId: 1, pointerType: "mouse", button: type === "pointermove" ? -1 : 2,
            buttons, clientX: box.x + box.width / 2 + dx, clientY: box.y + box.height / 2 }));
          at("pointerdown", 0, 2); at("pointermove", 40, 2); at("pointerup", 40, 0);
        }""",
        box,
    )
    assert svg.get_attribute("viewBox") == zoomed
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2)
    page.mouse.up()
    assert float(svg.get_attribute("viewBox").split()[0]) < x  # dragged right: view moves left
    figure.get_by_role("button", name="Reset").click()
    assert svg.get_attribute("viewBox") == whole
    screenshot(page, "differences-figure")
    assert_enforced(page, violations)
