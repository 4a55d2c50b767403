"""Reading audio: any file soundfile can open becomes float32 mono at the rate the models expect.

Every failure is a `SertuneError` whose message names the file and what is wrong with it, so a
bad clip deep inside a corpus is easy to find.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from sertune.errors import SertuneError

DEFAULT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, read without decoding the samples."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


# A file decoding to less than this share of its declared frames was cut off.
_COMPLETE_SHARE = 0.99
_STREAMING_SIZES = (0, 0xFFFFFFFF)


def _check_exists(path: str | os.PathLike) -> str:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise SertuneError(f"{name}: no such file")
    if os.path.isdir(name):
        raise SertuneError(f"{name}: is a directory, not an audio file")
    if os.path.getsize(name) == 0:
        raise SertuneError(f"{name}: empty file (0 bytes)")
    return name


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channel count, frame count and container format of `path`, from its header."""
    name = _check_exists(path)
    try:
        info = sf.info(name)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise SertuneError(f"{name}: not a readable audio file ({error})") from None
    return AudioInfo(name, int(info.samplerate), int(info.channels), int(info.frames), info.format)


def truncation(audio: sf.SoundFile, decoded: int) -> str | None:
    """Why an opened file looks cut off after `decoded` frames were read from it, or None.

    libsndfile quietly shortens a WAV whose data chunk ends early and notes it in its log
    ("data : 32000 (should be 15978)"); other formats may decode fewer frames than they declare.
    Headers written before the length was known (size 0 or 0xFFFFFFFF) are streams, not damage.
    """
    if audio.frames and decoded < _COMPLETE_SHARE * audio.frames:
        return f"{decoded} of {audio.frames} declared frames decoded"
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", audio.extra_info, re.MULTILINE)
    if match:
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in _STREAMING_SIZES and declared > present:
            return f"its header declares {declared} data bytes but the file holds {present}"
    return None


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to a float32 mono waveform at `sample_rate` Hz.

    Channels are averaged; a different rate is converted with soxr's high-quality resampler.
    A truncated file is refused (see `truncation`) rather than read in part.
    """
    name = _check_exists(path)
    try:
        with sf.SoundFile(name) as audio:
            samples = audio.read(dtype="float32", always_2d=True)
            cut = truncation(audio, len(samples))
            rate = audio.samplerate
    except (sf.LibsndfileError, RuntimeError) as error:
        raise SertuneError(f"{name}: not a readable audio file ({error})") from None
    if samples.shape[0] == 0:
        raise SertuneError(f"{name}: the audio stream holds no samples")
    if cut is not None:
        raise SertuneError(f"{name}: the audio file is truncated ({cut}); re-copy or re-export it")
    return mix_down(samples, rate, sample_rate)


def mix_down(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Decoded [frames, channels] samples at `rate` as a mono float32 waveform at `sample_rate` Hz."""
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, rate, sample_rate)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """`wave` converted from `from_rate` to `to_rate` Hz as contiguous float32."""
    if from_rate != to_rate:
        wave = soxr.resample(wave, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def pad_to(wave: np.ndarray, length: int) -> np.ndarray:
    """`wave` zero-padded at the end to `length` samples (returned unchanged when long enough)."""
    if len(wave) >= length:
        return wave
    return np.pad(wave, (0, length - len(wave)))


def crop(wave: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """At most `length` samples of `wave`: a random window when `rng` is given, else the start.

    The start is the deterministic choice for evaluation; a random window is data augmentation.
    """
    if len(wave) <= length:
        return wave
    offset = int(rng.integers(0, len(wave) - length + 1)) if rng is not None else 0
    return wave[offset : offset + length]


def fit_length(wave: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly `length` samples: `crop` when longer, `pad_to` when shorter."""
    return pad_to(crop(wave, length, rng), length)
