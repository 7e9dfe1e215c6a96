"""A real worker meets a real full or read-only disk: EMBEDDINGS_ROOT is a 1 MB tmpfs,
filled with a ballast file. The step fails at once (not when the stall reaper finds it)
with the condition named, leaves no partial file, and a retry after freeing the disk
finishes the run, reusing the chunks already saved.

Each test prints the time from the disk being full to the step being failed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluation import services
from evaluation.imports.stimuli import dataset_import_images
from evaluation.metrics import knn_entry
from evaluation.models import Run, RunStep
from tests import small_disk
from tests.conftest import make_timm_model
from tests.integration.conftest import WorkerProcess, wait_for
from webapp.demo import digits_zip

pytestmark = pytest.mark.integration

IMAGES = 640  # five chunks of 128 (EXTRACTION_CHUNK_SIZE in worker_env)
PAGE = 4096
# test_vit embeds in 64 float32 values: a chunk file is 128 header bytes + 128 rows, and
# takes 9 pages of tmpfs; the joined file 41.
CHUNK_ON_DISK = 9 * PAGE
JOINED_ON_DISK = 41 * PAGE


@pytest.fixture
def embeddings_disk(isolated_storage, settings) -> Iterator[Path]:
    """EMBEDDINGS_ROOT on a 1 MB tmpfs (set up before the worker, so torn down after it)."""
    with small_disk.small_tmpfs(Path(settings.EMBEDDINGS_ROOT), size=1 << 20) as root:
        yield root


def start_run() -> Run:
    dataset = dataset_import_images(name="digits", upload=io.BytesIO(digits_zip(limit=IMAGES)))
    return services.run_create(
        dataset=dataset, models=[make_timm_model()], metrics=[knn_entry(k=3, split="loo")]
    )


def seconds_from_full_to_failed(step: RunStep, root: Path, worker: WorkerProcess) -> float:
    """Wait for the step to fail; the seconds from the disk being full, that is from the
    last chunk that fitted being saved, to the step being failed (both wall clock)."""

    def failed() -> bool:
        step.refresh_from_db()
        return step.status == "failed"

    wait_for(failed, timeout=180, message=lambda: f"step {step.status!r}:\n{worker.log()}")
    assert step.finished_at is not None
    full_at = max(path.stat().st_mtime for path in root.rglob("*.partial-128/chunk-*.npy"))
    return step.finished_at.timestamp() - full_at


def partial_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


def saved_chunks(root: Path) -> list[str]:
    return sorted(path.name for path in root.rglob("*.partial-128/chunk-*.npy"))


def finish_retry(run: Run, worker: WorkerProcess) -> None:
    assert services.run_retry(run=run) == 1

    def finished() -> bool:
        run.refresh_from_db()
        return run.is_finished

    wait_for(finished, timeout=180, message=worker.log)


def test_disk_full_while_saving_a_chunk_then_read_only_then_retry_finishes(
    embeddings_disk, start_worker
):
    root = embeddings_disk
    ballast = small_disk.fill(root, leave=2 * CHUNK_ON_DISK + 4 * PAGE)  # 2 chunks and a bit
    worker = start_worker("storage@%h")
    run = start_run()
    step = run.steps.get()

    waited = seconds_from_full_to_failed(step, root, worker)
    # This includes embedding the chunk that then did not fit.
    print(f"\nchunk write: last chunk saved -> step failed: {waited:.3f} s")
    assert step.error_message.startswith(
        f"No space left on the device holding EMBEDDINGS_ROOT ({root}): "
    ), step.error_message
    assert re.search(r"free, about [\d.]+ kB needed to save chunk-000002\.npy", step.error_message)
    assert waited < 10, "failed at once, not when the stall reaper found the step"
    assert partial_files(root) == []
    assert saved_chunks(root) == ["chunk-000000.npy", "chunk-000001.npy"]

    ballast.unlink()
    small_disk.remount(root, "ro")
    finish_retry(run, worker)
    step.refresh_from_db()
    assert run.status == "failed"
    assert step.error_message.startswith(
        f"EMBEDDINGS_ROOT ({root}) is on a read-only file system: could not save"
    ), step.error_message

    small_disk.remount(root, "rw")
    finish_retry(run, worker)
    assert run.status == "succeeded", run.error_message
    reused = re.findall(r"resumed its extraction: reused (\d+) saved chunk", worker.log())
    assert reused == ["2"], worker.log()
    assert partial_files(root) == [] and saved_chunks(root) == []


def test_disk_too_small_to_join_the_chunks_fails_at_once_and_retry_finishes(
    embeddings_disk, start_worker
):
    root = embeddings_disk
    # Room for the five chunks, not for the joined file next to them.
    ballast = small_disk.fill(root, leave=5 * CHUNK_ON_DISK + JOINED_ON_DISK // 2)
    worker = start_worker("storage@%h")
    run = start_run()
    step = run.steps.get()

    waited = seconds_from_full_to_failed(step, root, worker)  # the join starts at once
    print(f"\njoin: last chunk saved -> step failed: {waited:.3f} s")
    assert step.error_message.startswith(
        f"No space left on the device holding EMBEDDINGS_ROOT ({root}): "
    ), step.error_message
    assert "needed to join the saved chunks" in step.error_message
    assert waited < 10, "failed at once, not when the stall reaper found the step"
    assert partial_files(root) == [] and len(saved_chunks(root)) == 5
    assert "SIGBUS" not in worker.log() and "exited prematurely" not in worker.log()

    ballast.unlink()
    finish_retry(run, worker)
    assert run.status == "succeeded", run.error_message
    reused = re.findall(r"resumed its extraction: reused (\d+) saved chunk", worker.log())
    assert reused == ["5"], worker.log()
    assert partial_files(root) == [] and saved_chunks(root) == []
