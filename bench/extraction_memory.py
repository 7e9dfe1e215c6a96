"""Peak memory of extraction stays flat as the dataset grows (embeddings stream to disk).

Issue 3's figure: peak memory grows by less than 10% from 1k to 20k stimuli. Each size runs
in a fresh subprocess (so the peaks do not mix) extracting a small timm model over that many
images; the peak resident set size of the child is read from the kernel.

    .venv/bin/python bench/extraction_memory.py [--small 1000] [--large 20000] [--model test_vit]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
from pathlib import Path
from evaluation.engine.adapters import load_adapter
from evaluation.engine.extraction import extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput
folder, count, model = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
paths = sorted(folder.glob("*.png"))[:count]
adapter = load_adapter(ModelSpec(source="timm", identifier=model, weights="untrained"))
out = folder / f"out-{count}.npy"
extract_layers(adapter, [StimulusInput(path=str(p)) for p in paths], out_paths={"pre_logits": out},
               batch_size=64, chunk_size=1024)
print(json.dumps({"count": count, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{index:06d}.png"
        )


def peak(folder: Path, count: int, model: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(count), model],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kb"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--model", default="test_vit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_images(folder, args.large)
        small, large = peak(folder, args.small, args.model), peak(folder, args.large, args.model)
    print(
        f"{args.model}: peak RSS {small / 1024:.0f} MB for {args.small} images, "
        f"{large / 1024:.0f} MB for {args.large} images: growth {100 * (large / small - 1):+.1f}% "
        f"(target < 10%)"
    )


if __name__ == "__main__":
    main()
