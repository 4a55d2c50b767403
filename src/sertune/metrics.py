"""Classification and fairness metrics for speech emotion recognition, and their summary over folds.

Conventions shared by every function here:

* Inputs are integer class indices ``0 .. len(labels) - 1``; ``labels`` names them in that order and
  every per-class result is keyed by those names.
* Every rate is reported in percent (UAR, accuracy, macro-F1, per-class recall, and the fairness gaps,
  which are therefore in percentage points), so that one table can mix them without rescaling.
* A class with no reference (true) example has no recall. It is reported as ``None`` and left out of
  UAR and macro-F1, which average over the classes present in the reference: the SER convention, and
  what ``sklearn.metrics.balanced_accuracy_score`` computes. Predictions of such a class are still
  errors: they count against the recall of the true classes they were taken from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix


def _as_indices(values: Sequence[int] | np.ndarray, n_classes: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(f"{what} holds an index outside 0..{n_classes - 1} (the labels given)")
    return array.astype(np.int64)


def _checked(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    if not labels:
        raise ValueError("labels must name at least one class")
    true = _as_indices(y_true, len(labels), "y_true")
    pred = _as_indices(y_pred, len(labels), "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} items but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("no examples to score: y_true is empty")
    return true, pred


def _confusion(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(true, pred, labels=list(range(n_classes)))


def _recalls(confusion: np.ndarray) -> np.ndarray:
    """Recall per class as a fraction; NaN where the class has no reference example."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """UAR, accuracy, macro-F1, per-class recall, confusion matrix and support of one prediction set.

    Returns a JSON-ready dict: ``uar``, ``accuracy``, ``macro_f1`` (percent; UAR and macro-F1 over the
    classes present in ``y_true``), ``per_class_recall`` (percent, ``None`` for a class absent from
    ``y_true``), ``confusion`` (rows true, columns predicted, in ``labels`` order), ``support`` (true
    examples per class), ``absent_classes`` (labels with no true example) and ``n``.
    """
    true, pred = _checked(y_true, y_pred, labels)
    confusion = _confusion(true, pred, len(labels))
    support = confusion.sum(axis=1)
    present = support > 0
    recall = _recalls(confusion)
    # F1 = 2TP / (2TP + FP + FN); its denominator is positive for every present class.
    true_positive = np.diag(confusion)
    f1 = 2 * true_positive[present] / (confusion.sum(axis=0)[present] + support[present])
    return {
        "uar": float(np.mean(recall[present]) * 100),
        "accuracy": float(np.mean(true == pred) * 100),
        "macro_f1": float(np.mean(f1) * 100),
        "per_class_recall": {
            name: (float(r * 100) if ok else None)
            for name, r, ok in zip(labels, recall, present, strict=True)
        },
        "confusion": confusion.tolist(),
        "support": {name: int(s) for name, s in zip(labels, support, strict=True)},
        "absent_classes": [name for name, ok in zip(labels, present, strict=True) if not ok],
        "n": int(true.size),
    }


def _largest_gap(rates: np.ndarray) -> tuple[float | None, str | None]:
    """Max over classes (columns) of max - min over groups (rows), ignoring NaN cells.

    A class counts only where at least two groups have a defined rate; returns (None, None) when no
    class does.
    """
    defined = ~np.isnan(rates)
    usable = defined.sum(axis=0) >= 2
    if not usable.any():
        return None, None
    gaps = np.nanmax(rates[:, usable], axis=0) - np.nanmin(rates[:, usable], axis=0)
    worst = int(np.argmax(gaps))
    return float(gaps[worst] * 100), int(np.flatnonzero(usable)[worst])


def fairness_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Between-group gaps (e.g. by gender) of a multiclass prediction set, in percentage points.

    * ``statistical_parity``: max over classes c of the largest gap between groups in
      P(pred = c | group). Every group has examples, so every class counts (a class nobody predicts
      has a gap of 0).
    * ``equality_of_opportunity``: max over classes c of the largest gap between groups in the recall
      of c, P(pred = c | true = c, group). A group without true examples of c has no recall for c and
      is left out of that class's gap; a class that fewer than two groups have is skipped entirely
      and listed in ``eo_skipped_classes``. ``None`` when no class is shared by two groups.
    * ``statistical_parity_class`` / ``equality_of_opportunity_class``: the class where the gap is
      largest (``None`` alongside a ``None`` gap).
    * ``uar_per_group`` (each group's UAR over the classes present in that group's reference, so a
      group is not penalised for a class it has no examples of) and ``count_per_group``.

    With a single group there is no gap to measure: both gaps are ``None`` (not 0, which would read as
    "perfectly fair"), every class is in ``eo_skipped_classes`` and ``n_groups`` is 1. The gaps take
    the largest pairwise difference, so they are defined for any number of groups.

    Note: holisticai's ``multiclass_statistical_parity`` (used by the PEFT-SER code) averages the
    absolute gap over classes before taking the max over group pairs; the max over classes used here
    is never smaller than that.
    """
    true, pred = _checked(y_true, y_pred, labels)
    group_array = np.asarray(groups)
    if group_array.shape != true.shape:
        raise ValueError(f"groups has {group_array.size} items but y_true has {true.size}")
    names = sorted(set(group_array.tolist()), key=str)
    n_classes = len(labels)
    # rows: groups; columns: classes
    prediction_rates = np.empty((len(names), n_classes))
    recalls = np.empty((len(names), n_classes))
    uar_per_group: dict[str, float] = {}
    count_per_group: dict[str, int] = {}
    for row, name in enumerate(names):
        member = group_array == name
        confusion = _confusion(true[member], pred[member], n_classes)
        prediction_rates[row] = confusion.sum(axis=0) / member.sum()
        recalls[row] = _recalls(confusion)
        uar_per_group[str(name)] = float(np.nanmean(recalls[row]) * 100)
        count_per_group[str(name)] = int(member.sum())

    sp, sp_class = _largest_gap(prediction_rates)
    eo, eo_class = _largest_gap(recalls)
    shared = (~np.isnan(recalls)).sum(axis=0) >= 2
    return {
        "statistical_parity": sp,
        "statistical_parity_class": None if sp_class is None else labels[sp_class],
        "equality_of_opportunity": eo,
        "equality_of_opportunity_class": None if eo_class is None else labels[eo_class],
        "eo_skipped_classes": [labels[c] for c in np.flatnonzero(~shared)],
        "uar_per_group": uar_per_group,
        "count_per_group": count_per_group,
        "n_groups": len(names),
    }


