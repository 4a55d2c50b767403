"""Training losses for dimensional speech emotion regression (arousal, valence, dominance).

``pred`` and ``target`` are ``[batch, dimensions]``; a NaN in ``target`` marks a missing score and
that entry takes no part in the loss and gets no gradient. The arithmetic is done in float32 whatever
the input precision, since batch moments in half precision lose most of their digits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Keeps the CCC denominator positive for a batch where both sides are constant.
CCC_EPSILON = 1e-8


def _masked(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """float32 (pred, target with NaN replaced by 0, 0/1 weight of the scored entries)."""
    if pred.ndim != 2:
        raise ValueError(f"pred must be [batch, dimensions], got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
    pred = pred.float()
    target = target.float()
    scored = ~torch.isnan(target)
    # NaN must never enter the arithmetic: even multiplied by a zero weight it would poison the sums
    # and, through them, every gradient.
    target = torch.where(scored, target, torch.zeros_like(target))
    return pred, target, scored.float()


def _zero(pred: Tensor) -> Tensor:
    # Keeps the graph (backward still runs) while contributing no gradient.
    return pred.float().sum() * 0.0


def ccc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over dimensions of 1 - CCC, each CCC computed over the batch with population moments.

    Entries whose target is NaN are left out of their dimension; a dimension with fewer than 2 scored
    entries in the batch is left out of the mean. Returns ``0.0`` (with zero gradient) when no
    dimension is usable.
    """
    pred, target, weight = _masked(pred, target)
    count = weight.sum(dim=0)
    usable = count >= 2
    if not bool(usable.any()):
        return _zero(pred)
    # clamp: an unscored dimension would divide 0 by 0; it is dropped below, but a NaN there would still
    # reach the gradient.
    count = count.clamp(min=1.0)
    mean_pred = (pred * weight).sum(dim=0) / count
    mean_target = (target * weight).sum(dim=0) / count
    dev_pred = (pred - mean_pred) * weight
    dev_target = (target - mean_target) * weight
    var_pred = (dev_pred**2).sum(dim=0) / count
    var_target = (dev_target**2).sum(dim=0) / count
    covariance = (dev_pred * dev_target).sum(dim=0) / count
    ccc = 2 * covariance / (var_pred + var_target + (mean_pred - mean_target) ** 2 + CCC_EPSILON)
    return (1.0 - ccc[usable]).mean()


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the entries whose target is not NaN; ``0.0`` (zero gradient) when none is."""
    pred, target, weight = _masked(pred, target)
    count = weight.sum()
    if not bool(count > 0):
        return _zero(pred)
    return (((pred - target) * weight) ** 2).sum() / count


DIMENSION_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ccc": ccc_loss, "mse": mse_loss}


def dimension_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """The loss named ``kind`` (a key of `DIMENSION_LOSSES`) of ``pred`` against ``target``."""
    try:
        loss = DIMENSION_LOSSES[kind]
    except KeyError:
        raise ValueError(f"unknown dimension loss {kind!r}; known: {', '.join(sorted(DIMENSION_LOSSES))}") from None
    return loss(pred, target)
