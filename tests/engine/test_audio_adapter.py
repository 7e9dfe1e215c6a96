"""transformers audio adapter, offline: tiny wav2vec2 / HuBERT directories written by
save_pretrained, and real audio files written with soundfile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample

from evaluation.engine.adapters import adapter_class, load_adapter
from evaluation.engine.audio import (
    AudioProblem,
    check_audio_file,
    load_waveform,
    sniff_audio_head,
)
from evaluation.engine.errors import ModelSpecError, StimulusError
from evaluation.engine.extraction import extract_layers
from evaluation.engine.specs import ModelSpec, StimulusInput

RATE = 16000
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16,) * 7,  # the real kernels and strides: 320 samples per frame
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def _save_model(directory, kind: str, *, with_mask: bool):
    """A tiny model like a real checkpoint: layer-norm front end with an attention mask
    (wav2vec2-large-lv60 style), or group norm without one (wav2vec2-base style)."""
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(0)
    norm = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if with_mask else {}
    if kind == "hubert":
        model = HubertModel(HubertConfig(**SMALL, **norm))
    else:
        model = Wav2Vec2Model(Wav2Vec2Config(**SMALL, **norm))
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        sampling_rate=RATE, do_normalize=True, return_attention_mask=with_mask
    ).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-models")
    return {
        "wav2vec2-mask": _save_model(root / "w2v-mask", "wav2vec2", with_mask=True),
        "wav2vec2-nomask": _save_model(root / "w2v-nomask", "wav2vec2", with_mask=False),
        "hubert-mask": _save_model(root / "hubert-mask", "hubert", with_mask=True),
    }


def _tone(freq: float, seconds: float, rate: int = RATE, chirp: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (freq + chirp * t) * t)).astype(np.float32)


@pytest.fixture
def clips(tmp_path):
    """Clips of different lengths and formats, one 8 kHz stereo to exercise resampling."""
    paths = {
        "short.wav": (_tone(220, 0.3), RATE),
        "long.flac": (_tone(330, 1.1, chirp=400), RATE),
        "mid.ogg": (_tone(660, 0.7), RATE),
        "stereo8k.wav": (np.stack([_tone(440, 0.5, 8000), _tone(550, 0.5, 8000)], axis=1), 8000),
    }
    for name, (data, rate) in paths.items():
        soundfile.write(tmp_path / name, data, rate)
    return {name: tmp_path / name for name in paths}


def _load(path) -> object:
    return load_adapter(ModelSpec(source="transformers-audio", identifier=str(path)))


def _reference(directory, wave: np.ndarray) -> np.ndarray:
    """What transformers itself computes for one clip alone: mean of last_hidden_state."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(directory).eval()
    inputs = AutoFeatureExtractor.from_pretrained(directory)(
        wave, sampling_rate=RATE, return_tensors="pt"
    )
    with torch.inference_mode():
        return model(**inputs).last_hidden_state.mean(dim=1)[0].numpy()


def test_layers_are_listed_and_described(models, clips):
    adapter = _load(models["wav2vec2-mask"])
    names = adapter.layer_names()
    assert names[0] == "last_hidden_state"
    assert "encoder.layers.0" in names
    shapes = {
        row["name"]: row["shape"]
        for row in adapter.describe_layers(StimulusInput(path=str(clips["short.wav"])))
    }
    frames = int(adapter.model._get_feat_extract_output_lengths(torch.tensor(int(0.3 * RATE))))
    assert shapes["last_hidden_state"] == [frames, 32]
    assert shapes["encoder.layers.0"] == [frames, 32]


@pytest.mark.parametrize("kind", ["wav2vec2-mask", "wav2vec2-nomask", "hubert-mask"])
def test_extraction_matches_transformers_on_each_clip_alone(models, clips, kind, tmp_path):
    adapter = _load(models[kind])
    names = ["short.wav", "long.flac", "stereo8k.wav", "mid.ogg"]
    stimuli = [StimulusInput(path=str(clips[name])) for name in names]
    paths = {"last_hidden_state": tmp_path / "h.npy", "encoder.layers.0": tmp_path / "l0.npy"}
    # Batches of two mix lengths, so padding is in play.
    extract_layers(adapter, stimuli, out_paths=paths, batch_size=2)
    ours = np.load(paths["last_hidden_state"])
    expected = np.stack([_reference(models[kind], load_waveform(s.path, RATE)) for s in stimuli])
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert np.load(paths["encoder.layers.0"]).shape == (4, 32)


