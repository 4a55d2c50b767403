"""EmotionClassifier: a backbone, its tuning methods and the emotion head, as one module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sertune.backbones.base import Backbone
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.head import EmotionHead, HeadConfig, Statistics
from sertune.tuning import TuningConfig, activate, attach, merge_lora

# Name segments that are followed by the adapter name in parameter names.
_NAMED_CONTAINERS = ("lora_A", "lora_B", "adapters", "prompts")
CANONICAL_ADAPTER = "default"


class EmotionClassifier(nn.Module):
    """Backbone + tuning methods + head. `forward(waveforms, lengths)` returns outputs [B, classes + dimensions]:
    the class logits, then one value per attribute dimension (normalised to [0, 1] by its corpus scale).

    Several classifiers may share one backbone under different `adapter_name`s (each forward
    activates its own adapter); they then share the encoder's memory.
    """

    def __init__(
        self,
        backbone: Backbone,
        labels: list[str],
        tuning: TuningConfig,
        head: HeadConfig | None = None,
        *,
        dimensions: Sequence[Dimension] = (),
        adapter_name: str = CANONICAL_ADAPTER,
    ) -> None:
        super().__init__()
        if len(labels) == 1 or not (labels or dimensions):
            raise SertuneError(f"a classifier needs at least two classes or one dimension, got classes {list(labels)}")
        self.backbone = backbone
        self.labels = list(labels)
        self.dimensions = list(dimensions)
        self.tuning_config = tuning
        self.head_config = head or HeadConfig()
        self.adapter_name = adapter_name
        self.merged = False
        attach(backbone, tuning, adapter_name)
        outputs = len(self.labels) + len(self.dimensions)
        self.head = EmotionHead(
            backbone.hidden_size, backbone.num_layers, outputs, self.head_config, num_dimensions=len(self.dimensions)
        )
        self.head.to(backbone.device)
        self.trained_names = [name for name, p in self.named_parameters() if p.requires_grad]
        # Saved beside the trained tensors: the head's normalisation statistics, set from the data.
        self.statistic_names = [f"head.{name}" for name, _ in self.head.named_buffers()]

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, statistics: Statistics | None = None
    ) -> torch.Tensor:
        """Outputs [B, classes + dimensions]; `statistics` normalise each clip's layer outputs (see the head)."""
        if self.backbone.tuning.active != self.adapter_name:
            activate(self.backbone, self.adapter_name)
        encoded = self.backbone.encode(waveforms, lengths)
        return self.head(encoded.hidden_states, encoded.frame_lengths, statistics)

    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return {name: tensors[name] for name in (*self.trained_names, *self.statistic_names)}

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors this method trains (and the head's statistics), under adapter-independent names."""
        tensors = self._saved_tensors().items()
        return {canonical_name(name, self.adapter_name): tensor.detach() for name, tensor in tensors}

    def load_trained_state_dict(self, tensors: dict[str, torch.Tensor], *, origin: str = "checkpoint") -> None:
        """Load tensors saved by `trained_state_dict`; missing, unexpected or misshapen ones are named."""
        saved = (*self.trained_names, *self.statistic_names)
        expected = {canonical_name(name, self.adapter_name): name for name in saved}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise SertuneError(
                f"{origin} does not fit this model ({self.backbone.name}, {self.tuning_config.method}): "
                f"missing {len(missing)} tensors {_few(missing)}, "
                f"unexpected {len(unexpected)} tensors {_few(unexpected)}"
            )
        parameters = self._saved_tensors()
        with torch.no_grad():
            for saved_name, name in expected.items():
                target, value = parameters[name], tensors[saved_name]
                if target.shape != value.shape:
                    raise SertuneError(
                        f"{origin}: tensor {saved_name} has shape {tuple(value.shape)}, "
                        f"the model expects {tuple(target.shape)}"
                    )
                target.copy_(value)

    def merge(self) -> None:
        """Fold LoRA into the encoder weights for inference: the merged encoder costs what the bare one does."""
        if not self.tuning_config.uses("lora") or self.merged:
            return
        if len(self.backbone.tuning.configs) > 1:
            raise SertuneError("cannot merge LoRA into a backbone shared by several adapters")
        merge_lora(self.backbone, self.adapter_name)
        # The adapters' hooks sat on peft's wrappers, which merging replaced by the plain linears.
        self.backbone.tuning.install_ffn_hooks(self.backbone)
        self.merged = True

    def parameter_counts(self) -> dict[str, int]:
        """Trained parameters split into the tuning methods (or the encoder, for `full`) and the head."""
        parameters = dict(self.named_parameters())
        head = sum(parameters[name].numel() for name in self.trained_names if name.startswith("head."))
        trained = sum(parameters[name].numel() for name in self.trained_names)
        return {
            "tuning": trained - head,
            "head": head,
            "trained": trained,
            "encoder": self.backbone.parameter_count(),
        }


def canonical_name(name: str, adapter_name: str) -> str:
    """Replace the adapter name inside a parameter name by the canonical one (and nothing else)."""
    return _rename(name, adapter_name, CANONICAL_ADAPTER)


def _rename(name: str, old: str, new: str) -> str:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if parts[i] == old and parts[i - 1] in _NAMED_CONTAINERS:
            parts[i] = new
    return ".".join(parts)


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"
