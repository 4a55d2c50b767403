"""The shared audio reader: formats, resampling, downmixing, length helpers and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from corpus_fixtures import write_tone
from sertune.audio import audio_info, crop, fit_length, load_audio, pad_to
from sertune.errors import SertuneError


def test_stereo_44k_becomes_16k_mono_float32(tmp_path):
    path = tmp_path / "clip.wav"
    left = np.full(44100, 0.5, dtype=np.float32)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 16000
    assert wave[4000:12000] == pytest.approx(0.25, abs=1e-3)  # the channel average


def test_flac_at_other_rate_and_target_rate(tmp_path):
    path = tmp_path / "clip.flac"
    write_tone(path, seconds=0.5, rate=8000)
    assert len(load_audio(path)) == 8000
    assert len(load_audio(path, sample_rate=24000)) == 12000


def test_audio_info_reads_the_header(tmp_path):
    path = tmp_path / "clip.wav"
    write_tone(path, seconds=1.5, rate=22050, channels=2)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (22050, 2, 33075)
    assert info.duration == pytest.approx(1.5)
    assert info.format == "WAV"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not audio\n" * 20), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "holds no samples"),
    ],
)
def test_errors_name_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(SertuneError, match=message) as caught:
        load_audio(path)
    assert str(path) in str(caught.value)


def test_audio_info_errors_name_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("plain text")
    with pytest.raises(SertuneError, match=f"{path}: not a readable audio file"):
        audio_info(path)


def test_crop_pad_and_fit_length():
    wave = np.arange(10, dtype=np.float32)
    assert crop(wave, 4).tolist() == [0, 1, 2, 3]
    window = crop(wave, 4, np.random.default_rng(0))
    assert len(window) == 4 and np.all(np.diff(window) == 1)
    assert pad_to(wave, 12).tolist() == [*range(10), 0, 0]
    assert pad_to(wave, 5) is wave
    assert len(fit_length(wave, 7)) == 7 and len(fit_length(wave, 13)) == 13


def test_truncated_wav_is_refused_but_a_streamed_header_is_read(tmp_path):
    wave = np.sin(np.arange(16000) / 10).astype(np.float32) * 0.5
    whole = tmp_path / "whole.wav"
    sf.write(whole, wave, 16000, subtype="PCM_16")
    data = whole.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SertuneError, match=r"cut.wav: the audio file is truncated \(its header declares 32000"):
        load_audio(cut)
    # A recorder that streams writes 0xFFFFFFFF as the data size: complete, not truncated.
    streamed = tmp_path / "streamed.wav"
    data_size = data.index(b"data") + 4
    streamed.write_bytes(data[:data_size] + b"\xff\xff\xff\xff" + data[data_size + 4 :])
    np.testing.assert_allclose(load_audio(streamed), load_audio(whole))
