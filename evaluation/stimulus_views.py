"""Serving stimulus media to the pages: a video clip's poster frame (made once, kept under
MEDIA_ROOT) and stimulus files with byte ranges, which phones need to play video. Files are
read through evaluation.storage: from local disk, or streamed from an object store (a range
asked for is a ranged read there too, never the whole clip).

The researcher's poster view is allowed exactly as ``evaluation:stimulus_file`` is
(researchers only: stimuli are research data); the participants' variants live in
annotation/views.py and reuse ``poster_response`` and ``media_response`` after their own
check (a participant sees only the stimuli of their own trials).
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404

from core.auth import researcher_required
from evaluation import storage
from evaluation.engine.errors import StorageError
from evaluation.models import Modality, Stimulus

logger = logging.getLogger(__name__)

POSTER_DIR = "posters"
# Posters never change for a stimulus (its file is fixed at import and its hash is in the
# cached file's name), but they are research data: browsers may keep them, proxies may not.
POSTER_CACHE_CONTROL = "private, max-age=86400"
CHUNK = 64 * 1024
# One range only ("bytes=0-", "bytes=500-999", "bytes=-500"): what media players ask for. A
# request for several ranges gets the whole file, which RFC 9110 allows.
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@researcher_required
def stimulus_poster(request: HttpRequest, stimulus_id: int) -> HttpResponseBase:
    """A video stimulus' representative frame as a JPEG, for the dataset and compare pages."""
    stimulus = get_object_or_404(Stimulus.objects.select_related("dataset"), pk=stimulus_id)
    return poster_response(stimulus)


def poster_response(stimulus: Stimulus) -> HttpResponseBase:
    """The poster of a video stimulus; a clip that cannot be decoded is answered 404 with the
    reason (a page shows its alt text instead), never an error page."""
    if not stimulus.file or stimulus.dataset.modality != Modality.VIDEO:
        raise Http404(f"{stimulus.name} is not a video clip: it has no poster frame.")
    try:
        poster = stimulus_poster_file(stimulus)
    except PosterUnavailable as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain; charset=utf-8")
    response: HttpResponseBase
    if isinstance(poster, Path):
        response = FileResponse(poster.open("rb"), content_type="image/jpeg")
    else:
        response = HttpResponse(poster, content_type="image/jpeg")
    response["Cache-Control"] = POSTER_CACHE_CONTROL
    return response


class PosterUnavailable(Exception):
    """The clip has no poster frame to show (it cannot be decoded, or its file is gone)."""


def stimulus_poster_file(stimulus: Stimulus) -> Path | bytes:
    """The cached poster of a video stimulus, made on first use (its bytes, uncached, when
    MEDIA_ROOT cannot take the file: a full disk costs the cache, not the picture).

    Kept as MEDIA_ROOT/posters/<pk>-<content hash>.jpg: the hash in the name means a poster
    can never be shown for other content than the clip's. Written to a temporary file and
    renamed, so a request never reads half a JPEG and two first requests at once both end
    with a whole one (the last rename wins; the two are the same picture)."""
    from evaluation.engine.video import VideoProblem, poster_jpeg  # PyAV: loaded on first use

    media = Path(settings.MEDIA_ROOT)
    target = media / POSTER_DIR / f"{stimulus.pk}-{stimulus.content_hash[:16]}.jpg"
    if target.is_file():
        return target
    clip = str(stimulus.file.name)
    try:
        data = poster_jpeg(
            storage.local_path(storage.MEDIA, clip, sha256=stimulus.content_hash), stimulus.name
        )
    except StorageError as exc:  # the object store: away, refusing, or without the file
        logger.error("Stimulus %s (%s): %s", stimulus.pk, stimulus.name, exc)
        raise PosterUnavailable(f"No poster frame for {stimulus.name}: {exc}") from exc
    except VideoProblem as exc:
        logger.warning("No poster for stimulus %s (%s): %s", stimulus.pk, stimulus.name, exc)
        raise PosterUnavailable(f"No poster frame for {stimulus.name}: {exc}") from exc
    except FileNotFoundError as exc:
        logger.error("Stimulus %s (%s): its file %s is missing", stimulus.pk, stimulus.name, clip)
        raise PosterUnavailable(
            f"No poster frame for {stimulus.name}: its file is missing."
        ) from exc
    try:
        _write_atomically(target, data)
    except OSError as exc:
        logger.warning("Poster of stimulus %s not cached in MEDIA_ROOT: %s", stimulus.pk, exc)
        return data
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".poster-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def media_response(request: HttpRequest, file: FieldFile) -> HttpResponseBase:
    """A stimulus file, or the byte range of it the request asks for.

    Safari on iPhones plays a video only from a server that answers range requests (206), and
    every browser needs them to seek or loop a clip without fetching it again; anything else
    gets the whole file. An object store without the file answers 404, one that cannot be
    reached or refuses 503 (the reason logged), never an error page."""
    name = str(file.name)
    try:
        return _media_response(request, name)
    except storage.MissingFile as exc:
        logger.error("Stimulus file %s: %s", name, exc)
        return _plain("This stimulus file is missing from the file store.", status=404)
    except StorageError as exc:  # the details (endpoint, bucket) are for the log, not the page
        logger.error("Stimulus file %s: %s", name, exc)
        return _plain(
            "The file store cannot be reached just now: try again in a moment.", status=503
        )


def _plain(text: str, *, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _media_response(request: HttpRequest, name: str) -> HttpResponseBase:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    size = storage.size(storage.MEDIA, name)
    try:
        wanted = _requested_range(request.headers.get("Range", ""), size)
    except Unsatisfiable:
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    if wanted is None:
        whole = FileResponse(storage.open_stream(storage.MEDIA, name), content_type=content_type)
        whole.block_size = CHUNK  # from an object store each read is a socket read, not 4 KiB
        whole["Content-Length"] = str(size)  # a stream from an object store has no file size
        whole["Accept-Ranges"] = "bytes"
        return whole
    start, end = wanted
    handle = storage.open_stream(storage.MEDIA, name, start, end + 1)
    part = StreamingHttpResponse(
        _chunks(handle, end - start + 1), status=206, content_type=content_type
    )
    part["Content-Range"] = f"bytes {start}-{end}/{size}"
    part["Content-Length"] = str(end - start + 1)
    part["Accept-Ranges"] = "bytes"
    return part


class Unsatisfiable(Exception):
    """The range asked for starts past the end of the file (416)."""


def _requested_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last byte) of a single-range request, or None: the whole file."""
    match = RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise Unsatisfiable
        return max(size - length, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored, as RFC 9110 says
    if start >= size:
        raise Unsatisfiable
    return start, min(int(last), size - 1) if last else size - 1


def _chunks(handle: storage.Readable, length: int) -> Iterator[bytes]:
    try:
        while length > 0:
            block = handle.read(min(CHUNK, length))
            if not block:
                return
            length -= len(block)
            yield block
    finally:
        handle.close()
