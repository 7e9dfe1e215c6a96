"""Audio datasets: a zip of label folders of real audio files, imported all or nothing, then
scored through a run with a wav2vec2-style model saved locally (no hub)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
import soundfile
import torch
from django.core.exceptions import ValidationError

from evaluation import services
from evaluation.engine.fingerprint import stimulus_hash
from evaluation.imports.stimuli import dataset_import_audio
from evaluation.metrics import knn_entry
from evaluation.models import Dataset, Score, Stimulus
from tests.evaluation.test_runs import run_steps

pytestmark = pytest.mark.django_db
RATE = 16000
MiB = 1 << 20


def wav_bytes(freq: float, seconds: float = 0.4, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.4 * np.sin(2 * np.pi * freq * t), RATE, format=fmt)
    return buffer.getvalue()


def tones_zip(extra: dict[str, bytes] | None = None) -> io.BytesIO:
    """Low and high tones, six clips each, slightly detuned, in two formats."""
    members = {}
    for index in range(6):
        members[f"low/{index}.wav"] = wav_bytes(200 + 7 * index)
        members[f"high/{index}.flac"] = wav_bytes(1800 + 23 * index, fmt="FLAC")
    members.update(extra or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


@pytest.fixture
def tiny_wav2vec2(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=True).save_pretrained(
        tmp_path / "w2v"
    )
    return tmp_path / "w2v"


def test_audio_zip_becomes_labelled_stimuli_and_is_scored(tiny_wav2vec2, enqueued):
    dataset = dataset_import_audio(name="tones", upload=tones_zip())
    assert (dataset.modality, dataset.stimulus_count) == ("audio", 12)
    assert set(dataset.stimuli.values_list("label", flat=True)) == {"low", "high"}

    model = services.model_register(
        name="tiny-w2v", source="transformers-audio", identifier=str(tiny_wav2vec2)
    )
    services.model_inspect(model_id=model.pk)
    model.refresh_from_db()
    assert model.modality == "audio" and not model.inspection_error
    assert any(layer["name"] == "encoder.layers.1" for layer in model.layers)

    run = services.run_create(
        dataset=dataset,
        models=[model],
        metrics=[knn_entry(k=3, split="loo")],
        layers={model.pk: ["last_hidden_state", "feature_extractor.conv_layers.1"]},
    )
    run_steps(run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.steps.get().error
    scores = {score.layer: score for score in Score.objects.all()}
    assert set(scores) == {"last_hidden_state", "feature_extractor.conv_layers.1"}
    # Even a random conv front end separates a 200 Hz tone from a 1.8 kHz one.
    assert scores["feature_extractor.conv_layers.1"].value > 0.9


@pytest.mark.parametrize(
    ("member", "data", "message"),
    [
        ("low/broken.wav", b"RIFF0000WAVEfmt junk", "cannot be decoded"),
        ("low/empty.wav", b"", "cannot be decoded"),
        ("low/notes.txt", b"hello", "is not an audio file"),
        ("clip.wav", wav_bytes(300), "not inside a folder"),
    ],
)
def test_bad_audio_members_are_refused_and_nothing_is_kept(member, data, message):
    with pytest.raises(ValidationError, match=message):
        dataset_import_audio(name="bad", upload=tones_zip({member: data}))
    assert Dataset.objects.count() == 0 and Stimulus.objects.count() == 0


def test_a_member_of_zeros_is_refused_from_its_first_bytes_naming_it():
    upload = tones_zip({"low/zeros.wav": bytes(64 * MiB)})
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as caught:
            dataset_import_audio(name="bad", upload=upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.message_dict["file"] == [
        "Audio 'low/zeros.wav' cannot be decoded: Format not recognised."
    ]
    assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB held while refusing a 64 MiB member"
    assert Dataset.objects.count() == 0


def test_a_long_clip_is_checked_a_block_at_a_time():
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(32 * MiB, np.int16), RATE, format="WAV")  # 35 minutes
    clip = buffer.getvalue()
    upload = tones_zip({"low/long.wav": clip})
    del buffer
    tracemalloc.start()
    try:
        dataset = dataset_import_audio(name="long", upload=upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Decoded whole, this clip is 128 MiB of float32 samples.
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB held while checking a 64 MiB clip"
    assert dataset.stimuli.get(name="low/long.wav").content_hash == stimulus_hash(content=clip)


def test_an_image_model_cannot_run_on_audio(enqueued):
    from tests.conftest import make_timm_model

    dataset = dataset_import_audio(name="tones", upload=tones_zip())
    with pytest.raises(ValidationError, match="different modality"):
        services.run_create(
            dataset=dataset, models=[make_timm_model()], metrics=[knn_entry(k=3, split="loo")]
        )
