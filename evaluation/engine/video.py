"""Decoding video stimuli with PyAV (FFmpeg's libraries): checking whole clips within caps,
sampling the frames models see, poster frames for pages, and writing clips browsers play.

Every problem is a VideoProblem whose message names the clip (never a path on the server)
and says why; adapters turn it into a StimulusError, importers into a refusal by name.

Containers: MP4/MOV (ISO base media), Matroska/WebM and AVI, whatever codec FFmpeg decodes
in them. Frames are counted and indexed in presentation order, as the decoder returns them,
and turned upright by the stream's display rotation (a phone's portrait clip is stored on
its side), as browsers show them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any

import av
import av.container
import av.error
import av.video.frame
import av.video.stream
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi"})
# FFmpeg's demuxer names for those containers (format.name lists aliases, comma-separated).
_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "avi"})
# ISO base media files start with a box: 4 bytes of size, then its type. ftyp comes first in
# anything written this century; old QuickTime files may open with these instead.
_ISO_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM
SNIFF_BYTES = 12  # enough for every signature above

# A clip whose decoded frames end this much earlier than its header says is truncated: a
# Matroska/WebM file cut short decodes what is left without an error.
_TRUNCATION_SLACK_SECONDS = 0.5
_TRUNCATION_SLACK_FRAMES = 3


class VideoProblem(ValueError):
    """A video that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may hold. Duration, frame count and resolution are checked from the
    header before anything is decoded, then again frame by frame while decoding, so a
    header that lies cannot make a check decode for ever."""

    max_seconds: float = 600
    max_frames: int = 36_000
    max_pixels: int = 3840 * 2160


@dataclass(frozen=True)
class VideoInfo:
    """A clip as decoded: ``seconds`` from its first frame's start to its last frame's end."""

    frames: int
    seconds: float
    width: int
    height: int
    fps: float
    codec: str


# --- checking ----------------------------------------------------------------------------
def sniff_video_head(head: bytes, name: str) -> None:
    """Refuse at once, from its first bytes and before the rest is unpacked, a file that no
    MP4/MOV, Matroska/WebM or AVI file starts like (a text file renamed .mp4, an image).
    Whether what follows decodes is left to ``check_video_file``."""
    if _starts_like_a_video(head):
        return
    looks = " (it looks like text)" if _looks_like_text(head) else ""
    raise VideoProblem(
        f"Video {name!r} is not a video file{looks}: it does not start like an MP4, MOV, "
        "WebM, Matroska or AVI file."
    )


def check_video_file(
    path: str | Path, name: str, *, limits: VideoLimits = VideoLimits()
) -> VideoInfo:
    """Check that ``path`` is a whole video within ``limits``; VideoProblem naming ``name``
    if it is not a video container FFmpeg reads, holds no video stream (e.g. audio only),
    is too long, too large or has too many frames (from the header, before decoding), or
    if any frame fails to decode, none does, or the frames end well before the header
    says (a truncated file). Every frame is decoded, one at a time: memory stays at a
    frame or two whatever the clip's length."""
    with _opened(path, name) as (container, stream):
        _check_header(container, stream, name, limits)
        stream.thread_type = "AUTO"  # frame threads: checking one clip uses every core
        start = stream.start_time or 0
        time_base = stream.time_base or Fraction(1, 1)
        frames, first, last = 0, None, None
        width = height = rotation = 0
        for frame in _decoded(container, stream, name):
            frames += 1
            rotation = rotation or _rotation(frame)
            if frames > limits.max_frames:
                raise VideoProblem(
                    _too_many_frames(name, f"more than {limits.max_frames:,}", limits)
                )
            if frame.width * frame.height > limits.max_pixels:
                raise VideoProblem(_too_large(name, frame.width, frame.height, limits))
            width, height = frame.width, frame.height
            if frame.pts is not None:
                seconds = float((frame.pts - start) * time_base)
                if seconds > limits.max_seconds:
                    raise VideoProblem(_too_long(name, seconds, limits, more=True))
                first = seconds if first is None else min(first, seconds)
                last = seconds if last is None else max(last, seconds)
        if frames == 0:
            raise VideoProblem(f"Video {name!r} has no frames: no picture in it decodes.")
        fps = float(_rate(stream, name))
        span = (last - first + 1 / fps) if first is not None and last is not None else frames / fps
        _check_not_truncated(container, stream, name, span, fps)
        if abs(rotation) in (90, 270):
            width, height = height, width
        return VideoInfo(
            frames=frames,
            seconds=span,
            width=width,
            height=height,
            fps=fps,
            codec=stream.codec_context.name,
        )


