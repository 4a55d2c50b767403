"""Shared fixtures: real speech from espeak-ng and tiny random encoders of every family."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch
from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig, WhisperConfig

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def speak(text: str, path: Path, voice: str = "en-us") -> np.ndarray:
    """Synthesise `text` with espeak-ng and return it as 16-kHz float32 mono."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """About three seconds of real (synthetic) English speech at 16 kHz."""
    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav")


_SSL_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
_LAYER_NORM = dict(feat_extract_norm="layer", do_stable_layer_norm=True)

TINY_CONFIGS = {
    "wavlm": lambda: WavLMConfig(**_SSL_TINY),
    "wavlm-ln": lambda: WavLMConfig(**_SSL_TINY, **_LAYER_NORM),
    "wav2vec2": lambda: Wav2Vec2Config(**_SSL_TINY),
    "wav2vec2-ln": lambda: Wav2Vec2Config(**_SSL_TINY, **_LAYER_NORM),
    "hubert": lambda: HubertConfig(**_SSL_TINY),
    "hubert-ln": lambda: HubertConfig(**_SSL_TINY, **_LAYER_NORM),
    "whisper": lambda: WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
    ),
}


def without_times(metrics: dict) -> dict:
    """The results of a fold (metrics.json), without timings and without what its feature caching found
    already done: what two runs of the same settings must agree on."""
    rows = [{key: value for key, value in row.items() if not key.endswith("seconds")} for row in metrics["epochs"]]
    return {**{key: value for key, value in metrics.items() if key != "cache_fill"}, "epochs": rows}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature caches and converted weights go to a temporary folder, not the user's ~/.cache/sertune."""
    if "SERTUNE_CACHE" not in os.environ:
        os.environ["SERTUNE_CACHE"] = str(tmp_path_factory.mktemp("sertune-cache"))


def save_tiny_encoder(kind: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny random encoder of `kind` (a TINY_CONFIGS key) as a local pretrained directory."""
    from transformers import AutoModel, WhisperForAudioClassification

    torch.manual_seed(seed)
    config = TINY_CONFIGS[kind]()
    model = WhisperForAudioClassification(config) if kind == "whisper" else AutoModel.from_config(config)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper encoder saved as a local directory (what `--backbone DIR` loads)."""
    return save_tiny_encoder("whisper", tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic corpus of 4 voices x 4 emotions x 3 sentences (48 clips) in speaker folds."""
    from sertune.corpora.synthetic import SynthSettings, synthesize

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("small-corpus")
    synthesize(out, SynthSettings(speakers=4, sentences=3), progress=False)
    return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run the `sertune` command line in-process: cli(argv) -> (exit code, stdout, stderr)."""
    from sertune.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        captured = capsys.readouterr()
        return stop.value.code, captured.out, captured.err

    return run
