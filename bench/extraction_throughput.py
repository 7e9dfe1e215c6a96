"""Extraction throughput of a timm model over a folder of images: Likeness's extraction
(DataLoader, hooks, chunked writes to disk) against a bare hand-written torch loop doing
the same decode, preprocessing and forward pass, and against thingsvision (in its own
virtualenv, made on first use by bench/thingsvision_venv.sh: about 7 GB and 2 minutes).

Issue 3's figures: at least 0.9x the bare loop in fp32 with the same memory layout; with
bf16 autocast on a CPU that supports it (AMX / AVX512-BF16), at least 3x thingsvision's
throughput, decoding overlapped with compute by a DataLoader worker, and embeddings
agreeing with fp32 (mean cosine at least 0.999). Weights are random (no hub is reachable);
throughput does not depend on them.

    .venv/bin/python bench/extraction_throughput.py [--model resnet50] [--images 512]
        [--batch 64] [--workers 1] [--no-thingsvision]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from evaluation.engine.adapters import load_adapter
from evaluation.engine.extraction import extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput


def make_images(folder: Path, count: int) -> list[Path]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two real photographs shipped with scikit-learn
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - 224), rng.integers(0, photo.shape[1] - 224)
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(photo[top : top + 224, left : left + 224]).save(path, quality=90)
        paths.append(path)
    return paths


def bare_loop(model_name: str, paths: list[Path], batch_size: int) -> tuple[float, np.ndarray]:
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    started = time.perf_counter()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack(
                [transform(Image.open(p).convert("RGB")) for p in paths[start : start + batch_size]]
            )
            outputs.append(
                model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
            )
    return time.perf_counter() - started, np.concatenate(outputs)


def likeness(
    model_name: str,
    paths: list[Path],
    batch_size: int,
    workers: int,
    precision: str,
    folder: Path,
    channels_last: str = "auto",
) -> tuple[float, np.ndarray]:
    adapter = load_adapter(
        ModelSpec(source="timm", identifier=model_name, weights="untrained"),
        precision=precision,
        channels_last=channels_last,
    )
    out = folder / f"{precision}-{time.monotonic_ns()}.npy"
    started = time.perf_counter()
    extract_layers(
        adapter,
        [StimulusInput(path=str(p)) for p in paths],
        out_paths={"pre_logits": out},
        batch_size=batch_size,
        num_workers=workers,
    )
    return time.perf_counter() - started, np.load(out)


def thingsvision(model_name: str, folder: Path, batch_size: int, repeats: int) -> float | None:
    """Best seconds of ``repeats`` thingsvision runs in its own virtualenv (made on demand)."""
    root = Path(__file__).resolve().parent.parent
    made = subprocess.run(
        ["bash", str(root / "bench/thingsvision_venv.sh")], capture_output=True, text=True
    )
    if made.returncode != 0:
        print("thingsvision: its virtualenv could not be made:", made.stderr[-500:])
        return None
    python = made.stdout.strip().splitlines()[-1]
    best = None
    for repeat in range(repeats):
        out = folder / f"thingsvision-{repeat}.json"
        subprocess.run(
            [
                python,
                str(root / "bench/thingsvision_worker.py"),
                "--images",
                str(folder),
                "--model",
                model_name,
                "--batch",
                str(batch_size),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        seconds = json.loads(out.read_text())["seconds"]
        best = seconds if best is None else min(best, seconds)
    return best


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decode workers")
    parser.add_argument("--no-thingsvision", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = folder / "images"
        images.mkdir()
        paths = make_images(images, args.images)
        n = args.images
        print(
            f"{args.model}, {n} images, batch {args.batch}, {torch.get_num_threads()} threads,"
            f" {args.workers} decode worker(s); img/s, and ratio against the named baseline"
        )
        bare_s, bare = bare_loop(args.model, paths, args.batch)
        print(f"bare torch loop, fp32              {n / bare_s:7.1f}")
        plain_s, plain = likeness(args.model, paths, args.batch, 0, "fp32", folder, "off")
        print(
            f"likeness fp32 (same layout, 0 wkr) {n / plain_s:7.1f}   {bare_s / plain_s:5.2f}x bare"
            f" (target >= 0.9)   max |diff| {np.abs(bare - plain).max():.1e}"
        )
        fp32_s, fp32 = likeness(args.model, paths, args.batch, args.workers, "fp32", folder)
        print(
            f"likeness fp32 (channels-last auto) {n / fp32_s:7.1f}   {bare_s / fp32_s:5.2f}x bare"
        )
        bf16_s, bf16 = likeness(args.model, paths, args.batch, args.workers, "bf16", folder)
        print(
            f"likeness bf16 (channels-last auto) {n / bf16_s:7.1f}   {bare_s / bf16_s:5.2f}x bare"
            f"   mean cosine to fp32 {cosine(bf16, fp32):.5f} (target >= 0.999)"
        )
        if args.no_thingsvision:
            return
        things_s = thingsvision(args.model, images, args.batch, repeats=2)
        if things_s is not None:
            print(f"thingsvision fp32 (best of 2)      {n / things_s:7.1f}")
            print(f"  likeness fp32 / thingsvision     {things_s / fp32_s:5.2f}x")
            print(f"  likeness bf16 / thingsvision     {things_s / bf16_s:5.2f}x (target >= 3)")


if __name__ == "__main__":
    main()
