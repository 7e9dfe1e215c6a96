"""A researcher, in a real browser: log in, open New run, pick the dataset (htmx fills in
the matching models), pick a model and k, start the run, watch it finish, and read the
score on the leaderboard. Anonymous visitors then see the leaderboard but not the runs."""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_image_dataset, make_text_model, make_timm_model
from tests.e2e.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_researcher_launches_a_run_and_reads_the_leaderboard(
    page, live_server, start_worker, researcher, digits_zip_small
):
    start_worker()
    dataset = make_image_dataset(data=digits_zip_small)
    make_timm_model()
    make_text_model()  # a text model must not be offered for an image dataset

    page.goto(f"{live_server.url}/runs/new/")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill("rita-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/runs/new/$"))

    page.get_by_label("Dataset", exact=True).select_option(str(dataset.pk))
    page.wait_for_selector("#run-fields legend:has-text('for image stimuli')")
    assert page.locator("#run-fields").inner_text().count("minilm") == 0
    page.get_by_role("checkbox", name=re.compile("test-vit")).check()
    page.get_by_label("k", exact=True).fill("3")
    screenshot(page, "run-form")
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    page.wait_for_selector("[data-status=succeeded]", timeout=120_000)
    assert "k-NN accuracy, k=3, leave-one-out" in page.inner_text("#run-progress")
    metric = page.locator("#run-progress abbr.metric").first  # the exact key on hover
    assert metric.get_attribute("title").startswith("knn(k=3,split=loo): ")
    screenshot(page, "run-finished")

    page.get_by_role("link", name=f"{dataset.name}: labels").first.click()
    table = page.inner_text("table.leaderboard")
    assert "test-vit" in table and "untrained baseline" in table
    assert re.search(r"0\.\d{3}\s*\[0\.\d{3}, [01]\.\d{3}\]", table)
    screenshot(page, "leaderboard")
    leaderboard_url = page.url

    page.get_by_role("button", name="Log out").click()
    page.goto(leaderboard_url)
    assert "test-vit" in page.inner_text("table.leaderboard")
    page.goto(f"{live_server.url}/runs/")
    assert "/accounts/login/" in page.url
