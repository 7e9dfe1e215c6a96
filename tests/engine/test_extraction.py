"""Extraction streams chunks to disk, resumes after a crash, and never leaves a final file
that is incomplete."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.engine.adapters import load_adapter
from evaluation.engine.errors import StimulusError
from evaluation.engine.extraction import ExtractionCancelled, extract_to_file
from evaluation.engine.specs import ModelSpec, StimulusInput


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
