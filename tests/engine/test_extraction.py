"""Extraction streams chunks to disk, resumes after a crash, and never leaves a final file
that is incomplete."""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.engine import extraction, storage
from evaluation.engine.adapters import load_adapter
from evaluation.engine.errors import StimulusError, StorageError
from evaluation.engine.extraction import ExtractionCancelled, extract_to_file
from evaluation.engine.specs import ModelSpec, StimulusInput
from tests import small_disk


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))


@pytest.fixture
def images(tmp_path) -> list[StimulusInput]:
    rng = np.random.default_rng(0)
    stimuli = []
    for index in range(50):
        path = tmp_path / f"{index:03d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        stimuli.append(StimulusInput(path=str(path)))
    return stimuli


def test_crash_then_resume_reuses_saved_chunks_and_matches_one_pass(adapter, images, tmp_path):
    one_pass = extract_to_file(
        adapter, images, layer="", out_path=tmp_path / "a.npy", batch_size=8, chunk_size=16
    )

    def crash_after_two_chunks(done: int, total: int) -> bool:
        if done > 32:
            raise RuntimeError("worker killed")
        return True

    out = tmp_path / "b.npy"
    with pytest.raises(RuntimeError, match="worker killed"):
        extract_to_file(
            adapter,
            images,
            layer="",
            out_path=out,
            batch_size=8,
            chunk_size=16,
            progress=crash_after_two_chunks,
        )
    assert not out.exists(), "an interrupted extraction must not leave a final file"
    resumed = extract_to_file(adapter, images, layer="", out_path=out, batch_size=8, chunk_size=16)
    assert resumed.chunks_reused == 2
    np.testing.assert_allclose(np.load(out), np.load(one_pass.path), rtol=1e-5, atol=1e-6)
    assert resumed.count == 50 and not list(tmp_path.glob("b.npy.partial*"))


def test_progress_callback_can_cancel(adapter, images, tmp_path):
    with pytest.raises(ExtractionCancelled):
        extract_to_file(
            adapter,
            images,
            layer="",
            out_path=tmp_path / "c.npy",
            batch_size=8,
            chunk_size=16,
            progress=lambda done, total: False,
        )
    assert not (tmp_path / "c.npy").exists()


