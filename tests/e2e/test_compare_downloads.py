"""Every figure of the compare page on a target of pair ratings downloads from the page, in a
real browser, as SVG (a well-formed document), PNG (the same figure at twice its size) and
CSV (a header and the rows drawn): the models' similarity matrices, the people's matrix, each
residual, each model-vs-people scatter and the RSA between the models."""

from __future__ import annotations

import csv
import io
import struct
import xml.etree.ElementTree as ElementTree

import pytest

from tests.e2e.test_compare import LOADED
from tests.e2e.test_dashboard import log_in
from tests.e2e.test_figure_downloads import download_all
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)
from tests.evaluation.test_figures import PNG_SIGNATURE

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KINDS = ("compare-similarity", "compare-people", "compare-residual", "compare-scatter")


def test_each_compare_figure_downloads_as_svg_png_and_csv(page, live_server, researcher, scored):  # noqa: F811
    target, tfidf, small = scored
    address = f"/compare/?target={target.pk}&models={tfidf.pk}&models={small.pk}"
    log_in(page, live_server, address)
    page.wait_for_function(LOADED)
    ids = page.eval_on_selector_all(
        "figure:has(.figure-downloads)", "figures => figures.map(f => f.id)"
    )
    assert len(ids) >= 7  # 2 models + people, 2 residuals, 2 scatters (and the RSA)
    seen: dict[str, int] = {}
    for figure_id in ids:
        # A tab of its own for each figure's three files: Chromium holds back a tab's
        # downloads after the first few ("download multiple files" permission).
        tab = page.context.new_page()
        tab.goto(f"{live_server.url}{address}")
        tab.wait_for_function(LOADED)
        files = download_all(tab, tab.locator(f"#{figure_id}"))
        tab.close()
        name = files["svg"][0]
        kind = next(k for k in (*KINDS, "compare-rsa", "compare-cka") if name.startswith(k))
        seen[kind] = seen.get(kind, 0) + 1
        root = ElementTree.fromstring(files["svg"][1])
        assert root.tag.endswith("svg")
        width, height = (int(float(root.get(side))) for side in ("width", "height"))
        png = files["png"][1]
        assert png.startswith(PNG_SIGNATURE)
        assert struct.unpack(">II", png[16:24]) == (2 * width, 2 * height)
        rows = list(csv.reader(io.StringIO(files["csv"][1].decode())))
        assert len(rows) >= 2 and all(len(row) == len(rows[0]) for row in rows), name
    assert {k: seen.get(k, 0) for k in KINDS} == {
        "compare-similarity": 2,
        "compare-people": 1,
        "compare-residual": 2,
        "compare-scatter": 2,
    }
