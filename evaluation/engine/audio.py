"""Decoding audio stimuli: any format soundfile reads, mixed to mono, resampled exactly."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from evaluation.engine.errors import StimulusError

# What soundfile raises for unreadable input: LibsndfileError is a RuntimeError; a missing
# file or a truncated stream can also surface as OSError or ValueError.
_DECODE_ERRORS = (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError)
# libsndfile's SF_ERR_UNRECOGNISED_FORMAT: no format it reads starts this way.
_UNRECOGNISED_FORMAT = 1
CHECK_BLOCK_FRAMES = 1 << 16  # about 4 s at 16 kHz: checking a long clip holds one block


class AudioProblem(ValueError):
    """An audio file that cannot be used; the message names it and says why."""


def load_waveform(path: str, sampling_rate: int, *, name: str = "") -> np.ndarray:
    """Decode an audio file to mono float32 at ``sampling_rate``; StimulusError if it can't.

    ``name`` is what messages call the stimulus (default: the file's name)."""
    name = name or Path(path).name
    try:
        return _decode(path, name, sampling_rate)
    except AudioProblem as exc:
        raise StimulusError(str(exc)) from None


def check_audio_file(path: str, name: str) -> None:
    """Decode a whole audio file (e.g. one unpacked from an uploaded zip) a block at a time,
    so a long clip costs one block of memory; AudioProblem naming ``name`` if it is corrupt,
    empty or not finite."""
    frames = 0
    try:
        with open(path, "rb") as handle:  # see _decode
            for block in soundfile.blocks(handle, blocksize=CHECK_BLOCK_FRAMES, dtype="float32"):
                _check_finite(block, name)
                frames += len(block)
    except AudioProblem:
        raise
    except _DECODE_ERRORS as exc:
        raise AudioProblem(_cannot_decode(name, exc)) from None
    if frames == 0:
        raise AudioProblem(_no_samples(name))


def sniff_audio_head(head: bytes, name: str) -> None:
    """Refuse at once, from its first bytes and before the rest is unpacked, a file that no
    format libsndfile reads starts like. A head it cannot finish reading is left to
    ``check_audio_file``."""
    if head.startswith(b"ID3"):
        return  # an MP3's ID3 tag (cover art) can be longer than the head; libsndfile skips it
    try:
        with soundfile.SoundFile(io.BytesIO(head)):
            return
    except soundfile.LibsndfileError as exc:
        if exc.code == _UNRECOGNISED_FORMAT:
            raise AudioProblem(_cannot_decode(name, exc)) from None
    except _DECODE_ERRORS:
        pass


def _decode(path: str, name: str, sampling_rate: int) -> np.ndarray:
    """Decode the file at ``path`` to mono float32 at ``sampling_rate``; AudioProblem
    naming ``name`` if it is unreadable, empty or not finite."""
    try:
        # Through a file object: given a path, libsndfile calls a corrupt .mp3 "not a
        # regular file"; given the bytes, it says what is wrong.
        with open(path, "rb") as handle:
            data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except _DECODE_ERRORS as exc:
        raise AudioProblem(_cannot_decode(name, exc)) from None
    if data.shape[0] == 0:
        raise AudioProblem(_no_samples(name))
    _check_finite(data, name)
    wave = data.mean(axis=1)  # mix to mono before resampling: one channel is cheaper
    if rate != sampling_rate:
        # resample_poly with the exact rational ratio (e.g. 44100 -> 16000 is 160/441):
        # band-limited, and the length comes out as ceil(n * up / down).
        common = math.gcd(int(rate), int(sampling_rate))
        wave = resample_poly(wave, sampling_rate // common, int(rate) // common)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise AudioProblem(f"Audio {name!r} contains NaN or infinite samples.")


def _cannot_decode(name: str, exc: BaseException) -> str:
    # The decoder's own reason: str(exc) starts "Error opening <file object or server path>".
    reason = (
        getattr(exc, "error_string", "")
        or getattr(exc, "strerror", "")
        or str(exc)
        or type(exc).__name__
    )
    return f"Audio {name!r} cannot be decoded: {reason.rstrip('.')}."


def _no_samples(name: str) -> str:
    return f"Audio {name!r} has no samples: the file is empty."