@pytest.mark.parametrize("kind", ["wav2vec2-mask", "wav2vec2-nomask", "hubert-mask"])
def test_a_short_clip_embeds_the_same_alone_or_batched_with_a_longer_one(models, clips, kind):
    adapter = _load(models[kind])
    short = adapter.load_input(StimulusInput(path=str(clips["short.wav"])))
    long = adapter.load_input(StimulusInput(path=str(clips["long.flac"])))
    layers = [
        "last_hidden_state",
        "encoder.layers.0",
        "encoder.layers.1",
        # The conv front end: (batch, channels, time), with a longer time axis per stage.
        "feature_extractor.conv_layers.0",
        "feature_extractor.conv_layers.0.conv",
        "feature_extractor.conv_layers.4",
        "feature_extractor",
    ]
    with torch.inference_mode():
        alone = adapter.embed(adapter.collate([short]), layers=layers)
        batched = adapter.embed(adapter.collate([long, short, long]), layers=layers)
    for layer in layers:
        np.testing.assert_allclose(batched[layer][1], alone[layer][0], atol=1e-4)
        np.testing.assert_allclose(batched[layer][0], batched[layer][2], atol=1e-6)
        assert not np.allclose(batched[layer][0], batched[layer][1], rtol=1e-2, atol=0)


def test_conv_layers_average_over_each_clips_own_time_steps(models, clips):
    adapter = _load(models["wav2vec2-mask"])
    short = adapter.load_input(StimulusInput(path=str(clips["short.wav"])))
    captured = {}
    conv = adapter.model.feature_extractor.conv_layers[2]
    handle = conv.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.inference_mode():
        adapter.model(**{"input_values": adapter.collate([short])["input_values"]})
    handle.remove()
    expected = captured["x"][0].mean(dim=-1).numpy()  # (channels, time): mean over time
    for layer_norm in (False, True):
        name = "feature_extractor.conv_layers.2" + (".layer_norm" if layer_norm else "")
        with torch.inference_mode():
            ours = adapter.embed(adapter.collate([short]), layers=[name])[name][0]
        if not layer_norm:
            np.testing.assert_allclose(ours, expected, atol=1e-5)
        assert ours.shape == (16,)


def test_resampling_keeps_the_pitch_and_the_duration(tmp_path):
    soundfile.write(tmp_path / "a440.wav", _tone(440, 0.5, 8000), 8000)
    wave = load_waveform(str(tmp_path / "a440.wav"), RATE)
    assert wave.dtype == np.float32
    assert wave.shape == (8000,)  # 0.5 s at 16 kHz
    peak = np.argmax(np.abs(np.fft.rfft(wave))) * RATE / len(wave)
    assert peak == pytest.approx(440, abs=2)
    # Agrees with an independent (FFT) resampler away from the edges.
    reference = resample(_tone(440, 0.5, 8000), 8000)
    np.testing.assert_allclose(wave[200:-200], reference[200:-200], atol=5e-3)
    # A ratio with no small terms: 44.1 kHz -> 16 kHz is 160/441.
    soundfile.write(tmp_path / "cd.wav", _tone(440, 0.25, 44100), 44100)
    assert len(load_waveform(str(tmp_path / "cd.wav"), RATE)) == math.ceil(11025 * 160 / 441)


