"""Archiving a dataset from its page in a real browser: the archive page lists what depends
on it, archiving takes it off the dataset list (an 'Archived (1)' link shows it again,
marked), its page says it is archived and offers Unarchive, which lists it again."""

from __future__ import annotations

import re

import pytest

from evaluation.models import Dataset
from tests.conftest import make_text_dataset
from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in
from tests.factories import RunFactory, ScoreFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_dataset_is_archived_from_its_page_and_leaves_the_list(page, live_server, researcher):
    dataset = make_text_dataset(name="old sentences")
    keep = make_text_dataset(name="new sentences")
    run = RunFactory(dataset=dataset, status="succeeded")
    ScoreFactory(run=run, target=dataset.targets.get())
    log_in(page, live_server, "/datasets/")
    table = page.locator("main table.data")
    assert "old sentences" in table.inner_text() and "new sentences" in table.inner_text()

    page.get_by_role("link", name="old sentences").click()
    page.get_by_role("link", name="Archive or delete this dataset…").click()
    page.wait_for_url(re.compile(rf"/datasets/{dataset.pk}/archive/$"))
    dependents = page.locator("table.dependents")
    assert dependents.locator('tr[data-dependent="runs"] td.num').inner_text() == "1"
    assert dependents.locator('tr[data-dependent="scores"] td.num').inner_text() == "1"
    assert dependents.get_by_role("link", name=f"Run {run.pk} (Succeeded)").is_visible()
    screenshot(page, "archive-dataset-page")

    page.get_by_role("button", name="Archive dataset").click()
    page.wait_for_url(re.compile(rf"/datasets/{dataset.pk}/$"))
    banner = page.locator(".archived-banner")
    assert banner.inner_text().startswith("Archived on")
    assert "Archived dataset old sentences" in page.locator(".messages").inner_text()
    assert Dataset.objects.get(pk=dataset.pk).archived_at is not None

    page.get_by_role("link", name="Datasets", exact=True).click()
    page.wait_for_url(re.compile(r"/datasets/$"))
    assert "old sentences" not in table.inner_text()
    assert keep.name in table.inner_text()
    page.get_by_role("link", name="Archived (1)").click()  # a researcher finds it again
    page.wait_for_url(re.compile(r"/datasets/\?archived=1$"))
    row = page.locator("main table.data tr", has_text="old sentences")
    assert row.locator(".badge").inner_text() == "archived"

    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")  # still at its address
    page.locator(".archived-banner").get_by_role("button", name="Unarchive").click()
    page.wait_for_url(re.compile(rf"/datasets/{dataset.pk}/$"))
    assert page.locator(".archived-banner").count() == 0
    page.get_by_role("link", name="Datasets", exact=True).click()
    assert "old sentences" in page.locator("main table.data").inner_text()
