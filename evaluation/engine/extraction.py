"""Batched embedding extraction, streamed to disk in chunks and resumable after a crash.

Each chunk of ``chunk_size`` stimuli is embedded and saved as its own ``.npy`` file
(written to a temporary name, then renamed, so a chunk file on disk is always complete).
A restarted extraction skips the chunks already on disk. When all chunks are there they are
copied into one ``.npy`` file, renamed into place in one step: the final file exists only
when it is whole, which is what the embedding cache relies on.

A disk that is full, read-only, over quota or not writable fails the extraction at once with
a StorageError naming it (evaluation.engine.storage), never leaves a partial file, and keeps
the chunks already saved for the retry. Files are written with ordinary writes, never
through a memory map: writing a map of a file the disk has no room for kills the process
with SIGBUS instead of raising ENOSPC.

Where stimuli and embedding files are kept elsewhere than this machine's disk (an object
store), the caller passes ``remote`` (RemoteFiles): the stimuli of a chunk are fetched before
it is embedded, each chunk saved is also kept there, and a chunk another machine kept there
is fetched instead of embedded again, so a step resumes on any worker.

Video clips are decoded in a pool of threads (PyAV and the image transforms release the
GIL), a few batches ahead of the model, so that decoding does not starve it; batches come
out in order, and a clip that cannot be decoded fails the extraction with its name.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evaluation.engine import storage
from evaluation.engine.adapters.base import Adapter
from evaluation.engine.errors import StimulusError
from evaluation.engine.specs import StimulusInput

# Called with (stimuli done, total); returning False asks the extraction to stop.
ProgressCallback = Callable[[int, int], bool | None]
# Video: batches decoded ahead of the one the model is running (memory: that many batches
# of decoded frames), and decoding threads when the worker sets no number. Threads with
# nothing to do wait: a GPU's model outruns a few decoders, a CPU's does not.
BATCHES_AHEAD = 2
DEFAULT_DECODE_THREADS = min(8, os.cpu_count() or 1)


class ExtractionCancelled(Exception):
    """The progress callback asked the extraction to stop."""


class RemoteFiles(Protocol):
    """The caller's bridge to where the extraction's files are kept when that is not this
    machine's disk (the engine itself knows only the disk)."""

    def fetch_inputs(self, stimuli: Sequence[StimulusInput]) -> None:
        """Make the files of ``stimuli`` readable at their paths."""

    def fetch_chunk(self, path: Path) -> bool:
        """Bring the chunk another machine kept for ``path`` there; False if none was kept."""

    def keep_chunk(self, path: Path) -> None:
        """The chunk at ``path`` is saved: keep it where other machines find it."""


@dataclass(frozen=True)
class ExtractionResult:
    paths: dict[str, Path]  # layer -> final .npy file
    dims: dict[str, int]
    count: int
    seconds: float
    chunks_reused: int

    @property
    def path(self) -> Path:  # the single layer's file, for one-layer extractions
        (only,) = self.paths.values()
        return only


class _StimulusDataset(Dataset):
    def __init__(self, adapter: Adapter, stimuli: Sequence[StimulusInput]) -> None:
        self.adapter = adapter
        self.stimuli = stimuli

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, index: int) -> object:
        return self.adapter.load_input(self.stimuli[index])


def extract_to_file(
    adapter: Adapter,
    stimuli: Sequence[StimulusInput],
    *,
    layer: str,
    out_path: Path,
    **options: Any,
) -> ExtractionResult:
    """Embed ``stimuli`` at one layer into ``out_path`` (float32 .npy, one row each)."""
    layer = adapter.check_layer(layer)
    return extract_layers(adapter, stimuli, out_paths={layer: out_path}, **options)


