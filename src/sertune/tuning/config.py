"""Settings of the tuning methods and how a method name is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from sertune.errors import SertuneError

PEFT_PARTS = ("lora", "adapter", "parallel-adapter", "prompt")
BASELINES = ("frozen", "full")
# "combined" is the study's name for deep prompt + LoRA + sequential adapter together.
ALIASES = {"combined": ("prompt", "lora", "adapter")}
LORA_TARGETS = ("ffn", "attn", "all")
# The TuningConfig settings that act on some method parts only; the others act on every method.
SETTING_PARTS = {
    "lora_rank": ("lora",), "lora_alpha": ("lora",), "lora_dropout": ("lora",), "lora_targets": ("lora",),
    "adapter_dim": ("adapter", "parallel-adapter"), "adapter_scale": ("adapter", "parallel-adapter"),
    "adapter_dropout": ("adapter", "parallel-adapter"), "prompt_length": ("prompt",),
    "layers": PEFT_PARTS, "train_feature_encoder": ("full",),
}


def setting_acts_on(name: str, parts: tuple[str, ...]) -> bool:
    """Whether the tuning setting `name` changes a method made of `parts` (`lora_rank` does not change an adapter)."""
    return name not in SETTING_PARTS or any(part in SETTING_PARTS[name] for part in parts)


@dataclass
class TuningConfig:
    """How the encoder is adapted. `method` is one of `frozen`, `full`, or PEFT parts joined by `+`."""

    method: str = "lora"
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # "ffn", "attn", "all", or explicit module names inside a layer (e.g. "feed_forward.output_dense").
    lora_targets: str | list[str] = "ffn"
    adapter_dim: int = 128
    adapter_scale: float = 0.1
    adapter_dropout: float = 0.1
    prompt_length: int = 5
    # Which transformer layers the PEFT methods touch (0-based; None = all). Negative counts from the top.
    layers: list[int] | None = None
    # `full` keeps the convolutional front end frozen unless this is set.
    train_feature_encoder: bool = False
    parts: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.parts = parse_method(self.method)
        if isinstance(self.lora_targets, str) and self.lora_targets not in LORA_TARGETS:
            self.lora_targets = [name.strip() for name in self.lora_targets.split(",") if name.strip()]
        for name, value in (("lora_rank", self.lora_rank), ("adapter_dim", self.adapter_dim)):
            if value < 1:
                raise SertuneError(f"{name} must be at least 1, got {value}")
        if self.prompt_length < 1:
            raise SertuneError(f"prompt_length must be at least 1, got {self.prompt_length}")

    def uses(self, part: str) -> bool:
        """Whether the method includes `part` (e.g. "lora")."""
        return part in self.parts

    @property
    def is_peft(self) -> bool:
        return self.method not in BASELINES

    def layer_indices(self, num_layers: int) -> list[int]:
        """The selected layers as sorted non-negative indices."""
        if self.layers is None:
            return list(range(num_layers))
        chosen = set()
        for index in self.layers:
            if not -num_layers <= index < num_layers:
                raise SertuneError(f"layer {index} does not exist: the encoder has {num_layers} layers")
            chosen.add(index % num_layers)
        return sorted(chosen)

    def to_dict(self) -> dict:
        """The settings as plain data (for sertune.json)."""
        return {key: value for key, value in vars(self).items() if key != "parts"}


def parse_method(method: str) -> tuple[str, ...]:
    """Split a method name into its parts; `combined` expands to prompt + LoRA + adapter."""
    if method in BASELINES:
        return (method,)
    parts: list[str] = []
    for piece in method.split("+"):
        piece = piece.strip()
        expanded = ALIASES.get(piece, (piece,))
        for part in expanded:
            if part not in PEFT_PARTS:
                known = ", ".join((*BASELINES, *PEFT_PARTS, *ALIASES))
                raise SertuneError(f"unknown method part {part!r} in {method!r}; known: {known}")
            if part not in parts:
                parts.append(part)
    if "adapter" in parts and "parallel-adapter" in parts:
        raise SertuneError("choose either a sequential or a parallel adapter, not both")
    return tuple(parts)
