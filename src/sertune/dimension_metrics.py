"""Metrics for dimensional speech emotion regression (arousal, valence, dominance), and their fairness.

The headline metric is Lin's concordance correlation coefficient (CCC), as in the MSP-Podcast and
Odyssey 2024 challenges; Pearson's r and the mean absolute error come alongside it.

Conventions shared by every function here:

* ``true`` and ``pred`` are ``[N, D]`` arrays in the corpus's own scale (e.g. 1..7 for MSP-Podcast);
  ``dimensions`` names the D columns in order and every per-dimension result is keyed by those names.
* NaN in ``true`` marks a missing score: that clip is left out of that dimension only, so ``n`` can
  differ between dimensions. Predictions must be finite.
* Moments are population moments (``ddof=0``), as in Lin's definition and the challenge scorers.
* A value that is mathematically undefined is ``None``, never NaN, so the dicts are JSON-ready and
  ``metrics.summarize_folds`` leaves it out of its averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike = Sequence[float] | Sequence[Sequence[float]] | np.ndarray


def _pair(true: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as equally long 1-D float arrays of finite values."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"true and pred must be one-dimensional, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"true has {t.size} values but pred has {p.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("true and pred must be finite (leave missing scores out before scoring)")
    return t, p


def _constant(values: np.ndarray) -> bool:
    # Exact comparison rather than var == 0: the variance of identical floats can round to ~1e-34.
    return bool(np.all(values == values[0]))


def _deviations(values: np.ndarray) -> np.ndarray:
    # A constant side has deviations of exactly 0, so its covariance (hence a constant prediction's
    # CCC) is exactly 0.0 rather than a rounding residue of its mean.
    return np.zeros_like(values) if _constant(values) else values - values.mean()


def concordance(true: ArrayLike, pred: ArrayLike) -> float | None:
    """Lin's concordance correlation coefficient 2 cov / (var_t + var_p + (mean_t - mean_p)^2).

    Population moments (``ddof=0``). ``None`` with fewer than 2 values or when ``true`` is constant:
    agreement with a constant reference says nothing about tracking it. A constant prediction of a
    varying reference has a real CCC of 0.0.
    """
    t, p = _pair(true, pred)
    if t.size < 2 or _constant(t):
        return None
    dt, dp = _deviations(t), _deviations(p)
    covariance = np.mean(dt * dp)
    denominator = np.mean(dt**2) + np.mean(dp**2) + (t.mean() - p.mean()) ** 2
    # CCC lies in [-1, 1]; clipping only removes a last-bit rounding overshoot.
    return float(np.clip(2 * covariance / denominator, -1.0, 1.0))


def pearson(true: ArrayLike, pred: ArrayLike) -> float | None:
    """Pearson's correlation coefficient; ``None`` with fewer than 2 values or when either side is constant."""
    t, p = _pair(true, pred)
    if t.size < 2 or _constant(t) or _constant(p):
        return None
    dt, dp = t - t.mean(), p - p.mean()
    r = np.sum(dt * dp) / np.sqrt(np.sum(dt**2) * np.sum(dp**2))
    return float(np.clip(r, -1.0, 1.0))


def mean_absolute_error(true: ArrayLike, pred: ArrayLike) -> float | None:
    """Mean of ``|true - pred|``; ``None`` when there are no values."""
    t, p = _pair(true, pred)
    if t.size == 0:
        return None
    return float(np.mean(np.abs(t - p)))


