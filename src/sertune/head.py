"""The study's classification head: weighted layer sum -> 1x1 convs -> masked mean pool -> MLP."""

from __future__ import annotations

import torch
from torch import nn

from sertune.head_config import HeadConfig

__all__ = ["EmotionHead", "HeadConfig"]


class EmotionHead(nn.Module):
    """Softmax-weighted sum of layer outputs, three 1x1 Conv1d, mean over valid frames, Linear-ReLU-Linear."""

    def __init__(self, hidden_size: int, num_layers: int, num_classes: int, config: HeadConfig) -> None:
        super().__init__()
        self.include_embedding = config.include_embedding
        self.normalize_layers = config.normalize_layers
        self.layer_weights = nn.Parameter(torch.zeros(num_layers + int(config.include_embedding)))
        channels = config.channels
        self.frame_layers = nn.Sequential(
            nn.Conv1d(hidden_size, channels, 1),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Conv1d(channels, channels, 1),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Conv1d(channels, channels, 1),
        )
        self.output_layers = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, num_classes)
        )

    def forward(self, hidden_states: tuple[torch.Tensor, ...], frame_lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] from L+1 hidden states [B, T, D] and valid frame counts [B]."""
        states = hidden_states if self.include_embedding else hidden_states[1:]
        if self.normalize_layers:
            states = [nn.functional.layer_norm(state, state.shape[-1:]) for state in states]
        weights = torch.softmax(self.layer_weights, dim=0)
        mixed = torch.einsum("l,lbtd->btd", weights.to(states[0].dtype), torch.stack(states))
        frames = self.frame_layers(mixed.transpose(1, 2))  # [B, C, T]
        valid = torch.arange(frames.shape[-1], device=frames.device)[None, :] < frame_lengths[:, None]
        valid = valid[:, None, :].to(frames.dtype)
        pooled = (frames * valid).sum(dim=-1) / frame_lengths[:, None].clamp(min=1).to(frames.dtype)
        return self.output_layers(pooled)