def test_channels_are_averaged_to_mono(tmp_path):
    left, right = _tone(300, 0.2), _tone(700, 0.2)
    soundfile.write(tmp_path / "st.wav", np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    np.testing.assert_allclose(
        load_waveform(str(tmp_path / "st.wav"), RATE), (left + right) / 2, atol=1e-7
    )


def test_undecodable_and_empty_files_are_named(models, tmp_path):
    adapter = _load(models["wav2vec2-mask"])
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x01not really a wave file")
    (tmp_path / "zero.wav").write_bytes(b"")
    soundfile.write(tmp_path / "silent.wav", np.zeros(0, np.float32), RATE)
    soundfile.write(tmp_path / "click.wav", np.ones(100, np.float32), RATE)
    cases = {
        "broken.wav": r"'broken.wav' cannot be decoded",
        "zero.wav": r"'zero.wav' cannot be decoded",
        "silent.wav": r"'silent.wav' has no samples",
        "click.wav": r"'click.wav' is too short: 6.2 ms.*at least 25.0 ms",
    }
    for name, message in cases.items():
        with pytest.raises(StimulusError, match=message):
            extract_layers(
                adapter,
                [StimulusInput(path=str(tmp_path / name))],
                out_paths={"last_hidden_state": tmp_path / "out.npy"},
            )


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_check_audio_file_accepts_real_audio(fmt, tmp_path):
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, _tone(440, 0.2), RATE, format=fmt)
    check_audio_file(str(path), "cats/tone")
    sniff_audio_head(path.read_bytes()[:4096], "cats/tone")


def test_check_audio_file_refuses_corrupt_and_empty_audio_naming_it_not_the_path(tmp_path):
    (tmp_path / "junk.mp3").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "nothing.wav").write_bytes(b"")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE, format="WAV")
    with pytest.raises(AudioProblem) as caught:
        check_audio_file(str(tmp_path / "junk.mp3"), "dogs/junk.mp3")
    assert str(caught.value) == "Audio 'dogs/junk.mp3' cannot be decoded: Format not recognised."
    with pytest.raises(
        AudioProblem, match="'nothing.wav' cannot be decoded: Format not recognised"
    ):
        check_audio_file(str(tmp_path / "nothing.wav"), "nothing.wav")
    with pytest.raises(AudioProblem, match="'empty.wav' has no samples"):
        check_audio_file(str(tmp_path / "empty.wav"), "empty.wav")
    soundfile.write(tmp_path / "nan.wav", np.array([0.1, np.nan] * 400), RATE, subtype="FLOAT")
    with pytest.raises(AudioProblem, match=r"^Audio 'cut.wav' contains NaN or infinite samples\.$"):
        check_audio_file(str(tmp_path / "nan.wav"), "cut.wav")


def test_a_head_with_no_audio_format_is_refused_but_a_long_id3_tag_is_not():
    with pytest.raises(AudioProblem, match="'z.wav' cannot be decoded: Format not recognised"):
        sniff_audio_head(bytes(1 << 20), "z.wav")
    # An MP3's ID3 tag (cover art) can be longer than the head; the full decode decides.
    sniff_audio_head(b"ID3\x03\x00\x00\x01\x00\x00\x00" + bytes(1 << 20), "song.mp3")


def test_decoder_messages_name_the_stimulus_not_the_server_path(tmp_path):
    (tmp_path / "000003.wav").write_bytes(b"RIFF\x00\x01not really a wave file")
    with pytest.raises(StimulusError) as caught:
        load_waveform(str(tmp_path / "000003.wav"), RATE)
    assert str(caught.value).startswith("Audio '000003.wav' cannot be decoded: ")
    assert str(tmp_path) not in str(caught.value) and "<" not in str(caught.value)


def test_identity_and_preprocessing_are_recorded(models):
    spec = ModelSpec(source="transformers-audio", identifier=str(models["wav2vec2-nomask"]))
    identity = adapter_class("transformers-audio").identity(spec)
    assert identity["weights_id"].startswith("sha256:")
    assert identity["preprocessing"]["preprocessor_config.json"]["sampling_rate"] == RATE
    description = load_adapter(spec).preprocessing_description()
    assert description["sampling_rate"] == RATE
    assert description["model_gets_attention_mask"] is False
    assert description["feature_extractor"]["do_normalize"] is True


def test_models_without_waveform_input_are_refused(models, tmp_path):
    import shutil

    from transformers import WhisperFeatureExtractor

    directory = tmp_path / "spectrogram"
    shutil.copytree(models["wav2vec2-mask"], directory)
    (directory / "preprocessor_config.json").unlink()
    WhisperFeatureExtractor().save_pretrained(directory)
    with pytest.raises(ModelSpecError, match="does not take raw waveforms"):
        _load(directory)
