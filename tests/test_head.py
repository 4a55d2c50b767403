"""The head's optional layer standardisation: off by default (the study's head), scale- and shift-free when on."""

from __future__ import annotations

import torch

from sertune.head import EmotionHead, HeadConfig


def _states(batch: int = 2, frames: int = 7, dim: int = 16, layers: int = 3) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(batch, frames, dim) for _ in range(layers + 1))


def test_normalised_layers_ignore_each_frames_scale_and_offset():
    head = EmotionHead(16, 3, 4, HeadConfig(normalize_layers=True)).eval()
    states, lengths = _states(), torch.tensor([7, 4])
    moved = tuple(3.0 * state + 5.0 for state in states)
    assert torch.allclose(head(states, lengths), head(moved, lengths), atol=1e-5)


def test_the_default_head_is_the_studys_and_sees_the_scale():
    assert HeadConfig().normalize_layers is False
    head = EmotionHead(16, 3, 4, HeadConfig()).eval()
    states, lengths = _states(), torch.tensor([7, 4])
    moved = tuple(3.0 * state + 5.0 for state in states)
    assert not torch.allclose(head(states, lengths), head(moved, lengths), atol=1e-3)
    # no parameters are added: the study's parameter counts still hold
    with_norm = EmotionHead(16, 3, 4, HeadConfig(normalize_layers=True))
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in with_norm.parameters())
