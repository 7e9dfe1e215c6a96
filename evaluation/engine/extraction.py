"""Batched embedding extraction, streamed to disk in chunks and resumable after a crash.

Each chunk of ``chunk_size`` stimuli is embedded and saved as its own ``.npy`` file
(written to a temporary name, then renamed, so a chunk file on disk is always complete).
A restarted extraction skips the chunks already on disk. When all chunks are there they are
copied into one memory-mapped ``.npy`` file, renamed into place in one step: the final file
exists only when it is whole, which is what the embedding cache relies on.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from evaluation.engine.adapters.base import Adapter
from evaluation.engine.errors import StimulusError
from evaluation.engine.specs import StimulusInput

# Called with (stimuli done, total); returning False asks the extraction to stop.
ProgressCallback = Callable[[int, int], bool | None]


class ExtractionCancelled(Exception):
    """The progress callback asked the extraction to stop."""


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
) -> ExtractionResult:
    """Embed ``stimuli`` at every layer of ``out_paths`` in one forward pass per batch."""
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
    for work_dir in work_dirs.values():
        work_dir.mkdir(parents=True, exist_ok=True)
    chunk_starts = list(range(0, total, chunk_size))
    reused = 0
    adapter.prepare(stimuli)
    try:
        for index, start in enumerate(chunk_starts):
            chunk_files = {layer: work_dirs[layer] / f"chunk-{index:06d}.npy" for layer in layers}
            stop = min(start + chunk_size, total)
            if all(file.exists() for file in chunk_files.values()):
                reused += 1
            else:
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
                for layer, array in rows.items():
                    _save_atomically(chunk_files[layer], array)
            _report(progress, stop, total)
    except StimulusError:
        # Bad input fails the same way every time: saved chunks would never be resumed.
        for work_dir in work_dirs.values():
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    dims = {
        layer: _assemble(work_dirs[layer], len(chunk_starts), total, out_paths[layer])
        for layer in layers
    }
    for work_dir in work_dirs.values():
        shutil.rmtree(work_dir, ignore_errors=True)
    return ExtractionResult(dict(out_paths), dims, total, time.perf_counter() - started, reused)


def _embed_chunk(
    adapter: Adapter,
    stimuli: Sequence[StimulusInput],
    layers: Sequence[str],
    pooling: str,
    batch_size: int,
    num_workers: int,
    on_batch: Callable[[int], None],
) -> dict[str, np.ndarray]:
    loader = DataLoader(
        _StimulusDataset(adapter, stimuli),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=adapter.collate,
        pin_memory=adapter.device.type == "cuda",
    )
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    done = 0
    with torch.inference_mode():
        for batch in loader:
            vectors = adapter.embed(batch, layers=layers, pooling=pooling)
            for layer in layers:
                parts[layer].append(vectors[layer].astype(np.float32, copy=False))
            done += len(vectors[layers[0]])
            on_batch(done)
    return {layer: np.concatenate(chunks, axis=0) for layer, chunks in parts.items()}


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


def _save_atomically(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _assemble(work_dir: Path, chunk_count: int, total: int, out_path: Path) -> int:
    """Copy the chunks into one .npy without holding them all in memory at once."""
    first = np.load(work_dir / "chunk-000000.npy", mmap_mode="r")
    dim = int(first.shape[1])
    tmp = out_path.with_name(out_path.name + ".tmp")
    merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
    row = 0
    for index in range(chunk_count):
        chunk = np.load(work_dir / f"chunk-{index:06d}.npy", mmap_mode="r")
        merged[row : row + len(chunk)] = chunk
        row += len(chunk)
    if row != total:
        raise RuntimeError(f"Chunks hold {row} rows, expected {total}: embedding cache corrupt.")
    merged.flush()
    del merged
    os.replace(tmp, out_path)
    return dim
