"""The faster forms of the head, the log-mel padding and LoRA compute what the plain forms do (fp32)."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn

from sertune.backbones import build_backbone
from sertune.backbones.whisper import reflect_pad_clips
from sertune.head import EmotionHead, HeadConfig
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig
from sertune.tuning.lora import FusedLoraLinear, lora_layers

from conftest import TINY_CONFIGS


def _per_clip_reflect_pad(waveforms: torch.Tensor, lengths: torch.Tensor, half: int) -> torch.Tensor:
    padded = waveforms.new_zeros(waveforms.shape[0], waveforms.shape[1] + 2 * half)
    for i, length in enumerate(lengths.tolist()):
        clip = waveforms[i, :length].view(1, 1, -1)
        padded[i, : length + 2 * half] = nn.functional.pad(clip, (half, half), mode="reflect").view(-1)
    return padded


def test_batched_reflect_padding_equals_padding_each_clip_alone() -> None:
    torch.manual_seed(0)
    waveforms = torch.randn(5, 1000)
    lengths = torch.tensor([1000, 201, 202, 555, 999])  # 201: the shortest clip a half window of 200 allows
    expected = _per_clip_reflect_pad(waveforms, lengths, 200)
    assert torch.equal(reflect_pad_clips(waveforms, lengths, 200), expected)
    # Samples past a clip's length never leak in: garbage there changes nothing.
    noisy = waveforms.clone()
    for i, length in enumerate(lengths.tolist()):
        noisy[i, length:] = 1e6
    assert torch.equal(reflect_pad_clips(noisy, lengths, 200), expected)
    # A batch of equal-length clips takes the one-pad path: the same samples.
    full = torch.full((5,), 1000)
    assert torch.equal(reflect_pad_clips(waveforms, full, 200), _per_clip_reflect_pad(waveforms, full, 200))


def _conv_head_forward(head: EmotionHead, states: tuple[torch.Tensor, ...], lengths: torch.Tensor) -> torch.Tensor:
    """The study's head as the Conv1d modules compute it: channels first, masked sum over time."""
    weights = torch.softmax(head.layer_weights, 0)
    mixed = sum(w * s for w, s in zip(weights, states[1:], strict=True))
    frames = head.frame_layers(mixed.transpose(1, 2))
    valid = (torch.arange(frames.shape[-1])[None, :] < lengths[:, None])[:, None, :].to(frames.dtype)
    pooled = (frames * valid).sum(-1) / lengths[:, None].to(frames.dtype)
    return head.output_layers(pooled)


def test_head_as_linear_maps_equals_its_convolutions_forward_and_backward() -> None:
    torch.manual_seed(1)
    head = EmotionHead(24, 3, 5, HeadConfig(normalization="none", dropout=0.0))
    reference = copy.deepcopy(head)
    states = tuple(torch.randn(3, 11, 24) for _ in range(4))
    lengths = torch.tensor([11, 6, 1])
    target = torch.tensor([0, 3, 4])
    ours = head(states, lengths)
    theirs = _conv_head_forward(reference, states, lengths)
    assert torch.allclose(ours, theirs, atol=1e-5)
    nn.functional.cross_entropy(ours, target).backward()
    nn.functional.cross_entropy(theirs, target).backward()
    for (name, ours_p), (_, theirs_p) in zip(head.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.allclose(ours_p.grad, theirs_p.grad, atol=1e-5), name


def _outputs_and_gradients(classifier: EmotionClassifier, waveforms: torch.Tensor, lengths: torch.Tensor):
    classifier.zero_grad(set_to_none=True)
    outputs = classifier(waveforms, lengths)
    nn.functional.cross_entropy(outputs, torch.tensor([0, 1])).backward()
    gradients = {name: p.grad.clone() for name, p in classifier.named_parameters() if p.requires_grad}
    return outputs.detach(), gradients


def _as_peft(classifier: EmotionClassifier) -> None:
    for layer in lora_layers(classifier.backbone.model):
        layer.__class__ = PeftLoraLinear


@pytest.mark.parametrize("kind", ["whisper", "wavlm"])
def test_fused_lora_equals_peft_forward_and_gradients(kind: str) -> None:
    torch.manual_seed(2)
    backbone = build_backbone(TINY_CONFIGS[kind](), seed=0)
    classifier = EmotionClassifier(backbone, ["a", "b", "c"], TuningConfig(method="lora", lora_targets="ffn")).eval()
    layers = lora_layers(backbone.model)
    assert layers and all(type(layer) is FusedLoraLinear for layer in layers)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)  # zero at initialisation: make the low-rank path count
    waveforms, lengths = torch.randn(2, 16000), torch.tensor([16000, 9000])
    fused = _outputs_and_gradients(classifier, waveforms, lengths)
    _as_peft(classifier)
    reference = _outputs_and_gradients(classifier, waveforms, lengths)
    assert torch.allclose(fused[0], reference[0], atol=1e-5)
    assert fused[1].keys() == reference[1].keys()
    for name, gradient in fused[1].items():
        assert torch.allclose(gradient, reference[1][name], atol=1e-5), name


def test_fused_lora_defers_to_peft_when_lora_is_not_plain() -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0)
    EmotionClassifier(backbone, ["a", "b"], TuningConfig(method="lora", lora_dropout=0.5)).train()
    layer = lora_layers(backbone.model)[0]
    assert layer._plain_adapter((), {}) is None  # dropout: peft's forward draws the mask
    torch.manual_seed(0)
    x = torch.randn(2, 5, layer.in_features)
    torch.manual_seed(1)
    ours = layer(x)
    torch.manual_seed(1)
    assert torch.equal(ours, PeftLoraLinear.forward(layer, x))


def test_head_dropout_draws_what_the_convolution_layout_drew() -> None:
    head = EmotionHead(24, 3, 5, HeadConfig(normalization="none", dropout=0.3)).train()
    reference = copy.deepcopy(head)
    states, lengths = tuple(torch.randn(3, 11, 24) for _ in range(4)), torch.tensor([11, 6, 1])
    torch.manual_seed(5)
    ours = head(states, lengths)
    torch.manual_seed(5)
    theirs = _conv_head_forward(reference, states, lengths)
    assert torch.allclose(ours, theirs, atol=1e-5)  # same seed, same mask: training repeats as before
    torch.manual_seed(6)
    assert not torch.allclose(head(states, lengths), theirs, atol=1e-3)
