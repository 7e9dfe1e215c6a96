"""Video decoding: whole clips checked within caps, bad files refused by name, the frames a
sampling picks, poster frames, and clips written for browsers."""

from __future__ import annotations

import io
import zipfile
from fractions import Fraction

import av
import av.video.stream
import numpy as np
import pytest
from PIL import Image

from evaluation.engine import video
from evaluation.engine.video import (
    FrameSampling,
    VideoLimits,
    VideoProblem,
    check_video_file,
    cut_segment,
    poster_jpeg,
    sample_frames,
    sniff_video_head,
    write_clip,
)
from tests import videos


def numbered_clip(path, frames=20, fps=10, size=(48, 32)):
    """A clip whose frame i is a flat grey of level 10 * i + 5: which frame a sampler
    returned can be read back from its brightness, through lossy coding."""
    width, height = size
    write_clip(
        path,
        (np.full((height, width, 3), 10 * i + 5, np.uint8) for i in range(frames)),
        fps=fps,
    )
    return path


def frame_numbers(images):
    return [round((np.asarray(image, dtype=float).mean() - 5) / 10) for image in images]


# --- the real clips --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("clip", "frames", "seconds", "size", "fps"),
    [
        ("bikes", 250, 10.0, (640, 272), 25.0),
        ("bigbuckbunny", 132, 5.28, (1280, 720), 25.0),
        ("carphone_pristine", 120, 4.004, (176, 144), 30000 / 1001),
    ],
)
def test_shipped_clips_decode_whole(clip, frames, seconds, size, fps):
    info = check_video_file(videos.shipped_clip(clip), f"{clip}.mp4")
    assert (info.frames, info.width, info.height, info.codec) == (frames, *size, "h264")
    assert info.seconds == pytest.approx(seconds, abs=1e-3)
    assert info.fps == pytest.approx(fps)


def test_bigbuckbunny_with_its_audio_track_is_a_video():
    """A clip with sound is a video: only the video stream counts."""
    with av.open(str(videos.shipped_clip("bigbuckbunny"))) as container:
        assert {stream.type for stream in container.streams} == {"video", "audio"}
    assert check_video_file(videos.shipped_clip("bigbuckbunny"), "bbb.mp4").frames == 132


# --- bad files, each refused by name ---------------------------------------------------
BAD_FILES = [
    (videos.corrupt_mp4, "broken.mp4", "is corrupt or truncated"),
    (videos.zero_frame_file, "empty-track.mp4", "has no frames"),
    (videos.audio_only_file, "song.mp4", "has no video stream: it holds only audio"),
    (videos.long_clip_header, "four-hours.mp4", "is too long: 4:00:00; the limit is 10:00"),
    (videos.not_a_video, "notes.mp4", "is not a video"),
]


@pytest.mark.parametrize(("build", "name", "reason"), BAD_FILES)
def test_bad_files_are_refused_by_name_without_server_paths(tmp_path, build, name, reason):
    path = build(tmp_path / name)
    with pytest.raises(VideoProblem) as refused:
        check_video_file(path, name)
    message = str(refused.value)
    assert message.startswith(f"Video {name!r} ") and reason in message
    assert str(tmp_path) not in message


def test_a_four_hour_clip_is_refused_from_its_header_before_any_frame_decodes(
    tmp_path, monkeypatch
):
    path = videos.long_clip_header(tmp_path / "long.mp4")
    assert path.stat().st_size < 10_000

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a clip its header already refuses")

    monkeypatch.setattr(video, "_decoded", no_decoding)
    with pytest.raises(VideoProblem, match="too long: 4:00:00"):
        check_video_file(path, "long.mp4")


def test_a_truncated_webm_is_refused_although_ffmpeg_decodes_what_is_left(tmp_path):
    whole = videos.synthetic_clip(tmp_path / "whole.webm", motion="right", frames=48)
    data = whole.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoProblem, match=r"'cut.webm' is truncated or corrupt: its header says"):
        check_video_file(cut, "cut.webm")
    assert check_video_file(whole, "whole.webm").frames == 48


