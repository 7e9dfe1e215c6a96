"""Peak memory and time of importing a zip bomb under the unpacked-size limit.

Issue 16's figure (item 4): a 2 MB zip holding one 2,000 MiB member of zeros cost the web
process 4.8 GB before it was refused, because the member was read whole into memory. The
importer now unpacks members a chunk at a time against a running budget and refuses a member
whose first bytes are no image; peak memory should stay flat (the test suite asserts under
300 MB for 512 MiB). Baseline, in the same run: the old read-whole importer, reimplemented
below as it was (archive.read, Pillow on the bytes, write_bytes, hash of the bytes).

Two members, each imported in a fresh subprocess (peaks read from the kernel's VmHWM):
  zeros   the issue's case: 2,000 MiB of zeros named cat/zeros.png (refused);
  padded  a real PNG followed by 2,000 MiB of zeros (Pillow reads the image and ignores the
          rest, so it is imported: the streaming path, written to disk, not refused early).

    .venv/bin/python bench/zip_memory.py [--size-mib 2000] [--cases zeros padded]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MiB = 1 << 20
LIMIT = 2 << 30  # DATASET_UNZIPPED_MAX_BYTES's default: the member is under it

CHILD = r"""
import hashlib, io, json, sys, time, zipfile
from pathlib import Path
archive_path, staging, approach = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
limit = int(sys.argv[4])
staging.mkdir()
from PIL import Image
from evaluation.imports.reading import ImportProblem, parse_image_zip


def old_import(upload):
    # The importer before the fix (evaluation/importers.py at c8080bc), minus path checks.
    with zipfile.ZipFile(upload) as archive:
        for order, info in enumerate(archive.infolist()):
            data = archive.read(info)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.verify()
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
            except Exception as exc:
                raise ImportProblem(f"The image {info.filename!r} is corrupt: {exc}") from None
            (staging / f"{order:06d}.png").write_bytes(data)
            hashlib.sha256(data).hexdigest()


start = time.perf_counter()
try:
    with open(archive_path, "rb") as upload:
        if approach == "before":
            old_import(upload)
        else:
            parse_image_zip(upload, staging=staging, max_unzipped_bytes=limit, max_members=10)
    outcome = "imported"
except ImportProblem:
    outcome = "refused"
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
peak_kib = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mib": peak_kib / 1024}))
"""


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    return buffer.getvalue()


def write_zip(path: Path, member: str, size_mib: int, head: bytes) -> None:
    block = bytes(MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(member, "w") as out:
            out.write(head)
            for _ in range(size_mib):
                out.write(block)


def measure(archive: Path, folder: Path, approach: str) -> dict[str, float | str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(archive),
            str(folder / f"staging-{approach}"),
            approach,
            str(LIMIT),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=2000)
    parser.add_argument(
        "--cases", nargs="+", choices=("zeros", "padded"), default=["zeros", "padded"]
    )
    args = parser.parse_args()
    heads = {"zeros": b"", "padded": png_bytes()}
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix="zip-memory-") as tmp:
            folder = Path(tmp)
            archive = folder / f"{case}.zip"
            write_zip(archive, f"cat/{case}.png", args.size_mib, heads[case])
            zipped_mb = archive.stat().st_size / 1e6
            before = measure(archive, folder, "before")
            after = measure(archive, folder, "after")
        print(f"{case}: one {args.size_mib:,} MiB member in a {zipped_mb:.1f} MB zip")
        for label, row in (("before (read whole)", before), ("after (streamed)", after)):
            print(
                f"  {label:<20} {row['outcome']:<9} peak {row['peak_mib']:8.0f} MiB  "
                f"{row['seconds']:7.2f} s"
            )
        print(
            f"  ratio before/after: peak memory {before['peak_mib'] / after['peak_mib']:.1f}x, "
            f"time {before['seconds'] / after['seconds']:.1f}x"
        )


if __name__ == "__main__":
    main()
