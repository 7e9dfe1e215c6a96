"""Datasets over the API: multipart uploads through the import services (images, audio,
texts), all or nothing; oversize uploads refused before they are read; stimuli paginated."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from evaluation.models import Dataset, Stimulus
from tests.api.conftest import CountingInput, error
from tests.conftest import make_image_dataset, make_text_dataset
from tests.evaluation.test_audio_datasets import tones_zip

pytestmark = pytest.mark.django_db


def upload(api, **fields):
    return api.post("/api/datasets/", fields, format="multipart")


def nothing_kept(isolated_storage) -> bool:
    datasets = isolated_storage / "media" / "datasets"
    leftovers = list(datasets.iterdir()) if datasets.exists() else []
    return not Dataset.objects.exists() and not Stimulus.objects.exists() and not leftovers


def test_image_zip_upload(api, digits_zip_small):
    response = upload(
        api,
        name="digits",
        modality="image",
        file=SimpleUploadedFile("digits.zip", digits_zip_small),
        description="handwritten digits",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    dataset = Dataset.objects.get(name="digits")
    assert response["Location"] == f"/api/datasets/{dataset.pk}/"
    assert (body["modality"], body["stimulus_count"], body["created_by"]) == ("image", 120, "rita")
    assert body["description"] == "handwritten digits"
    assert sum(row["count"] for row in body["label_counts"]) == 120
    assert [row["label"] for row in body["label_counts"]] == [str(d) for d in range(10)]
    assert body["targets"] == [
        {
            "id": dataset.targets.get().pk,
            "name": "digits: labels",
            "kind": "labels",
            "simulated": False,
        }
    ]
    assert body == api.get(f"/api/datasets/{dataset.pk}/").json()


def test_text_csv_upload_with_columns(api):
    csv = "sentence;topic;part\nHello there;greet;train\nGood bye;leave;test\n"
    response = upload(
        api,
        name="greetings",
        modality="text",
        file=SimpleUploadedFile("texts.csv", csv.encode()),
        text_column="sentence",
        label_column="topic",
        split_column="part",
    )
    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(name="greetings")
    stimuli = api.get(f"/api/datasets/{dataset.pk}/stimuli/").json()["results"]
    assert [(s["text"], s["label"], s["split"], s["file_url"]) for s in stimuli] == [
        ("Hello there", "greet", "train", None),
        ("Good bye", "leave", "test", None),
    ]


def test_audio_zip_upload(api):
    response = upload(
        api, name="tones", modality="audio", file=SimpleUploadedFile("t.zip", tones_zip().read())
    )
    assert response.status_code == 201, response.json()
    assert response.json()["modality"] == "audio" and response.json()["stimulus_count"] == 12


def test_bad_zip_is_refused_and_nothing_is_kept(api, isolated_storage):
    response = upload(
        api, name="broken", modality="image", file=SimpleUploadedFile("d.zip", b"not a zip")
    )
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid" and list(body["fields"]) == ["file"]
    assert "not a valid zip" in body["fields"]["file"][0]
    assert body["message"] == f"file: {body['fields']['file'][0]}"
    assert nothing_kept(isolated_storage)


def test_zip_member_escaping_the_archive_is_named(api, isolated_storage):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil/x.png", b"x")
    response = upload(
        api, name="evil", modality="image", file=SimpleUploadedFile("e.zip", buffer.getvalue())
    )
    message = "Refused: the zip member '../evil/x.png' points outside the archive (..)."
    assert response.status_code == 400
    assert response.json() == error("invalid", f"file: {message}", {"file": [message]})
    assert nothing_kept(isolated_storage)


@pytest.mark.parametrize(
    ("modality", "member", "message"),
    [
        (
            "image",
            "cat/zeros.png",
            "The image 'cat/zeros.png' is corrupt or not an image: Pillow recognises no image "
            "format in it.",
        ),
        (
            "audio",
            "low/zeros.wav",
            "Audio 'low/zeros.wav' cannot be decoded: Format not recognised.",
        ),
    ],
)
def test_a_member_that_is_no_image_or_audio_is_named_with_the_reason(
    api, isolated_storage, modality, member, message
):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, bytes(32 << 20))  # 32 MiB of zeros, 32 kB zipped
    response = upload(
        api, name="z", modality=modality, file=SimpleUploadedFile("z.zip", buffer.getvalue())
    )
    assert response.status_code == 400
    assert response.json() == error("invalid", f"file: {message}", {"file": [message]})
    assert nothing_kept(isolated_storage)


def test_form_checks(api, isolated_storage):
    no_column = upload(
        api,
        name="t",
        modality="text",
        file=SimpleUploadedFile("t.csv", b"text\nhello\n"),
        text_column="",
    )
    assert no_column.json() == error(
        "invalid",
        "text_column: Name the CSV column that holds the texts.",
        {"text_column": ["Name the CSV column that holds the texts."]},
    )
    empty = upload(api, name="t", modality="text", file=SimpleUploadedFile("t.csv", b""))
    assert empty.json() == error(
        "invalid",
        "file: The submitted file is empty.",
        {"file": ["The submitted file is empty."]},
    )
    missing = upload(api, name="t", modality="smell")
    assert missing.status_code == 400
    assert missing.json()["error"]["fields"] == {
        "modality": ['"smell" is not a valid choice.'],
        "file": ["No file was submitted."],
    }
    assert nothing_kept(isolated_storage)


def test_duplicate_name_keeps_the_first(api):
    make_text_dataset("sentences")
    response = upload(
        api, name="sentences", modality="text", file=SimpleUploadedFile("t.csv", b"text\nhi\n")
    )
    message = "A dataset called 'sentences' already exists."
    assert response.json() == error("invalid", f"name: {message}", {"name": [message]})
    assert Dataset.objects.get().stimulus_count == 8


def test_json_body_is_the_wrong_media_type(api):
    response = api.post("/api/datasets/", {"name": "x", "modality": "text"}, format="json")
    assert response.status_code == 415
    assert response.json() == error(
        "unsupported_media_type", 'Unsupported media type "application/json" in request.'
    )


def multipart(fields: dict[str, str], file_name: str, file_data: bytes) -> tuple[bytes, str]:
    boundary = "----likeness-test-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    head = "".join(parts) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{file_name}"\r\nContent-Type: application/zip\r\n\r\n'
    )
    body = head.encode() + file_data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_oversize_upload_is_refused_before_it_is_read(
    settings, researcher, wsgi_app, isolated_storage
):
    settings.DATASET_UPLOAD_MAX_BYTES = 100_000
    body, content_type = multipart(
        {"name": "huge", "modality": "image"}, "huge.zip", b"\0" * 3_000_000
    )
    stream = CountingInput(body)
    token = Token.objects.create(user=researcher)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/datasets/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "localhost",
        "HTTP_AUTHORIZATION": f"Token {token.key}",
    }
    statuses = []
    answer = b"".join(wsgi_app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["413 Request Entity Too Large"]
    assert json.loads(answer) == error(
        "upload_too_large",
        "The upload is 3.0 MB; the limit is 100.0 kB (DATASET_UPLOAD_MAX_BYTES).",
    )
    # Only the form fields and the start of the file were read, not the 3 MB.
    assert stream.bytes_read < 300_000
    assert nothing_kept(isolated_storage)


def test_file_over_the_limit_within_the_form_allowance_is_refused_by_the_import(
    settings, api, isolated_storage
):
    """The upload handler lets small bodies through (form fields travel with the file);
    the import service then checks the file's own size."""
    settings.DATASET_UPLOAD_MAX_BYTES = 1000
    response = upload(
        api, name="big", modality="image", file=SimpleUploadedFile("b.zip", b"\0" * 5000)
    )
    message = "The file is 5.0 kB; the limit is 1.0 kB (DATASET_UPLOAD_MAX_BYTES)."
    assert response.status_code == 400
    assert response.json() == error("invalid", f"file: {message}", {"file": [message]})
    assert nothing_kept(isolated_storage)


