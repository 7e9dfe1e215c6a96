"""Bad requests of every kind get a 4xx with a specific message in the one error body, and
an unexpected failure a 500 with the same shape, never a traceback."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.utils import OperationalError
from kombu.exceptions import OperationalError as KombuOperationalError

from evaluation import services
from evaluation.models import PretrainedModel, Run
from evaluation.storage import StoreUnreachable
from tests.api.conftest import error

pytestmark = pytest.mark.django_db

JSON_ENDPOINTS = ["/api/models/", "/api/runs/", "/api/auth/token/"]


def post_raw(client, path: str, body: bytes | str, content_type: str = "application/json"):
    return client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"name": "x",}', "Malformed JSON: Expecting property name enclosed in double quotes "
         "at line 1, column 14."),
        ("{'name': 'x'}", "Malformed JSON: Expecting property name enclosed in double quotes "
         "at line 1, column 2."),
        ('{"seed": NaN}', "Malformed JSON: NaN is not a JSON number; send a finite number or null."),
        ('{"name": "x"} trailing', "Malformed JSON: Extra data at line 1, column 15."),
        (b'{"name": "\xff"}', "Malformed JSON: the body is not valid utf-8 text "
         "(invalid start byte at byte 10)."),
    ],
)  # fmt: skip
def test_malformed_json_is_a_400_that_says_where(api, path, body, message):
    response = post_raw(api, path, body)
    assert response.status_code == 400
    assert response.json() == error("malformed_json", message)


@pytest.mark.parametrize("path", ["/api/models/", "/api/runs/"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[1, 2]", "Invalid data. Expected a dictionary, but got list."),
        ('"text"', "Invalid data. Expected a dictionary, but got str."),
        ("3", "Invalid data. Expected a dictionary, but got int."),
        ("null", "No data provided."),
    ],
)
def test_json_that_is_not_an_object(api, path, body, message):
    response = post_raw(api, path, body)
    assert response.status_code == 400
    assert response.json() == error("invalid", message)


def test_wrong_types_inside_the_body(api):
    response = api.post(
        "/api/runs/", {"dataset": "one", "models": 3, "metrics": {"knn": 1}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "dataset": ["Incorrect type. Expected pk value, received str."],
        "models": ['Expected a list of items but got type "int".'],
        "metrics": ['Expected a list of items but got type "dict".'],
    }
    assert response.json()["error"]["message"] == (
        "dataset: Incorrect type. Expected pk value, received str. "
        'models: Expected a list of items but got type "int". '
        'metrics: Expected a list of items but got type "dict".'
    )
    strings = api.post(
        "/api/models/",
        {"name": 5, "source": "timm", "identifier": "test_vit", "seed": "5"},
        format="json",
    )
    assert strings.json()["error"]["fields"] == {
        "name": ["Not a valid string."],
        "seed": ["A valid integer is required."],
    }
    ids_as_strings = api.post(
        "/api/runs/", {"dataset": "1", "models": ["1"], "metrics": [{"name": "knn"}]}, format="json"
    )
    assert ids_as_strings.json()["error"]["fields"] == {
        "dataset": ["Incorrect type. Expected pk value, received str."],
        "models": ["Incorrect type. Expected pk value, received str."],
    }
    nul = api.post(
        "/api/models/", {"name": "a\x00b", "source": "timm", "identifier": "x"}, format="json"
    )
    assert nul.json()["error"]["fields"] == {"name": ["Null characters are not allowed."]}
    assert not Run.objects.exists() and not PretrainedModel.objects.exists()


def test_oversize_json_body_is_refused_unread(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/api/models/", {"name": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert response.json() == error(
        "upload_too_large",
        "The request body is larger than 1.0 kB (DATA_UPLOAD_MAX_MEMORY_SIZE); it was not "
        "read. Upload files as multipart.",
    )
    assert not PretrainedModel.objects.exists()


def test_unsupported_content_type(api):
    response = post_raw(api, "/api/models/", "name=x", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json() == error(
        "unsupported_media_type",
        'Unsupported media type "application/x-www-form-urlencoded" in request.',
    )


def test_too_many_form_fields(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"field{n}": "x" for n in range(10)}
    response = api.post("/api/datasets/", fields, format="multipart")
    assert response.status_code == 400
    assert response.json() == error(
        "parse_error",
        "The number of GET/POST parameters exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS.",
    )


def test_broken_multipart_body(api):
    response = post_raw(api, "/api/datasets/", b"--x\r\nbroken", "multipart/form-data")
    assert response.status_code == 400
    assert response.json() == error(
        "parse_error", "Multipart form parse error - Invalid boundary in multipart: None"
    )


def test_unknown_address_under_api_is_a_json_404(api, anonymous):
    response = anonymous.get("/api/nothing/here/")
    assert response.status_code == 404
    assert response.json() == error(
        "not_found",
        "No API endpoint at /api/nothing/here/. The endpoints are listed at /api/docs/.",
    )
    slashless = api.post("/api/models", {}, format="json")
    assert slashless.status_code == 404
    assert slashless.json() == error(
        "not_found",
        "No API endpoint at /api/models. Did you mean /api/models/ (with the trailing slash)? "
        "The endpoints are listed at /api/docs/.",
    )
    assert api.get("/api/models/abc/").status_code == 404


def test_method_not_allowed(api):
    response = api.put("/api/runs/", {}, format="json")
    assert response.status_code == 405
    assert response.json() == error("method_not_allowed", 'Method "PUT" not allowed.')


def test_unexpected_failure_is_a_json_500_without_traceback(api, monkeypatch, caplog):
    def explode(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "model_register", explode)
    api.raise_request_exception = False
    response = api.post(
        "/api/models/",
        {"name": "x", "source": "timm", "identifier": "test_vit", "weights": "untrained"},
        format="json",
    )
    assert response.status_code == 500
    assert response.json() == error(
        "server_error",
        "Internal error. This is a bug in Likeness, not in your request; the server log has "
        "the details.",
    )
    assert "disk on fire" not in response.content.decode()
    assert "Unhandled error in the API" in caplog.text and "disk on fire" in caplog.text


postgres_only = pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="an outage of a database server needs a database server",
)


def unreachable_database_error() -> Exception:
    """What Django raises when PostgreSQL does not answer: a real connection attempt to a
    port where no server listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = connections["default"]
    gone = backend.__class__({**backend.settings_dict, "HOST": "127.0.0.1", "PORT": port})
    with pytest.raises(OperationalError) as caught:
        gone.ensure_connection()
    return caught.value


