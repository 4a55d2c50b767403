"""Text shared by the commands' output (a private module: not a subcommand)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sertune.dimensions import DIMENSIONS


def mean_std(summary: Mapping[str, Any], width: int = 0, digits: int = 1) -> str:
    """'62.0 ± 3.5' for a mean/std entry of `summarize_folds`, and only '62.0' when the std is null (one fold).

    `width` pads the mean, so that it lines up with per-fold numbers printed above it; `digits` after the
    point (3 for CCCs). A metric no fold defines (mean null) reads 'undefined'.
    """
    if summary.get("mean") is None:
        return "undefined"
    spread = f" ± {summary['std']:.{digits}f}" if summary.get("std") is not None else ""
    return f"{summary['mean']:{width}.{digits}f}{spread}"


def summary_figures(test: Mapping[str, Any]) -> str:
    """Mean ± std over folds of the run's main figures: UAR and/or each dimension's CCC."""
    figures = [f"UAR {mean_std(test['uar'])}%"] if "uar" in test else []
    ccc = [name for name in DIMENSIONS if f"dimensions.{name}.ccc" in test]
    figures += [f"CCC {name} {mean_std(test[f'dimensions.{name}.ccc'], digits=3)}" for name in ccc]
    return ", ".join(figures)
