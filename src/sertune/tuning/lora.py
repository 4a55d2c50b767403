"""LoRA through Hugging Face peft, injected into the library model without replacing its layers."""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import Linear as PeftLoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn

from sertune.backbones.base import Backbone
from sertune.errors import SertuneError
from sertune.tuning.config import TuningConfig


def lora_module_names(backbone: Backbone, config: TuningConfig) -> list[str]:
    """Full names (inside `backbone.model`) of the linears that get LoRA."""
    layout = backbone.layout
    targets = config.lora_targets
    first = backbone.layers[0]
    if targets == "ffn":
        inner = list(layout.ffn_linears)
    elif targets == "attn":
        inner = list(layout.attention_linears)
    elif targets == "all":
        inner = [name for name, module in first.named_modules() if isinstance(module, nn.Linear)]
    else:
        inner = list(targets)
    if backbone.family == "wavlm":
        blind = [name for name in inner if name in layout.attention_linears]
        if blind:
            # WavLM hands these weights straight to torch's fused attention, so a peft-wrapped
            # Linear there is never called and its LoRA would silently train nothing.
            raise SertuneError(
                f"LoRA cannot reach WavLM's attention projections ({', '.join(blind)}): WavLM passes their "
                "weights directly to torch's fused attention. Use --lora-targets ffn, or name other modules."
            )
    missing = [name for name in inner if not isinstance(_find(first, name), (nn.Linear, LoraLayer))]
    if missing:
        linears = [name for name, module in first.named_modules() if isinstance(module, nn.Linear)]
        raise SertuneError(
            f"no linear layer named {missing} in a {backbone.family} layer; linears: {linears}"
        )
    prefix = _layers_prefix(backbone)
    return [
        f"{prefix}.{index}.{name}" for index in config.layer_indices(backbone.num_layers) for name in inner
    ]


def inject_lora(backbone: Backbone, config: TuningConfig, adapter_name: str) -> None:
    """Add a LoRA adapter called `adapter_name` to the backbone's selected linears."""
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_module_names(backbone, config),
        bias="none",
    )
    inject_adapter_in_model(lora, backbone.model, adapter_name=adapter_name)
    for layer in lora_layers(backbone.model):
        if type(layer) is PeftLoraLinear:
            layer.__class__ = FusedLoraLinear


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA linear, with plain LoRA computed as two `addmm` instead of three passes over the output.

    peft computes base(x), then lora_B(lora_A(x)), multiplies it by the scaling and adds it: two
    extra reads and writes of an output as wide as the FFN. Here the low-rank product is added into
    the base output by the matrix product itself (`addmm` with `alpha=scaling`): the same outputs
    (bit-identical on CPU in fp32; gradients equal up to the order of float sums) with two fewer
    passes over FFN-wide tensors (benchmarks/roofline.py's profile, benchmarks/step_candidates.py).
    Anything else (merged, disabled, several active adapters, dropout, DoRA or other variants, a
    LoRA bias, mixed batches, transposed weights, autocast) goes through peft's own forward.
    """

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        adapter = self._plain_adapter(args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base, down, up = self.base_layer, self.lora_A[adapter], self.lora_B[adapter]
        rows = x.reshape(-1, x.shape[-1])
        if base.bias is None:
            out = rows @ base.weight.T
        else:
            out = torch.addmm(base.bias, rows, base.weight.T)
        out = torch.addmm(out, rows @ down.weight.T, up.weight.T, alpha=self.scaling[adapter])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _plain_adapter(self, args: tuple, kwargs: dict) -> str | None:
        """The one active adapter when it is plain LoRA in fp32-like conditions, else None."""
        if args or kwargs or self.merged or self.disable_adapters or self.fan_in_fan_out:
            return None
        adapters = [name for name in self.active_adapters if name in self.lora_A]
        if len(adapters) != 1:
            return None
        (adapter,) = adapters
        plain = (
            isinstance(self.lora_dropout[adapter], nn.Identity)
            and adapter not in self.lora_variant
            and not self.lora_bias.get(adapter, False)
            and type(self.base_layer) is nn.Linear
            and not torch.is_autocast_enabled(self.base_layer.weight.device.type)
        )
        return adapter if plain else None


def lora_layers(module: nn.Module) -> list[LoraLayer]:
    """Every peft LoRA layer inside `module`."""
    return [child for child in module.modules() if isinstance(child, LoraLayer)]


def merge_lora(backbone: Backbone, adapter_name: str) -> None:
    """Fold the adapter into the base weights and put the plain linears back (no LoRA cost left)."""
    for name, module in list(backbone.model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=[adapter_name])
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.model.get_submodule(parent_name), child, module.get_base_layer())


def _find(layer: nn.Module, name: str) -> nn.Module | None:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        return None


def _layers_prefix(backbone: Backbone) -> str:
    target = backbone.layers
    for name, module in backbone.model.named_modules():
        if module is target:
            return name
    raise RuntimeError("the backbone's layers are not inside its model")
