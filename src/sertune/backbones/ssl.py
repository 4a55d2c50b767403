"""wav2vec 2.0, HuBERT and WavLM: the self-supervised encoders with a convolutional front end."""

from __future__ import annotations

import torch
from torch import nn

from sertune.backbones.base import Backbone, LayerLayout


def _contiguous_attention_input(module: nn.Module, args: tuple) -> tuple:
    # WavLM transposes its input to [T, B, D] before torch's fused attention; a non-contiguous
    # input there makes frozen/peft weights be copied on every call under autocast (see
    # docs/architecture.md). Laying the memory out as [T, B, D] makes that transpose contiguous.
    hidden = args[0]
    return (hidden.transpose(0, 1).contiguous().transpose(0, 1), *args[1:])


class SSLBackbone(Backbone):
    """A wav2vec2-family encoder (`Wav2Vec2Model`, `HubertModel` or `WavLMModel`)."""

    layout = LayerLayout(
        ffn_linears=("feed_forward.intermediate_dense", "feed_forward.output_dense"),
        attention_linears=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj"),
        ffn_input="feed_forward",
        ffn_output="feed_forward",
    )

    def __init__(self, model: nn.Module, *, name: str, source: dict, normalize_waveform: bool) -> None:
        super().__init__(model, name=name, source=source)
        self.family = model.config.model_type
        self.normalize_waveform = normalize_waveform
        if self.family == "wavlm":
            for layer in self.layers:
                layer.attention.register_forward_pre_hook(_contiguous_attention_input)

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def min_samples(self) -> int:
        # The conv stack's receptive field: 400 samples (25 ms) for the standard front end.
        size = 1
        for kernel, stride in zip(
            reversed(self.model.config.conv_kernel), reversed(self.model.config.conv_stride), strict=True
        ):
            size = (size - 1) * stride + kernel
        return size

    @property
    def uses_attention_mask(self) -> bool:
        """Group-norm models were trained without padding masks (the library warns against them);
        layer-norm models and WavLM need one."""
        return self.family == "wavlm" or self.model.config.feat_extract_norm == "layer"

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(lengths).long()

    def set_feature_encoder_trainable(self, trainable: bool) -> None:
        front_end = self.model.feature_extractor
        front_end.requires_grad_(trainable)
        # The library's own flag: when set, it marks the conv output as requiring grad in training.
        front_end._requires_grad = trainable

    def _run(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
        if self.normalize_waveform:
            waveforms = _normalize(waveforms, valid, lengths)
        waveforms = waveforms.masked_fill(~valid, 0.0)
        mask = valid.long() if self.uses_attention_mask else None
        output = self.model(waveforms, attention_mask=mask)
        return output.last_hidden_state, self.frame_lengths(lengths)


def _normalize(waveforms: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip over its valid samples (as the models' feature extractors do)."""
    count = lengths[:, None].to(waveforms.dtype)
    mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
    variance = ((waveforms - mean).square() * valid).sum(dim=1, keepdim=True) / count
    return (waveforms - mean) / torch.sqrt(variance + 1e-7)