def score_predictions(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    genders: Sequence[Any],
    labels: Sequence[str],
) -> dict[str, Any]:
    """`classification_metrics` of a prediction set with its gender `fairness_metrics` under "fairness"."""
    metrics = classification_metrics(y_true, y_pred, labels)
    metrics["fairness"] = fairness_metrics(y_true, y_pred, [g or "unknown" for g in genders], labels)
    return metrics


def _scalars(metrics: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float | None]]:
    """Yield (dotted key, value) for every numeric or None leaf; lists (the confusion) are not scalars."""
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalars(value, f"{name}.")
        elif value is None or (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)):
            yield name, value


def summarize_folds(fold_metrics: Sequence[Mapping[str, Any]], ddof: int = 1) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation over folds of every scalar metric, nested keys joined by dots.

    Returns ``{"uar": {"mean": .., "std": .., "n": ..}, "per_class_recall.sad": {...}, ...}``. The
    std is the sample standard deviation (``ddof=1``) by default: the folds are a sample of possible
    splits, and with 5 folds the population value (``ddof=0``) is ~11% smaller. A fold where a
    metric is ``None`` (e.g. a fairness gap with one gender, a recall for an absent class) is left out
    of that metric, and ``n`` says how many folds it was averaged over; ``mean`` is ``None`` when no
    fold has a value and ``std`` is ``None`` when fewer than ``ddof + 1`` do.
    """
    collected: dict[str, list[float]] = {}
    for metrics in fold_metrics:
        for key, value in _scalars(metrics):
            values = collected.setdefault(key, [])
            if value is not None and not math.isnan(value):
                values.append(float(value))
    summary: dict[str, dict[str, Any]] = {}
    for key, values in collected.items():
        n = len(values)
        summary[key] = {
            "mean": float(np.mean(values)) if n else None,
            "std": float(np.std(values, ddof=ddof)) if n > ddof else None,
            "n": n,
        }
    return summary
