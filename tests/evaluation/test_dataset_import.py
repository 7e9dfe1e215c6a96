"""Dataset import: all or nothing, with a specific error for each kind of bad upload."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from evaluation.engine.fingerprint import stimulus_hash
from evaluation.imports.stimuli import dataset_import_images, dataset_import_texts
from evaluation.models import Dataset, Stimulus, Target
from tests.conftest import make_image_dataset, make_text_dataset

pytestmark = pytest.mark.django_db
MiB = 1 << 20


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, "PNG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def assert_nothing_kept(media_root: Path) -> None:
    assert Dataset.objects.count() == 0
    assert Stimulus.objects.count() == 0
    assert Target.objects.count() == 0
    datasets_dir = media_root / "datasets"
    assert not datasets_dir.exists() or not any(datasets_dir.iterdir())
    tmp_dir = media_root / "tmp"
    assert not tmp_dir.exists() or not any(tmp_dir.iterdir())


def import_zip(data: io.BytesIO, name: str = "bad") -> Dataset:
    return dataset_import_images(name=name, upload=data)


def test_image_folders_become_labelled_stimuli(settings):
    dataset = make_image_dataset()
    assert dataset.stimulus_count == 120 == dataset.stimuli.count()
    assert sorted(set(dataset.stimuli.values_list("label", flat=True))) == [
        str(d) for d in range(10)
    ]
    first = dataset.stimuli.first()
    assert (Path(settings.MEDIA_ROOT) / first.file.name).is_file()
    assert dataset.targets.get().kind == "labels"
    assert len(dataset.content_hash) == 64


def test_split_folders_are_read_as_splits():
    data = zip_of(
        {
            "train/cat/1.png": png_bytes(),
            "test/cat/2.png": png_bytes(),
            "train/dog/3.png": png_bytes(),
        }
    )
    dataset = import_zip(data, "splits")
    assert dict(dataset.stimuli.values_list("name", "split")) == {
        "train/cat/1.png": "train",
        "test/cat/2.png": "test",
        "train/dog/3.png": "train",
    }
    assert set(dataset.stimuli.values_list("label", flat=True)) == {"cat", "dog"}


def test_same_content_gives_same_hash_and_different_content_does_not():
    a = import_zip(zip_of({"cat/1.png": png_bytes()}), "a")
    b = import_zip(zip_of({"cat/1.png": png_bytes()}), "b")
    c = make_image_dataset("c")
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil/x.png", "points outside the archive"),
        ("cats/../../x.png", "points outside the archive"),
        ("/etc/x.png", "absolute path"),
        ("C:/x.png", "absolute path"),
    ],
)
def test_zip_paths_escaping_the_archive_are_refused(member, message, isolated_storage):
    data = zip_of({"cat/ok.png": png_bytes(), member: png_bytes()})
    with pytest.raises(ValidationError, match=message):
        import_zip(data)
    assert_nothing_kept(isolated_storage / "media")


def test_corrupt_image_is_named(isolated_storage):
    data = zip_of({"cat/ok.png": png_bytes(), "cat/broken.png": png_bytes()[:30]})
    with pytest.raises(ValidationError, match="'cat/broken.png' is corrupt"):
        import_zip(data)
    assert_nothing_kept(isolated_storage / "media")


def test_corrupt_image_message_names_the_member_and_the_decoders_reason(isolated_storage):
    with pytest.raises(ValidationError) as caught:
        import_zip(zip_of({"cat/ok.png": png_bytes(), "cat/notes.png": b"just some text"}))
    message = caught.value.message_dict["file"][0]
    assert message == (
        "The image 'cat/notes.png' is corrupt or not an image: Pillow recognises no image "
        "format in it."
    )
    with pytest.raises(ValidationError) as caught:
        import_zip(zip_of({"cat/cut.png": png_bytes()[:-20]}))
    message = caught.value.message_dict["file"][0]
    assert message.startswith("The image 'cat/cut.png' is corrupt or not an image: ")
    assert "<" not in message and "staging" not in message and "import-" not in message
    assert_nothing_kept(isolated_storage / "media")


def test_an_image_with_more_pixels_than_pillow_decodes_safely_is_refused(isolated_storage):
    from PIL import Image

    side = 9500  # 90.25 million pixels, just over Image.MAX_IMAGE_PIXELS (89.5 million)
    with pytest.raises(
        ValidationError,
        match=r"'cat/huge.png' has more pixels than Pillow decodes safely \(9500 x 9500 pixels",
    ):
        import_zip(zip_of({"cat/huge.png": blank_png(side, side)}))
    assert side * side > Image.MAX_IMAGE_PIXELS
    assert_nothing_kept(isolated_storage / "media")


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, built without holding its
    pixels (an image that compresses to almost nothing yet decodes to many megabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_a_member_of_zeros_is_refused_from_its_first_bytes_without_being_held(
    isolated_storage,
):
    data = zip_of({"cat/ok.png": png_bytes(), "cat/zeros.png": bytes(64 * MiB)})
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match="'cat/zeros.png' is corrupt or not an image"):
            import_zip(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB held while refusing a 64 MiB member"
    assert_nothing_kept(isolated_storage / "media")


def test_a_large_valid_member_is_unpacked_a_chunk_at_a_time(settings, isolated_storage):
    image = png_bytes() + bytes(64 * MiB)  # Pillow ignores what follows the image
    data = zip_of({"cat/padded.png": image})
    tracemalloc.start()
    try:
        dataset = import_zip(data, "padded")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB held while unpacking a 64 MiB member"
    stimulus = dataset.stimuli.get()
    assert stimulus.content_hash == stimulus_hash(content=image)
    assert (Path(settings.MEDIA_ROOT) / stimulus.file.name).read_bytes() == image


def test_peak_memory_stays_flat_for_hundreds_of_megabytes_of_zeros(tmp_path):
    """The issue's zip bomb, scaled to 512 MiB: the importer in its own process, peak RSS
    measured (the old importer held every byte, then copies: over a gigabyte here)."""
    write_zeros_zip(tmp_path / "zeros.zip", "cat/zeros.png", 512 * MiB)
    write_zeros_zip(tmp_path / "padded.zip", "cat/padded.png", 256 * MiB, head=png_bytes())
    zeros = peak_import_memory(tmp_path / "zeros.zip", tmp_path / "s1")
    assert "'cat/zeros.png' is corrupt or not an image" in zeros["refused"]
    padded = peak_import_memory(tmp_path / "padded.zip", tmp_path / "s2")
    assert padded["refused"] == "" and padded["stimuli"] == 1
    for case in (zeros, padded):
        assert case["peak_mib"] < 300, case


def write_zeros_zip(path: Path, member: str, size: int, head: bytes = b"") -> None:
    """A zip with one ``member`` of ``head`` then zeros, written without holding it."""
    block = bytes(MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(member, "w") as out:
            out.write(head)
            for _ in range(size // MiB):
                out.write(block)


PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from evaluation.imports.reading import ImportProblem, parse_image_zip
staging = Path(sys.argv[2]); staging.mkdir()
try:
    with open(sys.argv[1], "rb") as upload:
        parsed = parse_image_zip(
            upload, staging=staging, max_unzipped_bytes=2 << 30, max_members=10
        )
    result = {"refused": "", "stimuli": len(parsed)}
except ImportProblem as exc:
    result = {"refused": str(exc), "stimuli": 0}
# VmHWM: this process's peak resident memory. (ru_maxrss would also count the pytest
# process this one was forked from, before exec.)
status = Path("/proc/self/status").read_text()
result["peak_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(result))
"""