def test_garbage_in_the_middle_of_a_real_clip_is_refused(tmp_path):
    data = bytearray(videos.shipped_clip("bikes").read_bytes())
    middle = len(data) // 3
    data[middle : middle + 20_000] = np.random.default_rng(0).bytes(20_000)
    path = tmp_path / "bikes.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(
        VideoProblem, match=r"'bikes.mp4' is corrupt or truncated: decoding stopped"
    ):
        check_video_file(path, "bikes.mp4")


def test_an_image_renamed_mp4_is_refused(tmp_path):
    path = tmp_path / "photo.mp4"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path, format="PNG")
    with pytest.raises(VideoProblem, match="'photo.mp4' is not a video file: FFmpeg reads it as"):
        check_video_file(path, "photo.mp4")
    with pytest.raises(VideoProblem, match="'photo.mp4' is not a video file"):
        sniff_video_head(path.read_bytes()[:64], "photo.mp4")


# --- caps ------------------------------------------------------------------------------
def test_resolution_cap_from_the_header(tmp_path):
    path = videos.synthetic_clip(tmp_path / "wide.mp4", size=(128, 64))
    with pytest.raises(
        VideoProblem, match=r"too large: 128 x 64 pixels per frame; the limit is 4,096"
    ):
        check_video_file(path, "wide.mp4", limits=VideoLimits(max_pixels=64 * 64))


def test_frame_cap_from_the_header_and_while_decoding(tmp_path):
    mp4 = videos.synthetic_clip(tmp_path / "c.mp4", frames=16)
    with pytest.raises(VideoProblem, match="too many frames: 16; the limit is 10"):
        check_video_file(mp4, "c.mp4", limits=VideoLimits(max_frames=10))
    # WebM keeps no frame count: decoding stops at the cap.
    webm = videos.synthetic_clip(tmp_path / "c.webm", frames=16)
    with pytest.raises(VideoProblem, match="too many frames: more than 10"):
        check_video_file(webm, "c.webm", limits=VideoLimits(max_frames=10))
    assert check_video_file(webm, "c.webm", limits=VideoLimits(max_frames=16)).frames == 16


def test_duration_cap(tmp_path):
    path = videos.synthetic_clip(tmp_path / "c.webm", frames=40, fps=8)  # 5 s
    with pytest.raises(VideoProblem, match=r"too long: 0:05; the limit is 0:04"):
        check_video_file(path, "c.webm", limits=VideoLimits(max_seconds=4))


# --- sniffing --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", sorted(video.VIDEO_SUFFIXES))
def test_every_container_written_sniffs_and_checks(tmp_path, suffix):
    path = videos.synthetic_clip(tmp_path / f"clip{suffix}", frames=8)
    sniff_video_head(path.read_bytes()[: video.SNIFF_BYTES], path.name)
    assert check_video_file(path, path.name).frames == 8


def test_sniffing_refuses_text_at_once():
    with pytest.raises(VideoProblem, match=r"'a.mp4' is not a video file \(it looks like text\)"):
        sniff_video_head(b"id,label\n1,cat\n", "a.mp4")
    with pytest.raises(VideoProblem, match="'b.webm' is not a video file: it does not start"):
        sniff_video_head(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "b.webm")
    with pytest.raises(VideoProblem):
        sniff_video_head(b"", "empty.mp4")


# --- frame sampling --------------------------------------------------------------------
def test_spread_takes_the_middle_of_equal_stretches():
    assert FrameSampling(frames=4).frame_indices(100, 25) == [12, 37, 62, 87]
    assert FrameSampling(frames=1).frame_indices(9, 25) == [4]
    # A short clip repeats frames: 3 frames sampled 8 times.
    assert FrameSampling(frames=8).frame_indices(3, 25) == [0, 0, 0, 1, 1, 2, 2, 2]


