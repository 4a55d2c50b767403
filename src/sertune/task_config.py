"""What a run learns to predict: emotion classes, attribute dimensions, or both (docs/training.md).

Apart from the models so that the settings and the metrics' model selection import without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sertune.dimensions import DIMENSIONS, parse_dimensions
from sertune.errors import SertuneError

TASKS = ("categorical", "dimensional", "multitask")
DIMENSION_LOSSES = ("ccc", "mse")


@dataclass
class TaskConfig:
    """The task (`kind`), the attribute dimensions it predicts, their loss and weight in multitask."""

    kind: str = "categorical"
    dimensions: list[str] = field(default_factory=lambda: list(DIMENSIONS))
    # 1 - CCC per dimension over each batch, averaged (the attribute challenges' loss), or squared error.
    dim_loss: str = "ccc"
    # Multitask: the dimensional loss's weight beside the cross-entropy.
    dim_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise SertuneError(f"task.kind must be one of {', '.join(TASKS)}, got {self.kind!r}")
        self.dimensions = parse_dimensions(self.dimensions)
        if self.dim_loss not in DIMENSION_LOSSES:
            raise SertuneError(f"task.dim_loss must be one of {', '.join(DIMENSION_LOSSES)}, got {self.dim_loss!r}")

    @property
    def classifies(self) -> bool:
        """Whether the model predicts emotion classes."""
        return self.kind != "dimensional"

    @property
    def predicted_dimensions(self) -> list[str]:
        """The dimensions the model predicts (none for a categorical run)."""
        return [] if self.kind == "categorical" else list(self.dimensions)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML."""
        return {"kind": self.kind, "dimensions": list(self.dimensions), "dim_loss": self.dim_loss,
                "dim_weight": self.dim_weight}


def selection_score(metrics: Mapping[str, Any]) -> float | None:
    """What picks the best epoch (and the fold a run directory serves) from dev metrics: UAR as a fraction
    for classes, the mean CCC for dimensions, their average for multitask; None when neither is defined."""
    parts = []
    if metrics.get("uar") is not None:
        parts.append(float(metrics["uar"]) / 100)
    if "dimensions" in metrics and metrics.get("ccc_mean") is not None:
        parts.append(float(metrics["ccc_mean"]))
    return sum(parts) / len(parts) if parts else None
