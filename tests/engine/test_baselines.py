"""Baselines: raw pixels and TF-IDF equal their direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer

from evaluation.engine.adapters import load_adapter, validate_spec
from evaluation.engine.errors import ModelSpecError
from evaluation.engine.extraction import extract_to_file
from evaluation.engine.specs import ModelSpec, StimulusInput


def test_pixels_are_resized_rgb_values_in_zero_one(tmp_path):
    rng = np.random.default_rng(0)
    stimuli = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
        stimuli.append(StimulusInput(path=str(path)))
    adapter = load_adapter(ModelSpec(source="baseline", identifier="pixels-8"))
    out = np.load(extract_to_file(adapter, stimuli, layer="", out_path=tmp_path / "p.npy").path)
    expected = np.stack(
        [
            np.asarray(
                Image.open(s.path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR),
                dtype=np.float32,
            ).ravel()
            / 255
            for s in stimuli
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.shape == (5, 192)


def test_tfidf_is_fitted_on_the_dataset_texts(tmp_path):
    texts = ["the cat sat", "a dog barked loudly", "the cat and the dog", "stocks fell", "cat food"]
    adapter = load_adapter(ModelSpec(source="baseline", identifier="tfidf"))
    out = np.load(
        extract_to_file(
            adapter,
            [StimulusInput(text=t) for t in texts],
            layer="",
            out_path=tmp_path / "t.npy",
            batch_size=2,
            chunk_size=2,
        ).path
    )
    expected = (
        TfidfVectorizer(max_features=4096, sublinear_tf=True, norm="l2")
        .fit_transform(texts)
        .toarray()
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_unknown_baseline_is_refused():
    with pytest.raises(ModelSpecError, match="Unknown baseline 'pixel'"):
        validate_spec(ModelSpec(source="baseline", identifier="pixel"))
