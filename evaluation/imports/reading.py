"""Read uploaded datasets safely into a staging folder, before any database row exists.

Parsing is all-or-nothing: an ImportProblem (with a message naming the file, row or
member at fault) is raised before anything is kept, and the caller discards the staging
folder. Zip members are checked for absolute paths, ``..``, links, count and declared
unpacked size before a byte is extracted, then unpacked a chunk at a time against a running
budget of actual bytes; a member whose first bytes are no image (audio, video) is refused
before the rest is unpacked, and every unpacked file is decoded whole before it is kept.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import hashlib
import itertools
import lzma
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from evaluation.engine.audio import AudioProblem, check_audio_file, sniff_audio_head
from evaluation.engine.fingerprint import stimulus_hash
from evaluation.engine.images import ImageProblem, check_image_file, sniff_image_head
from evaluation.engine.video import (
    VIDEO_SUFFIXES,
    VideoLimits,
    VideoProblem,
    check_video_file,
    sniff_video_head,
)

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
# Uploads are read, and zip members unpacked, this much at a time: peak memory stays a few
# chunks whatever the file's size.
UNPACK_CHUNK_BYTES = 1 << 20
DECODE_AHEAD_BYTES = 64 * 1024
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


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
    upload: IO[bytes], *, staging: Path, max_unzipped_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    """Unpack ``label/image.png`` (or ``split/label/image.png``) members into ``staging``."""
    return _parse_file_zip(upload, IMAGES, staging, max_unzipped_bytes, max_members)


def parse_audio_zip(
    upload: IO[bytes], *, staging: Path, max_unzipped_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    """Unpack ``label/clip.wav`` (or ``split/label/clip.wav``) members into ``staging``."""
    return _parse_file_zip(upload, AUDIO, staging, max_unzipped_bytes, max_members)


def parse_video_zip(
    upload: IO[bytes],
    *,
    staging: Path,
    max_unzipped_bytes: int,
    max_members: int,
    limits: VideoLimits,
) -> list[ParsedStimulus]:
    """Unpack ``label/clip.mp4`` (or ``split/label/clip.webm``) members into ``staging``;
    every clip must hold a decodable video stream within ``limits`` (duration, frames,
    resolution)."""
    kind = _FileKind(
        "video", frozenset(VIDEO_SUFFIXES), _sniff_video, functools.partial(_check_video, limits)
    )
    return _parse_file_zip(upload, kind, staging, max_unzipped_bytes, max_members)


@dataclass(frozen=True)
class _FileKind:
    noun: str  # "image", "audio file"
    suffixes: frozenset[str]
    sniff: Callable[[bytes, str], None]  # first bytes -> ImportProblem if it cannot be one
    check: Callable[[Path, str], None]  # decodes the whole unpacked file or raises ImportProblem

    @property
    def article(self) -> str:
        return "an" if self.noun[0] in "aeiou" else "a"


def _parse_file_zip(
    upload: IO[bytes], kind: _FileKind, staging: Path, max_bytes: int, max_members: int
) -> list[ParsedStimulus]:
    try:
        archive = zipfile.ZipFile(upload)
    except zipfile.BadZipFile:
        raise ImportProblem("The file is not a valid zip archive.") from None
    with archive:
        members = [info for info in archive.infolist() if not is_ignorable(info)]
        _check_members(members, kind, max_bytes, max_members)
        files = [info for info in members if not info.is_dir()]
        if not files:
            raise ImportProblem(f"The zip holds no {kind.noun}s: expected folders named by label.")
        budget = _Budget(max_bytes)
        parsed = [
            _unpack_file(archive, info, kind, staging, order, budget)
            for order, info in enumerate(sorted(files, key=lambda i: i.filename))
        ]
    return parsed


def is_ignorable(info: zipfile.ZipInfo) -> bool:
    """A system file of a zip (__MACOSX/, dot files), which no import reads (a '../' is the
    member check's to refuse)."""
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
            raise ImportProblem(_unpacks_to_more_than(max_bytes))
        if not info.is_dir() and path.suffix.lower() not in kind.suffixes:
            raise ImportProblem(
                f"The zip member {name!r} is not {kind.article} {kind.noun} (expected "
                f"{', '.join(sorted(kind.suffixes))})."
            )


def _unpacks_to_more_than(max_bytes: int) -> str:
    return (
        f"The zip unpacks to more than {max_bytes // (1024 * 1024)} MB; split it or raise "
        "DATASET_UNZIPPED_MAX_BYTES."
    )


class _Budget:
    """Unpacked bytes still allowed, spent as they are decompressed: the sizes a zip
    declares are checked first, but they are the uploader's word, so the actual bytes count."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ImportProblem(_unpacks_to_more_than(self.limit))


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
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    kind: _FileKind,
    staging: Path,
    order: int,
    budget: _Budget,
) -> ParsedStimulus:
    path = PurePosixPath(info.filename.replace("\\", "/"))
    label, split = _label_and_split(path)
    stored_name = f"{order:06d}{path.suffix.lower()}"
    target = staging / stored_name
    content_hash = _copy_member(archive, info, target, kind, budget)
    kind.check(target, info.filename)
    return ParsedStimulus(
        name=str(path),
        label=label,
        split=split,
        content_hash=content_hash,
        stored_name=stored_name,
    )


def _copy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, kind: _FileKind, budget: _Budget
) -> str:
    """Unpack one member to ``target`` a chunk at a time, so memory stays flat whatever
    its size; its first chunk must look like the kind of file it claims to be. Returns the
    content hash (the same as ``stimulus_hash`` of the whole content)."""
    digest = hashlib.sha256()
    written = 0
    with open(target, "wb") as out, contextlib.closing(_member_chunks(archive, info)) as chunks:
        for chunk in chunks:
            if written == 0:
                kind.sniff(chunk, info.filename)
            written += len(chunk)
            budget.spend(len(chunk))
            if written > info.file_size:
                raise ImportProblem(
                    f"The zip member {info.filename!r} unpacks to more than the "
                    f"{info.file_size} bytes its header declares: the zip is damaged."
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _member_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Generator[bytes, None, None]:
    # zipfile decompresses at most the size asked for per read, whatever the ratio.
    try:
        with archive.open(info) as member:
            while chunk := member.read(UNPACK_CHUNK_BYTES):
                yield chunk
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
        raise ImportProblem(f"The zip member {info.filename!r} cannot be read: {exc}") from None
    except NotImplementedError as exc:  # a compression method zipfile does not read
        raise ImportProblem(
            f"The zip member {info.filename!r} cannot be read: {exc}; zip it again with the "
            "usual (deflate) compression."
        ) from None


def _sniff_image(head: bytes, name: str) -> None:
    try:
        sniff_image_head(head, name)
    except ImageProblem as exc:
        raise ImportProblem(str(exc)) from None


def _check_image(path: Path, name: str) -> None:
    try:
        check_image_file(path, name)
    except ImageProblem as exc:
        raise ImportProblem(str(exc)) from None


def _sniff_audio(head: bytes, name: str) -> None:
    try:
        sniff_audio_head(head, name)
    except AudioProblem as exc:
        raise ImportProblem(str(exc)) from None


def _check_audio(path: Path, name: str) -> None:
    try:
        check_audio_file(str(path), name)
    except AudioProblem as exc:
        raise ImportProblem(str(exc)) from None


def _sniff_video(head: bytes, name: str) -> None:
    try:
        sniff_video_head(head, name)
    except VideoProblem as exc:
        raise ImportProblem(str(exc)) from None


def _check_video(limits: VideoLimits, path: Path, name: str) -> None:
    try:
        check_video_file(path, name, limits=limits)
    except VideoProblem as exc:
        raise ImportProblem(str(exc)) from None


IMAGES = _FileKind("image", frozenset(IMAGE_SUFFIXES), _sniff_image, _check_image)
AUDIO = _FileKind("audio file", frozenset(AUDIO_SUFFIXES), _sniff_audio, _check_audio)


# --- Texts in a CSV ------------------------------------------------------------------------
def parse_text_csv(
    upload: IO[bytes],
    *,
    text_column: str,
    label_column: str,
    split_column: str,
    max_rows: int,
) -> list[ParsedStimulus]:
    """Read one stimulus per row; ``label_column`` and ``split_column`` may be ''."""
    reader = csv_reader(upload)
    header = reader.fieldnames or []
    for wanted, role in ((text_column, "text"), (label_column, "label"), (split_column, "split")):
        if wanted and wanted not in header:
            raise ImportProblem(
                f"The CSV has no {role} column {wanted!r}; its columns are: "
                f"{', '.join(repr(h) for h in header)}."
            )
    parsed = []
    for row in csv_rows(reader, max_rows):
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


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV is read, decided without guessing quotes: RFC 4180 (fields may be quoted,
    a quote inside a quoted field doubled) for comma- and semicolon-separated files, no quote
    processing for tab-separated ones (a quote is a plain character there)."""

    delimiter: str
    quoted: bool
    reason: str  # what decided it, said back to the user

    def __str__(self) -> str:
        quoting = "RFC 4180 quoting" if self.quoted else "no quote processing"
        return f"{DELIMITER_NAMES[self.delimiter]}-separated, {quoting} ({self.reason})"


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
TAB_SUFFIXES = {".tsv", ".tab"}


def csv_dialect(file_name: str, first_line: str) -> CsvDialect:
    """``.csv``: RFC 4180, comma-separated (or, where the first line has no comma, the
    delimiter it has: semicolons from spreadsheets in many locales, tabs in THINGS' files); ``.tsv``/``.tab``: tab-separated, no quote
    processing; any other name: only the delimiter is taken from the first line (the one
    most frequent outside quotes; a tab means no quote processing)."""
    suffix = PurePosixPath(file_name.replace("\\", "/")).suffix.lower()
    counts = _delimiter_counts(first_line)
    if suffix in TAB_SUFFIXES:
        return CsvDialect("\t", quoted=False, reason=f"from the {suffix} extension")
    if suffix == ".csv":
        other = max(DELIMITER_NAMES, key=lambda d: counts[d])
        if counts[","] == 0 and counts[other] > 0:  # e.g. semicolons (spreadsheets), tabs
            name = DELIMITER_NAMES[other]
            return CsvDialect(
                other, quoted=True, reason=f"a .csv whose first line has no comma but {name}s"
            )
        return CsvDialect(",", quoted=True, reason="from the .csv extension")
    delimiter = max(DELIMITER_NAMES, key=lambda d: counts[d])  # ties: the order listed
    if counts[delimiter] == 0:
        return CsvDialect(",", quoted=True, reason="one column: no delimiter in the first line")
    return CsvDialect(delimiter, quoted=delimiter != "\t", reason="delimiter from the first line")


def _delimiter_counts(line: str) -> dict[str, int]:
    outside_quotes = "".join(line.split('"')[::2])
    return {d: outside_quotes.count(d) for d in DELIMITER_NAMES}


if TYPE_CHECKING:  # DictReader is generic only to the type checker (Python 3.11)
    _DictReader = csv.DictReader[str]
else:
    _DictReader = csv.DictReader


class CsvReader(_DictReader):
    """A DictReader that knows how it reads its file (``read_as``, to report back)."""

    def __init__(self, lines: Iterator[str], read_as: CsvDialect) -> None:
        if read_as.quoted:  # strict: text after a closing quote is an error, not data
            super().__init__(lines, dialect=csv.excel, delimiter=read_as.delimiter, strict=True)
        else:
            super().__init__(lines, delimiter=read_as.delimiter, quoting=csv.QUOTE_NONE)
        self.read_as = read_as


def csv_reader(upload: IO[bytes]) -> CsvReader:
    """A reader over the upload's lines, decoded as they are read: a CSV is never held
    whole (its raw bytes, decoded text and a copy of it cost several times its size). The
    dialect comes from the file's name and first line (``csv_dialect``), never from
    guessing quotes in a prefix of the file."""
    lines = _text_lines(_byte_lines(upload))
    # The first 64 KiB are decoded before the header is read, so a file that is not UTF-8
    # says so first, whatever else is wrong with it; only the first line decides anything.
    head: list[str] = []
    for line in lines:
        head.append(line)
        if sum(map(len, head)) >= DECODE_AHEAD_BYTES:
            break
    first = next((line for line in head if line.strip()), None)
    if first is None:
        raise ImportProblem("The CSV file is empty.")
    read_as = csv_dialect(str(getattr(upload, "name", "") or ""), first)
    return CsvReader(itertools.chain(head, lines), read_as)


def _byte_lines(upload: IO[bytes]) -> Iterator[bytes]:
    """The upload's lines, each with its b"\\n", read a chunk at a time."""
    pending: list[bytes] = []
    while chunk := upload.read(UNPACK_CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending.append(chunk[start : end + 1])
            yield b"".join(pending)
            pending.clear()
            start = end + 1
        pending.append(chunk[start:])
    if any(pending):
        yield b"".join(pending)


def _text_lines(lines: Iterator[bytes]) -> Iterator[str]:
    """Decode UTF-8 (an initial byte-order mark dropped) line by line: a newline byte never
    falls inside a UTF-8 character, so each line decodes on its own."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    for number, line in enumerate(lines, start=1):
        try:
            text = decoder.decode(line)
        except UnicodeDecodeError as exc:
            raise ImportProblem(
                f"The CSV is not UTF-8 text (line {number}, byte {offset + exc.start}); save "
                "it as UTF-8 and retry."
            ) from None
        offset += len(line)
        # A lone \r ends a line too (old Mac files), as in a text file opened with newline="".
        yield from (part for part in _LONE_CR.split(text) if part)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportProblem(
            f"The CSV is not UTF-8 text (it ends inside a character, byte {offset}); save it "
            "as UTF-8 and retry."
        ) from None


def csv_rows(reader: CsvReader, max_rows: int) -> Iterator[dict[str, str]]:
    """The reader's rows; a malformed one is named with its line and the likely cause."""
    try:
        for count, row in enumerate(reader, start=1):
            if count > max_rows:
                raise ImportProblem(f"The CSV has more than {max_rows} rows.")
            if None in row:
                raise ImportProblem(
                    f"Row {reader.line_num} has more fields than the header. "
                    f"{likely_cause(reader.read_as)} The file was read as {reader.read_as}."
                )
            yield row
    except csv.Error as exc:  # DictReader's line_num lags a row behind a failed read
        raise ImportProblem(
            f"The CSV is malformed near row {reader.reader.line_num}: {exc}. "
            f"{likely_cause(reader.read_as)} The file was read as {reader.read_as}."
        ) from None


def csv_cells(reader: CsvReader, max_rows: int) -> Iterator[tuple[int, list[str]]]:
    """The file's non-blank rows as lists of cells, header included, with their line."""
    raw = reader.reader
    try:
        count = 0
        for cells in raw:
            if not any(cell.strip() for cell in cells):
                continue
            count += 1
            if count > max_rows + 1:  # + 1: a header
                raise ImportProblem(f"The CSV has more than {max_rows} rows.")
            yield raw.line_num, cells
    except csv.Error as exc:
        raise ImportProblem(
            f"The CSV is malformed near row {raw.line_num}: {exc}. "
            f"{likely_cause(reader.read_as)} The file was read as {reader.read_as}."
        ) from None


def likely_cause(read_as: CsvDialect) -> str:
    name = DELIMITER_NAMES[read_as.delimiter]
    if read_as.quoted:
        return (
            f"Likely a field holds a {name} or a quote without being quoted (RFC 4180: put "
            'the field in double quotes and double any quote inside it, "like ""this""").'
        )
    return f"Likely a field holds a {name} character."


def _split_value(raw: str, line: int) -> str:
    value = raw.strip().lower()
    if value == "":
        return ""
    if value not in SPLIT_FOLDERS:
        raise ImportProblem(f"Row {line}: split {raw!r} is not one of train, val, test (or empty).")
    return SPLIT_FOLDERS[value]
