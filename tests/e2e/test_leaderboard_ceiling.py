"""A board without a computed ceiling in a real browser: it says why, a researcher enters the
ceiling the data's paper reports, and the board draws it as a dashed row marked published;
metric names show their key on hover. The run form groups a model's layers by block."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in
from tests.evaluation.test_published_ceiling import simlex  # noqa: F401  (fixture)
from tests.factories import PretrainedModelFactory, RunFactory, ScoreFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_published_ceiling_is_entered_and_drawn_dashed(page, live_server, researcher, simlex):  # noqa: F811
    run = RunFactory(dataset=simlex.dataset)
    for name, value in (("word2vec-like", 0.38), ("chargrams", 0.027)):
        ScoreFactory(
            run=run, model=PretrainedModelFactory(name=name, modality="text"), target=simlex,
            metric_key="pair_alignment(correlation=spearman)", value=value,
        )  # fmt: skip
    log_in(page, live_server, "/datasets/")
    page.wait_for_url(f"{live_server.url}/datasets/")  # logged in, not the login page
    page.goto(f"{live_server.url}{simlex.get_absolute_url()}")
    notice = page.locator("#no-ceiling").inner_text()
    assert "only 1 of 998 pairs was judged more than once" in notice
    header = page.locator("table.leaderboard thead abbr.metric").first
    assert header.inner_text() == "Spearman with human pair ratings"
    assert header.get_attribute("title").startswith("pair_alignment(correlation=spearman): ")

    page.get_by_label("Published ceiling", exact=True).fill("1.4")
    page.get_by_label("Source", exact=True).fill("Hill et al. 2015")
    page.get_by_role("button", name="Save the published ceiling").click()
    assert "lies above 0 (chance) and at most 1" in page.locator("#ceiling-errors").inner_text()

    page.get_by_label("Published ceiling", exact=True).fill("0.67")
    page.get_by_role("button", name="Save the published ceiling").click()
    page.wait_for_url(re.compile(rf"/leaderboards/{simlex.pk}/$"))
    row = page.locator("#ceiling-published")
    assert "published (Hill et al. 2015)" in row.inner_text() and "0.670" in row.inner_text()
    style = row.locator("td").first.evaluate("cell => getComputedStyle(cell).borderTopStyle")
    assert style == "dashed"
    assert page.locator("#ceiling-computed").count() == 0
    screenshot(page, "leaderboard-published-ceiling")


def test_run_form_layers_by_block_with_every_module_behind_a_click(page, live_server, researcher):
    from tests.conftest import make_text_dataset
    from tests.evaluation.test_layer_groups import resnet18_names

    dataset = make_text_dataset()
    names = resnet18_names()
    model = PretrainedModelFactory(
        name="resnet18-text-test", modality="text", source="timm", identifier="resnet18",
        default_layer="pre_logits", layers=[{"name": n, "shape": [8]} for n in names],
    )  # fmt: skip
    log_in(page, live_server, "/datasets/")
    page.wait_for_url(f"{live_server.url}/datasets/")  # logged in, not the login page
    page.goto(f"{live_server.url}/runs/new/?dataset={dataset.pk}")
    common = page.get_by_label(f"Common layers of {model.name}")
    groups = common.locator("optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert groups == [
        "Final and input embeddings",
        "Stage layer1",
        "Stage layer2",
        "Stage layer3",
        "Stage layer4",
    ]
    every = page.get_by_label(f"All modules of {model.name}")
    assert not every.is_visible()  # behind "All 94 modules"
    page.get_by_text("All 94 modules, by block").click()
    assert every.is_visible() and every.locator("option").count() == 94
    screenshot(page, "run-form-layers")
