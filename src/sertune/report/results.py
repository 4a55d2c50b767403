"""Run directories read into `RunResult`s, finished or not (docs/runs.md)."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sertune.corpora.manifest import FOLDS as CORPUS_FOLDS
from sertune.dimensions import Scale
from sertune.errors import SertuneError
from sertune.fileio import read_json
from sertune.metrics import summarize_folds

# Names from docs/runs.md. The checkpoint names are not imported from sertune.checkpoint, which loads
# torch and transformers: reading a few JSON files should not cost that.
SUMMARY = "summary.json"
CONFIG = "config.yaml"
FOLDS = "folds"
METRICS = "metrics.json"
CHECKPOINT_METADATA = Path("checkpoint", "sertune.json")
CHECKPOINT_WEIGHTS = Path("checkpoint", "adapter.safetensors")
PREDICTIONS = "predictions.csv"

# The tasks of sertune.task_config.TASKS; a run written before runs had a task is categorical.
CATEGORICAL, DIMENSIONAL, MULTITASK = "categorical", "dimensional", "multitask"

INCOMPLETE = "†"
GROUP_UAR = "fairness.uar_per_group."
DEFAULT_OUT = Path("report")

SUMMARY_ADVICE = "restore it, or delete it to report the run from its folds' metrics.json files"
FOLD_ADVICE = "restore it from a copy, or retrain the fold"


class RunSkipped(SertuneError):
    """The path is not a run directory, or none of its folds has finished: nothing to report yet."""


@dataclass
class FoldResult:
    """One finished fold: its history per epoch and its dev/test metrics at the selected epoch.

    A baseline fold has no epochs (`best_epoch` None): its model was selected on dev UAR otherwise.
    """

    name: str
    best_epoch: int | None
    epochs: list[dict[str, Any]]
    dev: dict[str, Any]
    test: dict[str, Any]


@dataclass
class RunResult:
    """What a report needs from one run directory.

    `complete` is whether `summary.json` exists; an unfinished run holds its finished folds only and
    names the others in `pending`. `failed` maps the folds that summary.json reports as failed (e.g. a
    diverged loss) to the reason. `test_summary` is `summarize_folds` over the folds' test metrics.
    `task` is categorical, dimensional or multitask; `dimensions` names the attributes a dimensional or
    multitask run predicts (none for a categorical run) and `scales` their corpus scales where recorded.
    """

    path: Path
    corpus: str
    backbone: str
    method: str
    labels: list[str]
    folds: list[FoldResult]
    test_summary: dict[str, dict[str, Any]]
    complete: bool = True
    pending: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, int] | None = None
    checkpoint_bytes: int | None = None
    # For an evaluation directory (`sertune evaluate`): the corpus the run was trained on (`corpus` is the tested one).
    trained_on: str | None = None
    task: str = CATEGORICAL
    dimensions: list[str] = field(default_factory=list)
    scales: dict[str, Scale] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def has_epochs(self) -> bool:
        """Whether the run trained in epochs; a baseline run (sertune.baseline) has none, so no curves either."""
        return any(fold.epochs for fold in self.folds)

    @property
    def classifies(self) -> bool:
        """Whether the run predicts emotion classes (categorical or multitask): UAR, confusion, fairness gaps."""
        return self.task != DIMENSIONAL

    @property
    def partial(self) -> bool:
        """Whether some fold of the protocol is missing from the results (unfinished or failed)."""
        return not self.complete or bool(self.failed)


def _read_json(path: Path, advice: str) -> dict[str, Any]:
    if not path.is_file():
        raise SertuneError(f"{path} is missing; {advice}")
    data = read_json(path, advice)
    if not isinstance(data, dict):
        raise SertuneError(f"{path} is corrupt (not a JSON object); {advice}")
    return data


def _require(data: dict[str, Any], key: str, path: Path, advice: str) -> Any:
    if key not in data:
        raise SertuneError(f"{path} has no '{key}' entry; {advice}")
    return data[key]


def _read_config(path: Path) -> dict[str, Any]:
    """The run's config.yaml, or {} without one (it only names corpus, backbone and method here)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SertuneError(f"{path} is not valid YAML ({error}); restore it from a copy") from None
    return data if isinstance(data, dict) else {}


