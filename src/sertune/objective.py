"""A run's training objective: how the model's outputs split into classes and dimensions, and the loss.

The head's outputs are the class logits followed by one value per attribute dimension (scores
normalised to [0, 1]). Categorical runs train on the (class-weighted) cross-entropy, dimensional runs
on the dimensional loss (1 - CCC per dimension over the batch, or squared error), multitask runs on
cross-entropy + `dim_weight` x the dimensional loss. Clips without a score (NaN target) count for
the classes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sertune.losses import dimension_loss
from sertune.task_config import TaskConfig


class Objective:
    """The loss of one run's outputs against class labels and attribute targets."""

    def __init__(self, task: TaskConfig, n_classes: int, class_weights: torch.Tensor | None = None) -> None:
        self.task = task
        self.n_classes = n_classes
        self.class_weights = class_weights

    def split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits [B, classes], dimension values [B, dimensions]) of the head's outputs."""
        return outputs[:, : self.n_classes], outputs[:, self.n_classes :]

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """The training loss of a batch (float32 whatever the outputs' precision)."""
        logits, values = self.split(outputs.float())
        total = outputs.new_zeros((), dtype=torch.float32)
        if self.task.classifies:
            weight = None if self.class_weights is None else self.class_weights.to(outputs.device)
            total = total + F.cross_entropy(logits, labels.to(outputs.device), weight=weight)
        if self.task.predicted_dimensions:
            weight = self.task.dim_weight if self.task.classifies else 1.0
            total = total + weight * dimension_loss(self.task.dim_loss, values, targets.to(outputs.device))
        return total