def extract_layers(
    adapter: Adapter,
    stimuli: Sequence[StimulusInput],
    *,
    out_paths: dict[str, Path],
    pooling: str = "model-default",
    batch_size: int = 64,
    chunk_size: int = 1024,
    num_workers: int = 0,
    progress: ProgressCallback | None = None,
    storage_name: str | None = None,
    remote: RemoteFiles | None = None,
) -> ExtractionResult:
    """Embed ``stimuli`` at every layer of ``out_paths`` in one forward pass per batch.

    ``num_workers``: DataLoader worker processes that decode and preprocess; for video,
    the decoding threads instead (0: one per core, up to 8).
    ``storage_name`` names where the files go in storage errors ("EMBEDDINGS_ROOT (/srv/e)");
    by default each output file's folder. ``remote``: see the module's docstring."""
    started = time.perf_counter()
    layers = [adapter.check_layer(layer) for layer in out_paths]
    total = len(stimuli)
    if total == 0:
        raise StimulusError("The dataset has no stimuli to embed.")
    # The chunk size is in the name: chunks cut at another size must not be mixed in.
    work_dirs = {
        layer: path.with_name(f"{path.name}.partial-{chunk_size}")
        for layer, path in out_paths.items()
    }
    places = {layer: storage_name or str(path.parent) for layer, path in out_paths.items()}
    for layer, work_dir in work_dirs.items():
        with storage.writing(work_dir, place=places[layer], doing=f"create {work_dir}"):
            work_dir.mkdir(parents=True, exist_ok=True)
    chunk_starts = list(range(0, total, chunk_size))
    reused = 0
    adapter.prepare(stimuli)
    try:
        for index, start in enumerate(chunk_starts):
            chunk_files = {layer: work_dirs[layer] / f"chunk-{index:06d}.npy" for layer in layers}
            stop = min(start + chunk_size, total)
            if all(_chunk_saved(file, remote) for file in chunk_files.values()):
                reused += 1
            else:
                if remote is not None:
                    _fetch_inputs(remote, stimuli, start, stop, batch_size, progress, total)
                rows = _embed_chunk(
                    adapter,
                    stimuli[start:stop],
                    layers,
                    pooling,
                    batch_size,
                    num_workers,
                    on_batch=functools.partial(_report_offset, progress, start, total),
                )
                for layer, array in rows.items():
                    _check_finite(array, stimuli, start, layer)
                needed = _bytes_still_needed(rows, total - start, len(chunk_starts) - index, total)
                for layer, array in rows.items():
                    _save_atomically(chunk_files[layer], array, place=places[layer], needed=needed)
                    if remote is not None:
                        remote.keep_chunk(chunk_files[layer])
            _report(progress, stop, total)
    except StimulusError:
        # Bad input fails the same way every time: saved chunks would never be resumed.
        for work_dir in work_dirs.values():
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    dims = _assemble_all(work_dirs, len(chunk_starts), total, out_paths, places)
    for work_dir in work_dirs.values():
        shutil.rmtree(work_dir, ignore_errors=True)
    return ExtractionResult(dict(out_paths), dims, total, time.perf_counter() - started, reused)


def _chunk_saved(path: Path, remote: RemoteFiles | None) -> bool:
    return path.exists() or (remote is not None and remote.fetch_chunk(path))


def _fetch_inputs(
    remote: RemoteFiles,
    stimuli: Sequence[StimulusInput],
    start: int,
    stop: int,
    batch_size: int,
    progress: ProgressCallback | None,
    total: int,
) -> None:
    """Fetch the chunk's stimuli a batch at a time, reporting between batches: the step
    stays alive (and can be cancelled) while a chunk of large clips arrives."""
    for first in range(start, stop, batch_size):
        remote.fetch_inputs(stimuli[first : min(first + batch_size, stop)])
        _report(progress, start, total)


