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
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import Dataset

from sertune.corpora import Utterance
from sertune.data import make_loader
from sertune.dimension_metrics import score_dimensions
from sertune.dimensions import Dimension, on_scales
from sertune.metrics import score_predictions
from sertune.objective import Objective
from sertune.sampler import ShardedEvalBatchSampler

# forward(batch) -> logits [B, classes]
Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Predictions:
    """Outputs of the clips that could be read, in dataset order (`indices` into the dataset).

    `logits` holds the model's whole output row: the class logits, then any dimension values.
    `targets` are the clips' normalised attribute scores (NaN where missing), None for a categorical run.
    """

    indices: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    targets: np.ndarray | None = None

    def loss(self, objective: Objective) -> float:
        """The training loss over the whole set (for the dimensional loss: the CCC of the whole set)."""
        if not len(self.indices):
            return float("nan")
        targets = None if self.targets is None else torch.from_numpy(self.targets)
        with torch.no_grad():
            return float(objective.loss(torch.from_numpy(self.logits), torch.from_numpy(self.labels), targets))


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
    rows: list[tuple[int, np.ndarray, int, np.ndarray | None]] = []
    with torch.inference_mode(), accelerator.autocast():
        for batch in make_loader(dataset, sampler, collate_fn, workers):
            if batch is None:
                continue
            logits = forward(batch).float().cpu().numpy()
            targets = batch["target"].numpy() if "target" in batch else [None] * len(logits)
            rows.extend(zip(batch["index"].tolist(), logits, batch["label"].tolist(), targets, strict=True))
    gathered = sorted(gather_object(rows), key=lambda row: row[0])
    indices = np.array([row[0] for row in gathered], dtype=np.int64)
    if len(set(indices.tolist())) != len(indices):
        raise RuntimeError("evaluation saw a clip twice: the sharded sampler is broken")
    logits = np.stack([row[1] for row in gathered]) if gathered else np.zeros((0, 0), dtype=np.float32)
    labels = np.array([row[2] for row in gathered], dtype=np.int64)
    targets = None
    if gathered and gathered[0][3] is not None:
        targets = np.stack([row[3] for row in gathered]).astype(np.float32)
    return Predictions(indices, logits.astype(np.float32), labels, targets)


def score(
    predictions: Predictions, utterances: Sequence[Utterance], labels: Sequence[str],
    dimensions: Sequence[Dimension] = (),
) -> dict[str, Any]:
    """Metrics of a prediction set: for `labels`, classification metrics and gender fairness; for
    `dimensions`, CCC, Pearson and MAE per dimension on the corpus scale (`dimensions`, `ccc_mean`) with
    the CCC per gender (`dimension_fairness`). On clips of several source corpora (a combined corpus,
    `sertune prepare combine`) also the same metrics per corpus under `by_corpus`."""
    genders = np.array([utterances[i].gender for i in predictions.indices])
    sources = np.array([utterances[i].extras.get("corpus", "") for i in predictions.indices])
    metrics = _score_rows(predictions, np.ones(len(genders), dtype=bool), genders, labels, dimensions)
    names = sorted(set(sources.tolist()) - {""})
    if len(names) > 1:
        metrics["by_corpus"] = {
            name: _score_rows(predictions, sources == name, genders, labels, dimensions) for name in names
        }
    return metrics


def _score_rows(
    predictions: Predictions, rows: np.ndarray, genders: np.ndarray, labels: Sequence[str],
    dimensions: Sequence[Dimension],
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    n_classes = len(labels)
    if n_classes:
        predicted = predictions.logits[rows, :n_classes].argmax(axis=1)
        metrics = score_predictions(predictions.labels[rows], predicted, list(genders[rows]), labels)
    if dimensions:
        true = on_scales(predictions.targets[rows], dimensions)
        pred = on_scales(predictions.logits[rows, n_classes:], dimensions)
        scores = score_dimensions(true, pred, list(genders[rows]), [d.name for d in dimensions])
        metrics["dimension_fairness"] = scores.pop("fairness")
        metrics.update(scores)
    return metrics
