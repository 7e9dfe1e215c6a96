"""The dashboard in a real browser: a shareable filtered, sorted leaderboard (htmx swaps the
board and the URL follows), its CSV export, and the compare page for two models."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from evaluation.models import Target
from tests.conftest import make_text_dataset
from tests.e2e.conftest import screenshot
from tests.evaluation.test_compare import scored  # noqa: F401 (fixture)
from tests.evaluation.test_leaderboards import add_model, add_score
from tests.factories import RunFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, next_path: str) -> None:
    page.goto(f"{live_server.url}{next_path}")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill("rita-pass-123")
    page.keyboard.press("Enter")
    # The login page's own address carries next_path in ?next=: wait for the page itself.
    path = next_path.split("?")[0]
    page.wait_for_url(lambda url: urlsplit(url).path == path)


def test_leaderboard_filters_sort_and_share(page, live_server):
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    for name, source, value in [
        ("vit-large", "timm", 0.91),
        ("resnet-50", "timm", 0.84),
        ("minilm", "sentence-transformers", 0.89),
        ("tf-idf", "baseline", 0.62),
    ]:
        model = add_model(name, source=source, params=10_000_000)
        add_score(run, model, target, "knn(k=5)", value)
        add_score(run, model, target, "retrieval_map", value - 0.2)
    page.goto(f"{live_server.url}/leaderboards/{target.pk}/")
    rows = page.locator("table.leaderboard tbody tr")
    assert rows.count() == 4 and "vit-large" in rows.first.inner_text()
    assert "≈ leader" in page.inner_text("table.leaderboard")  # minilm's CI overlaps
    screenshot(page, "leaderboard-board")

    page.get_by_label("Source").select_option("timm")
    page.wait_for_url(re.compile(r"source=timm"))
    page.wait_for_function("document.querySelectorAll('table.leaderboard tbody tr').length == 2")
    page.get_by_role("link", name=re.compile(r"^same-label retrieval mAP")).click()
    page.wait_for_url(re.compile(r"sort=retrieval_map"))
    # again: ascending
    page.get_by_role("link", name=re.compile(r"^same-label retrieval mAP")).click()
    page.wait_for_url(re.compile(r"order=asc"))
    assert "resnet-50" in page.locator("table.leaderboard tbody tr").first.inner_text()
    shared = page.url
    screenshot(page, "leaderboard-filtered")

    # The URL is the view: opening it elsewhere shows the same board.
    other = page.context.new_page()
    other.goto(shared)
    first = other.locator("table.leaderboard tbody tr").first.inner_text()
    assert "resnet-50" in first and other.locator("table.leaderboard tbody tr").count() == 2
    with other.expect_download() as download:
        other.get_by_role("link", name="CSV").click()
    text = open(download.value.path()).read()
    assert text.splitlines()[0].startswith("rank,model,source") and "tf-idf" not in text
    other.close()


def test_compare_two_models(page, live_server, researcher, scored):  # noqa: F811
    target, _, _ = scored
    log_in(page, live_server, "/compare/")
    page.get_by_label("Target").select_option(str(target.pk))
    page.wait_for_selector("input[name=models]")
    page.get_by_label("tfidf").check()
    page.get_by_label("minilm").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_function("() => !document.querySelector('[aria-busy=true]')")  # sections loaded
    assert page.locator("#heatmaps svg").count() == 3  # people's matrix and the two models'
    assert page.locator("#scatters svg").count() == 2
    assert page.locator("#cka svg").count() == 1
    assert page.locator("#disagreements tbody tr").count() == 25  # of the 28 pairs
    screenshot(page, "compare")
    first_neighbour = page.locator("#neighbours ol li a").first
    chosen = first_neighbour.inner_text().strip()
    first_neighbour.click()
    page.wait_for_url(re.compile(r"stimulus=\d+"))
    page.wait_for_selector("#neighbours")
    assert chosen[:20] in page.locator("#neighbours").locator("..").inner_text()


@pytest.mark.parametrize("width", [1280, 390])
def test_across_targets_tables_stay_in_the_page(page, live_server, width):
    """Twelve targets are wider than any screen: the table scrolls in its own box, the page
    does not; label accuracy and human alignment are two tables."""
    from tests.api.conftest import pairs_judgments

    models = [add_model(f"model-with-a-long-name-{index}") for index in range(4)]
    for index in range(12):
        dataset = make_text_dataset(name=f"a dataset with a long descriptive name {index}")
        run = RunFactory(dataset=dataset)
        targets = [Target.objects.get(dataset=dataset)]
        if index % 3 == 0:
            targets.append(pairs_judgments(dataset).target)
        for target in targets:
            for rank, model in enumerate(models):
                add_score(run, model, target, "knn(k=5,split=loo)", 0.9 - rank / 10 - index / 100)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/leaderboards/overall/")
    assert page.locator("table.overall").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = page.locator("#overall-labels .scroll")
    assert box.evaluate("e => e.scrollWidth > e.clientWidth")  # it scrolls, inside the page
    first = page.locator("#overall-labels tbody tr").first.inner_text()
    assert "model-with-a-long-name-0" in first and "0.00" in first  # first everywhere: 0
    screenshot(page, f"overall-{width}")
