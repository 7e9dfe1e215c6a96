"""The API tokens page in a real browser: reached from the user menu, a named token's key is
shown once and works for the API, and Revoke takes it away."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from api.models import ApiToken
from tests.e2e.conftest import screenshot
from tests.e2e.test_dashboard import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_token_is_made_shown_once_used_and_revoked(page, live_server, researcher):
    log_in(page, live_server, "/datasets/")
    page.locator("header .account").get_by_role("link", name="API tokens").click()
    page.wait_for_url(re.compile(r"/api/tokens/$"))
    page.get_by_label("Name").fill("lab server")
    page.get_by_role("button", name="Make token").click()
    key = page.locator("#new-token-key").inner_text()
    assert key.startswith("lk_")
    row = page.locator("table.tokens tbody tr").first
    assert "lab server" in row.inner_text() and f"{key[:8]}…" in row.inner_text()
    screenshot(page, "api-tokens-new")

    scripted = APIClient()
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert scripted.get("/api/models/").status_code == 200

    page.goto(f"{live_server.url}/api/tokens/")  # the page again: the key is not shown
    assert "lab server" in page.locator("table.tokens").inner_text()
    assert page.locator("#new-token-key").count() == 0
    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("Revoked lab server").wait_for()
    assert not ApiToken.objects.exists()
    assert scripted.get("/api/models/").status_code == 401