@postgres_only
def test_database_outage_is_a_503_with_retry_after_not_a_bug(api, monkeypatch, caplog):
    down = unreachable_database_error()

    def unreachable():
        raise down

    monkeypatch.setattr("evaluation.selectors.runs_with_steps", unreachable)
    api.raise_request_exception = False
    response = api.get("/api/runs/")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json() == error(
        "database_unreachable",
        "The database is unreachable (it may be restarting): this is an outage, not a problem "
        "with your request. Try again in 30 seconds.",
    )
    assert "Database unreachable" in caplog.text and "Unhandled error" not in caplog.text


@postgres_only
def test_an_error_the_database_answered_is_not_called_an_outage(api, monkeypatch):
    def too_slow():
        with connection.cursor() as cursor:  # the server answers: statement timeout
            cursor.execute("SET LOCAL statement_timeout = 1")
            cursor.execute("SELECT pg_sleep(1)")

    monkeypatch.setattr("evaluation.selectors.runs_with_steps", too_slow)
    api.raise_request_exception = False
    response = api.get("/api/runs/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


@pytest.mark.parametrize(
    ("down", "code"),
    [
        (
            KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
            "queue_unreachable",
        ),
        # An object store out of reach is an outage too, not a disk condition (507).
        (
            StoreUnreachable("The object store at http://10.0.0.9:9000 cannot be reached"),
            "storage_unreachable",
        ),
    ],
)
def test_an_outage_of_the_queue_or_the_object_store_is_a_503(api, monkeypatch, down, code):
    def unreachable():
        raise down

    monkeypatch.setattr("evaluation.selectors.runs_with_steps", unreachable)
    api.raise_request_exception = False
    response = api.get("/api/runs/")
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (
            "StorageError",
            "No space left on the device holding MEDIA_ROOT (/srv/media) to unpack the "
            "uploaded files. Free some space there (or move it to a larger disk), then retry.",
        ),
        (  # a disk condition met anywhere (an upload spooled to /tmp, say) is named too
            "OSError",
            "/srv/spool is on a read-only file system: could not write /srv/spool/upload.part "
            "(/srv/spool/upload.part). Remount it read-write (or configure a writable folder), "
            "then retry.",
        ),
    ],
)
def test_a_full_or_read_only_disk_is_a_507_that_names_it(api, monkeypatch, caplog, raised, message):
    import errno
    import os

    from evaluation.engine.errors import StorageError

    def storage():
        if raised == "StorageError":
            raise StorageError(message)
        path = "/srv/spool/upload.part"
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr("evaluation.selectors.runs_with_steps", storage)
    api.raise_request_exception = False
    response = api.get("/api/runs/")
    assert response.status_code == 507
    assert response.json() == error("insufficient_storage", message)
    assert "Unhandled error" not in caplog.text


def test_an_os_error_that_is_no_disk_condition_stays_a_bug(api, monkeypatch):
    def bug():
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr("evaluation.selectors.runs_with_steps", bug)
    api.raise_request_exception = False
    response = api.get("/api/runs/")
    assert response.status_code == 500 and response.json()["error"]["code"] == "server_error"