def peak_import_memory(archive: Path, staging: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(archive), str(staging)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout)


def test_not_a_zip_is_refused(isolated_storage):
    with pytest.raises(ValidationError, match="not a valid zip"):
        import_zip(io.BytesIO(b"hello"))
    assert_nothing_kept(isolated_storage / "media")


def test_image_outside_a_label_folder_is_refused(isolated_storage):
    with pytest.raises(ValidationError, match="not inside a folder"):
        import_zip(zip_of({"x.png": png_bytes()}))
    assert_nothing_kept(isolated_storage / "media")


def test_non_image_member_is_refused_but_mac_junk_is_ignored(isolated_storage):
    with pytest.raises(ValidationError, match="'cat/notes.txt' is not an image"):
        import_zip(zip_of({"cat/1.png": png_bytes(), "cat/notes.txt": b"hi"}))
    dataset = import_zip(
        zip_of({"cat/1.png": png_bytes(), "__MACOSX/cat/._1.png": b"x", "cat/.DS_Store": b"x"}),
        "ok",
    )
    assert dataset.stimulus_count == 1


def test_zip_bomb_is_refused_before_extraction(settings, isolated_storage):
    settings.DATASET_UNZIPPED_MAX_BYTES = 1000
    data = zip_of({"cat/1.png": png_bytes() + b"\0" * 5000})
    with pytest.raises(ValidationError, match="unpacks to more than"):
        import_zip(data)
    assert_nothing_kept(isolated_storage / "media")


def test_oversize_upload_is_refused_before_reading(settings, isolated_storage):
    settings.DATASET_UPLOAD_MAX_BYTES = 10
    upload = SimpleUploadedFile("d.zip", b"x" * 100)
    with pytest.raises(ValidationError, match="limit is"):
        import_zip(upload)
    assert upload.tell() == 0
    assert_nothing_kept(isolated_storage / "media")


def test_database_failure_mid_import_leaves_no_files(monkeypatch, isolated_storage):
    def explode(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Stimulus.objects, "bulk_create", explode)
    with pytest.raises(RuntimeError):
        make_image_dataset("boom")
    assert_nothing_kept(isolated_storage / "media")