def test_stimuli_pages_and_filters(api, researcher, digits_zip_small):
    dataset = make_image_dataset(data=digits_zip_small)
    address = f"/api/datasets/{dataset.pk}/stimuli/"
    first = api.get(address).json()
    assert first["count"] == 120 and len(first["results"]) == 50
    assert first["next"].endswith(f"{address}?page=2") and first["previous"] is None
    assert [s["order"] for s in first["results"]] == list(range(50))
    last = api.get(address + "?page=3").json()
    assert len(last["results"]) == 20 and last["next"] is None
    big = api.get(address + "?page_size=500").json()
    assert len(big["results"]) == 120
    beyond = api.get(address + "?page=4")
    assert beyond.status_code == 404
    assert beyond.json() == error("not_found", "Page 4 does not exist; the last page is 3.")
    sevens = api.get(address + "?label=7&page_size=100").json()
    assert sevens["count"] == dataset.stimuli.filter(label="7").count() > 0
    assert {s["label"] for s in sevens["results"]} == {"7"}
    refused = api.get(address + "?split=holdout")
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "split": ["Select a valid choice. holdout is not one of the available choices."]
    }
    # A file stimulus links to the researcher-only file view, which serves it.
    file_url = first["results"][0]["file_url"]
    assert file_url.startswith("http://testserver/stimuli/")
    from django.test import Client

    browser = Client()
    browser.force_login(researcher)
    assert browser.get(file_url).status_code == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page: page must be a whole number from 1; got '0'."),
        ("page=-2", "page: page must be a whole number from 1; got '-2'."),
        ("page=two", "page: page must be a whole number from 1; got 'two'."),
        ("page_size=0", "page_size: page_size must be a whole number from 1 to 500; got '0'."),
        ("page_size=501", "page_size: page_size must be a whole number from 1 to 500; got '501'."),
        ("page_size=1e3", "page_size: page_size must be a whole number from 1 to 500; got '1e3'."),
    ],
)
def test_pagination_bounds(api, query, message):
    dataset = make_text_dataset()
    response = api.get(f"/api/datasets/{dataset.pk}/stimuli/?{query}")
    assert response.status_code == 400
    field = query.split("=")[0]
    assert response.json() == error("invalid", message, {field: [message.split(": ", 1)[1]]})


