"""The extraction's bridge to files kept elsewhere (RemoteFiles, implemented over an object
store by the service): each chunk's stimuli are fetched before it is embedded and only
then, every saved chunk is kept there, and an extraction on another machine (another work
folder) reuses the kept chunks instead of embedding them again."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.engine.adapters import load_adapter
from evaluation.engine.extraction import extract_to_file
from evaluation.engine.specs import ModelSpec, StimulusInput


class FolderElsewhere:
    """RemoteFiles over a folder standing in for the store: stimuli are copied in from
    ``sources`` when fetched; chunks are kept under their path relative to ``local_root``."""

    def __init__(self, store: Path, sources: Path, local_root: Path) -> None:
        self.store, self.sources, self.local_root = store, sources, local_root
        self.fetched: list[str] = []
        self.kept: list[str] = []

    def fetch_inputs(self, stimuli: Sequence[StimulusInput]) -> None:
        for stimulus in stimuli:
            name = Path(stimulus.path).name
            shutil.copy(self.sources / name, stimulus.path)
            self.fetched.append(name)

    def fetch_chunk(self, path: Path) -> bool:
        kept = self.store / path.relative_to(self.local_root)
        if not kept.is_file():
            return False
        shutil.copy(kept, path)
        return True

    def keep_chunk(self, path: Path) -> None:
        kept = self.store / path.relative_to(self.local_root)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, kept)
        self.kept.append(kept.name)


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelSpec(source="timm", identifier="test_vit", weights="untrained"))


@pytest.fixture
def sources(tmp_path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(40):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            folder / f"{index:03d}.png"
        )
    return folder


def machine_inputs(machine: Path) -> list[StimulusInput]:
    """The stimuli at their paths in this machine's cache (not there until fetched)."""
    (machine / "media").mkdir(parents=True)
    return [StimulusInput(path=str(machine / "media" / f"{i:03d}.png")) for i in range(40)]


def test_a_second_machine_reuses_the_kept_chunks_and_fetches_only_the_rest(
    adapter, sources, tmp_path
):
    store = tmp_path / "store"
    first = tmp_path / "machine-a"
    remote_a = FolderElsewhere(store, sources, first)

    def stop_after_two_chunks(done: int, total: int) -> bool:
        if done > 16:
            raise RuntimeError("the machine went away")
        return True

    with pytest.raises(RuntimeError, match="went away"):
        extract_to_file(
            adapter, machine_inputs(first), layer="", out_path=first / "e" / "x.npy",
            batch_size=4, chunk_size=8, progress=stop_after_two_chunks, remote=remote_a,
        )  # fmt: skip
    assert remote_a.kept == ["chunk-000000.npy", "chunk-000001.npy"]
    # Each chunk's stimuli just before it is embedded (the third had begun): not all 40.
    assert remote_a.fetched == [f"{i:03d}.png" for i in range(24)]

    second = tmp_path / "machine-b"
    remote_b = FolderElsewhere(store, sources, second)
    result = extract_to_file(
        adapter, machine_inputs(second), layer="", out_path=second / "e" / "x.npy",
        batch_size=4, chunk_size=8, remote=remote_b,
    )  # fmt: skip
    assert result.chunks_reused == 2
    assert remote_b.fetched == [f"{i:03d}.png" for i in range(16, 40)]
    assert remote_b.kept == [f"chunk-{i:06d}.npy" for i in range(2, 5)]

    alone = extract_to_file(
        adapter,
        [StimulusInput(path=str(sources / f"{i:03d}.png")) for i in range(40)],
        layer="",
        out_path=tmp_path / "alone.npy",
        batch_size=4,
        chunk_size=8,
    )
    np.testing.assert_allclose(np.load(result.path), np.load(alone.path), rtol=1e-5, atol=1e-6)
