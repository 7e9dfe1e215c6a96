"""Extraction throughput of a timm model over a folder of images: Likeness's extraction
(DataLoader, hooks, chunked writes to disk) against a bare hand-written torch loop doing
the same decode, preprocessing and forward pass.

Issue 3's figures: at least 0.9x the bare loop in fp32; bf16 autocast where the CPU supports
it, with embeddings agreeing with fp32 (mean cosine at least 0.999). The comparison with
thingsvision (separate virtualenv) is not part of this script yet.

    .venv/bin/python bench/extraction_throughput.py [--model resnet18] [--images 512]
        [--batch 64] [--workers 0]
"""

from __future__ import annotations

import argparse
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
    model_name: str, paths: list[Path], batch_size: int, workers: int, precision: str, folder: Path
) -> tuple[float, np.ndarray]:
    adapter = load_adapter(
        ModelSpec(source="timm", identifier=model_name, weights="untrained"), precision=precision
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder, args.images)
        bare_seconds, bare = bare_loop(args.model, paths, args.batch)
        ours_seconds, ours = likeness(args.model, paths, args.batch, args.workers, "fp32", folder)
        print(
            f"{args.model}, {args.images} images, batch {args.batch}, {torch.get_num_threads()} threads"
        )
        print(f"bare loop fp32   {args.images / bare_seconds:7.1f} img/s")
        print(
            f"likeness  fp32   {args.images / ours_seconds:7.1f} img/s   ratio {bare_seconds / ours_seconds:.2f}x "
            f"(target >= 0.9)   max |diff| {np.abs(bare - ours).max():.1e}"
        )
        bf16_seconds, bf16 = likeness(args.model, paths, args.batch, args.workers, "bf16", folder)
        cosine = (bf16 * ours).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(ours, axis=1)
        print(
            f"likeness  bf16   {args.images / bf16_seconds:7.1f} img/s   ratio {bare_seconds / bf16_seconds:.2f}x "
            f"vs bare fp32   mean cosine to fp32 {cosine.mean():.5f} (target >= 0.999)"
        )


if __name__ == "__main__":
    main()
