"""Paired bootstrap of the UAR difference between two models tested on the same folds and clips.

The point estimate is the mean over folds of each fold's test UAR difference (A − B), the number a
cross-validated study reports. Its confidence interval is a percentile bootstrap over test clips:
each resample draws every fold's clips with replacement *within that fold* (a fold keeps its size
and its own test speakers), uses the same drawn clips for A and B (so what the two share, such as
hard clips, cancels out), recomputes each fold's UAR for both and averages the difference over
folds. UAR is the mean per-class recall over the classes present in the (resampled) labels, in
percent, as `sertune.metrics.classification_metrics` computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
# Resampled indices held at once (rows x clips): bounds memory for large test folds.
CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class PairedDifference:
    """The UAR difference A − B in points, with its bootstrap interval; `uar_a`, `uar_b` are means over folds."""

    difference: float
    low: float
    high: float
    uar_a: float
    uar_b: float
    folds: int
    clips: int
    resamples: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero."""
        return self.low > 0 or self.high < 0


def _uars(labels: np.ndarray, hits: Sequence[np.ndarray], draws: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """UAR (percent) of each row of clip indices `draws`, for each array of per-clip hits (1 = correct)."""
    rows = draws.shape[0]
    # One bin per (row, class): the confusion counts every row needs, from one bincount over all rows.
    bins = (labels[draws] + num_classes * np.arange(rows)[:, None]).ravel()
    size = rows * num_classes
    support = np.bincount(bins, minlength=size).reshape(rows, num_classes)
    present = support > 0
    results = []
    for hit in hits:
        correct = np.bincount(bins, weights=hit[draws].ravel(), minlength=size).reshape(rows, num_classes)
        recall = np.divide(correct, support, out=np.zeros(correct.shape), where=present)
        results.append(100.0 * recall.sum(axis=1) / present.sum(axis=1))
    return results


def _fold_arrays(
    labels: ArrayLike, predicted_a: ArrayLike, predicted_b: ArrayLike, num_classes: int, fold: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    true = np.asarray(labels, dtype=np.int64)
    a, b = np.asarray(predicted_a, dtype=np.int64), np.asarray(predicted_b, dtype=np.int64)
    if true.ndim != 1 or true.size == 0:
        raise ValueError(f"fold {fold}: labels must be a non-empty 1-d array, got shape {true.shape}")
    if a.shape != true.shape or b.shape != true.shape:
        raise ValueError(f"fold {fold}: {true.size} labels but {a.size} and {b.size} predictions")
    for name, values in (("labels", true), ("predictions of A", a), ("predictions of B", b)):
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(f"fold {fold}: {name} must be class indices in [0, {num_classes})")
    return true, [(a == true).astype(np.float64), (b == true).astype(np.float64)]


def paired_bootstrap(
    labels: Sequence[ArrayLike],
    predicted_a: Sequence[ArrayLike],
    predicted_b: Sequence[ArrayLike],
    num_classes: int,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> PairedDifference:
    """Mean over folds of UAR(A) − UAR(B), with a percentile bootstrap interval from resampling clips within folds.

    `labels[f]`, `predicted_a[f]` and `predicted_b[f]` are fold f's true classes and the two models'
    predicted classes (indices below `num_classes`) for the same clips in the same order. The same
    `seed` gives the same interval. Raises `ValueError` for mismatched or empty folds.
    """
    if not len(labels) == len(predicted_a) == len(predicted_b) or not labels:
        raise ValueError(f"need the same number (at least 1) of folds, got {len(labels)}, {len(predicted_a)}, "
                         f"{len(predicted_b)}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    rng = np.random.default_rng(seed)
    point_a, point_b, totals = [], [], np.zeros(resamples)
    clips = 0
    for fold, arrays in enumerate(zip(labels, predicted_a, predicted_b, strict=True), start=1):
        true, hits = _fold_arrays(*arrays, num_classes, fold)
        n = true.size
        clips += n
        uar_a, uar_b = _uars(true, hits, np.arange(n)[None, :], num_classes)
        point_a.append(float(uar_a[0]))
        point_b.append(float(uar_b[0]))
        step = max(1, CHUNK_ELEMENTS // n)
        for start in range(0, resamples, step):
            draws = rng.integers(0, n, size=(min(step, resamples - start), n))
            uar_a, uar_b = _uars(true, hits, draws, num_classes)
            totals[start : start + len(draws)] += uar_a - uar_b
    differences = totals / len(labels)
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return PairedDifference(
        difference=float(np.mean(np.subtract(point_a, point_b))),
        low=float(low),
        high=float(high),
        uar_a=float(np.mean(point_a)),
        uar_b=float(np.mean(point_b)),
        folds=len(labels),
        clips=clips,
        resamples=resamples,
        confidence=confidence,
    )