def _check_header(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    limits: VideoLimits,
) -> None:
    """Refuse what the header says is over a cap, before decoding a frame: a four-hour clip
    is refused in the time it takes to read its index."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_pixels:
        raise VideoProblem(_too_large(name, width, height, limits))
    seconds = _header_seconds(container, stream)
    if seconds is not None and seconds > limits.max_seconds:
        raise VideoProblem(_too_long(name, seconds, limits))
    if stream.frames > limits.max_frames:
        raise VideoProblem(_too_many_frames(name, f"{stream.frames:,}", limits))


def _check_not_truncated(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    span: float,
    fps: float,
) -> None:
    """A truncated MP4 fails to decode, but a truncated Matroska/WebM file decodes what is
    left: compare where the frames end with where the header says the video ends. The
    container's duration stands for the video's only when the video is all it holds
    (an audio track may run longer)."""
    declared = _video_seconds(container, stream)
    if declared is None:
        return
    slack = max(_TRUNCATION_SLACK_SECONDS, _TRUNCATION_SLACK_FRAMES / fps)
    if declared - span > slack:
        raise VideoProblem(
            f"Video {name!r} is truncated or corrupt: its header says the video lasts "
            f"{declared:.2f} s, but its frames end at {span:.2f} s."
        )


# --- frame sampling ----------------------------------------------------------------------
_SAMPLING_PATTERN = re.compile(
    r"^\s*(?:(?:frames\s*=\s*)?(?P<frames>\d+)"
    r"|fps\s*=\s*(?P<fps>\d+(?:\.\d*)?|\.\d+)(?:\s*,\s*max\s*=\s*(?P<max>\d+))?)\s*$",
    re.IGNORECASE,
)
MAX_SAMPLED_FRAMES = 256  # a clip's frames go through the model as one batch of images
MAX_SAMPLING_FPS = 240.0


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a clip a model sees.

    ``frames`` alone: that many frames spread evenly over the clip, one from the middle of
    each of ``frames`` equal stretches (so neither the first frame, often black, nor the
    last is taken). A clip with fewer frames than that repeats frames (4 frames sampled 8
    times: each twice), so every clip gives the same number.

    ``fps``: a fixed rate, one frame per 1/fps seconds from the start (times counted from
    the stream's average frame rate), and ``frames`` is the cap: a clip long enough to give
    more is sampled with ``frames`` frames spread evenly instead, so the whole clip is seen.
    A short clip gives fewer frames (at least one), and a rate above the clip's own repeats
    frames.
    """

    frames: int = 8
    fps: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int):
            raise VideoProblem(
                f"Frame sampling: frames must be a whole number, not {self.frames!r}."
            )
        if not 1 <= self.frames <= MAX_SAMPLED_FRAMES:
            raise VideoProblem(
                f"Frame sampling: {self.frames} frames per clip; use 1 to {MAX_SAMPLED_FRAMES}."
            )
        if self.fps is not None and not (
            math.isfinite(self.fps) and 0 < self.fps <= MAX_SAMPLING_FPS
        ):
            raise VideoProblem(
                f"Frame sampling: a rate of {self.fps} frames per second; use more than 0 and "
                f"at most {MAX_SAMPLING_FPS:g}."
            )

    @classmethod
    def parse(cls, text: str) -> FrameSampling:
        """``8`` or ``frames=8`` (8 frames spread evenly), ``fps=2`` (2 per second, at most
        the default cap) or ``fps=2,max=32``."""
        match = _SAMPLING_PATTERN.match(text or "")
        if match is None:
            raise VideoProblem(
                f"Frame sampling {text!r} is not understood: write a number of frames spread "
                "over each clip (8 or frames=8) or a rate (fps=2, or fps=2,max=32 to take at "
                "most 32 frames)."
            )
        if match["frames"] is not None:
            return cls(frames=int(match["frames"]))
        fps = float(match["fps"])
        return cls(frames=int(match["max"]), fps=fps) if match["max"] else cls(fps=fps)

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> FrameSampling:
        """The sampling ``describe()`` gave (an empty dict: the default)."""
        unknown = set(description) - {"frames", "fps"}
        if unknown:
            raise VideoProblem(f"Frame sampling has unknown keys: {', '.join(sorted(unknown))}.")
        fps = description.get("fps")
        return cls(
            frames=description.get("frames", cls.frames),
            fps=float(fps) if fps is not None else None,
        )

    def describe(self) -> dict[str, Any]:
        """Plain JSON for the embedding fingerprint (and ``from_description``)."""
        if self.fps is None:
            return {"frames": self.frames}
        return {"fps": float(self.fps), "frames": self.frames}

    def label(self) -> str:
        if self.fps is None:
            return (
                f"{self.frames} frame{'s' if self.frames != 1 else ''} spread evenly over each clip"
            )
        return f"{self.fps:g} frame{'s' if self.fps != 1 else ''} per second, at most {self.frames}"

    def frame_indices(
        self, count: int, rate: float, *, clip_frames: int | None = None
    ) -> list[int]:
        """The indices (in presentation order) of the frames to take from a clip of
        ``count`` frames at ``rate`` frames per second, in order, repeats allowed.

        ``clip_frames`` is for video models, which take exactly that many frames: spread
        evenly, or with ``fps`` that many instants 1/fps apart centred on the clip's middle
        (instants before the start or past the end take the first or last frame)."""
        if count < 1:
            raise ValueError("A clip with no frames has none to sample.")
        if clip_frames is not None:
            if self.fps is None:
                return _spread(count, clip_frames)
            step = rate / self.fps
            first = count / 2 - step * clip_frames / 2
            return [_clamp(math.floor(first + step * (k + 0.5)), count) for k in range(clip_frames)]
        if self.fps is None:
            return _spread(count, self.frames)
        step = rate / self.fps  # source frames per sample
        instants = max(1, math.ceil(count / step - 1e-9))  # k / fps < the clip's length
        if instants > self.frames:
            return _spread(count, self.frames)
        return [_clamp(math.floor(k * step + 1e-9), count) for k in range(instants)]


