"""Reference scores for a trained run: the baselines scored on the same corpus and folds.

A trained method is only worth its cost if it beats what needs no training of the encoder: the
linear probe on the frozen encoder and the MFCC-statistics baseline (`sertune baseline --out`).
`find_references` looks for such baseline runs beside the trained run (sibling directories of its
run directory, e.g. `runs/*`) that were scored on the same prepared corpus and on every fold the
trained run has, and `compare_with_references` words the comparison, with a warning when the
trained run is below the linear probe. Runs with classes are compared by test UAR, dimensional runs
by test mean CCC (against the ridge-regression baseline), each only with baselines that have it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY = "summary.json"
PROBE_PREFIX = "linear-probe"


@dataclass(frozen=True)
class Reference:
    """A baseline run's mean test score (UAR, or mean CCC: `headline`) over the trained run's folds."""

    path: Path
    name: str  # the summary's backbone field: "mfcc-statistics" or "linear-probe:<encoder>"
    method: str  # e.g. "linear-probe-weighted" or "linear-probe-weighted-speaker-normalised"
    value: float

    @property
    def is_probe(self) -> bool:
        return self.name.startswith(PROBE_PREFIX)


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a run, or one being written: it is simply no reference
    return data if isinstance(data, dict) else None


def _is_baseline(summary: dict[str, Any]) -> bool:
    parameters = summary.get("parameters") or {}
    return summary.get("checkpoint_bytes") is None and parameters.get("encoder") == 0


def headline(summary: dict[str, Any]) -> str:
    """The score a run is compared by: `uar` for a run with classes, `ccc_mean` for a dimensional one."""
    return "uar" if "uar" in summary.get("test", {}) else "ccc_mean"


def find_references(run_dir: str | Path, summary: dict[str, Any]) -> list[Reference]:
    """Baseline runs beside `run_dir` on the same corpus directory that scored every fold of `summary`
    by the same score (`headline`)."""
    run_dir = Path(run_dir).resolve()
    folds = list(summary.get("folds") or {})
    key = headline(summary)
    if not folds or not run_dir.parent.is_dir() or key not in summary.get("test", {}):
        return []
    found = []
    for candidate in sorted(run_dir.parent.glob(f"*/{SUMMARY}")):
        if candidate.parent.resolve() == run_dir:
            continue
        other = _read_summary(candidate)
        if other is None or not _is_baseline(other) or other.get("corpus_dir") != summary.get("corpus_dir"):
            continue
        scored = other.get("folds") or {}
        if not all(name in scored and scored[name]["test"].get(key) is not None for name in folds):
            continue
        value = float(np.mean([scored[name]["test"][key] for name in folds]))
        found.append(Reference(candidate.parent, str(other.get("backbone")), str(other.get("method")), value))
    return found


def compare_with_references(summary: dict[str, Any], references: list[Reference]) -> tuple[list[str], bool]:
    """Lines that put the run's test score beside each reference, and whether it is below a linear probe."""
    if not references:
        return [], False
    if headline(summary) == "ccc_mean":
        ccc = summary["test"]["ccc_mean"]["mean"]
        lines = [f"test mean CCC over the same fold(s): this run {'undefined' if ccc is None else format(ccc, '.3f')}"]
        lines += [f"  {r.name + ' ' + r.method:<60} {r.value:6.3f}  ({r.path})" for r in references]
        return lines, False
    uar = float(summary["test"]["uar"]["mean"])
    lines = [f"test UAR over the same fold(s): this run {uar:.1f}%"]
    lines += [
        f"  {reference.name + ' ' + reference.method:<60} {reference.value:5.1f}%  ({reference.path})"
        for reference in references
    ]
    weak = [reference for reference in references if reference.is_probe and uar < reference.value]
    if weak:
        best = max(weak, key=lambda reference: reference.value)
        lines.append(
            f"warning: this run is {best.value - uar:.1f} points below the linear probe on the frozen encoder "
            f"({best.name}): training learned less than a linear read-out of the encoder. On a small corpus, "
            "try more optimiser steps (more epochs or a smaller --batch-size) or a lower --lr (docs/training.md)."
        )
    return lines, bool(weak)
