"""Short names for the supported encoders, with the architecture of each.

Keeping the architecture here (not just the hub id) lets `sertune backbones` count parameters and
lets tests build randomly initialised encoders of the real sizes without any download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import HubertConfig, PretrainedConfig, Wav2Vec2Config, WavLMConfig, WhisperConfig

from sertune.errors import SertuneError

_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "wav2vec2": Wav2Vec2Config,
    "hubert": HubertConfig,
    "wavlm": WavLMConfig,
    "whisper": WhisperConfig,
}

# The large self-supervised models use layer norm in the conv front end and pre-norm layers.
_LARGE_SSL = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
)


def _whisper(d_model: int, layers: int, heads: int, n_mels: int = 80) -> dict[str, Any]:
    return dict(
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_layers=layers,
        decoder_attention_heads=heads,
        decoder_ffn_dim=4 * d_model,
        num_mel_bins=n_mels,
    )


@dataclass(frozen=True)
class BackboneSpec:
    """One supported encoder: its short name, hub id, family and architecture."""

    name: str
    hub_id: str
    family: str
    architecture: dict[str, Any] = field(default_factory=dict)
    # Whether the model's own feature extractor normalises each waveform to zero mean, unit variance.
    normalize_waveform: bool = False

    def config(self) -> PretrainedConfig:
        """The transformers config of this architecture (random weights can be built from it)."""
        return _CONFIG_CLASSES[self.family](**self.architecture)

    @property
    def hidden_size(self) -> int:
        return self.config().hidden_size if self.family != "whisper" else self.architecture["d_model"]

    @property
    def num_layers(self) -> int:
        config = self.config()
        return config.encoder_layers if self.family == "whisper" else config.num_hidden_layers


SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec("wavlm-base-plus", "microsoft/wavlm-base-plus", "wavlm"),
        BackboneSpec("wavlm-large", "microsoft/wavlm-large", "wavlm", _LARGE_SSL, normalize_waveform=True),
        BackboneSpec("wav2vec2-base", "facebook/wav2vec2-base", "wav2vec2", normalize_waveform=True),
        BackboneSpec(
            "wav2vec2-base-960h", "facebook/wav2vec2-base-960h", "wav2vec2", normalize_waveform=True
        ),
        # Massively multilingual wav2vec 2.0 (1,400 languages), one of the study package's released encoders.
        BackboneSpec("mms-300m", "facebook/mms-300m", "wav2vec2", {**_LARGE_SSL, "conv_bias": True}, True),
        BackboneSpec("hubert-base", "facebook/hubert-base-ls960", "hubert"),
        BackboneSpec(
            "hubert-large", "facebook/hubert-large-ll60k", "hubert", {**_LARGE_SSL, "conv_bias": True}, True
        ),
        BackboneSpec("whisper-tiny", "openai/whisper-tiny", "whisper", _whisper(384, 4, 6)),
        BackboneSpec("whisper-tiny.en", "openai/whisper-tiny.en", "whisper", _whisper(384, 4, 6)),
        BackboneSpec("whisper-base", "openai/whisper-base", "whisper", _whisper(512, 6, 8)),
        BackboneSpec("whisper-small", "openai/whisper-small", "whisper", _whisper(768, 12, 12)),
        BackboneSpec("whisper-medium", "openai/whisper-medium", "whisper", _whisper(1024, 24, 16)),
        BackboneSpec("whisper-large-v3", "openai/whisper-large-v3", "whisper", _whisper(1280, 32, 20, 128)),
    ]
}


def get_spec(name: str) -> BackboneSpec:
    """The spec of a short name; an unknown name lists the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        known = ", ".join(SPECS)
        raise SertuneError(
            f"unknown backbone {name!r}. Known short names: {known}. "
            "A Hugging Face model id (e.g. microsoft/wavlm-base-plus) or a local model directory also works."
        ) from None


def family_of(model_type: str) -> str:
    """Map a transformers `model_type` to a sertune family, or explain what is supported."""
    if model_type in _CONFIG_CLASSES:
        return model_type
    supported = ", ".join(_CONFIG_CLASSES)
    raise SertuneError(
        f"model type {model_type!r} is not a supported speech encoder (supported: {supported})"
    )
