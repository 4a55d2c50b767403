"""Which checkpoint a path given by the user stands for: a checkpoint, fold or run directory (docs/runs.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sertune.checkpoint import METADATA
from sertune.errors import SertuneError
from sertune.metrics import summarize_folds
from sertune.task_config import selection_score


@dataclass(frozen=True)
class ResolvedRun:
    """The checkpoint directory a path given by the user stands for, and its fold (if known)."""

    checkpoint: Path
    fold: str | None


def resolve_run(path: str | os.PathLike, fold: str | None = None) -> ResolvedRun:
    """The checkpoint behind a checkpoint, fold or run directory (docs/runs.md).

    A run directory serves its fold with the highest dev score (UAR; mean CCC for dimensions) at the
    selected epoch (test scores never choose), unless `fold` names one. A run of `sertune baseline` is
    refused: it has no model.
    """
    root = Path(path)
    if not root.exists():
        raise SertuneError(f"{root}: no such run directory")
    if not root.is_dir():
        raise SertuneError(f"{root} is a file; give a run, fold or checkpoint directory")
    if fold is not None:
        folds = root / "folds"
        if not folds.is_dir():
            raise SertuneError(f"{root} is not a run directory (it has no folds/), so fold {fold!r} does not apply")
        if not (folds / fold).is_dir():
            names = sorted(p.name for p in folds.iterdir() if p.is_dir())
            raise SertuneError(f"{root} has no fold {fold!r}; its folds are {names}")
        root = folds / fold
    if (root / METADATA).is_file():
        parent = root.parent
        return ResolvedRun(root, parent.name if parent.parent.name == "folds" else None)
    metrics = root / "metrics.json"
    if (root / "checkpoint").is_dir() or metrics.is_file():
        if not (root / "checkpoint" / METADATA).is_file():
            if metrics.is_file() and is_baseline_fold(read_fold_metrics(metrics)):
                raise SertuneError(_baseline_message(root))
            raise SertuneError(f"{root / 'checkpoint'} holds no {METADATA}: the fold has not saved a checkpoint yet")
        return ResolvedRun(root / "checkpoint", root.name)
    if (root / "folds").is_dir():
        name = best_fold(root)
        return ResolvedRun(root / "folds" / name / "checkpoint", name)
    raise SertuneError(f"{root} is not a trained sertune run: it has no {METADATA}, checkpoint/ or folds/")


def best_fold(run: Path) -> str:
    """The finished fold of `run` with the highest dev score (UAR, mean CCC, or both: `selection_score`;
    ties: the first by name)."""
    candidates: list[tuple[float, str]] = []
    baseline_folds = 0
    metrics_paths = sorted((run / "folds").glob("*/metrics.json"))
    for metrics_path in metrics_paths:
        metrics = read_fold_metrics(metrics_path)
        baseline_folds += is_baseline_fold(metrics)
        value = selection_score(metrics.get("dev") or {})
        checkpoint = metrics_path.parent / "checkpoint" / METADATA
        if metrics.get("complete") and value is not None and checkpoint.is_file():
            candidates.append((value, metrics_path.parent.name))
    if not candidates and metrics_paths and baseline_folds == len(metrics_paths):
        raise SertuneError(_baseline_message(run))
    if not candidates:
        raise SertuneError(
            f"{run} has no finished fold with a checkpoint (folds/*/metrics.json with complete: true); "
            "wait for training to finish a fold, or name a fold"
        )
    return max(candidates, key=lambda candidate: candidate[0])[1]


def read_fold_metrics(path: Path) -> dict[str, Any]:
    """A fold's metrics.json; an unreadable one is an error that says to name another fold."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise SertuneError(f"{path} is unreadable ({error}); name a fold explicitly") from None


def is_baseline_fold(metrics: dict[str, Any]) -> bool:
    """Whether fold metrics come from `sertune baseline --out`: complete, with `best_epoch` null (docs/runs.md).

    A trained fold always selects an epoch before it completes.
    """
    return metrics.get("complete") is True and "best_epoch" in metrics and metrics["best_epoch"] is None


def _baseline_message(path: Path) -> str:
    return (
        f"{path} is a baseline run (`sertune baseline`): baseline runs (MFCC statistics, linear probes) have no "
        "neural model to predict with; give a run directory of `sertune train`"
    )


def run_summary(
    *,
    corpus: str,
    corpus_dir: str,
    labels: list[str],
    backbone: str,
    method: str,
    folds: dict[str, dict[str, Any]],
    parameters: dict[str, int] | None,
    checkpoint_bytes: int | None,
    failed_folds: dict[str, str],
    task: str = "categorical",
    dimensions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The content of summary.json (docs/runs.md) from the folds' metrics.json contents."""
    unknown = [fold["test_unknown_speaker"] for fold in folds.values() if "test_unknown_speaker" in fold]
    return {
        "corpus": corpus,
        "corpus_dir": corpus_dir,
        "backbone": backbone,
        "method": method,
        "task": task,
        "labels": labels,
        **({"dimensions": dimensions} if dimensions else {}),
        "parameters": parameters,
        "checkpoint_bytes": checkpoint_bytes,
        "folds": {
            name: {
                "best_epoch": fold.get("best_epoch"), "dev": fold["dev"], "test": fold["test"],
                **({"test_unknown_speaker": fold["test_unknown_speaker"]} if "test_unknown_speaker" in fold else {}),
            }
            for name, fold in folds.items()
        },
        "failed_folds": failed_folds,
        "test": summarize_folds([fold["test"] for fold in folds.values()]),
        # A speaker-normalised run's test scored as `predict` sees each clip: its speaker unknown.
        **({"test_unknown_speaker": summarize_folds(unknown)} if unknown and len(unknown) == len(folds) else {}),
    }
