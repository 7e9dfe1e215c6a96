"""The OpenAPI schema is generated without a warning, describes the upload bodies and the
error body, and the documentation pages work offline: every asset they load is served by
this app, none comes from a CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns any warning (an unresolvable field, a naming collision) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


@pytest.fixture
def schema(anonymous) -> dict:
    response = anonymous.get("/api/schema/?format=json", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return (
        response.json() if "json" in response["Content-Type"] else yaml.safe_load(response.content)
    )


def test_upload_bodies_are_multipart_with_a_binary_file(schema):
    for path, component in (
        ("/api/datasets/", "DatasetUploadRequest"),
        ("/api/judgments/", "JudgmentsImportRequest"),
    ):
        body = schema["paths"][path]["post"]["requestBody"]["content"]
        assert list(body) == ["multipart/form-data"]
        assert body["multipart/form-data"]["schema"]["$ref"].endswith(component)
        fields = schema["components"]["schemas"][component]["properties"]
        assert fields["file"] == {"type": "string", "format": "binary", **fields["file"]}


def test_every_operation_documents_its_errors_with_the_error_body(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = {code for code in operation["responses"] if code.startswith(("4", "5"))}
            assert codes, (method, path)
            for code in codes:
                assert operation["responses"][code]["content"]["application/json"]["schema"] == (
                    error
                ), (method, path, code)
    runs = schema["paths"]["/api/runs/{id}/cancel/"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409"} <= set(runs)
    assert "429" in schema["paths"]["/api/auth/token/"]["post"]["responses"]
    assert all("503" in op["responses"] for ops in schema["paths"].values() for op in ops.values())
    assert "507" in schema["paths"]["/api/datasets/"]["post"]["responses"]  # files are written
    assert "507" not in schema["paths"]["/api/runs/"]["post"]["responses"]


def test_public_reads_are_marked_as_such(schema):
    assert {} in schema["paths"]["/api/scores/"]["get"]["security"]
    assert {} not in schema["paths"]["/api/runs/"]["get"]["security"]


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_documentation_pages_load_only_local_assets(anonymous, page):
    response = anonymous.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    for asset in assets:
        # Swagger UI's start-up script is served by the page itself (the split view keeps
        # inline script out for the Content-Security-Policy); it names the schema it reads.
        startup_script = asset.startswith(page + "?script")
        assert startup_script or asset.startswith("/static/drf_spectacular_sidecar/"), asset
        served = anonymous.get(asset)
        assert served.status_code == 200, asset
        body = b"".join(served.streaming_content if served.streaming else [served.content])
        assert body
        if startup_script:
            html += body.decode()
    assert "/api/schema/" in html  # the page reads this app's schema