def corpus_name(corpus_dir: str | None) -> str:
    """The corpus name that summary.json would give: from the prepared corpus, else its directory name."""
    if not corpus_dir:
        return "unknown"
    try:
        return str(json.loads((Path(corpus_dir) / CORPUS_FOLDS).read_text(encoding="utf-8"))["corpus"])
    except (OSError, ValueError, KeyError, TypeError):
        # The corpus may have moved since training; the name is only a column heading.
        return Path(corpus_dir).name


def _task_of(
    recorded_task: Any, recorded_dimensions: Any, labels: Sequence[str], folds: Sequence[FoldResult]
) -> tuple[str, list[str], dict[str, Scale]]:
    """The run's task, dimension names and scales.

    The dimensions come from summary.json's or the checkpoint's `dimensions` entry ([{name, low, high}]),
    else from the names the first fold's test metrics score; the task is the recorded one, else what the
    labels and dimensions make it (a run from before runs had a task is categorical).
    """
    names: list[str] = []
    scales: dict[str, Scale] = {}
    for entry in recorded_dimensions or []:
        if isinstance(entry, dict):
            names.append(str(entry["name"]))
            if entry.get("low") is not None and entry.get("high") is not None:
                scales[names[-1]] = (float(entry["low"]), float(entry["high"]))
        else:
            names.append(str(entry))
    if not names and folds:
        names = list(folds[0].test.get("dimensions") or {})
    if recorded_task:
        task = str(recorded_task)
    elif names:
        task = MULTITASK if labels else DIMENSIONAL
    else:
        task = CATEGORICAL
    return (task, [], {}) if task == CATEGORICAL else (task, names, scales)


def _read_fold(fold_dir: Path) -> FoldResult | None:
    """The fold's results, or None while it is still training."""
    path = fold_dir / METRICS
    data = _read_json(path, FOLD_ADVICE)
    if not data.get("complete"):
        return None
    return FoldResult(
        name=fold_dir.name,
        best_epoch=data.get("best_epoch"),
        epochs=data.get("epochs") or [],
        dev=_require(data, "dev", path, FOLD_ADVICE),
        test=_require(data, "test", path, FOLD_ADVICE),
    )


def _natural_key(name: str) -> list[Any]:
    # fold2 before fold10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_run(path: str | Path) -> RunResult:
    """Read a run directory written by `sertune train`.

    Raises `RunSkipped` when `path` is not a run directory or no fold has finished yet, and
    `SertuneError` naming the file when a JSON file the run needs is missing or corrupt.
    """
    run_dir = Path(path)
    if not run_dir.is_dir() or not any((run_dir / name).exists() for name in (SUMMARY, CONFIG, FOLDS)):
        raise RunSkipped(f"{run_dir} is not a run directory (no {SUMMARY}, {CONFIG} or {FOLDS}/)")
    if (run_dir / SUMMARY).is_file():
        return _finished_run(run_dir)
    return _unfinished_run(run_dir)


def _finished_run(run_dir: Path) -> RunResult:
    path = run_dir / SUMMARY
    summary = _read_json(path, SUMMARY_ADVICE)
    folds = []
    for name in _require(summary, "folds", path, SUMMARY_ADVICE):
        fold = _read_fold(run_dir / FOLDS / name)
        if fold is None:
            raise SertuneError(
                f"{run_dir / FOLDS / name / METRICS} marks the fold unfinished although {path} lists it; "
                f"resume the training of that fold, or delete {path} to report the finished folds"
            )
        folds.append(fold)
    labels = list(_require(summary, "labels", path, SUMMARY_ADVICE))
    task, dimensions, scales = _task_of(summary.get("task"), summary.get("dimensions"), labels, folds)
    return RunResult(
        path=run_dir,
        corpus=str(_require(summary, "corpus", path, SUMMARY_ADVICE)),
        backbone=str(_require(summary, "backbone", path, SUMMARY_ADVICE)),
        method=str(_require(summary, "method", path, SUMMARY_ADVICE)),
        labels=labels,
        folds=folds,
        test_summary=_require(summary, "test", path, SUMMARY_ADVICE),
        failed=dict(summary.get("failed_folds") or {}),
        parameters=summary.get("parameters"),
        checkpoint_bytes=summary.get("checkpoint_bytes"),
        trained_on=(summary.get("evaluation") or {}).get("trained_on"),
        task=task,
        dimensions=dimensions,
        scales=scales,
    )


