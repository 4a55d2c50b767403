"""The head's normalisation of layer outputs: the study's head unchanged, statistics given or stored."""

from __future__ import annotations

import pytest
import torch

from sertune.config import resolve_config
from sertune.errors import SertuneError
from sertune.head import EmotionHead, HeadConfig
from sertune.head_config import upgrade_saved_head


def _states(batch: int = 2, frames: int = 7, dim: int = 16, layers: int = 3) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(batch, frames, dim) for _ in range(layers + 1))


def test_the_study_head_is_the_paper_preset_and_ignores_statistics():
    assert resolve_config(preset="paper").head.normalization == "none"
    head = EmotionHead(16, 3, 4, HeadConfig(normalization="none")).eval()
    states, lengths = _states(), torch.tensor([7, 4])
    weights = torch.softmax(head.layer_weights, 0)
    mixed = sum(w * s for w, s in zip(weights, states[1:], strict=True))
    frames = head.frame_layers(mixed.transpose(1, 2))
    pooled = torch.stack([frames[0, :, :7].mean(-1), frames[1, :, :4].mean(-1)])
    assert torch.allclose(head(states, lengths), head.output_layers(pooled), atol=1e-5)
    assert not list(head.buffers())


def test_a_speakers_statistics_remove_its_offset_and_scale():
    head = EmotionHead(16, 3, 4, HeadConfig(normalization="speaker")).eval()
    states, lengths = _states(), torch.tensor([7, 4])
    mean, std = torch.randn(2, 4, 16), torch.rand(2, 4, 16) + 0.5
    # A speaker whose voice moves every output by mean and scales it by std, normalised with exactly those.
    voiced = tuple(state * std[:, i, None, :] + mean[:, i, None, :] for i, state in enumerate(states))
    plain = head(states, lengths, (torch.zeros(2, 4, 16), torch.ones(2, 4, 16)))
    assert torch.allclose(head(voiced, lengths, (mean, std)), plain, atol=1e-4)
    assert not torch.allclose(head(voiced, lengths), plain, atol=1e-2)  # stored (training) statistics differ


def test_without_statistics_a_normalising_head_uses_its_stored_ones():
    head = EmotionHead(16, 3, 4, HeadConfig(normalization="global")).eval()
    mean, std = torch.randn(4, 16), torch.rand(4, 16) + 0.5
    head.set_statistics(mean, std)
    assert torch.equal(head.input_mean, mean[1:])  # the embedding output is not weighed by default
    states, lengths = _states(), torch.tensor([7, 4])
    given = (mean.expand(2, -1, -1), std.expand(2, -1, -1))
    assert torch.allclose(head(states, lengths), head(states, lengths, given), atol=1e-6)
    # Statistics are buffers, not parameters: the study's parameter counts still hold.
    study = EmotionHead(16, 3, 4, HeadConfig(normalization="none"))
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in study.parameters())


def test_head_settings_saved_by_older_versions_are_brought_up_to_date():
    saved = {"channels": 256, "dropout": 0.1, "include_embedding": False, "normalize_layers": False}
    upgrade_saved_head(saved)
    assert saved == {"channels": 256, "dropout": 0.1, "include_embedding": False, "normalization": "none"}
    with pytest.raises(ValueError, match=r"head\.normalize_layers .* is no longer supported; retrain the run"):
        upgrade_saved_head({"normalize_layers": True})


def test_default_and_unknown_normalization():
    assert HeadConfig().normalization == "speaker"
    with pytest.raises(SertuneError, match=r"head\.normalization must be one of none, global, speaker, got 'layer'"):
        HeadConfig(normalization="layer")
