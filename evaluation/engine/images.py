"""Decoding image stimuli with Pillow: whole and checked, within Pillow's pixel limit, with
reasons that name the stimulus (never a file object or a path on the server)."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# What Pillow raises for unreadable or truncated input.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError)
NO_FORMAT = "Pillow recognises no image format in it"


class ImageProblem(ValueError):
    """An image that cannot be used; the message names it and says why."""


def decode_rgb(path: str | Path, name: str) -> Image.Image:
    """Decode an image file fully as RGB; ImageProblem naming ``name`` if it cannot be."""
    try:
        with _open(path, name) as image:
            return image.convert("RGB")
    except ImageProblem:
        raise
    except DECODE_ERRORS as exc:
        raise ImageProblem(f"Image {name!r} cannot be decoded: {decoder_reason(exc)}.") from None


def check_image_file(path: str | Path, name: str) -> None:
    """Decode the whole image (verify() alone misses truncated pixel data); ImageProblem
    naming ``name`` if it is corrupt, not an image, or too large to decode safely."""
    try:
        with _open(path, name) as image:
            image.verify()
        with _open(path, name) as image:
            image.load()
    except ImageProblem:
        raise
    except DECODE_ERRORS as exc:
        raise ImageProblem(_corrupt(name, exc)) from None


def sniff_image_head(head: bytes, name: str) -> None:
    """Refuse at once, from its first bytes and before the rest is unpacked, what cannot be
    an image: no format Pillow knows starts this way, or the header announces too many
    pixels. A header that goes on past ``head`` is left to ``check_image_file``."""
    try:
        with _open(io.BytesIO(head), name):
            return
    except ImageProblem:
        raise
    except UnidentifiedImageError as exc:
        if not _starts_like_an_image(head):
            raise ImageProblem(_corrupt(name, exc)) from None
    except DECODE_ERRORS:
        pass  # e.g. a TIFF whose directory lies past the head: decided once unpacked


def decoder_reason(exc: BaseException) -> str:
    """Pillow's reason, without the file object or server path some of its messages hold."""
    if isinstance(exc, UnidentifiedImageError):
        return NO_FORMAT
    return str(exc).rstrip(".") or type(exc).__name__


def _corrupt(name: str, exc: BaseException) -> str:
    return f"The image {name!r} is corrupt or not an image: {decoder_reason(exc)}."


def _open(source: str | Path | io.BytesIO, name: str) -> Image.Image:
    """Image.open, refusing more pixels than Image.MAX_IMAGE_PIXELS: Pillow only warns up
    to twice that, and a few kilobytes of PNG can decode to hundreds of megabytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as exc:
            raise ImageProblem(_too_large(name, str(exc).partition(",")[0])) from None
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        image.close()
        raise ImageProblem(
            _too_large(name, f"{width} x {height} pixels; the limit is {limit:,} pixels")
        )
    return image


def _too_large(name: str, detail: str) -> str:
    return (
        f"The image {name!r} has more pixels than Pillow decodes safely ({detail}); downscale it."
    )


def _starts_like_an_image(head: bytes) -> bool:
    """Whether the signature of a format Pillow reads starts ``head`` (as Image.open checks
    it, on the first 16 bytes)."""
    Image.init()
    return any(accept is not None and accept(head[:16]) for _, accept in Image.OPEN.values())