def _unfinished_run(run_dir: Path) -> RunResult:
    fold_root = run_dir / FOLDS
    fold_dirs = [entry for entry in fold_root.iterdir() if entry.is_dir()] if fold_root.is_dir() else []
    folds, pending = [], []
    for fold_dir in sorted(fold_dirs, key=lambda entry: _natural_key(entry.name)):
        # A fold directory without metrics.json has not finished its first epoch yet.
        fold = _read_fold(fold_dir) if (fold_dir / METRICS).is_file() else None
        if fold is None:
            pending.append(fold_dir.name)
        else:
            folds.append(fold)
    if not folds:
        in_progress = f" ({len(pending)} in progress)" if pending else ""
        raise RunSkipped(f"{run_dir} has no finished fold yet{in_progress}: nothing to report")

    # Without summary.json the settings come from config.yaml and the first finished fold's checkpoint.
    config = _read_config(run_dir / CONFIG)
    first_fold = fold_root / folds[0].name
    has_metadata = (first_fold / CHECKPOINT_METADATA).is_file()
    metadata = _read_json(first_fold / CHECKPOINT_METADATA, FOLD_ADVICE) if has_metadata else {}
    weights = first_fold / CHECKPOINT_WEIGHTS
    # per_class_recall is keyed by the labels, in their order; a dimensional run has none.
    labels = list(folds[0].test.get("per_class_recall") or {})
    task_section = config.get("task") if isinstance(config.get("task"), dict) else {}
    task, dimensions, scales = _task_of(task_section.get("kind"), metadata.get("dimensions"), labels, folds)
    return RunResult(
        path=run_dir,
        corpus=corpus_name(config.get("corpus")),
        backbone=str(config.get("backbone") or metadata.get("backbone", {}).get("name", "unknown")),
        method=str((config.get("tuning") or metadata.get("tuning") or {}).get("method", "unknown")),
        labels=labels,
        folds=folds,
        test_summary=summarize_folds([fold.test for fold in folds]),
        complete=False,
        pending=pending,
        parameters=metadata.get("parameters"),
        checkpoint_bytes=weights.stat().st_size if weights.is_file() else None,
        task=task,
        dimensions=dimensions,
        scales=scales,
    )


def load_runs(paths: Iterable[str | Path]) -> tuple[list[RunResult], list[str]]:
    """Load several runs, as `sertune report runs/*` gives them.

    Returns the runs and one message per path skipped (not a run, or no finished fold); raises
    `SertuneError` when nothing is left to report.
    """
    runs: list[RunResult] = []
    skipped: list[str] = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except RunSkipped as reason:
            skipped.append(str(reason))
    if not runs:
        raise SertuneError("no run to report: " + "; ".join(skipped))
    return runs, skipped


def default_out_dir(runs: Sequence[RunResult]) -> Path:
    """Where a report goes without --out: RUN_DIR/report for one run, ./report for several."""
    return runs[0].path / "report" if len(runs) == 1 else DEFAULT_OUT


def read_prediction_rows(path: str | Path, columns: Iterable[str]) -> list[dict[str, str]]:
    """A fold's predictions.csv as rows by column name; raises `SertuneError` when it cannot be read or lacks
    one of `columns`."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SertuneError(f"{path} cannot be read ({error}); retrain the fold to write it again") from None
    missing = [column for column in columns if column not in header]
    if rows and missing:
        raise SertuneError(f"{path} has no {', '.join(missing)} column(s); retrain the fold to write it again")
    return rows


def _score(text: str, path: Path, column: str) -> float:
    # '' is an unscored clip (NaN); anything else must be a number.
    if not text.strip():
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise SertuneError(
            f"{path}: {column} holds {text!r}, not a number; retrain the fold to write it again"
        ) from None


def pooled_test_scores(run: RunResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dimension of `run`, its (true, predicted) test scores pooled over the finished folds that have a
    predictions.csv, on the corpus scale; clips without a true score are left out. {} when no fold has one."""
    columns = [f"{which}_{name}" for name in run.dimensions for which in ("true", "predicted")]
    pooled: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in run.dimensions}
    found = False
    for fold in run.folds:
        path = run.path / FOLDS / fold.name / PREDICTIONS
        if not path.is_file():
            continue
        found = True
        for row in read_prediction_rows(path, columns):
            for name, (true, predicted) in pooled.items():
                score = _score(row[f"true_{name}"], path, f"true_{name}")
                if not math.isnan(score):
                    true.append(score)
                    predicted.append(_score(row[f"predicted_{name}"], path, f"predicted_{name}"))
    if not found:
        return {}
    return {name: (np.array(true), np.array(predicted)) for name, (true, predicted) in pooled.items()}
