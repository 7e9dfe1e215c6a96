"""Content-Security-Policy on every page: no inline script anywhere (so injected markup
cannot run), no inline styles on the app's own pages, and the API documentation pages kept
working under it (their init script served as a file; only their run-time styles relaxed).
The browser side (no violation reported, htmx still swapping) is tests/e2e/test_csp.py.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.webapp.test_permission_matrix import (  # noqa: F401  (the site fixture)
    ROUTES,
    client_for,
    route_url,
    site,
)

pytestmark = pytest.mark.django_db

API_DOCS = ("api:docs", "api:redoc", "api:schema")


def directives(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.request['PATH_INFO']} has no Content-Security-Policy"
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_strict(response, *, styles: str = "'self'") -> None:
    policy = directives(response)
    path = response.request["PATH_INFO"]
    assert policy["script-src"] == ["'self'"], f"{path}: script-src {policy['script-src']}"
    assert policy["object-src"] == ["'none'"], path
    assert policy["base-uri"] == ["'self'"], path
    assert policy["frame-ancestors"] == ["'none'"], path
    assert policy["form-action"] == ["'self'"], path
    assert " ".join(policy["style-src"]) == styles, f"{path}: style-src {policy['style-src']}"


@pytest.mark.parametrize("role", ["anonymous", "participant", "researcher"])
def test_every_page_of_the_site_carries_the_policy(role, site, researcher):  # noqa: F811
    client = client_for(role, site, researcher)
    for name, (_, method, needs) in sorted(ROUTES.items()):
        url = route_url(name, needs, site)
        response = client.post(url, {}) if method == "POST" else client.get(url)
        assert_strict(response)


def test_error_pages_and_the_admin_carry_the_policy(researcher_client):
    assert_strict(researcher_client.get("/no/such/page/"))
    assert_strict(Client().get(reverse("admin:login")))


def test_pages_have_no_inline_script_style_or_handlers(site, researcher):  # noqa: F811
    """What the policy would block, looked for in the markup the app itself sends."""
    offenders = []
    for role in ("participant", "researcher"):
        client = client_for(role, site, researcher)
        for name, (_, method, needs) in sorted(ROUTES.items()):
            if method != "GET":
                continue
            response = client.get(route_url(name, needs, site))
            if "text/html" not in response.get("Content-Type", ""):
                continue
            page = response.content.decode()
            inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", page)
            if inline:
                offenders.append(f"{name} ({role}): {inline}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", API_DOCS)
def test_the_api_documentation_carries_the_policy(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 200
    # Swagger UI and Redoc inject <style> elements at run time: styles only are relaxed.
    assert_strict(response, styles="'self' 'unsafe-inline'" if name != "api:schema" else "'self'")


def test_swagger_ui_loads_its_init_script_as_a_file(client):
    page = client.get(reverse("api:docs")).content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script in Swagger UI"
    script = re.search(r'<script src="([^"]*script[^"]*)"', page)
    assert script, page
    served = client.get(script.group(1).replace("&amp;", "&"))
    assert served.status_code == 200 and "SwaggerUIBundle" in served.content.decode()
    assert "javascript" in served["Content-Type"]