def test_fixed_rate_and_its_cap():
    two_per_second = FrameSampling(frames=32, fps=2)
    # 4 s at 25 fps: one frame every 12.5 frames, from the start.
    assert two_per_second.frame_indices(100, 25) == [0, 12, 25, 37, 50, 62, 75, 87]
    # A 0.2 s clip still gives a frame.
    assert two_per_second.frame_indices(5, 25) == [0]
    # 60 s would give 120 frames: the cap spreads 32 over the whole clip instead.
    capped = two_per_second.frame_indices(1500, 25)
    assert len(capped) == 32 and capped == FrameSampling(frames=32).frame_indices(1500, 25)
    # Faster than the clip's own rate repeats frames.
    assert FrameSampling(frames=8, fps=20).frame_indices(4, 10) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_video_models_get_exactly_their_frame_count():
    assert FrameSampling(frames=8).frame_indices(100, 25, clip_frames=4) == [12, 37, 62, 87]
    around_middle = FrameSampling(fps=5).frame_indices(100, 25, clip_frames=4)
    assert around_middle == [42, 47, 52, 57]  # 5 frames apart, centred on frame 50
    # A clip too short for 16 instants 1/5 s apart clamps to its first and last frames.
    short = FrameSampling(fps=5).frame_indices(20, 25, clip_frames=16)
    assert len(short) == 16 and short[0] == 0 and short[-1] == 19 and short == sorted(short)


def test_sample_frames_returns_the_frames_it_says(tmp_path):
    for suffix in (".mp4", ".webm"):  # MP4 counts frames in its index, WebM by its packets
        path = numbered_clip(tmp_path / f"n{suffix}", frames=20, fps=10)
        images = sample_frames(path, path.name, FrameSampling(frames=4))
        assert frame_numbers(images) == [2, 7, 12, 17]
        assert all(image.mode == "RGB" and image.size == (48, 32) for image in images)
        images = sample_frames(path, path.name, FrameSampling(frames=8, fps=4))
        assert frame_numbers(images) == [0, 2, 5, 7, 10, 12, 15, 17]
        short = sample_frames(path, path.name, FrameSampling(frames=30))
        assert len(short) == 30 and sorted(set(frame_numbers(short))) == list(range(20))


def test_sampling_a_real_clip(tmp_path):
    clip = videos.shipped_clip("carphone_pristine")  # 120 frames at 29.97 fps: 4.004 s
    images = sample_frames(clip, "carphone.mp4", FrameSampling(fps=2, frames=32))
    assert len(images) == 9 and images[0].size == (176, 144)  # at 0, 0.5, ... 4.0 s
    reference = []
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 14:  # the frame on screen at 0.5 s (frame 15 starts at 0.5005 s)
                reference = np.asarray(frame.to_image())
                break
    np.testing.assert_array_equal(np.asarray(images[1]), reference)


def test_a_header_with_a_wrong_frame_count_still_gives_frames_of_the_clip(tmp_path, monkeypatch):
    path = numbered_clip(tmp_path / "n.webm", frames=20)
    monkeypatch.setattr(video, "_count_packets", lambda *args: 40)  # as if it said 40
    images = sample_frames(path, "n.webm", FrameSampling(frames=4))
    numbers = frame_numbers(images)
    assert len(numbers) == 4 and numbers == sorted(numbers) and max(numbers) < 20


def test_portrait_phone_clips_come_out_upright(tmp_path):
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)  # stored on its side, as phones do
        for index in range(4):
            picture = np.zeros((32, 64, 3), np.uint8)
            picture[:, :16] = 255  # the left quarter as stored: the top once upright
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = check_video_file(path, "phone.mp4")
    assert (info.width, info.height) == (32, 64)
    (image,) = sample_frames(path, "phone.mp4", FrameSampling(frames=1))
    pixels = np.asarray(image, dtype=float)
    assert image.size == (32, 64)
    assert pixels[:12].mean() > 200 and pixels[20:].mean() < 30


def test_frame_sampling_text_and_records():
    assert FrameSampling.parse("8") == FrameSampling(frames=8) == FrameSampling.parse("frames=8")
    assert FrameSampling.parse("fps=2") == FrameSampling(fps=2.0)
    assert FrameSampling.parse(" FPS=2.5 , max=32 ") == FrameSampling(frames=32, fps=2.5)
    assert FrameSampling(frames=8).label() == "8 frames spread evenly over each clip"
    assert FrameSampling(frames=32, fps=2).label() == "2 frames per second, at most 32"
    for sampling in (FrameSampling(), FrameSampling(frames=16, fps=0.5)):
        assert FrameSampling.from_description(sampling.describe()) == sampling
    assert FrameSampling(frames=32, fps=2).describe() == {"fps": 2.0, "frames": 32}
    for nonsense in ("", "eight", "fps=", "fps=2,max=", "frames=8,fps=2", "-3", "fps=-1"):
        with pytest.raises(VideoProblem, match="is not understood"):
            FrameSampling.parse(nonsense)
    for out_of_range in ("0", "frames=1000", "fps=0", "fps=1000"):
        with pytest.raises(VideoProblem, match="Frame sampling: "):
            FrameSampling.parse(out_of_range)
    with pytest.raises(VideoProblem, match="unknown keys: rate"):
        FrameSampling.from_description({"rate": 2})


