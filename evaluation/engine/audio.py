"""Decoding audio stimuli: any format soundfile reads, mixed to mono, resampled exactly."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
from scipy.signal import resample_poly

from evaluation.engine.errors import StimulusError

# What soundfile raises for unreadable input: LibsndfileError is a RuntimeError; a missing
# file or a truncated stream can also surface as OSError or ValueError.
_DECODE_ERRORS = (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError)


def load_waveform(path: str, sampling_rate: int) -> np.ndarray:
    """Decode an audio file to mono float32 at ``sampling_rate``; StimulusError if it can't."""
    name = Path(path).name
    try:
        return _decode(path, name, sampling_rate)
    except ValueError as exc:
        raise StimulusError(str(exc)) from None


def check_audio_bytes(data: bytes, name: str) -> None:
    """Fully decode in-memory audio (e.g. a file in an uploaded zip); ValueError if it is
    corrupt or empty."""
    _decode(io.BytesIO(data), name, sampling_rate=None)


def _decode(source: str | BinaryIO, name: str, sampling_rate: int | None) -> np.ndarray:
    """Decode ``source`` to mono float32, resampled when ``sampling_rate`` is given;
    ValueError naming ``name`` if it is unreadable, empty or not finite."""
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise ValueError(f"Audio {name!r} cannot be decoded: {exc}") from None
    if data.shape[0] == 0:
        raise ValueError(f"Audio {name!r} has no samples: the file is empty.")
    if not np.isfinite(data).all():
        raise ValueError(f"Audio {name!r} contains NaN or infinite samples.")
    wave = data.mean(axis=1)  # mix to mono before resampling: one channel is cheaper
    if sampling_rate is not None and rate != sampling_rate:
        # resample_poly with the exact rational ratio (e.g. 44100 -> 16000 is 160/441):
        # band-limited, and the length comes out as ceil(n * up / down).
        common = math.gcd(int(rate), int(sampling_rate))
        wave = resample_poly(wave, sampling_rate // common, int(rate) // common)
    return np.ascontiguousarray(wave, dtype=np.float32)
