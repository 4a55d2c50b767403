"""Exact batched evaluation on one or many processes, and the metrics of a prediction set.

Each process runs its own disjoint batches (see `sertune.sampler`), keeps every clip's logits with
its dataset index, and one gather at the end gives every process all clips exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import Dataset

from sertune.corpora import Utterance
from sertune.data import make_loader
from sertune.metrics import score_predictions
from sertune.sampler import ShardedEvalBatchSampler

# forward(batch) -> logits [B, classes]
Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Predictions:
    """Logits of the clips that could be read, in dataset order (`indices` into the dataset)."""

    indices: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    def loss(self, class_weights: torch.Tensor | None) -> float:
        """Mean (class-weighted) cross-entropy, as in training."""
        if not len(self.indices):
            return float("nan")
        return float(
            F.cross_entropy(torch.from_numpy(self.logits), torch.from_numpy(self.labels), weight=class_weights)
        )


def predict_dataset(
    accelerator: Accelerator,
    forward: Forward,
    dataset: Dataset,
    collate_fn: Callable,
    *,
    batch_size: int,
    max_seconds: float,
    workers: int,
) -> Predictions:
    """Logits of every readable clip of `dataset`, each computed once over all processes."""
    sampler = ShardedEvalBatchSampler(
        dataset.durations(),
        batch_size,
        max_padded_length=batch_size * max_seconds,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    rows: list[tuple[int, np.ndarray, int]] = []
    with torch.inference_mode(), accelerator.autocast():
        for batch in make_loader(dataset, sampler, collate_fn, workers):
            if batch is None:
                continue
            logits = forward(batch).float().cpu().numpy()
            rows.extend(zip(batch["index"].tolist(), logits, batch["label"].tolist(), strict=True))
    gathered = sorted(gather_object(rows), key=lambda row: row[0])
    indices = np.array([row[0] for row in gathered], dtype=np.int64)
    if len(set(indices.tolist())) != len(indices):
        raise RuntimeError("evaluation saw a clip twice: the sharded sampler is broken")
    logits = np.stack([row[1] for row in gathered]) if gathered else np.zeros((0, 0), dtype=np.float32)
    labels = np.array([row[2] for row in gathered], dtype=np.int64)
    return Predictions(indices, logits.astype(np.float32), labels)


def score(predictions: Predictions, utterances: Sequence[Utterance], labels: Sequence[str]) -> dict[str, Any]:
    """Classification metrics and gender fairness of a prediction set; on clips of several source corpora
    (a combined corpus, `sertune prepare combine`) also the same metrics per corpus under `by_corpus`."""
    genders = np.array([utterances[i].gender for i in predictions.indices])
    predicted = predictions.logits.argmax(axis=1)
    metrics = score_predictions(predictions.labels, predicted, list(genders), labels)
    sources = np.array([utterances[i].extras.get("corpus", "") for i in predictions.indices])
    names = sorted(set(sources.tolist()) - {""})
    if len(names) > 1:
        metrics["by_corpus"] = {
            name: score_predictions(predictions.labels[sources == name], predicted[sources == name],
                                    list(genders[sources == name]), labels)
            for name in names
        }
    return metrics
