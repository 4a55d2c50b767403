"""Whisper's encoder on the batch's real length, with log-mel features computed in torch.

The library's encoder insists on 3000 mel frames (30 s). Padding every 6-s clip to 30 s costs 6-10x
the compute, so for each batch we briefly give the encoder a positional table sliced to the
batch's length (and the matching `max_source_positions`), run the library's own forward, and
restore both. Padded frames are masked out of attention and zeroed where the convolutions could
carry them into valid frames, so a clip's features do not depend on what it is batched with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers import WhisperFeatureExtractor

from sertune.backbones.base import Backbone, LayerLayout
from sertune.errors import SertuneError

N_FFT = 400
HOP_LENGTH = 160
SAMPLE_RATE = 16000


def reflect_pad_clips(waveforms: torch.Tensor, lengths: torch.Tensor, half: int) -> torch.Tensor:
    """Each clip's valid samples reflect-padded by `half` at both of its own edges, zeros after: [B, N + 2 half]."""
    if bool((lengths == waveforms.shape[1]).all()):
        # Training crops are mostly of one length: one pad for the batch (1.3 ms against 2.2 for 8 x 6 s).
        return nn.functional.pad(waveforms[:, None, :], (half, half), mode="reflect")[:, 0]
    padded = waveforms.new_zeros(waveforms.shape[0], waveforms.shape[1] + 2 * half)
    for i, length in enumerate(lengths.tolist()):
        clip = waveforms[i, :length].view(1, 1, -1)
        padded[i, : length + 2 * half] = nn.functional.pad(clip, (half, half), mode="reflect").view(-1)
    return padded


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram for a padded batch, computed per clip over its valid samples.

    Matches transformers' WhisperFeatureExtractor(padding="longest") on each clip alone: the same
    mel filters (taken from the extractor), reflect padding at the clip's own edges, the clamp to
    8 (log10) below the clip's maximum. Frames past a clip's end are set to 0.
    """

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        filters = WhisperFeatureExtractor(feature_size=n_mels).mel_filters  # [n_fft/2+1, n_mels]
        self.register_buffer("filters", torch.tensor(filters, dtype=torch.float32).T, persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @staticmethod
    def frames(lengths: torch.Tensor) -> torch.Tensor:
        """Mel frames of clips of `lengths` samples (the extractor drops the STFT's last frame)."""
        return lengths // HOP_LENGTH

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-mel features [B, n_mels, max frames] of 16-kHz `waveforms` [B, N] with valid `lengths`."""
        padded = reflect_pad_clips(waveforms.float(), lengths, N_FFT // 2)
        n_frames = self.frames(lengths)
        width = int(n_frames.max())
        spectrum = torch.stft(
            padded, N_FFT, HOP_LENGTH, window=self.window, center=False, return_complex=True
        )[..., :width]
        valid = torch.arange(width, device=lengths.device)[None, :] < n_frames[:, None]
        return self.scaled(spectrum.abs().square(), valid)

    def scaled(self, power: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Whisper's log-mel scaling of a power spectrum [B, bins, frames], frames past `valid` [B, frames] zero."""
        log_mel = (self.filters @ power).clamp(min=1e-10).log10()
        valid = valid[:, None, :]
        peak = log_mel.masked_fill(~valid, -torch.inf).amax(dim=(1, 2), keepdim=True)
        log_mel = (torch.maximum(log_mel, peak - 8.0) + 4.0) / 4.0
        return log_mel.masked_fill(~valid, 0.0)


class WhisperBackbone(Backbone):
    """Whisper's encoder (the decoder is never loaded) run at the batch's real length."""

    family = "whisper"
    layout = LayerLayout(
        ffn_linears=("fc1", "fc2"),
        attention_linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
        ffn_input="fc1",
        ffn_output="fc2",
    )

    def __init__(self, encoder: nn.Module, *, name: str, source: dict) -> None:
        super().__init__(encoder, name=name, source=source)
        self.log_mel = LogMel(encoder.config.num_mel_bins)
        self._key_mask: torch.Tensor | None = None
        self._mel_frames: torch.Tensor | None = None
        for layer in self.layers:
            layer.register_forward_pre_hook(self._pass_padding_mask)
        encoder.conv1.register_forward_hook(self._zero_padded_conv_frames)

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @property
    def max_frames(self) -> int:
        return self.model.embed_positions.num_embeddings

    @property
    def min_samples(self) -> int:
        # The reflect padding of the first STFT frame needs more than half a window of signal.
        return N_FFT // 2 + 1

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (LogMel.frames(lengths) + 1) // 2  # conv2 has stride 2 and padding 1

    def set_feature_encoder_trainable(self, trainable: bool) -> None:
        self.model.conv1.requires_grad_(trainable)
        self.model.conv2.requires_grad_(trainable)

    def fixed_modules(self) -> list[nn.Module]:
        return [self.model.embed_positions]

    def _run(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.log_mel(waveforms, lengths)
        mel_frames = LogMel.frames(lengths)
        frames = self.frame_lengths(lengths)
        steps = int(frames.max())
        if steps > self.max_frames:
            seconds = self.max_frames * 2 * HOP_LENGTH / SAMPLE_RATE
            raise SertuneError(
                f"Whisper encodes at most {seconds:.0f} s at once; cut longer audio into windows"
            )
        features = nn.functional.pad(features, (0, 2 * steps - features.shape[-1]))
        features = features.to(self.model.conv1.weight.dtype)
        # Without a clip shorter than the conv input, there is no padded frame to zero.
        self._mel_frames = mel_frames if bool((mel_frames < 2 * steps).any()) else None
        padded = bool((frames < steps).any())
        self._key_mask = (
            torch.arange(steps, device=frames.device)[None, :] < frames[:, None] if padded else None
        )
        try:
            with self._positions_for(steps):
                last = self.model(features).last_hidden_state
        finally:
            self._key_mask = None
            self._mel_frames = None
        return last, frames

    @contextlib.contextmanager
    def _positions_for(self, steps: int) -> Iterator[None]:
        """Let the library's encoder accept `steps` output frames instead of its fixed 1500."""
        encoder = self.model
        table, limit = encoder.embed_positions, encoder.config.max_source_positions
        if steps == limit:
            yield
            return
        sliced = nn.Embedding(steps, table.embedding_dim, _weight=table.weight[:steps], _freeze=True)
        encoder.embed_positions, encoder.config.max_source_positions = sliced, steps
        try:
            yield
        finally:
            encoder.embed_positions, encoder.config.max_source_positions = table, limit

    def _zero_padded_conv_frames(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        # conv2 looks one frame past a clip's end; alone that frame is conv padding (zero), so make it
        # zero in a batch too. gelu(0) = 0 keeps it zero through the activation.
        if self._mel_frames is None:
            return output
        valid = torch.arange(output.shape[-1], device=output.device)[None, :] < self._mel_frames[:, None]
        return output * valid[:, None, :].to(output.dtype)

    def _pass_padding_mask(self, module: nn.Module, args: tuple) -> tuple | None:
        # The library calls each layer with attention_mask=None; give it the key-padding mask instead.
        if self._key_mask is None:
            return None
        hidden = args[0]
        if self.model.config._attn_implementation == "eager":
            blocked = torch.finfo(hidden.dtype).min
            mask = torch.zeros(self._key_mask.shape, dtype=hidden.dtype, device=hidden.device)
            mask = mask.masked_fill(~self._key_mask, blocked)[:, None, None, :]
        else:
            mask = self._key_mask[:, None, None, :]
        return (hidden, mask, *args[2:])
