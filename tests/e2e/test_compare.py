"""The compare page on a target of pair ratings, in a real browser: the page answers with its
form at once and loads each section (htmx); the people's matrix stands beside the models'
with each model's residual; the measure chosen on the page changes the numbers to the
engine's and scipy's; a pair table sorts by a column and downloads as CSV."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LOADED = "() => !document.querySelector('[aria-busy=true]')"


def tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a by its definition: (concordant - discordant) over all pairs."""
    i, j = np.triu_indices(len(x), k=1)
    return float((np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])).sum() / len(i))


def model_and_people(target, model) -> tuple[np.ndarray, np.ndarray]:
    """The model's cosine of each pair of the 8 stimuli and the toy ratings (7 - distance)."""
    from evaluation.compare import latest_embeddings

    x = np.asarray(latest_embeddings(model, target)[model.default_layer].load(), float)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(8, k=1)
    return np.einsum("ij,ij->i", unit[i], unit[j]), 7.0 - np.abs(i - j)


def scatter_value(page, model_id: int) -> float:
    return float(page.get_attribute(f"#scatters [data-model='{model_id}']", "data-value"))


def test_compare_page_with_people(page, live_server, researcher, scored):  # noqa: F811
    target, tfidf, small = scored
    query = f"/compare/?target={target.pk}&models={tfidf.pk}&models={small.pk}"
    log_in(page, live_server, query)
    page.wait_for_function(LOADED)
    # People's matrix beside the models', the same 8 stimuli, and one residual per model.
    assert page.locator("#human-matrix svg").count() == 1
    assert page.locator("#heatmaps figure").count() == 3
    assert page.locator("#residuals svg").count() == 2
    assert "fractional ranks" in page.inner_text("#residual-scale")
    human_cells = page.eval_on_selector_all(
        "#human-matrix svg rect title", "titles => titles.map(t => t.textContent)"
    )
    assert sum(t.endswith(": 6.000") for t in human_cells) == 2 * 7  # pairs one apart, twice
    screenshot(page, "compare-human-target")
    # The people's matrix downloads as its data: the 28 judged pairs.
    with page.expect_download() as download:
        page.locator("#human-matrix a[data-format=csv]").click()
    assert download.value.suggested_filename.startswith("compare-people")
    with open(download.value.path(), newline="", encoding="utf-8") as handle:
        assert sorted(float(r["mean human rating"]) for r in csv.DictReader(handle)) == sorted(
            7.0 - np.abs(np.subtract(*np.triu_indices(8, k=1)))
        )

    # Spearman by default, equal to scipy's; then each measure chosen in the form.
    model, people = model_and_people(target, small)
    assert scatter_value(page, small.pk) == pytest.approx(spearmanr(model, people).statistic)
    shown = page.locator(f"#scatters [data-model='{small.pk}']")
    low, high = (float(shown.get_attribute(f"data-ci-{end}")) for end in ("low", "high"))
    assert low < scatter_value(page, small.pk) < high  # with its 95% interval
    from evaluation.engine.metrics.rsa import rsa

    references = {
        "pearson": pearsonr(model, people).statistic,
        "kendall_tau_a": tau_a(model, people),
        "rho_a": rsa(model, people, method="rho_a"),
    }
    for measure, expected in references.items():
        page.get_by_label("Comparison measure").select_option(measure)
        page.get_by_role("button", name="Compare").click()
        page.wait_for_url(re.compile(f"measure={measure}"))
        page.wait_for_function(LOADED)
        assert scatter_value(page, small.pk) == pytest.approx(expected, abs=1e-6)
        assert page.get_attribute("#rsa", "data-measure") == measure
    assert "z-scores" not in page.inner_text("#residual-scale")  # rho-a compares ranks
    assert "prefer rho-a" in page.inner_text("#measure-help")

    # Sort the people table by the human mean (server-side), then download it.
    table = f"#pairs-people-{small.pk}"
    page.locator(table).get_by_role("link", name="Human mean").click()
    page.wait_for_url(re.compile(rf"sort_people-{small.pk}=-human"))
    page.wait_for_function(LOADED)
    shown = [float(v) for v in page.locator(f"{table} tbody tr td:nth-child(3)").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and shown[0] == 6.0
    with page.expect_download() as download:
        page.locator(f"{table} + p").get_by_role("link", name=re.compile("as CSV")).click()
    assert download.value.suggested_filename == f"compare-people-{small.pk}.csv"
    with open(download.value.path(), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 28
    assert [float(r["human"]) for r in rows] == sorted(people, reverse=True)
    assert all(
        float(r["residual"])
        == pytest.approx(float(r["model_scaled"]) - float(r["human_scaled"]), abs=1e-8)
        for r in rows
    )


def test_compare_page_without_javascript(browser, live_server, researcher, scored):  # noqa: F811
    """Without JavaScript the placeholders link to the whole page, computed at once."""
    target, tfidf, small = scored
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        query = f"/compare/?target={target.pk}&models={tfidf.pk}&models={small.pk}"
        log_in(page, live_server, query)
        page.get_by_role("link", name="show every section at once").first.click()
        page.wait_for_url(re.compile("sync=1"))
        assert page.locator("#human-matrix svg").count() == 1
        assert page.locator("#residuals svg").count() == 2
        assert page.locator("[aria-busy=true]").count() == 0
    finally:
        context.close()


def test_a_failed_section_says_so(page, live_server, researcher, scored, monkeypatch):  # noqa: F811
    """htmx 2 swaps no error answer: app.js shows what failed and the sync=1 link."""
    from evaluation import compare

    def broken(result, inputs):
        raise RuntimeError("boom")

    monkeypatch.setitem(compare.SECTION_COMPUTE, "models", broken)
    target, tfidf, small = scored
    query = f"/compare/?target={target.pk}&models={tfidf.pk}&models={small.pk}&measure=pearson"
    log_in(page, live_server, query)
    page.wait_for_function(LOADED)
    alert = page.locator("#section-models [role=alert]")
    assert "could not be computed (HTTP 500" in alert.inner_text()
    assert "sync=1" in alert.locator("a").get_attribute("href")
    assert page.locator("#human-matrix svg").count() == 1  # the other sections still load
