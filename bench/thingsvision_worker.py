"""thingsvision's feature-extraction throughput on a timm model over a folder of images.

The baseline of issue 3's figure: Likeness's bf16 extraction must reach at least 3x the
throughput measured here (Likeness fp32 is compared too). It uses thingsvision the way its
users do -- get_extractor, its transforms, ImageDataset and DataLoader, extract_features on
the penultimate (global-pool) module -- in its default precision, fp32. Weights are random
(pretrained=False): no hub is reachable, and throughput does not depend on them.

Runs inside the virtualenv made by bench/thingsvision_venv.sh, never in the project's .venv:

    .bench/thingsvision-venv/bin/python bench/thingsvision_worker.py --images DIR
        [--model resnet50] [--module global_pool] [--batch 64] [--workers 0]
        [--device cpu] --out FILE.json

Only extract_features is timed (image decoding and transforms included, model construction
not). --workers 0 uses thingsvision's own DataLoader, which has no workers; more than 0 uses
torch's DataLoader over the same dataset, which extract_features also accepts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import thingsvision
import timm
import torch
from thingsvision import get_extractor
from thingsvision.utils.data import DataLoader, ImageDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of images (no subfolders)")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--module", default="global_pool", help="penultimate module's name")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    torch.manual_seed(0)
    extractor = get_extractor(
        model_name=args.model, source="timm", pretrained=False, device=args.device
    )
    with tempfile.TemporaryDirectory() as order_dir:  # ImageDataset writes file_names.txt
        dataset = ImageDataset(
            root=args.images,
            out_path=order_dir,
            backend=extractor.get_backend(),
            transforms=extractor.get_transformations(),
        )
        if args.workers == 0:
            batches = DataLoader(dataset, batch_size=args.batch, backend=extractor.get_backend())
        else:
            batches = torch.utils.data.DataLoader(
                dataset, batch_size=args.batch, num_workers=args.workers
            )
        started = time.perf_counter()
        features = extractor.extract_features(
            batches=batches, module_name=args.module, flatten_acts=True, output_type="ndarray"
        )
        seconds = time.perf_counter() - started

    width = extractor.model.num_features
    if features.shape != (len(dataset), width):
        raise SystemExit(f"{args.module} gave {features.shape}, not ({len(dataset)}, {width})")
    result = {
        "images": len(dataset),
        "seconds": seconds,
        "images_per_second": len(dataset) / seconds,
        "thingsvision_version": thingsvision.__version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "model": args.model,
        "module": args.module,
        "batch": args.batch,
        "workers": args.workers,
        "device": str(extractor.device),
        "dtype": str(features.dtype),
        "torch_threads": torch.get_num_threads(),
        "feature_shape": list(features.shape),
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
