"""The encoder interface shared by every family: waveforms in, every layer's hidden states out.

Layer outputs are collected with our own forward hooks on the library's layer modules, because
transformers 5 records hidden states through hooks of its own that tuning wrappers can bypass
(docs/architecture.md, "Decisions"). Tuning methods add their hooks later; the collector's are placed so that
they see what the next layer sees: the input of layer 0 before any prompt is prepended, and each
layer's output after any prompt is removed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sertune.errors import SertuneError


@dataclass
class EncoderOutput:
    """Hidden states of a padded batch: L+1 tensors [B, T, D] and the valid frames per clip [B]."""

    hidden_states: tuple[torch.Tensor, ...]
    frame_lengths: torch.Tensor

    def frame_mask(self) -> torch.Tensor:
        """Boolean [B, T] mask of the valid frames."""
        steps = self.hidden_states[0].shape[1]
        return torch.arange(steps, device=self.frame_lengths.device)[None, :] < self.frame_lengths[:, None]


@dataclass(frozen=True)
class LayerLayout:
    """Where the parts a tuning method needs live inside one transformer layer (dotted names)."""

    ffn_linears: tuple[str, ...]
    attention_linears: tuple[str, ...]
    ffn_input: str  # module whose input is the FFN's input
    ffn_output: str  # module whose output is the FFN's output


def layer_output_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a layer's output (some layers return tuples)."""
    return output[0] if isinstance(output, tuple) else output


class Backbone(nn.Module):
    """A pretrained speech encoder with one interface for every family.

    Subclasses implement `_run(waveforms, lengths) -> (last_hidden_state, frame_lengths)`, which runs
    the library model; this class gathers the per-layer states around it.
    """

    family: str = ""
    layout: LayerLayout
    sample_rate: int = 16000

    def __init__(self, model: nn.Module, *, name: str, source: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        self._recording: list[torch.Tensor] | None = None
        # One forward at a time: the hooks record into instance state, and Whisper briefly swaps
        # its positional table for the batch's length.
        self._lock = threading.RLock()
        first = self.layers[0]
        first.register_forward_pre_hook(self._record_input)
        for layer in self.layers:
            layer.register_forward_hook(self._record_output)

    # -- family-specific parts -------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers, in order."""
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def min_samples(self) -> int:
        """The shortest clip (in samples) that yields at least one frame."""
        raise NotImplementedError

    def _run(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames for clips of `lengths` samples."""
        raise NotImplementedError

    def set_feature_encoder_trainable(self, trainable: bool) -> None:
        """Train or freeze the convolutional front end (`full` keeps it frozen unless asked)."""
        raise NotImplementedError

    def fixed_modules(self) -> list[nn.Module]:
        """Modules that are never trained, not even by `full` (e.g. a fixed positional table)."""
        return []

    # -- shared interface ------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        """Where the transformer layers live (new tuning modules and heads go there too)."""
        return next(self.layers.parameters()).device

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a padded batch of 16-kHz waveforms [B, samples] with valid `lengths` [B].

        Returns L+1 hidden states (the embedding / conv output first, then each transformer layer;
        the last one after the encoder's final layer norm where it has one) and frame lengths.
        """
        if waveforms.dim() != 2:
            raise SertuneError(f"waveforms must be [batch, samples], got shape {tuple(waveforms.shape)}")
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long)
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        too_short = lengths < self.min_samples
        # An exported graph cannot raise on tensor values (sertune.export records the minimum instead).
        if not torch.compiler.is_exporting() and bool(too_short.any()):
            shortest = int(lengths.min())
            raise SertuneError(
                f"a clip of {shortest} samples is shorter than {self.name}'s minimum of {self.min_samples} "
                f"samples ({self.min_samples / self.sample_rate * 1000:.0f} ms at {self.sample_rate} Hz)"
            )
        with self._lock:
            self._recording = []
            try:
                last, frames = self._run(waveforms, lengths)
                states = self._recording
            finally:
                self._recording = None
        if len(states) != self.num_layers + 1:
            raise RuntimeError(f"recorded {len(states)} hidden states, expected {self.num_layers + 1}")
        states[-1] = last
        return EncoderOutput(tuple(states), frames)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        return self.encode(waveforms, lengths)

    def _record_input(self, module: nn.Module, args: tuple) -> None:
        if self._recording is not None:
            self._recording.append(args[0])

    def _record_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._recording is not None:
            self._recording.append(layer_output_tensor(output))

    def parameter_count(self) -> int:
        """Number of parameters of the encoder itself (LoRA weights that peft put inside it excluded)."""
        return sum(p.numel() for name, p in self.model.named_parameters() if "lora_" not in name)