def test_dataset_list_and_filters(api):
    texts = make_text_dataset("sentences")
    listed = api.get("/api/datasets/").json()
    assert [d["name"] for d in listed["results"]] == ["sentences"]
    assert listed["results"][0]["run_count"] == 0
    assert api.get("/api/datasets/?modality=image").json()["count"] == 0
    assert api.get("/api/datasets/?modality=text").json()["results"][0]["id"] == texts.pk
    assert api.get("/api/datasets/999999/").json() == error(
        "not_found", "No dataset with id 999999."
    )


def test_import_onto_a_full_media_root_answers_507_and_keeps_nothing(
    api, settings, tmp_path, digits_zip_small
):
    from tests import small_disk

    with small_disk.small_tmpfs(tmp_path / "media", size=512 * 1024) as media:
        settings.MEDIA_ROOT = media
        ballast = small_disk.fill(media, leave=16 * 1024)
        response = upload(
            api,
            name="digits",
            modality="image",
            file=SimpleUploadedFile("digits.zip", digits_zip_small),
        )
        ballast.unlink()
        staging = list((media / "tmp").iterdir())
    assert response.status_code == 507, response.json()
    body = response.json()["error"]
    assert body["code"] == "insufficient_storage" and body["fields"] == {}
    assert body["message"].startswith(f"No space left on the device holding MEDIA_ROOT ({media})")
    assert "bug" not in body["message"]
    assert not Dataset.objects.exists() and not Stimulus.objects.exists() and not staging
