"""Importing a published judgment file in a real browser: the preview shows how its first
rows are read and which column each role takes, a failed attempt keeps the chosen file, and
the mapped import succeeds without choosing the file again."""

from __future__ import annotations

import re

import pytest

from evaluation.models import HumanJudgments
from tests.conftest import SHARED_DATA
from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIMLEX = SHARED_DATA / "simlex999" / "SimLex-999.txt"


def test_a_published_file_is_mapped_with_a_preview_and_kept_across_a_failed_attempt(
    page, live_server, researcher
):
    log_in(page, live_server, "/judgments/import/")
    page.get_by_label("Name", exact=True).fill("SimLex-999")
    page.get_by_label("New dataset name").fill("simlex words")
    page.get_by_label("File", exact=True).set_input_files(str(SIMLEX))
    preview = page.locator("#judgments-preview")
    preview.get_by_text("Read as tab-separated").wait_for()
    assert "The file has no 'a', 'b', 'value' column" in preview.inner_text()
    assert "1: word1" in preview.inner_text() and "smart" in preview.inner_text()

    page.get_by_role("button", name="Import").click()  # unmapped: refused, file kept
    page.get_by_text("Using SimLex-999.txt from your last attempt").wait_for()
    assert "The file has no 'a', 'b', 'value' column" in page.inner_text("main")
    assert HumanJudgments.objects.count() == 0
    screenshot(page, "judgments-import-failed")

    page.get_by_label("Columns").fill("a=word1, b=word2, value=SimLex999")
    page.get_by_label("Columns").dispatch_event("change")
    preview.get_by_text("a ← column 1 (word1)").wait_for()
    assert "value ← column 4 (SimLex999)" in preview.inner_text()
    screenshot(page, "judgments-import-preview")

    page.get_by_role("button", name="Import").click()  # no file chosen again: the staged one
    page.wait_for_url(re.compile(r"/datasets/\d+/"))
    assert "Imported 999 judgments as SimLex-999 v1." in page.inner_text("body")
    judgments = HumanJudgments.objects.get()
    assert judgments.import_report["columns"]["columns"]["value"] == "SimLex999"