# --- posters and writing ---------------------------------------------------------------
def test_poster_is_a_small_jpeg_of_the_frame_a_third_in(tmp_path):
    path = numbered_clip(tmp_path / "n.webm", frames=21, size=(480, 240))
    data = poster_jpeg(path, "n.webm", max_side=120)
    poster = Image.open(io.BytesIO(data))
    assert poster.format == "JPEG" and poster.size == (120, 60)
    assert frame_numbers([poster.convert("RGB")]) == [7]
    real = Image.open(io.BytesIO(poster_jpeg(videos.shipped_clip("bikes"), "bikes.mp4")))
    assert max(real.size) == 320


def test_cut_segment_keeps_the_frames_of_its_interval(tmp_path):
    source = numbered_clip(tmp_path / "n.mp4", frames=24, fps=8, size=(96, 64))  # 3 s
    info = cut_segment(source, tmp_path / "part.webm", start_seconds=1.0, seconds=1.5, max_side=48)
    assert (info.frames, info.fps, info.codec, info.width, info.height) == (12, 8.0, "vp9", 48, 32)
    assert info.seconds == pytest.approx(1.5)
    every = sample_frames(tmp_path / "part.webm", "part.webm", FrameSampling(frames=12))
    assert frame_numbers(every) == list(range(8, 20))
    with pytest.raises(VideoProblem, match="has no frames between 5 s and 6 s"):
        cut_segment(source, tmp_path / "none.webm", start_seconds=5, seconds=1)
    assert not (tmp_path / "none.webm").exists()


def test_cut_segment_of_a_real_clip_matches_the_source(tmp_path):
    info = cut_segment(
        videos.shipped_clip("bikes"), tmp_path / "bikes.mp4", start_seconds=2.0, seconds=1.0
    )
    assert (info.frames, info.codec, info.width, info.height) == (25, "h264", 640, 272)
    with av.open(str(videos.shipped_clip("bikes"))) as container:
        source = next(
            frame.to_ndarray(format="rgb24")
            for index, frame in enumerate(container.decode(video=0))
            if index == 50
        )
    (first,) = sample_frames(tmp_path / "bikes.mp4", "b", FrameSampling(frames=1, fps=1))
    assert np.abs(np.asarray(first, dtype=float) - source).mean() < 4  # one lossy re-encode


def test_write_clip_refuses_what_it_cannot_write(tmp_path):
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match="every frame must be"):
        write_clip(tmp_path / "a.webm", frames, fps=8)
    assert not (tmp_path / "a.webm").exists()
    with pytest.raises(ValueError, match="No frames"):
        write_clip(tmp_path / "b.webm", [], fps=8)
    with pytest.raises(ValueError, match="use one of"):
        write_clip(tmp_path / "c.gif", frames[:1], fps=8)
    # Odd sides lose their last row and column (yuv420p).
    write_clip(tmp_path / "odd.mp4", [np.zeros((15, 17, 3), np.uint8)] * 2, fps=Fraction(25, 2))
    info = check_video_file(tmp_path / "odd.mp4", "odd.mp4")
    assert (info.width, info.height, info.fps) == (16, 14, 12.5)


def test_labelled_segments_of_the_shipped_clips(tmp_path):
    archive = videos.cut_labelled_segments(tmp_path, per_clip=2, seconds=1.0, max_side=64)
    with zipfile.ZipFile(archive) as bundle:
        names = sorted(bundle.namelist())
        assert names == [
            f"{clip}/{clip}-{index}.webm" for clip in sorted(videos.SHIPPED) for index in (0, 1)
        ]
        bundle.extractall(tmp_path / "out")
    for name in names:
        info = check_video_file(tmp_path / "out" / name, name)
        assert info.codec == "vp9" and max(info.width, info.height) == 64
        assert info.seconds == pytest.approx(1.0, abs=0.04)