def _spread(count: int, wanted: int) -> list[int]:
    """The middle frame of each of ``wanted`` equal stretches of ``count`` frames."""
    return [((2 * i + 1) * count) // (2 * wanted) for i in range(wanted)]


def _clamp(index: int, count: int) -> int:
    return min(max(index, 0), count - 1)


def sample_frames(
    path: str | Path, name: str, sampling: FrameSampling, *, clip_frames: int | None = None
) -> list[Image.Image]:
    """The frames ``sampling`` picks from the clip, as upright RGB images, in order (see
    ``FrameSampling.frame_indices``; ``clip_frames`` for video models). Decoded in one
    sequential pass that stops after the last frame needed; only the picked frames are
    converted to RGB. VideoProblem naming ``name`` if the clip cannot be decoded."""
    return _frames(
        path,
        name,
        lambda count, rate: sampling.frame_indices(count, rate, clip_frames=clip_frames),
    )


def poster_jpeg(path: str | Path, name: str, *, max_side: int = 320) -> bytes:
    """A representative frame as a JPEG at most ``max_side`` pixels on its longer side:
    the frame a third of the way in (the first is often black, a fade-in or a title)."""
    if max_side < 1:
        raise ValueError("max_side must be at least 1.")
    (image,) = _frames(path, name, lambda count, rate: [count // 3])
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def _frames(
    path: str | Path, name: str, choose: Callable[[int, float], list[int]]
) -> list[Image.Image]:
    """The frames at the indices ``choose`` picks for the clip's frame count and rate.

    The count comes from the header, or from reading the packets (no decoding) where the
    container keeps none (Matroska). If the clip ends before the last chosen frame (the
    count was wrong), the frames are chosen again for the true count and decoded again."""
    with _opened(path, name) as (container, stream):
        rate = float(_rate(stream, name))
        count = stream.frames or _count_packets(container, stream, name)
    if count < 1:
        raise VideoProblem(f"Video {name!r} has no frames.")
    indices = choose(count, rate)
    with _opened(path, name) as (container, stream):
        images, decoded = _decode_indices(container, stream, set(indices), name)
    if not set(indices) <= images.keys():
        if decoded == 0:
            raise VideoProblem(f"Video {name!r} has no frames: no picture in it decodes.")
        indices = choose(decoded, rate)
        with _opened(path, name) as (container, stream):
            images, _ = _decode_indices(container, stream, set(indices), name)
    return [images[index] for index in indices]


def _decode_indices(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    wanted: set[int],
    name: str,
) -> tuple[dict[int, Image.Image], int]:
    """({index: upright RGB image} for the wanted frames, frames decoded)."""
    last = max(wanted)
    images: dict[int, Image.Image] = {}
    decoded = 0
    for index, frame in enumerate(_decoded(container, stream, name)):
        decoded = index + 1
        if index in wanted:
            images[index] = upright(frame.to_image(), _rotation(frame))
        if index >= last:
            break
    return images, decoded


def upright(image: Image.Image, rotation: int) -> Image.Image:
    """Turn a decoded picture as a player shows it: ``rotation`` is the display matrix's
    angle (counter-clockwise degrees; a portrait phone clip says -90)."""
    turns = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        -180: Image.Transpose.ROTATE_180,
        -90: Image.Transpose.ROTATE_270,
        270: Image.Transpose.ROTATE_270,
        -270: Image.Transpose.ROTATE_90,
    }
    turn = turns.get(rotation)
    return image.transpose(turn) if turn is not None else image


# --- writing clips -----------------------------------------------------------------------
# PyAV 18's wheel bundles libvpx (VP8), libvpx-vp9, libx264, libx265, libsvtav1 and
# FFmpeg's own mpeg4 encoder (not libopenh264). Chromium plays VP9 in WebM whatever its
# build (H.264 needs one with proprietary codecs), so WebM/VP9 is what the demo writes.
_ENCODERS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    # suffix: (codec, codec options, container options)
    ".webm": (
        "libvpx-vp9",
        {"crf": "33", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
        {},
    ),
    ".mkv": (
        "libvpx-vp9",
        {"crf": "33", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
        {},
    ),
    # moov before mdat (faststart): a browser starts playing before the whole file is in.
    ".mp4": ("libx264", {"crf": "23", "preset": "veryfast"}, {"movflags": "+faststart"}),
    ".mov": ("libx264", {"crf": "23", "preset": "veryfast"}, {"movflags": "+faststart"}),
    ".avi": ("mpeg4", {"qscale": "4"}, {}),
}


def write_clip(
    destination: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int | Fraction,
    codec: str | None = None,
) -> int:
    """Encode ``frames`` (H x W x 3 uint8 RGB, all one size) into ``destination`` at
    ``fps``; returns how many were written.

    The codec follows the suffix unless given: ``.webm``/``.mkv`` VP9 (libvpx-vp9, constant
    quality; what Chromium, Firefox and current Safari play), ``.mp4``/``.mov`` H.264
    (libx264, faststart), ``.avi`` MPEG-4 part 2. Pictures are stored as yuv420p, which
    needs even sides: an odd last row or column is dropped. Nothing is left at
    ``destination`` if encoding fails."""
    suffix = destination.suffix.lower()
    if suffix not in _ENCODERS:
        raise ValueError(
            f"Cannot write {destination.name}: use one of {', '.join(sorted(_ENCODERS))}."
        )
    default_codec, codec_options, container_options = _ENCODERS[suffix]
    if codec is not None and codec != default_codec:
        codec_options = {}
    pictures = iter(frames)
    first = next(pictures, None)
    if first is None:
        raise ValueError(f"No frames to write to {destination.name}.")
    height, width = _even(first.shape[0]), _even(first.shape[1])
    if first.ndim != 3 or first.shape[2] != 3 or height < 2 or width < 2:
        raise ValueError(
            f"Frames must be H x W x 3 RGB arrays of at least 2 x 2, not {first.shape}."
        )
    written = 0
    try:
        with av.open(str(destination), "w", options=container_options) as container:
            stream = container.add_stream(codec or default_codec, rate=fps, options=codec_options)
            if not isinstance(stream, av.video.stream.VideoStream):
                raise ValueError(f"{codec!r} is not a video encoder.")
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for picture in chain([first], pictures):
                if picture.shape != first.shape or picture.dtype != np.uint8:
                    raise ValueError(
                        f"Frame {written} is {picture.shape} {picture.dtype}; every frame must "
                        f"be {first.shape} uint8."
                    )
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(picture[:height, :width]), format="rgb24"
                )
                frame.pts = written
                container.mux(stream.encode(frame))
                written += 1
            container.mux(stream.encode(None))
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return written


def cut_segment(
    source: Path,
    destination: Path,
    *,
    start_seconds: float,
    seconds: float,
    max_side: int | None = None,
) -> VideoInfo:
    """Re-encode ``seconds`` of ``source`` from ``start_seconds`` into ``destination``
    (codec by suffix, see ``write_clip``; no audio), upright, at the source's frame rate,
    downscaled to at most ``max_side`` pixels on the longer side if given. Returns the new
    clip as ``check_video_file`` finds it."""
    if seconds <= 0 or start_seconds < 0:
        raise ValueError("A segment needs a start of at least 0 s and a positive length.")
    name = source.name
    with _opened(source, name) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate or _rate(stream, name)
        pictures = _segment(
            container, stream, name, start_seconds, start_seconds + seconds, max_side
        )
        try:
            first = next(pictures)
        except StopIteration:
            raise VideoProblem(
                f"Video {name!r} has no frames between {start_seconds:g} s and "
                f"{start_seconds + seconds:g} s."
            ) from None
        write_clip(destination, chain([first], pictures), fps=Fraction(rate))
    return check_video_file(destination, destination.name)


def _segment(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    start: float,
    stop: float,
    max_side: int | None,
) -> Iterator[np.ndarray]:
    time_base = stream.time_base or Fraction(1, 1)
    origin = stream.start_time or 0
    # Seek to the keyframe at or before the start, then decode forward: exact, because the
    # frames are chosen by their own timestamps.
    container.seek(origin + int(start / time_base), stream=stream, backward=True)
    for frame in _decoded(container, stream, name):
        if frame.pts is None:
            continue
        when = float((frame.pts - origin) * time_base)
        if when < start - 1e-6:
            continue
        if when >= stop - 1e-6:
            return
        rotation = _rotation(frame)
        size = _scaled(frame.width, frame.height, max_side)
        if size != (frame.width, frame.height):
            frame = frame.reformat(width=size[0], height=size[1], interpolation="AREA")
        yield np.asarray(upright(frame.to_image(), rotation))


def _scaled(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, _even(round(width * scale))), max(2, _even(round(height * scale)))


def _even(size: int) -> int:
    return size - size % 2


# --- shared ------------------------------------------------------------------------------
@contextmanager
def _opened(
    path: str | Path, name: str
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """The container and its first video stream; VideoProblem naming ``name`` if it is not
    a video container FFmpeg reads or holds no video."""
    try:
        container = av.open(str(path), "r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoProblem(_cannot_read(name, exc)) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoProblem(f"Video {name!r} cannot be read: {_reason(exc)}.") from None
    with container:
        formats = set(container.format.name.split(","))
        if not formats & _CONTAINERS:
            raise VideoProblem(
                f"Video {name!r} is not a video file: FFmpeg reads it as "
                f"{container.format.long_name or container.format.name}, not as an MP4, MOV, "
                "WebM, Matroska or AVI file."
            )
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams})
            if not kinds:  # FFmpeg leaves out tracks without a single sample
                raise VideoProblem(f"Video {name!r} has no frames: it holds no stream with data.")
            raise VideoProblem(
                f"Video {name!r} has no video stream: it holds only {' and '.join(kinds)}."
            )
        yield container, container.streams.video[0]


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str
) -> Iterator[av.video.frame.VideoFrame]:
    """The stream's frames in presentation order; VideoProblem naming ``name`` at the first
    damaged packet or decoding error (with how far decoding got)."""
    frames = 0
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise VideoProblem(_corrupt(name, "a damaged packet", frames))
            for frame in packet.decode():
                frames += 1
                yield frame
    except av.error.FFmpegError as exc:
        raise VideoProblem(_corrupt(name, _reason(exc), frames)) from None


def _count_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str
) -> int:
    """Frames in the stream, counted from its packets without decoding them (one picture
    per packet, as Matroska/WebM and MP4 store video)."""
    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise VideoProblem(_corrupt(name, _reason(exc), 0)) from None


