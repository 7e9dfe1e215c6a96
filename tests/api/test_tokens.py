"""The API tokens page: a researcher makes a named token (its key shown once, stored only
as a hash), sees their tokens and revokes one; a revoked key gets 401. The password-login
token of POST /api/auth/token/ keeps working and is listed beside them."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from api.models import ApiToken
from api.tokens import LAST_USED_RESOLUTION
from tests.api.conftest import error
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db

PAGE = "/api/tokens/"


def make_token(client: Client, name: str):
    return client.post(PAGE, {"name": name})


def api_with(key: str) -> APIClient:
    scripted = APIClient()
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return scripted


def test_a_made_token_is_shown_once_stored_as_a_hash_and_works(researcher_client, researcher):
    response = make_token(researcher_client, "lab server")
    assert response.status_code == 200
    key = response.context["new_key"]
    assert key.startswith("lk_") and len(key) == 43
    assert key in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(user=researcher)
    assert token.name == "lab server" and token.prefix == key[:8]
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {value for row in ApiToken.objects.values() for value in row.values()}

    listed = researcher_client.get(PAGE).content.decode()
    assert key not in listed  # shown once
    assert "lab server" in listed and f"{key[:8]}…" in listed and "never" in listed

    assert api_with(key).get("/api/models/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert f"{token.last_used_at:%Y-%m-%d %H:%M}" in researcher_client.get(PAGE).content.decode()


def test_last_used_is_written_at_most_once_a_minute(researcher_client, researcher):
    key = make_token(researcher_client, "notebook").context["new_key"]
    scripted = api_with(key)
    scripted.get("/api/models/")
    first = ApiToken.objects.get().last_used_at
    scripted.get("/api/models/")
    assert ApiToken.objects.get().last_used_at == first
    earlier = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    ApiToken.objects.update(last_used_at=earlier)
    scripted.get("/api/models/")
    assert ApiToken.objects.get().last_used_at > earlier


def test_a_revoked_key_gets_401(researcher_client):
    key = make_token(researcher_client, "laptop").context["new_key"]
    token = ApiToken.objects.get()
    revoked = researcher_client.post(reverse("api:token_revoke", args=[token.pk]))
    assert revoked["Location"] == PAGE
    assert not ApiToken.objects.exists()
    response = api_with(key).get("/api/models/")
    assert response.status_code == 401
    assert response.json() == error("authentication_failed", "Invalid token.")


def test_names_are_required_and_unique_per_researcher(researcher_client):
    make_token(researcher_client, "laptop")
    again = make_token(researcher_client, "laptop")
    assert again.status_code == 400
    assert "You have a token called &#x27;laptop&#x27; already" in again.content.decode()
    blank = make_token(researcher_client, "   ")
    assert blank.status_code == 400
    assert ApiToken.objects.count() == 1


def test_another_researchers_token_cannot_be_revoked_or_seen(researcher_client):
    other = Client()
    other.force_login(ResearcherFactory(username="olga"))
    theirs = make_token(other, "olga's server")
    token = ApiToken.objects.get()
    assert "olga&#x27;s server" not in researcher_client.get(PAGE).content.decode()
    refused = researcher_client.post(reverse("api:token_revoke", args=[token.pk]))
    assert refused.status_code == 404
    assert api_with(theirs.context["new_key"]).get("/api/models/").status_code == 200


def test_participants_viewers_and_anonymous_cannot_reach_the_page(client, outsider):
    for address in (PAGE, reverse("api:token_revoke", args=[1])):
        assert client.post(address, {"name": "x"})["Location"].startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_the_password_login_token_is_listed_and_revocable(researcher_client, researcher):
    obtained = APIClient().post(
        "/api/auth/token/", {"username": "rita", "password": "rita-pass-123"}, format="json"
    )
    key = obtained.json()["token"]
    assert api_with(key).get("/api/models/").status_code == 200  # DRF's token still works
    page = researcher_client.get(PAGE).content.decode()
    assert "Password login" in page and f"{key[:8]}…" in page
    researcher_client.post(reverse("api:login_token_revoke"))
    assert not Token.objects.filter(user=researcher).exists()
    assert api_with(key).get("/api/models/").status_code == 401


def test_a_deactivated_researchers_named_token_stops_working(researcher_client, researcher):
    key = make_token(researcher_client, "cluster").context["new_key"]
    researcher.is_active = False
    researcher.save()
    response = api_with(key).get("/api/models/")
    assert response.status_code == 401
    assert response.json() == error("authentication_failed", "User inactive or deleted.")


def test_the_user_menu_and_the_api_docs_link_the_page(researcher_client):
    menu = researcher_client.get(reverse("evaluation:leaderboards")).content.decode()
    assert f'href="{PAGE}">API tokens</a>' in menu
    schema = researcher_client.get("/api/schema/").content.decode()  # YAML
    assert "[your API tokens page](/api/tokens/)" in schema


def test_a_name_taken_at_the_same_moment_is_a_clear_error(researcher, monkeypatch):
    from django.core.exceptions import ValidationError
    from django.db.models import QuerySet

    from api.tokens import token_create

    token_create(user=researcher, name="lab server")
    # The other request's check passed before this one made its token (a double submit).
    monkeypatch.setattr(QuerySet, "exists", lambda self: False)
    with pytest.raises(ValidationError, match="You have a token called 'lab server' already"):
        token_create(user=researcher, name="lab server")
    monkeypatch.undo()
    assert ApiToken.objects.filter(user=researcher, name="lab server").count() == 1


def test_the_page_says_the_password_login_token_is_kept_as_it_is(researcher_client, researcher):
    Token.objects.create(user=researcher)
    page = researcher_client.get(PAGE).content.decode()
    assert "Only a hash of each named token's key is stored" in page
    assert "is kept as it is, key included" in page