def _checked(true: ArrayLike, pred: ArrayLike, dimensions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if not dimensions:
        raise ValueError("dimensions must name at least one dimension")
    if len(set(dimensions)) != len(dimensions):
        raise ValueError(f"dimensions must be distinct, got {list(dimensions)}")
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    for name, array in (("true", t), ("pred", p)):
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be two-dimensional [clips, dimensions], got shape {array.shape} "
                "(reshape a single dimension with .reshape(-1, 1))"
            )
        if array.shape[1] != len(dimensions):
            raise ValueError(
                f"{name} has {array.shape[1]} columns but {len(dimensions)} dimensions are named: {list(dimensions)}"
            )
    if t.shape != p.shape:
        raise ValueError(f"true has {t.shape[0]} clips but pred has {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("no examples to score: true is empty")
    if not np.isfinite(p).all():
        raise ValueError("pred must be finite: it holds NaN or infinity")
    if np.isinf(t).any():
        raise ValueError("true may hold NaN for a missing score, but not infinity")
    return t, p


def _scored(t: np.ndarray, p: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
    """One dimension's (true, pred) over the clips that have a reference score for it."""
    keep = ~np.isnan(t[:, column])
    return t[keep, column], p[keep, column]


def _why_undefined(name: str, t: np.ndarray) -> str:
    if t.size < 2:
        return f"{name}: fewer than 2 scored clips ({t.size}), so CCC is undefined"
    return f"{name}: the reference scores are constant (all {t[0]:g}), so CCC is undefined"


def regression_metrics(true: ArrayLike, pred: ArrayLike, dimensions: Sequence[str]) -> dict[str, Any]:
    """CCC, Pearson's r, MAE and count per dimension of one prediction set, and the mean CCC.

    ``true`` and ``pred`` are ``[N, D]`` with ``D == len(dimensions)``; a NaN in ``true`` leaves that
    clip out of that dimension only. Returns a JSON-ready dict: ``dimensions`` (``{name: {"ccc",
    "pearson", "mae", "n"}}``, ``None`` where undefined), ``ccc_mean`` (over the dimensions with a
    defined CCC; ``None`` when none has one) and ``undefined`` (one sentence per dimension whose CCC
    is undefined, saying why).
    """
    t, p = _checked(true, pred, dimensions)
    per_dimension: dict[str, dict[str, Any]] = {}
    undefined: list[str] = []
    for column, name in enumerate(dimensions):
        scored_t, scored_p = _scored(t, p, column)
        ccc = concordance(scored_t, scored_p)
        if ccc is None:
            undefined.append(_why_undefined(name, scored_t))
        per_dimension[name] = {
            "ccc": ccc,
            "pearson": pearson(scored_t, scored_p),
            "mae": mean_absolute_error(scored_t, scored_p),
            "n": int(scored_t.size),
        }
    defined = [m["ccc"] for m in per_dimension.values() if m["ccc"] is not None]
    return {
        "dimensions": per_dimension,
        "ccc_mean": float(np.mean(defined)) if defined else None,
        "undefined": undefined,
    }


def regression_fairness(
    true: ArrayLike, pred: ArrayLike, groups: Sequence[Any] | np.ndarray, dimensions: Sequence[str]
) -> dict[str, Any]:
    """CCC per group (e.g. gender) and dimension, and the between-group gap, in CCC units.

    Returns a JSON-ready dict: ``ccc_per_group`` (``{dim: {group: ccc}}``, ``None`` where the group's
    CCC is undefined: fewer than 2 scored clips or a constant reference within the group),
    ``ccc_gap`` (``{dim: max - min}`` over the groups with a defined CCC; ``None`` when fewer than two
    have one, since with one group there is no gap to measure and 0 would read as "perfectly fair"),
    ``count_per_group`` (clips per group, scored or not) and ``n_groups``. Groups are taken as given:
    mapping missing values to a name such as "unknown" is the caller's job.
    """
    t, p = _checked(true, pred, dimensions)
    group_array = np.asarray(groups)
    if group_array.shape != (t.shape[0],):
        raise ValueError(f"groups has {group_array.size} items but true has {t.shape[0]} clips")
    names = sorted(set(group_array.tolist()), key=str)
    members = {str(name): group_array == name for name in names}
    ccc_per_group: dict[str, dict[str, float | None]] = {}
    ccc_gap: dict[str, float | None] = {}
    for column, dimension in enumerate(dimensions):
        per_group = {name: concordance(*_scored(t[member], p[member], column)) for name, member in members.items()}
        defined = [ccc for ccc in per_group.values() if ccc is not None]
        ccc_per_group[dimension] = per_group
        ccc_gap[dimension] = float(max(defined) - min(defined)) if len(defined) >= 2 else None
    return {
        "ccc_per_group": ccc_per_group,
        "ccc_gap": ccc_gap,
        "count_per_group": {name: int(member.sum()) for name, member in members.items()},
        "n_groups": len(names),
    }


def score_dimensions(
    true: ArrayLike, pred: ArrayLike, genders: Sequence[Any], dimensions: Sequence[str]
) -> dict[str, Any]:
    """`regression_metrics` of a prediction set with its gender `regression_fairness` under "fairness"."""
    metrics = regression_metrics(true, pred, dimensions)
    metrics["fairness"] = regression_fairness(true, pred, [g or "unknown" for g in genders], dimensions)
    return metrics