def _embed_chunk(
    adapter: Adapter,
    stimuli: Sequence[StimulusInput],
    layers: Sequence[str],
    pooling: str,
    batch_size: int,
    num_workers: int,
    on_batch: Callable[[int], None],
) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    done = 0
    with torch.inference_mode(), _batches(adapter, stimuli, batch_size, num_workers) as batches:
        for batch in batches:
            vectors = adapter.embed(batch, layers=layers, pooling=pooling)
            for layer in layers:
                parts[layer].append(vectors[layer].astype(np.float32, copy=False))
            done += len(vectors[layers[0]])
            on_batch(done)
    return {layer: np.concatenate(chunks, axis=0) for layer, chunks in parts.items()}


@contextlib.contextmanager
def _batches(
    adapter: Adapter, stimuli: Sequence[StimulusInput], batch_size: int, num_workers: int
) -> Iterator[Iterable[Any]]:
    """The collated batches, in order: video through decoding threads, the rest through a
    DataLoader (worker processes if ``num_workers``)."""
    if adapter.modality == "video":
        threads = num_workers or DEFAULT_DECODE_THREADS
        with contextlib.closing(decoded_ahead(adapter, stimuli, batch_size, threads)) as batches:
            yield batches
        return
    yield DataLoader(
        _StimulusDataset(adapter, stimuli),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=adapter.collate,
        pin_memory=adapter.device.type == "cuda",
    )


def decoded_ahead(
    adapter: Adapter,
    stimuli: Sequence[StimulusInput],
    batch_size: int,
    threads: int,
    *,
    ahead: int = BATCHES_AHEAD,
) -> Generator[Any, None, None]:
    """Collated batches of ``adapter.load_input`` over ``stimuli``, in order, decoded by
    ``threads`` threads up to ``ahead`` batches in front of the one being used (and
    collated in a thread of their own): at most ``ahead + 1`` batches in memory. The first
    stimulus that fails stops it with its error; the work still queued is dropped."""
    pin = adapter.device.type == "cuda"
    starts = iter(range(0, len(stimuli), batch_size))
    decode = ThreadPoolExecutor(threads, thread_name_prefix="likeness-decode")
    assemble = ThreadPoolExecutor(1, thread_name_prefix="likeness-collate")

    def submit(start: int) -> Future[Any]:
        items = [decode.submit(adapter.load_input, s) for s in stimuli[start : start + batch_size]]
        return assemble.submit(_collated, adapter, items, pin)

    queued: deque[Future[Any]] = deque()
    try:
        for start in starts:
            queued.append(submit(start))
            if len(queued) > ahead:
                break
        while queued:
            yield queued.popleft().result()
            # Once the model is done with a batch, its place goes to the next one.
            following = next(starts, None)
            if following is not None:
                queued.append(submit(following))
    finally:
        for future in queued:
            future.cancel()
        decode.shutdown(wait=True, cancel_futures=True)
        assemble.shutdown(wait=True, cancel_futures=True)


def _collated(adapter: Adapter, items: Sequence[Future[Any]], pin: bool) -> Any:
    batch = adapter.collate([item.result() for item in items])
    return _pinned(batch) if pin else batch


