"""Paired comparisons of a sweep's cells: for each backbone, every two methods tested on the same folds.

The two cells' test predictions (folds/<fold>/predictions.csv) are matched by clip id within each fold
they both finished; a clip that only one of them predicted (or that they label differently) is left out,
and the table's notes count such clips. The statistics are those of `sertune.report.paired`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from sertune.report.paired import RESAMPLES, SEED, paired_bootstrap
from sertune.report.results import FOLDS, PREDICTIONS, RunResult, read_prediction_rows
from sertune.report.sweeps import SweepCell
from sertune.report.tables import Cell, Table, unique

# A fold's test clips: id -> (true label, predicted label).
FoldPredictions = dict[str, tuple[str, str]]


def read_predictions(path: str | Path) -> FoldPredictions:
    """A fold's predictions.csv (columns id, label, predicted, logits) as id -> (true, predicted label)."""
    rows = read_prediction_rows(path, ("id", "label", "predicted"))
    return {row["id"]: (row["label"], row["predicted"]) for row in rows}


def run_predictions(run: RunResult) -> dict[str, FoldPredictions]:
    """The test predictions of each finished fold of `run` that has a predictions.csv (baselines have none)."""
    paths = {fold.name: run.path / FOLDS / fold.name / PREDICTIONS for fold in run.folds}
    return {name: read_predictions(path) for name, path in paths.items() if path.is_file()}


@dataclass
class Aligned:
    """Two runs' predictions on the folds they share, as class indices in the same clip order per fold."""

    folds: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    predicted_a: list[np.ndarray] = field(default_factory=list)
    predicted_b: list[np.ndarray] = field(default_factory=list)
    left_out: int = 0


def align(a: dict[str, FoldPredictions], b: dict[str, FoldPredictions], classes: Sequence[str]) -> Aligned:
    """Match A's and B's clips by id in every fold both have; `left_out` counts the clips not matched."""
    index = {name: position for position, name in enumerate(classes)}
    aligned = Aligned()
    for fold in [name for name in a if name in b]:
        # A clip labelled differently in the two files is not the same clip: left out too.
        shared = [clip for clip, (label, _) in a[fold].items() if clip in b[fold] and b[fold][clip][0] == label]
        aligned.left_out += len(a[fold]) + len(b[fold]) - 2 * len(shared)
        if not shared:
            continue
        aligned.folds.append(fold)
        aligned.labels.append(np.array([index[a[fold][clip][0]] for clip in shared]))
        aligned.predicted_a.append(np.array([index[a[fold][clip][1]] for clip in shared]))
        aligned.predicted_b.append(np.array([index[b[fold][clip][1]] for clip in shared]))
    return aligned


PAIRED_HEADER = ["backbone", "A", "B", "folds", "test clips", "UAR A", "UAR B", "A − B", "CI low", "CI high",
                 "CI excludes 0"]


def paired_table(
    cells: Sequence[SweepCell], columns: Sequence[str], *, resamples: int = RESAMPLES, seed: int = SEED
) -> Table:
    """Every pair of methods per backbone among `cells` (one corpus; `columns` their labels), A before B in
    column order: test UAR of each and the mean per-fold difference A − B with its 95% bootstrap interval."""
    reported = [(cell, column) for cell, column in zip(cells, columns, strict=True) if cell.run]
    predictions = {id(cell): run_predictions(cell.run) for cell, _ in reported}
    rows: list[list[Cell]] = []
    notes: list[str] = []
    for backbone in unique(cell.backbone for cell, _ in reported):
        members = [(cell, column) for cell, column in reported if cell.backbone == backbone]
        for (cell_a, column_a), (cell_b, column_b) in combinations(members, 2):
            classes = unique([*cell_a.run.labels, *cell_b.run.labels])
            pair = align(predictions[id(cell_a)], predictions[id(cell_b)], classes)
            what = f"{backbone}: {column_a} vs {column_b}"
            if not pair.folds:
                notes.append(f"{what}: not compared, no fold with test predictions from both")
                continue
            if pair.left_out:
                notes.append(f"{what}: {pair.left_out} test clip(s) left out (predicted by only one of the two)")
            result = paired_bootstrap(
                pair.labels, pair.predicted_a, pair.predicted_b, len(classes), resamples=resamples, seed=seed
            )
            rows.append([
                backbone, column_a, column_b, result.folds, result.clips, result.uar_a, result.uar_b,
                result.difference, result.low, result.high, "yes" if result.excludes_zero else "no",
            ])
    method = (
        f"A − B is the mean over folds of the per-fold test UAR difference (points) on the clips both predicted; "
        f"CI: 95% percentile bootstrap, {resamples} resamples (seed {seed}) of the test clips within each fold, "
        "the same clips for A and B."
    )
    return Table("Paired comparison of methods on the same folds and test clips", PAIRED_HEADER, rows,
                 [method, *notes])
