"""The study's tables over a sweep's cells on one corpus: backbone × method grids, parameters and fairness.

The UAR, macro-F1 and fairness-gap tables are of the cells with emotion classes (categorical, multitask), the
CCC grids and the CCC-per-gender table of the cells with attribute dimensions (dimensional, multitask).

Every number is the cell's run summary (summary.json, or its finished folds' metrics while it trains), read
through `load_run`; a cell not run yet, or without a finished fold, is named in the table's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from sertune.report.results import CATEGORICAL, RunResult
from sertune.report.sweeps import NOT_RUN, SweepCell
from sertune.report.tables import (
    CCC_DECIMALS,
    CCC_FAIRNESS_NOTE,
    CCC_FAIRNESS_TITLE,
    CCC_NOTE,
    FAIRNESS_HEADER,
    FAIRNESS_TITLE,
    PARAMETERS_HEADER,
    PARAMETERS_TITLE,
    Cell,
    Stat,
    Table,
    ccc_fairness_cells,
    ccc_fairness_header,
    ccc_groups,
    dimension_names,
    fairness_cells,
    gender_groups,
    incomplete_notes,
    parameter_cells,
    stat,
    unique,
)

METRICS = {"uar": "UAR (%)", "macro_f1": "macro-F1 (%)", "ccc_mean": "CCC (average over dimensions)"}
CCC_MEAN = "ccc_mean"
Cells = tuple[list[SweepCell], list[str]]  # cells and their columns


def _where(cells: Sequence[SweepCell], columns: Sequence[str], keep: Callable[[SweepCell], bool]) -> Cells:
    pairs = [(cell, column) for cell, column in zip(cells, columns, strict=True) if keep(cell)]
    return [cell for cell, _ in pairs], [column for _, column in pairs]


def classifying(cells: Sequence[SweepCell], columns: Sequence[str]) -> Cells:
    """The cells with emotion classes (categorical, multitask; also those not run yet) and their columns."""
    return _where(cells, columns, lambda cell: cell.classifies)


def regressing(cells: Sequence[SweepCell], columns: Sequence[str]) -> Cells:
    """The cells with attribute dimensions (dimensional, multitask; also those not run yet) and their columns."""
    return _where(cells, columns, lambda cell: cell.task != CATEGORICAL)


def dimension_key(name: str) -> str:
    """The summary key of dimension `name`'s test CCC."""
    return f"dimensions.{name}.ccc"


def metric_name(key: str) -> str:
    """How a title names the summary key `key`: `UAR (%)`, `CCC arousal`, ..."""
    if key in METRICS:
        return METRICS[key]
    section, _, rest = key.partition(".")
    dimension, _, metric = rest.partition(".")
    return f"CCC {dimension}" if section == "dimensions" and metric == "ccc" else key


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
    """Test `key` (a summary key: uar, macro_f1, ccc_mean, dimensions.arousal.ccc) mean ± std over folds: a row
    per backbone, a column per method, the best of each row in bold (every one of them on a tie)."""
    backbones, heads = unique(cell.backbone for cell in cells), unique(columns)
    stats = {(cell.backbone, column): stat(cell.run, key) for cell, column in ordered(cells, columns)}
    # An empty Stat rather than None: every column then has mean, std and n in the CSV, even with no result yet.
    empty = Stat(None, None, 0)
    rows: list[list[Cell]] = [
        [backbone, *_bold_best([stats.get((backbone, head)) or empty for head in heads])] for backbone in backbones
    ]
    title = f"Test {metric_name(key)}, mean ± std over folds (best per backbone in bold)"
    notes = incomplete_notes(_runs(cells)) + cell_notes(cells, columns)
    ccc = key == CCC_MEAN or key.startswith("dimensions.")
    return Table(title, ["backbone", *heads], rows, notes, dict.fromkeys(heads, CCC_DECIMALS) if ccc else {})


def ccc_grids(cells: Sequence[SweepCell], columns: Sequence[str]) -> list[tuple[str, Table]]:
    """The test CCC grids of the cells with dimensions (`regressing`): the average over dimensions, then one per
    dimension; each with its file name's ending (`ccc_mean`, `ccc_arousal`, ...)."""
    cells, columns = regressing(cells, columns)
    average = metric_grid(cells, columns, CCC_MEAN)
    average.notes.append(CCC_NOTE)
    names = dimension_names(_runs(cells))
    return [(CCC_MEAN, average), *((f"ccc_{name}", metric_grid(cells, columns, dimension_key(name))) for name in names)]


def headline_grids(cells: Sequence[SweepCell], columns: Sequence[str]) -> list[Table]:
    """What `sertune report` prints per corpus: the test UAR grid of the cells with classes and the average-CCC
    grid of those with dimensions, each when there are such cells."""
    grids = []
    classes, dimensions = classifying(cells, columns), regressing(cells, columns)
    if classes[0]:
        grids.append(metric_grid(*classes, "uar"))
    if dimensions[0]:
        grids.append(metric_grid(*dimensions, CCC_MEAN))
    return grids


def _per_cell(
    cells: Sequence[SweepCell], columns: Sequence[str], title: str, header: list[str],
    values: Callable[[RunResult], list[Cell]], notes: Sequence[str] = (), decimals: int | None = None,
) -> Table:
    rows: list[list[Cell]] = [[cell.backbone, column, *values(cell.run)] for cell, column in ordered(cells, columns)]
    places = {} if decimals is None else dict.fromkeys(header, decimals)
    return Table(title, ["backbone", "method", *header], rows, [*incomplete_notes(_runs(cells)), *notes], places)


def study_parameters_table(cells: Sequence[SweepCell], columns: Sequence[str]) -> Table:
    """Trained parameters (tuning, head, total, % of the encoder) and checkpoint size per backbone × method."""
    return _per_cell(cells, columns, PARAMETERS_TITLE, PARAMETERS_HEADER, parameter_cells)


def study_fairness_table(cells: Sequence[SweepCell], columns: Sequence[str]) -> Table:
    """Fairness gaps by gender and UAR per gender, mean ± std over folds, per backbone × method with classes."""
    cells, columns = classifying(cells, columns)
    groups = gender_groups(_runs(cells))
    header = [*FAIRNESS_HEADER, *(f"UAR {group}" for group in groups)]
    return _per_cell(cells, columns, FAIRNESS_TITLE, header, lambda run: fairness_cells(run, groups))


def study_ccc_fairness_table(cells: Sequence[SweepCell], columns: Sequence[str]) -> Table:
    """CCC gap by gender per dimension and CCC per gender, mean ± std over folds, per backbone × method with
    dimensions."""
    cells, columns = regressing(cells, columns)
    runs = _runs(cells)
    dimensions, groups = dimension_names(runs), ccc_groups(runs)
    return _per_cell(cells, columns, CCC_FAIRNESS_TITLE, ccc_fairness_header(dimensions, groups),
                     lambda run: ccc_fairness_cells(run, dimensions, groups), [CCC_FAIRNESS_NOTE], CCC_DECIMALS)
