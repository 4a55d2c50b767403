"""The study's classification head: weighted layer sum -> 1x1 convs -> masked mean pool -> MLP,
optionally on layer outputs standardised per speaker or over the training clips."""

from __future__ import annotations

import torch
from torch import nn

from sertune.head_config import HeadConfig

__all__ = ["EmotionHead", "HeadConfig", "Statistics", "channel_first_dropout"]

# Per-clip (mean, std) of every layer output, each [B, L+1, D] like the L+1 hidden states.
Statistics = tuple[torch.Tensor, torch.Tensor]


class EmotionHead(nn.Module):
    """Softmax-weighted sum of layer outputs, three 1x1 Conv1d, mean over valid frames, Linear-ReLU-Linear."""

    def __init__(
        self, hidden_size: int, num_layers: int, num_outputs: int, config: HeadConfig, num_dimensions: int = 0
    ) -> None:
        super().__init__()
        # The last `num_dimensions` outputs are attribute scores in [0, 1] (a sigmoid keeps them on the scale).
        self.num_dimensions = num_dimensions
        self.include_embedding = config.include_embedding
        self.normalization = config.normalization
        layers = num_layers + int(config.include_embedding)
        self.layer_weights = nn.Parameter(torch.zeros(layers))
        if self.normalization != "none":
            # The training clips' statistics, saved with the head: what a clip is normalised with when
            # the caller has no statistics of its speaker (the trainer sets them before training).
            self.register_buffer("input_mean", torch.zeros(layers, hidden_size))
            self.register_buffer("input_std", torch.ones(layers, hidden_size))
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
            nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, num_outputs)
        )

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the statistics used when `forward` gets none, each [L+1, D] like the hidden states."""
        self.input_mean.copy_(self._weighed(mean))
        self.input_std.copy_(self._weighed(std))

    def _weighed(self, values: torch.Tensor) -> torch.Tensor:
        """The per-layer rows [..., L+1, D] of the layers this head weighs."""
        return values if self.include_embedding else values[..., 1:, :]

    def _frame_layers(self, frames: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolutions of `frame_layers` on time-major frames [B, T, D], as linear maps.

        A 1x1 Conv1d is a linear map of each frame; applied as one on [B, T, D] it needs no transposed
        copies of the frames, forward or backward (the Conv1d modules keep the saved tensors' layout).
        """
        for layer in self.frame_layers:
            if isinstance(layer, nn.Conv1d):
                frames = nn.functional.linear(frames, layer.weight.squeeze(-1), layer.bias)
            elif isinstance(layer, nn.Dropout):
                frames = channel_first_dropout(frames, layer.p) if self.training and layer.p > 0 else frames
            else:
                frames = layer(frames)
        return frames

    def forward(
        self, hidden_states: tuple[torch.Tensor, ...], frame_lengths: torch.Tensor, statistics: Statistics | None = None
    ) -> torch.Tensor:
        """Outputs [B, num_outputs] (class logits, then dimension values in [0, 1]) from L+1 hidden states
        [B, T, D] and valid frame counts [B].

        `statistics` (mean, std), each [B, L+1, D], standardise each clip's layer outputs (with its
        speaker's, say); without them a normalising head uses its stored ones.
        """
        states = hidden_states if self.include_embedding else hidden_states[1:]
        weights = torch.softmax(self.layer_weights, dim=0)
        if self.normalization == "none":
            mixed = torch.einsum("l,lbtd->btd", weights.to(states[0].dtype), torch.stack(states))
        else:
            if statistics is None:
                mean, std = self.input_mean[None], self.input_std[None]
            else:
                mean, std = (self._weighed(values.float()) for values in statistics)
            scale = weights[None, :, None] / std  # [B or 1, layers, D]
            # Layer by layer in float32: a large mean subtracted in bfloat16 would leave mostly rounding.
            mixed = sum(
                (state.float() - mean[:, i, None, :]) * scale[:, i, None, :] for i, state in enumerate(states)
            ).to(states[0].dtype)
        frames = self._frame_layers(mixed)  # [B, T, C]
        valid = torch.arange(frames.shape[1], device=frames.device)[None, :] < frame_lengths[:, None]
        share = valid.to(frames.dtype) / frame_lengths[:, None].clamp(min=1).to(frames.dtype)
        pooled = torch.bmm(share[:, None, :], frames)[:, 0]  # the mean over valid frames, one product
        outputs = self.output_layers(pooled)
        if not self.num_dimensions:
            return outputs
        split = outputs.shape[-1] - self.num_dimensions
        return torch.cat([outputs[:, :split], torch.sigmoid(outputs[:, split:])], dim=-1)


def channel_first_dropout(frames: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of time-major frames [B, T, C] with its mask drawn channel-first, as `nn.Dropout` draws it.

    The mask is drawn in the order `nn.Dropout` would draw it on the [B, C, T] input of the Conv1d
    layers, so a seeded run takes the same random stream (and trains as it did) whichever layout
    the head computes in.
    """
    keep = frames.new_empty(frames.shape[0], frames.shape[2], frames.shape[1]).bernoulli_(1 - p).div_(1 - p)
    return frames * keep.transpose(1, 2)
