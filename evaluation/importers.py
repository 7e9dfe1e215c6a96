"""Read uploaded datasets safely into a staging folder, before any database row exists.

Parsing is all-or-nothing: an ImportProblem (with a message naming the file, row or
member at fault) is raised before anything is kept, and the caller discards the staging
folder. Zip members are checked for absolute paths, ``..``, links, count and unpacked size
before a byte is extracted.
"""

from __future__ import annotations

import csv
import io
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from evaluation.engine.audio import check_audio_bytes
from evaluation.engine.fingerprint import stimulus_hash

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
CSV_SNIFF_BYTES = 64 * 1024


class ImportProblem(Exception):
    """The upload cannot be imported; the message says why, specifically."""


@dataclass(frozen=True)
class ParsedStimulus:
    name: str
    label: str
    split: str
    content_hash: str
    stored_name: str = ""  # file name inside the staging folder, for file stimuli
    text: str = ""


# --- Image or audio folders in a zip -------------------------------------------------------
def parse_image_zip(
    upload: BinaryIO, *, staging: Path, max_unzipped_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    """Unpack ``label/image.png`` (or ``split/label/image.png``) members into ``staging``."""
    return _parse_file_zip(upload, IMAGES, staging, max_unzipped_bytes, max_members)


def parse_audio_zip(
    upload: BinaryIO, *, staging: Path, max_unzipped_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    """Unpack ``label/clip.wav`` (or ``split/label/clip.wav``) members into ``staging``."""
    return _parse_file_zip(upload, AUDIO, staging, max_unzipped_bytes, max_members)


@dataclass(frozen=True)
class _FileKind:
    noun: str  # "image", "audio file"
    suffixes: frozenset[str]
    check: Callable[[bytes, str], None]  # decodes the whole file or raises ImportProblem


def _parse_file_zip(
    upload: BinaryIO, kind: _FileKind, staging: Path, max_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    try:
        archive = zipfile.ZipFile(upload)
    except zipfile.BadZipFile:
        raise ImportProblem("The file is not a valid zip archive.") from None
    with archive:
        members = [info for info in archive.infolist() if not _is_ignorable(info)]
        _check_members(members, kind, max_bytes, max_members)
        files = [info for info in members if not info.is_dir()]
        if not files:
            raise ImportProblem(f"The zip holds no {kind.noun}s: expected folders named by label.")
        parsed = [
            _unpack_file(archive, info, kind, staging, order)
            for order, info in enumerate(sorted(files, key=lambda i: i.filename))
        ]
    return parsed


def _is_ignorable(info: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return any(
        part == "__MACOSX" or (part.startswith(".") and part not in (".", "..")) for part in parts
    )


def _check_members(
    members: list[zipfile.ZipInfo], kind: _FileKind, max_bytes: int, max_members: int
) -> None:
    if len(members) > max_members:
        raise ImportProblem(f"The zip holds {len(members)} files; the limit is {max_members}.")
    total = 0
    for info in members:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise ImportProblem(f"Refused: the zip member {name!r} has an absolute path.")
        if ".." in path.parts:
            raise ImportProblem(
                f"Refused: the zip member {name!r} points outside the archive (..)."
            )
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ImportProblem(f"Refused: the zip member {name!r} is a symbolic link.")
        if info.flag_bits & 0x1:
            raise ImportProblem(f"The zip member {name!r} is encrypted; upload an unencrypted zip.")
        total += info.file_size
        if total > max_bytes:
            raise ImportProblem(
                f"The zip unpacks to more than {max_bytes // (1024 * 1024)} MB; split it or raise "
                "DATASET_UNZIPPED_MAX_BYTES."
            )
        if not info.is_dir() and path.suffix.lower() not in kind.suffixes:
            raise ImportProblem(
                f"The zip member {name!r} is not an {kind.noun} (expected "
                f"{', '.join(sorted(kind.suffixes))})."
            )


def _label_and_split(path: PurePosixPath) -> tuple[str, str]:
    folders = path.parts[:-1]
    if not folders:
        raise ImportProblem(
            f"The file {str(path)!r} is not inside a folder: its folder name is its label."
        )
    for folder in folders[:-1]:
        split = SPLIT_FOLDERS.get(folder.lower())
        if split:
            return folders[-1], split
    return folders[-1], ""


def _unpack_file(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, kind: _FileKind, staging: Path, order: int
) -> ParsedStimulus:
    path = PurePosixPath(info.filename.replace("\\", "/"))
    label, split = _label_and_split(path)
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImportProblem(f"The zip member {info.filename!r} cannot be read: {exc}") from None
    kind.check(data, info.filename)
    stored_name = f"{order:06d}{path.suffix.lower()}"
    (staging / stored_name).write_bytes(data)
    return ParsedStimulus(
        name=str(path),
        label=label,
        split=split,
        content_hash=stimulus_hash(content=data),
        stored_name=stored_name,
    )


def _check_image(data: bytes, name: str) -> None:
    """Decode the whole image: verify() alone misses truncated pixel data."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImportProblem(f"The image {name!r} is corrupt or not an image: {exc}") from None
    except Image.DecompressionBombError:
        raise ImportProblem(f"The image {name!r} is too large to decode safely.") from None


def _check_audio(data: bytes, name: str) -> None:
    try:
        check_audio_bytes(data, name)
    except ValueError as exc:
        raise ImportProblem(f"{exc} (zip member {name!r})") from None


IMAGES = _FileKind("image", frozenset(IMAGE_SUFFIXES), _check_image)
AUDIO = _FileKind("audio file", frozenset(AUDIO_SUFFIXES), _check_audio)


# --- Texts in a CSV ------------------------------------------------------------------------
def parse_text_csv(
    upload: BinaryIO,
    *,
    text_column: str,
    label_column: str,
    split_column: str,
    max_rows: int,
) -> list[ParsedStimulus]:
    """Read one stimulus per row; ``label_column`` and ``split_column`` may be ''."""
    reader = _csv_reader(upload)
    header = reader.fieldnames or []
    for wanted, role in ((text_column, "text"), (label_column, "label"), (split_column, "split")):
        if wanted and wanted not in header:
            raise ImportProblem(
                f"The CSV has no {role} column {wanted!r}; its columns are: "
                f"{', '.join(repr(h) for h in header)}."
            )
    parsed = []
    for row in _rows(reader, max_rows):
        line = reader.line_num
        text = (row.get(text_column) or "").strip()
        if not text:
            raise ImportProblem(f"Row {line}: the text column {text_column!r} is empty.")
        label = (row.get(label_column) or "").strip() if label_column else ""
        if label_column and not label:
            raise ImportProblem(f"Row {line}: the label column {label_column!r} is empty.")
        split = _split_value(row.get(split_column) or "", line) if split_column else ""
        parsed.append(
            ParsedStimulus(
                name=text[:300],
                label=label,
                split=split,
                text=text,
                content_hash=stimulus_hash(content=text.encode("utf-8")),
            )
        )
    if not parsed:
        raise ImportProblem("The CSV has a header but no rows.")
    return parsed


def _csv_reader(upload: BinaryIO) -> csv.DictReader:
    raw = upload.read()
    if not raw.strip():
        raise ImportProblem("The CSV file is empty.")
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportProblem(
            f"The CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8 and retry."
        ) from None
    try:
        dialect = csv.Sniffer().sniff(content[:CSV_SNIFF_BYTES], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # a single column has no delimiter to sniff
    return csv.DictReader(io.StringIO(content, newline=""), dialect=dialect)


def _rows(reader: csv.DictReader, max_rows: int) -> Iterator[dict[str, str]]:
    try:
        for count, row in enumerate(reader, start=1):
            if count > max_rows:
                raise ImportProblem(f"The CSV has more than {max_rows} rows.")
            if None in row:
                raise ImportProblem(f"Row {reader.line_num} has more fields than the header.")
            yield row
    except csv.Error as exc:
        raise ImportProblem(f"The CSV is malformed near row {reader.line_num}: {exc}") from None


def _split_value(raw: str, line: int) -> str:
    value = raw.strip().lower()
    if value == "":
        return ""
    if value not in SPLIT_FOLDERS:
        raise ImportProblem(f"Row {line}: split {raw!r} is not one of train, val, test (or empty).")
    return SPLIT_FOLDERS[value]
