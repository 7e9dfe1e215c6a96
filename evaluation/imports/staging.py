"""Uploads kept for a researcher between attempts: a judgment file that failed to import (a
column mapped wrong, say) stays chosen, so the next attempt needs no second upload, and the
preview of its first rows reads it from here.

A staged file lives under ``MEDIA_ROOT/tmp/staged/`` under a random token; the token is known
only to the session that staged it (a researcher cannot open another's upload by guessing).
Files are removed once imported, and any left for a day are swept."""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from evaluation.engine.storage import writing

SESSION_KEY = "staged_uploads"
MAX_AGE_SECONDS = 24 * 3600
MAX_STAGED_PER_SESSION = 5


def _folder() -> Path:
    return Path(settings.MEDIA_ROOT) / "tmp" / "staged"


def copy_upload(upload: Any, path: Path, *, doing: str) -> None:
    """Copy an upload to ``path`` under MEDIA_ROOT a chunk at a time (never whole in memory);
    a full or read-only disk is named (StorageError), and the upload is left rewound."""
    with writing(path.parent, place=f"MEDIA_ROOT ({settings.MEDIA_ROOT})", doing=doing):
        path.parent.mkdir(parents=True, exist_ok=True)
        upload.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(upload, out, 1 << 20)
    upload.seek(0)


def stage(session: Any, upload: Any) -> str:
    """Copy the upload into the staging folder (a chunk at a time); returns its token."""
    _sweep()
    token = secrets.token_urlsafe(16)
    name = PurePosixPath(str(getattr(upload, "name", "") or "upload")).name[:200]
    copy_upload(upload, _folder() / token, doing="keep the uploaded file for the next attempt")
    staged = dict(session.get(SESSION_KEY, {}))
    staged[token] = name
    for old in list(staged)[:-MAX_STAGED_PER_SESSION]:  # keep the latest few
        discard(session, old, staged)
    session[SESSION_KEY] = staged
    return token


def staged_name(session: Any, token: str) -> str | None:
    """The file name of a token this session staged and that still exists."""
    name = session.get(SESSION_KEY, {}).get(token)
    return name if name and (_folder() / token).is_file() else None


def open_staged(session: Any, token: str) -> UploadedFile | None:
    """The staged file as an upload (name and size as uploaded), or None. The caller closes
    it (the form's file, closed with the request)."""
    name = staged_name(session, token)
    if name is None:
        return None
    path = _folder() / token
    return UploadedFile(path.open("rb"), name=name, size=path.stat().st_size)


def discard(session: Any, token: str, staged: dict[str, str] | None = None) -> None:
    mapping = staged if staged is not None else dict(session.get(SESSION_KEY, {}))
    mapping.pop(token, None)
    (_folder() / token).unlink(missing_ok=True)
    if staged is None:
        session[SESSION_KEY] = mapping


def _sweep() -> None:
    folder = _folder()
    if not folder.is_dir():
        return
    cutoff = time.time() - MAX_AGE_SECONDS
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
