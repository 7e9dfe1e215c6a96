"""Importing embeddings computed elsewhere: a 100,000 x 768 float32 .npy with an ids file, rows
shuffled (issue 18's figure: seconds and peak memory).

The import runs in a fresh process (as a request or ``manage.py import_embeddings`` would),
on the embedded SQLite default in a temporary folder; its peak resident memory is the kernel's high-water
mark for it (VmHWM; ru_maxrss would carry the parent's over from the fork). Baseline, in the same run: the naive import (``np.load`` the whole
file, reorder it in memory, ``np.save``), also in a fresh process. Both check every value is
finite and write float32 rows in the dataset's order.

    .venv/bin/python bench/embeddings_import.py [--rows 100000] [--dims 768]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def setup_django(tmp: str) -> None:
    os.environ.update({"LIKENESS_VAR_DIR": tmp, "DEBUG": "1", "HF_HUB_OFFLINE": "1"})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT", "EMBEDDINGS_ROOT"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(REPO))
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    import django

    django.setup()


def prepare(tmp: str, rows: int, dims: int) -> tuple[Path, Path]:
    """A text dataset of ``rows`` stimuli, and a shuffled float32 file with its ids."""
    import numpy as np
    from django.core.management import call_command

    from evaluation.imports.stimuli import dataset_import_texts

    call_command("migrate", verbosity=0)
    csv = "text\n" + "".join(f"sentence number {k}\n" for k in range(rows))
    dataset_import_texts(name="big", upload=io.BytesIO(csv.encode()), label_column="")
    rng = np.random.default_rng(0)
    order = rng.permutation(rows)
    vectors = Path(tmp) / "vectors.npy"
    out = np.lib.format.open_memmap(vectors, mode="w+", dtype=np.float32, shape=(rows, dims))
    for start in range(0, rows, 10_000):
        out[start : start + 10_000] = rng.standard_normal((min(10_000, rows - start), dims))
    out.flush()
    del out
    names = Path(tmp) / "ids.txt"
    names.write_text("".join(f"sentence number {k}\n" for k in order))
    return vectors, names


# Both children measure the same way: from the moment their work starts, the peak of their
# anonymous memory (sampled every 2 ms) and the kernel's resident high-water mark.
MEASURE_START = """
import sys, threading, time
def status(key):
    return int([l.split()[1] for l in open("/proc/self/status") if l.startswith(key)][0])
peak_anon, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.002)
"""
MEASURE_RUN = """
before = status("RssAnon")
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
"""
MEASURE_END = """
seconds = time.perf_counter() - started
done.set(); time.sleep(0.01)
print(seconds, status("VmHWM"), max(peak_anon[0], status("RssAnon")) - before)
"""

CHILD_IMPORT = (
    MEASURE_START
    + """
sys.path.insert(0, sys.argv[1])
from bench.embeddings_import import setup_django
setup_django(sys.argv[2])
from django.core.files import File
from evaluation.imports.embeddings import embeddings_import
from evaluation.models import Dataset
dataset = Dataset.objects.get(name="big")
"""
    + MEASURE_RUN
    + """
with open(sys.argv[3], "rb") as handle, open(sys.argv[4], "rb") as ids:
    upload = File(handle, name=sys.argv[3])
    model = embeddings_import(name="imported", dataset=dataset, file=upload, ids_file=ids)
"""
    + MEASURE_END
)

CHILD_NAIVE = (
    MEASURE_START
    + """
import numpy as np
"""
    + MEASURE_RUN
    + """
vectors = np.load(sys.argv[1])                         # the whole file in memory
ids = open(sys.argv[2]).read().split("\\n")[:-1]
position = {name: k for k, name in enumerate(ids)}
order = [position[f"sentence number {k}"] for k in range(len(ids))]
ordered = vectors[order]                                # a second copy, reordered
assert np.isfinite(ordered).all()
np.save(sys.argv[3], ordered.astype(np.float32))
"""
    + MEASURE_END
)


def child(code: str, *args: str) -> tuple[float, float, float]:
    """Seconds, the process's peak resident memory (MiB, file pages included) and the peak
    of its anonymous memory (heap, arrays) above what it held before the work, sampled
    every 2 ms: file pages read through a memory map are the kernel's page cache, which it
    drops under pressure, not memory the import holds."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    seconds, peak_kib, added_kib = done.stdout.split()[-3:]
    return float(seconds), int(peak_kib) / 1024, int(added_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=768)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="likeness-bench-")
    setup_django(tmp)
    vectors, ids = prepare(tmp, args.rows, args.dims)
    size = vectors.stat().st_size / 1e6
    print(f"{args.rows:,} x {args.dims} float32 ({size:.0f} MB), rows shuffled, ids file")
    seconds, peak, added = child(CHILD_IMPORT, str(REPO), tmp, str(vectors), str(ids))
    naive = child(CHILD_NAIVE, str(vectors), str(ids), str(Path(tmp) / "n.npy"))
    for label, (s, p, a) in (("import_embeddings", (seconds, peak, added)), ("naive", naive)):
        print(f"  {label:18} {s:6.1f} s   heap added {a:6.0f} MiB   (peak resident {p:6.0f} MiB)")
    print(
        f"  ratio naive/import_embeddings: heap added {naive[2] / max(added, 1):.1f}x, "
        f"time {naive[0] / seconds:.2f}x"
    )
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "added_mib": added,
                      "naive": naive}))  # fmt: skip


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(bench took {time.perf_counter() - started:.0f} s)")
