"""Paired comparisons in a real browser: a human-alignment board of 20 models shows its rank
intervals and tie groups, links to every pairwise difference, and the differences page
draws its heatmap and table under the Content-Security-Policy."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot
from tests.e2e.test_csp import assert_enforced, watch_violations
from tests.evaluation.test_paired_leaderboard import board_of_20  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_rank_intervals_tie_groups_and_the_differences_page(page, live_server, board_of_20):  # noqa: F811
    violations = watch_violations(page)
    page.goto(f"{live_server.url}/leaderboards/{board_of_20.pk}/")
    board = page.locator("table.leaderboard")
    assert "95% rank interval" in board.inner_text() and "tie group" in board.inner_text()
    first = page.locator("table.leaderboard tbody tr").first
    assert re.search(r"\b1\N{EN DASH}\d+\b", first.locator("td.rank-interval").inner_text())
    assert first.locator("td.tie-group").inner_text() == "1"
    assert "Holm over the 19 comparisons" in page.inner_text("#separability")
    screenshot(page, "leaderboard-paired")

    page.get_by_role("link", name="Every pairwise difference").click()
    page.wait_for_url(re.compile(r"/differences/"))
    page.get_by_label("Top models").fill("6")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"top=6"))
    assert page.locator("#differences tbody tr").count() == 6
    assert page.locator("#differences-heatmap svg rect").count() == 36
    title = page.locator("#differences-heatmap svg rect title").nth(1).text_content()
    assert "Holm p" in title and "95% CI" in title
    screenshot(page, "differences")
    assert_enforced(page, violations)