def test_corrupt_image_is_named_in_the_error(adapter, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(StimulusError, match="broken.png"):
        extract_to_file(
            adapter,
            [*images[:3], StimulusInput(path=str(broken))],
            layer="",
            out_path=tmp_path / "d.npy",
        )


def test_nan_embeddings_are_refused(images, tmp_path):
    spec = ModelSpec(source="timm", identifier="test_vit", weights="untrained")
    broken = load_adapter(spec)
    broken.embed = lambda batch, layers, pooling: {
        layer: np.full((len(batch), 4), np.nan, dtype=np.float32) for layer in layers
    }
    with pytest.raises(StimulusError, match="NaN or infinite"):
        extract_to_file(broken, images[:4], layer="", out_path=tmp_path / "e.npy")
    assert not (tmp_path / "e.npy").exists()


# --- Storage failures: the disk is full, read-only, over quota or not ours ------------------
# The condition is named (never "a bug"), no partial file is left, and the chunks already
# saved are kept so that a retry after fixing the disk does no forward pass for them.

CHUNK_BYTES = 128 + 16 * 64 * 4  # .npy header + 16 rows of test_vit's 64 float32 values


class _FillingDisk:
    """Stands in for ``open`` in the extraction module: files opened for writing share a
    byte budget, and a write past it stores what fits, then fails with ENOSPC, as write(2)
    does on a full disk."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def open(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        return _BudgetedFile(handle, self) if "w" in mode else handle


class _BudgetedFile:
    def __init__(self, handle, disk: _FillingDisk) -> None:
        self.handle, self.disk = handle, disk

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if len(view) > self.disk.budget:
            self.handle.write(view[: self.disk.budget])
            self.disk.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.budget -= len(view)
        return self.handle.write(view)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def test_disk_full_while_saving_a_chunk_is_named_and_a_retry_reuses_the_saved_chunks(
    adapter, images, tmp_path, monkeypatch
):
    out = tmp_path / "emb" / "f.npy"
    with monkeypatch.context() as patched:
        patched.setattr(
            extraction, "open", _FillingDisk(2 * CHUNK_BYTES + 1000).open, raising=False
        )
        with pytest.raises(StorageError) as failure:
            extract_to_file(adapter, images, layer="", out_path=out, batch_size=8, chunk_size=16)
    message = str(failure.value)
    assert f"No space left on the device holding {out.parent}" in message
    assert re.search(r"[\d.]+ (bytes|[kMGT]B) free, about [\d.]+ kB needed", message), message
    assert "bug" not in message and message.endswith("work already saved is kept.")
    assert leftovers(tmp_path) == [], "the partial chunk must be removed"
    saved = sorted(p.name for p in out.with_name("f.npy.partial-16").iterdir())
    assert saved == ["chunk-000000.npy", "chunk-000001.npy"] and not out.exists()

    resumed = extract_to_file(adapter, images, layer="", out_path=out, batch_size=8, chunk_size=16)
    one_pass = extract_to_file(
        adapter, images, layer="", out_path=tmp_path / "g.npy", batch_size=8, chunk_size=16
    )
    assert resumed.chunks_reused == 2
    np.testing.assert_allclose(np.load(out), np.load(one_pass.path), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("code", "named"),
    [
        (errno.EACCES, "Permission denied on {path}"),
        (errno.EPERM, "Operation not permitted on {path}"),
        (errno.EROFS, "read-only file system"),
        (errno.EDQUOT, "Disk quota exceeded on the device holding {folder}"),
    ],
)
@pytest.mark.parametrize("step", ["create the folder", "save a chunk"])
def test_a_folder_the_worker_cannot_write_is_named(
    adapter, images, tmp_path, monkeypatch, code, named, step
):
    out = tmp_path / "emb" / "ab" / "h.npy"
    refused = out.parent if step == "create the folder" else out.with_name("h.npy.partial-16")

    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    with monkeypatch.context() as patched:
        if step == "create the folder":
            real_mkdir = os.mkdir
            patched.setattr(
                os,
                "mkdir",
                lambda path, *a, **k: (
                    refuse(path) if Path(path) == refused else real_mkdir(path, *a, **k)
                ),
            )
        else:
            patched.setattr(extraction, "open", refuse, raising=False)
        with pytest.raises(StorageError) as failure:
            extract_to_file(adapter, images[:20], layer="", out_path=out, chunk_size=16)
    message = str(failure.value)
    path = refused / "chunk-000000.npy.tmp" if step == "save a chunk" else refused
    assert named.format(path=path, folder=tmp_path / "emb" / "ab") in message, message
    assert "bug" not in message and leftovers(tmp_path) == []


def test_numpys_short_write_message_is_a_full_disk_only_when_the_disk_is_full(
    tmp_path, monkeypatch
):
    # np.save to a real file writes with fwrite and reports a short write without errno.
    short = OSError("65536 requested and 62432 written")
    monkeypatch.setattr(storage, "free_bytes", lambda path: 4096)
    named = storage.storage_error(short, path=tmp_path / "x.npy", needed=65536)
    assert named is not None and "No space left on the device holding" in str(named)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 10**12)
    assert storage.storage_error(short, path=tmp_path / "x.npy", needed=65536) is None


def outcome_in_child(work: Callable[[], object]) -> str:
    """Run ``work`` in a forked process: a SIGBUS there must fail the test, not kill pytest."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def target() -> None:
        try:
            work()
            send.send("ok")
        except BaseException as exc:  # reported to the parent as text
            send.send(f"{type(exc).__name__}: {exc}")

    child = context.Process(target=target)
    child.start()
    child.join(120)
    if child.exitcode is None:
        child.kill()
        pytest.fail("the extraction hung")
    if child.exitcode < 0:
        return f"killed by {signal.Signals(-child.exitcode).name}"
    return receive.recv()


@pytest.mark.parametrize("free_space_check", ["honest", "beaten by another writer"])
def test_a_disk_too_small_for_the_joined_file_fails_cleanly_not_with_sigbus(
    adapter, tmp_path, monkeypatch, free_space_check
):
    """Four saved chunks of 64 kB fill most of a 400 kB tmpfs; joining them needs 256 kB
    more. Memory-mapping the joined file there dies with SIGBUS; it must fail with the
    reason instead, whether the free-space check sees it coming or another writer takes
    the space after the check."""
    with small_disk.small_tmpfs(tmp_path / "disk", size=400 * 1024) as disk:
        out = disk / "j.npy"
        work_dir = disk / "j.npy.partial-16"
        work_dir.mkdir()
        rng = np.random.default_rng(0)
        chunks = [rng.normal(size=(16, 1024)).astype(np.float32) for _ in range(4)]
        for index, chunk in enumerate(chunks):
            np.save(work_dir / f"chunk-{index:06d}.npy", chunk)
        stimuli = [StimulusInput(path=f"{index}.png") for index in range(64)]
        if free_space_check != "honest":
            monkeypatch.setattr(storage, "free_bytes", lambda path: 10**12)

        def join() -> object:
            return extract_to_file(adapter, stimuli, layer="", out_path=out, chunk_size=16)

        started = time.monotonic()
        outcome = outcome_in_child(join)
        assert outcome.startswith("StorageError: No space left on the device holding"), outcome
        assert time.monotonic() - started < 30
        assert leftovers(disk) == [] and not out.exists()
        assert len(list(work_dir.iterdir())) == 4, "saved chunks are kept for the retry"

        small_disk.remount(disk, "size=1m")
        monkeypatch.undo()
        resumed = join()
        assert resumed.chunks_reused == 4
        np.testing.assert_array_equal(np.load(out), np.concatenate(chunks))
        assert leftovers(disk) == [] and not work_dir.exists()