def _pinned(batch: Any) -> Any:
    """Page-locked copies of a batch's tensors, so copies to the GPU overlap compute."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if isinstance(batch, dict):
        return {key: _pinned(value) for key, value in batch.items()}
    return batch


def _report_offset(progress: ProgressCallback | None, offset: int, total: int, done: int) -> None:
    _report(progress, offset + done, total)


def _report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None and progress(done, total) is False:
        raise ExtractionCancelled()


def _check_finite(
    rows: np.ndarray, stimuli: Sequence[StimulusInput], offset: int, layer: str
) -> None:
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        names = ", ".join(stimuli[offset + int(i)].name for i in bad[:5])
        raise StimulusError(
            f"The model produced NaN or infinite values at layer {layer!r} for {bad.size} "
            f"stimuli (first: {names}). Try fp32 precision or check the inputs."
        )


def _npy_header(array_or_shape: np.ndarray | tuple[int, int]) -> bytes:
    """The .npy header np.save writes for a float32 array (or one of this shape)."""
    shape = array_or_shape if isinstance(array_or_shape, tuple) else array_or_shape.shape
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": shape})
    return buffer.getvalue()


def _npy_size(rows: int, dim: int) -> int:
    return len(_npy_header((rows, dim))) + rows * dim * 4


def _bytes_still_needed(
    rows: dict[str, np.ndarray], rows_left: int, chunks_left: int, total: int
) -> int:
    """Disk space the extraction still needs from this chunk on: the chunks left to save,
    then the joined files (written while the chunks still exist)."""
    dims = [array.shape[1] for array in rows.values()]
    return sum(
        _npy_size(rows_left, dim)
        + (chunks_left - 1) * len(_npy_header((1, dim)))
        + _npy_size(total, dim)
        for dim in dims
    )


def _write_rows(handle: IO[bytes], array: np.ndarray) -> None:
    # An ordinary write raises ENOSPC with its errno (np.save's fwrite on a real file only
    # says "N requested and M written"); a memory map would die of SIGBUS instead.
    handle.write(np.ascontiguousarray(array, dtype=np.float32).data.cast("B"))


def _save_atomically(path: Path, array: np.ndarray, *, place: str, needed: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    doing = f"save {path.name} of the embeddings"
    with storage.writing(tmp, place=place, doing=doing, needed=needed, partial=tmp, resumable=True):
        with open(tmp, "wb") as handle:
            handle.write(_npy_header(array))
            _write_rows(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def _assemble_all(
    work_dirs: dict[str, Path],
    chunk_count: int,
    total: int,
    out_paths: dict[str, Path],
    places: dict[str, str],
) -> dict[str, int]:
    """Join every layer's chunks, after checking that all the joined files fit: the joined
    sizes are known, and failing before the first byte beats failing at the last layer."""
    dims = {
        layer: int(np.load(work_dir / "chunk-000000.npy", mmap_mode="r").shape[1])
        for layer, work_dir in work_dirs.items()
    }
    needed_on: dict[int, int] = defaultdict(int)  # device -> bytes of the files joined there
    for layer, work_dir in work_dirs.items():
        needed_on[os.stat(work_dir).st_dev] += _npy_size(total, dims[layer])
    for layer, work_dir in work_dirs.items():
        storage.check_free_space(
            work_dir,
            needed_on[os.stat(work_dir).st_dev],
            place=places[layer],
            doing=f"join the saved chunks into {out_paths[layer].name}",
            resumable=True,
        )
    for layer, work_dir in work_dirs.items():
        _assemble(work_dir, chunk_count, total, dims[layer], out_paths[layer], places[layer])
    return dims


def _assemble(
    work_dir: Path, chunk_count: int, total: int, dim: int, out_path: Path, place: str
) -> None:
    """Copy the chunks into one .npy, one chunk in memory at a time."""
    tmp = out_path.with_name(out_path.name + ".tmp")
    doing = f"join the saved chunks into {out_path.name}"
    needed = _npy_size(total, dim)
    with storage.writing(tmp, place=place, doing=doing, needed=needed, partial=tmp, resumable=True):
        with open(tmp, "wb") as handle:
            handle.write(_npy_header((total, dim)))
            row = 0
            for index in range(chunk_count):
                chunk = np.load(work_dir / f"chunk-{index:06d}.npy", mmap_mode="r")
                if chunk.ndim != 2 or chunk.shape[1] != dim:
                    raise RuntimeError(
                        f"Chunk {index} in {work_dir} has shape {chunk.shape}, expected "
                        f"(*, {dim}): embedding cache corrupt."
                    )
                _write_rows(handle, chunk)
                row += len(chunk)
            if row != total:
                raise RuntimeError(
                    f"Chunks hold {row} rows, expected {total}: embedding cache corrupt."
                )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out_path)