# --- Texts --------------------------------------------------------------------------------------
def import_csv(text: str, **columns: str) -> Dataset:
    return dataset_import_texts(name="texts", upload=io.BytesIO(text.encode()), **columns)


def test_text_csv_becomes_stimuli_with_labels_and_splits():
    dataset = import_csv(
        "sentence;topic;part\nHello there;greet;train\nGood bye;leave;test\n",
        text_column="sentence",
        label_column="topic",
        split_column="part",
    )
    assert list(dataset.stimuli.values_list("text", "label", "split")) == [
        ("Hello there", "greet", "train"),
        ("Good bye", "leave", "test"),
    ]


def test_empty_csv_is_refused():
    with pytest.raises(ValidationError, match="The CSV file is empty"):
        import_csv("")
    assert Dataset.objects.count() == 0


def test_header_only_csv_is_refused():
    with pytest.raises(ValidationError, match="header but no rows"):
        import_csv("text,label\n")


def test_csv_without_the_text_column_lists_its_columns():
    with pytest.raises(
        ValidationError, match="no text column 'text'; its columns are: 'sentence', 'label'"
    ):
        import_csv("sentence,label\nHi,a\n")
    assert Dataset.objects.count() == 0 and Stimulus.objects.count() == 0


def test_empty_text_cell_names_the_row():
    with pytest.raises(ValidationError, match="Row 3: the text column 'text' is empty"):
        import_csv("text,label\nHi,a\n,b\n")
    assert Stimulus.objects.count() == 0


def test_non_utf8_csv_is_refused():
    with pytest.raises(ValidationError, match="not UTF-8"):
        dataset_import_texts(name="latin", upload=io.BytesIO("text\ncaf\xe9\n".encode("latin-1")))


def test_non_utf8_csv_names_the_line():
    upload = io.BytesIO("text\nfine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValidationError, match=r"not UTF-8 text \(line 3, byte 13\)"):
        dataset_import_texts(name="latin", upload=upload)


def test_a_csv_over_the_row_limit_is_refused_without_reading_it_whole(settings):
    settings.DATASET_MAX_STIMULI = 10
    upload = io.BytesIO(b"text\n" + b"a sentence of words\n" * (2 * MiB))  # 40 MiB
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match="more than 10 rows"):
            dataset_import_texts(name="long", upload=upload, label_column="")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB held to refuse row 11"
    assert Dataset.objects.count() == 0


def test_quoted_fields_may_span_lines_and_a_bom_is_dropped():
    dataset = dataset_import_texts(
        name="quoted",
        upload=io.BytesIO('\ufefftext;label\n"two\nlines";a\r\nplain;b\n'.encode()),
    )
    assert list(dataset.stimuli.values_list("text", "label")) == [
        ("two\nlines", "a"),
        ("plain", "b"),
    ]


def test_duplicate_dataset_name_is_refused():
    make_text_dataset("same")
    with pytest.raises(ValidationError, match="already exists"):
        make_text_dataset("same")


# --- Through the form ----------------------------------------------------------------------------
def test_import_form_shows_the_specific_error_and_keeps_nothing(
    researcher_client, isolated_storage
):
    data = zip_of({"../x.png": png_bytes()}).getvalue()
    response = researcher_client.post(
        reverse("evaluation:dataset_create"),
        {"name": "evil", "modality": "image", "file": SimpleUploadedFile("evil.zip", data)},
    )
    assert response.status_code == 200
    assert "points outside the archive" in response.content.decode()
    assert_nothing_kept(isolated_storage / "media")


def test_import_form_creates_the_dataset(researcher_client, digits_zip_small):
    response = researcher_client.post(
        reverse("evaluation:dataset_create"),
        {
            "name": "digits",
            "modality": "image",
            "file": SimpleUploadedFile("d.zip", digits_zip_small),
        },
    )
    dataset = Dataset.objects.get(name="digits")
    assert response.status_code == 302 and response.url == dataset.get_absolute_url()
    page = researcher_client.get(dataset.get_absolute_url())
    assert "120 image stimuli" in page.content.decode()


def test_oversize_upload_through_the_form_is_refused_before_it_is_read(
    settings, researcher_client, isolated_storage
):
    settings.DATASET_UPLOAD_MAX_BYTES = 1000
    big = SimpleUploadedFile("big.zip", b"x" * 200_000)
    response = researcher_client.post(
        reverse("evaluation:dataset_create"), {"name": "big", "modality": "image", "file": big}
    )
    assert response.status_code == 200
    assert (
        "The upload is 200.3 kB; the limit is 1.0 kB (DATASET_UPLOAD_MAX_BYTES)"
        in response.content.decode()
    )
    assert_nothing_kept(isolated_storage / "media")
