"""Authentication: researchers get a token (endpoint or management command) and script the
API with it; a logged-in researcher's browser session works too, with CSRF enforced on
writes; everyone else is refused with the error body."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evaluation.models import PretrainedModel
from tests.api.conftest import error, token_client
from tests.factories import ResearcherFactory

pytestmark = pytest.mark.django_db

NEW_MODEL = {"name": "vit", "source": "timm", "identifier": "test_vit", "weights": "untrained"}


def obtain(client: APIClient, username: str, password: str):
    return client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )


def test_researcher_exchanges_password_for_a_token_and_uses_it(anonymous, researcher):
    response = obtain(anonymous, "rita", "rita-pass-123")
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json() == {"token": Token.objects.get(user=researcher).key, "username": "rita"}
    assert obtain(anonymous, "rita", "rita-pass-123").json()["token"] == token  # stable
    scripted = APIClient()
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert scripted.get("/api/models/").status_code == 200
    assert scripted.post("/api/models/", NEW_MODEL, format="json").status_code == 201


def test_wrong_password_and_missing_fields(anonymous, researcher):
    wrong = obtain(anonymous, "rita", "guess")
    assert wrong.status_code == 400
    assert wrong.json() == error("invalid", "Unable to log in with provided credentials.")
    missing = anonymous.post("/api/auth/token/", {}, format="json")
    assert missing.json() == error(
        "invalid",
        "username: This field is required. password: This field is required.",
        {"username": ["This field is required."], "password": ["This field is required."]},
    )
    assert not Token.objects.exists()


def test_non_researchers_get_no_token(anonymous, outsider):
    refused = obtain(anonymous, "otto", "otto-pass-123")
    assert refused.status_code == 403
    assert refused.json() == error(
        "permission_denied", "Only researchers (active staff accounts) can get an API token."
    )
    ResearcherFactory(username="former", password="former-pass-123", is_active=False)
    inactive = obtain(anonymous, "former", "former-pass-123")
    assert inactive.json() == error("invalid", "Unable to log in with provided credentials.")
    assert not Token.objects.exists()


def test_password_guessing_is_throttled(anonymous, researcher, settings):
    # A fast hasher: the point is the count of attempts, not the cost of each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    researcher.set_password("rita-pass-123")
    researcher.save()
    for _ in range(20):
        assert obtain(anonymous, "rita", "guess").status_code == 400
    throttled = obtain(anonymous, "rita", "rita-pass-123")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"
    assert throttled.json()["error"]["message"].startswith("Request was throttled.")
    assert int(throttled["Retry-After"]) > 0


def test_anonymous_gets_401_with_the_scheme_to_use(anonymous):
    response = anonymous.get("/api/models/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == error(
        "not_authenticated", "Authentication credentials were not provided."
    )


def test_bad_token_is_refused_even_on_public_reads(researcher):
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    for address in ("/api/models/", "/api/scores/"):
        response = forged.get(address)
        assert response.status_code == 401
        assert response.json() == error("authentication_failed", "Invalid token.")


def test_token_of_a_deactivated_or_demoted_researcher_stops_working(researcher):
    client = token_client(researcher)
    assert client.get("/api/models/").status_code == 200
    researcher.is_staff = False
    researcher.save()
    demoted = client.get("/api/models/")
    assert demoted.status_code == 403
    assert demoted.json() == error(
        "permission_denied", "Only researchers (active staff accounts) can use this endpoint."
    )
    researcher.is_staff, researcher.is_active = True, False
    researcher.save()
    deactivated = client.get("/api/models/")
    assert deactivated.status_code == 401
    assert deactivated.json() == error("authentication_failed", "User inactive or deleted.")


def test_drf_create_token_command(researcher):
    out = io.StringIO()
    call_command("drf_create_token", "rita", stdout=out)
    key = Token.objects.get(user=researcher).key
    assert key in out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/runs/").status_code == 200


# --- Browser session ------------------------------------------------------------------------------
def test_session_reads_and_csrf_protected_writes(researcher):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(researcher)
    assert browser.get("/api/models/").status_code == 200
    refused = browser.post("/api/models/", NEW_MODEL, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json() == error("permission_denied", "CSRF Failed: CSRF cookie not set.")
    assert not PretrainedModel.objects.exists()

    browser.get("/accounts/login/")  # any page with a form sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    wrong = browser.post(
        "/api/models/", NEW_MODEL, content_type="application/json", HTTP_X_CSRFTOKEN="x" * 32
    )
    assert wrong.status_code == 403 and wrong.json()["error"]["message"].startswith("CSRF Failed")
    created = browser.post(
        "/api/models/", NEW_MODEL, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert created.status_code == 201
    assert PretrainedModel.objects.get().created_by == researcher


def test_session_of_a_participant_is_forbidden(participant_user):
    browser = Client()
    browser.force_login(participant_user)
    response = browser.get("/api/runs/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert browser.get("/api/scores/").status_code == 200  # leaderboard data is public
