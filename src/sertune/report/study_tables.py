"""The study's tables over a sweep's cells on one corpus: backbone × method grids, parameters and fairness.

Every number is the cell's run summary (summary.json, or its finished folds' metrics while it trains), read
through `load_run`; a cell not run yet, or without a finished fold, is named in the table's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from sertune.report.results import RunResult
from sertune.report.sweeps import NOT_RUN, SweepCell
from sertune.report.tables import (
    FAIRNESS_HEADER,
    FAIRNESS_TITLE,
    PARAMETERS_HEADER,
    PARAMETERS_TITLE,
    Cell,
    Stat,
    Table,
    fairness_cells,
    gender_groups,
    incomplete_notes,
    parameter_cells,
    stat,
    unique,
)

METRICS = {"uar": "UAR", "macro_f1": "macro-F1"}


def ordered(cells: Sequence[SweepCell], columns: Sequence[str]) -> list[tuple[SweepCell, str]]:
    """The cells with results and their columns, by backbone then column, each in its first order."""
    reported = [(cell, column) for cell, column in zip(cells, columns, strict=True) if cell.run]
    backbones, heads = unique(cell.backbone for cell in cells), unique(columns)
    return sorted(reported, key=lambda pair: (backbones.index(pair[0].backbone), heads.index(pair[1])))


def _runs(cells: Sequence[SweepCell]) -> list[RunResult]:
    return [cell.run for cell in cells if cell.run]


def cell_notes(cells: Sequence[SweepCell], columns: Sequence[str]) -> list[str]:
    """A note per cell without results: not run yet, or skipped with the reason."""
    notes = []
    for cell, column in zip(cells, columns, strict=True):
        if cell.run is None:
            state = NOT_RUN if cell.status == NOT_RUN else f"skipped, {cell.reason}"
            notes.append(f"{cell.backbone} / {column} (cell {cell.name}, {cell.run_dir}): {state}")
    return notes


def _bold_best(row: list[Stat]) -> list[Stat]:
    means = [entry.mean for entry in row if entry.mean is not None]
    if not means:
        return row
    best = max(means)
    return [replace(entry, bold=True) if entry.mean == best else entry for entry in row]


def metric_grid(cells: Sequence[SweepCell], columns: Sequence[str], key: str = "uar") -> Table:
    """Test `key` (a summary key: uar, macro_f1) mean ± std over folds: a row per backbone, a column per method,
    the best of each row in bold (every one of them on a tie)."""
    backbones, heads = unique(cell.backbone for cell in cells), unique(columns)
    stats = {(cell.backbone, column): stat(cell.run, key) for cell, column in ordered(cells, columns)}
    # An empty Stat rather than None: every column then has mean, std and n in the CSV, even with no result yet.
    empty = Stat(None, None, 0)
    rows: list[list[Cell]] = [
        [backbone, *_bold_best([stats.get((backbone, head)) or empty for head in heads])] for backbone in backbones
    ]
    name = METRICS.get(key, key)
    title = f"Test {name} (%), mean ± std over folds (best per backbone in bold)"
    return Table(title, ["backbone", *heads], rows, incomplete_notes(_runs(cells)) + cell_notes(cells, columns))


def _per_cell(
    cells: Sequence[SweepCell], columns: Sequence[str], title: str, header: list[str],
    values: Callable[[RunResult], list[Cell]],
) -> Table:
    rows: list[list[Cell]] = [[cell.backbone, column, *values(cell.run)] for cell, column in ordered(cells, columns)]
    return Table(title, ["backbone", "method", *header], rows, incomplete_notes(_runs(cells)))


def study_parameters_table(cells: Sequence[SweepCell], columns: Sequence[str]) -> Table:
    """Trained parameters (tuning, head, total, % of the encoder) and checkpoint size per backbone × method."""
    return _per_cell(cells, columns, PARAMETERS_TITLE, PARAMETERS_HEADER, parameter_cells)


def study_fairness_table(cells: Sequence[SweepCell], columns: Sequence[str]) -> Table:
    """Fairness gaps by gender and UAR per gender, mean ± std over folds, per backbone × method."""
    groups = gender_groups(_runs(cells))
    header = [*FAIRNESS_HEADER, *(f"UAR {group}" for group in groups)]
    return _per_cell(cells, columns, FAIRNESS_TITLE, header, lambda run: fairness_cells(run, groups))
