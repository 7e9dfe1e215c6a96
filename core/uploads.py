"""Refuse oversize uploads before their body is read.

Django would otherwise stream the whole upload to a temporary file before any view can
look at its size. This handler runs when the first file part starts (after the small form
fields, CSRF token included, have been parsed) and stops reading if the request announces
more bytes than DATASET_UPLOAD_MAX_BYTES allows. The view then shows ``request.upload_refused``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

FORM_FIELDS_ALLOWANCE = 64 * 1024  # the text fields that travel with the file


def check_upload_size(file: Any) -> None:
    """The same limit for a file already in hand (the command line's, or one whose request
    did not announce its length): a ValidationError keyed ``file`` naming it."""
    size = getattr(file, "size", None)
    if size is not None and size > settings.DATASET_UPLOAD_MAX_BYTES:
        raise ValidationError(
            {
                "file": f"The file is {human_bytes(size)}; the limit is "
                f"{human_bytes(settings.DATASET_UPLOAD_MAX_BYTES)} (DATASET_UPLOAD_MAX_BYTES)."
            }
        )


class UploadLimitHandler(FileUploadHandler):
    def handle_raw_input(
        self,
        input_data: Any,
        META: Any,
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> None:
        self.content_length = content_length

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        limit = settings.DATASET_UPLOAD_MAX_BYTES + FORM_FIELDS_ALLOWANCE
        if self.content_length and self.content_length > limit:
            self.request.upload_refused = (  # type: ignore[union-attr]
                f"The upload is {human_bytes(self.content_length)}; the limit is "
                f"{human_bytes(settings.DATASET_UPLOAD_MAX_BYTES)} (DATASET_UPLOAD_MAX_BYTES)."
            )
            raise StopUpload(connection_reset=True)
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def human_bytes(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