def _rate(stream: av.video.stream.VideoStream, name: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoProblem(f"Video {name!r} has no frame rate in its header.")
    return Fraction(rate)


def _rotation(frame: av.video.frame.VideoFrame) -> int:
    """The display matrix's rotation in whole degrees (0 without one)."""
    return round(frame.rotation or 0)


def _header_seconds(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    """The longest duration the header gives: the video stream's or the container's."""
    known = [
        seconds for seconds in (_stream_seconds(stream), _container_seconds(container)) if seconds
    ]
    return max(known) if known else None


def _video_seconds(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    """How long the header says the video lasts, where it says so."""
    seconds = _stream_seconds(stream)
    if seconds is None and len(container.streams) == 1:
        seconds = _container_seconds(container)
    return seconds


def _stream_seconds(stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _container_seconds(container: av.container.InputContainer) -> float | None:
    return container.duration / av.time_base if container.duration else None


def _starts_like_a_video(head: bytes) -> bool:
    return (
        head[4:8] in _ISO_FIRST_BOXES
        or head.startswith(_EBML)
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(char.isprintable() or char in "\r\n\t" for char in text)


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file name PyAV appends (a path on the server)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).rstrip(".")


def _cannot_read(name: str, exc: BaseException) -> str:
    if isinstance(exc, av.error.EOFError):  # a Matroska/WebM header with nothing after it
        return f"Video {name!r} has no frames: the file ends before its first frame."
    if isinstance(exc, av.error.InvalidDataError):
        return (
            f"Video {name!r} is not a video FFmpeg reads: no video container it knows starts "
            "like it, or the file is empty or truncated."
        )
    return f"Video {name!r} cannot be read: {_reason(exc)}."


def _corrupt(name: str, reason: str, frames: int) -> str:
    return (
        f"Video {name!r} is corrupt or truncated: decoding stopped after {frames} frame"
        f"{'s' if frames != 1 else ''} ({reason})."
    )


def _too_long(name: str, seconds: float, limits: VideoLimits, *, more: bool = False) -> str:
    at_least = "more than " if more else ""
    return (
        f"Video {name!r} is too long: {at_least}{_clock(seconds)}; the limit is "
        f"{_clock(limits.max_seconds)}. Cut it shorter."
    )


def _too_many_frames(name: str, frames: str, limits: VideoLimits) -> str:
    return (
        f"Video {name!r} has too many frames: {frames}; the limit is {limits.max_frames:,}. "
        "Cut it shorter or lower its frame rate."
    )


def _too_large(name: str, width: int, height: int, limits: VideoLimits) -> str:
    return (
        f"Video {name!r} is too large: {width} x {height} pixels per frame; the limit is "
        f"{limits.max_pixels:,} pixels (e.g. 3840 x 2160). Downscale it."
    )


def _clock(seconds: float) -> str:
    """4:00:00, 10:00, 0:07.5."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    fraction = f"{seconds - whole:.1f}"[1:] if seconds != whole and seconds < 60 else ""
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}{fraction}"
