"""Tables of runs: markdown (``mean ± std`` over folds) and CSV (mean, std, n; numbers to 6 decimals)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sertune.metrics import summarize_folds
from sertune.report.results import CATEGORICAL, DIMENSIONAL, GROUP_UAR, INCOMPLETE, MULTITASK, SUMMARY, RunResult


@dataclass(frozen=True)
class Stat:
    """A mean ± std over folds; `mark` is a footnote sign shown after it in markdown, `bold` highlights it there."""

    mean: float | None
    std: float | None
    n: int
    mark: str = ""
    bold: bool = False


Cell = str | int | float | Stat | None
CSV_DECIMALS = 6  # far finer than any score needs, coarse enough to hide float noise (28.000000000000004)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, CSV_DECIMALS) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return value


MARKDOWN_DECIMALS = 2  # percentages (UAR, gaps in points); correlations such as CCC need 3


def _markdown_cell(cell: Cell, decimals: int = MARKDOWN_DECIMALS) -> str:
    if isinstance(cell, Stat):
        if cell.mean is None:
            return "–"
        spread = "" if cell.std is None else f" ± {cell.std:.{decimals}f}"
        text = f"{cell.mean:.{decimals}f}{spread}{cell.mark}"
        return f"**{text}**" if cell.bold else text
    if cell is None:
        return "–"
    if isinstance(cell, int):
        return f"{cell:,}"
    if isinstance(cell, float):
        return f"{cell:.{decimals}f}"
    return cell.replace("|", r"\|")


@dataclass
class Table:
    """A titled table of cells; `notes` are footnotes printed under its markdown.

    `decimals` gives the markdown decimals of the columns it names (by header), `MARKDOWN_DECIMALS` elsewhere.
    """

    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    decimals: dict[str, int] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table (text columns left-aligned, numbers right), then the notes."""
        text_column = [all(isinstance(row[i], str) for row in self.rows) for i in range(len(self.header))]
        places = [self.decimals.get(name, MARKDOWN_DECIMALS) for name in self.header]
        lines = [
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" if text else "---:" for text in text_column) + "|",
            *("| " + " | ".join(map(_markdown_cell, row, places)) + " |" for row in self.rows),
        ]
        for note in self.notes:
            lines += ["", note]  # a paragraph each
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with floats rounded to 6 decimals; a column of `Stat`s becomes `<name> mean`, `std` and `n`."""
        stat_column = [any(isinstance(row[i], Stat) for row in self.rows) for i in range(len(self.header))]
        header: list[str] = []
        for name, is_stat in zip(self.header, stat_column, strict=True):
            header += [f"{name} mean", f"{name} std", f"{name} n"] if is_stat else [name]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for row in self.rows:
            cells: list[Any] = []
            for cell, is_stat in zip(row, stat_column, strict=True):
                if not is_stat:
                    cells.append(cell)
                elif cell is None:
                    cells += [None, None, None]
                else:
                    cells += [cell.mean, cell.std, cell.n]
            writer.writerow(map(_csv_value, cells))
        return buffer.getvalue()


def stat(run: RunResult, key: str) -> Stat | None:
    """The run's test summary entry `key` as a `Stat` (marked when folds are missing), None without one."""
    entry = run.test_summary.get(key)
    if entry is None:
        return None
    return Stat(entry.get("mean"), entry.get("std"), entry.get("n", 0), INCOMPLETE if run.partial else "")


def unique(values: Iterable[str]) -> list[str]:
    """The distinct values in their first order."""
    return list(dict.fromkeys(values))


def file_stems(runs: Sequence[RunResult]) -> list[str]:
    """Run names made unique (two runs called `lora` in different folders become `lora`, `lora-2`)."""
    used: set[str] = set()
    stems = []
    for run in runs:
        stem, count = run.name, 1
        while stem in used:
            count += 1
            stem = f"{run.name}-{count}"
        used.add(stem)
        stems.append(stem)
    return stems


def _several_backbones(runs: Sequence[RunResult]) -> bool:
    return len({run.backbone for run in runs}) > 1


def _several_tasks(runs: Sequence[RunResult]) -> bool:
    return len({run.task for run in runs}) > 1


def row_labels(runs: Sequence[RunResult]) -> list[str]:
    """Method (with the backbone when runs differ in it, and the task in brackets when they differ in that); the
    run name is added where a label repeats on a corpus.

    The labels are of all `runs`, also in a table that shows some of them (a UAR table has no dimensional run):
    a run then reads the same in every table of a report.
    """
    labels = [f"{run.backbone} / {run.method}" if _several_backbones(runs) else run.method for run in runs]
    if _several_tasks(runs):
        labels = [f"{label} [{run.task}]" for label, run in zip(labels, runs, strict=True)]
    repeats = Counter(zip(labels, (run.corpus for run in runs), strict=True))
    return [
        f"{label} ({stem})" if repeats[label, run.corpus] > 1 else label
        for label, run, stem in zip(labels, runs, file_stems(runs), strict=True)
    ]


def _method_header(runs: Sequence[RunResult]) -> str:
    header = "backbone / method" if _several_backbones(runs) else "method"
    return f"{header} [task]" if _several_tasks(runs) else header


def _labelled(runs: Sequence[RunResult], keep: Callable[[RunResult], bool]) -> list[tuple[str, RunResult]]:
    """The runs that `keep` accepts, each with its `row_labels` label among all `runs`."""
    return [(label, run) for label, run in zip(row_labels(runs), runs, strict=True) if keep(run)]


def _classifies(run: RunResult) -> bool:
    return run.classifies


def _regresses(run: RunResult) -> bool:
    return bool(run.dimensions)


def run_status(run: RunResult) -> str:
    unfinished = "" if run.complete else f" unfinished run (no {SUMMARY})"
    return unfinished + (" with failed folds" if run.failed else "")


def incomplete_notes(runs: Sequence[RunResult]) -> list[str]:
    """One footnote per run with missing folds: which folds are reported, pending or failed (and why)."""
    notes = []
    for run in runs:
        if not run.partial:
            continue
        reported = ", ".join(fold.name for fold in run.folds)
        note = f"{INCOMPLETE} {run.path}:{run_status(run)}; {len(run.folds)} finished fold(s) reported ({reported})"
        if run.pending:
            note += f", still training: {', '.join(run.pending)}"
        note += "".join(f"; {name} failed: {reason}" for name, reason in run.failed.items())
        notes.append(note)
    return notes


def _per_run(
    runs: Sequence[RunResult], keep: Callable[[RunResult], bool], title: str, header: Sequence[str],
    cells: Callable[[RunResult], list[Cell]], notes: Sequence[str] = (), decimals: int | None = None,
    incomplete: bool = True,
) -> Table:
    """A row per run that `keep` accepts: corpus, label, then `cells` under `header` (`decimals` in markdown);
    the notes name the runs with missing folds (`incomplete`), then `notes`."""
    pairs = _labelled(runs, keep)
    rows: list[list[Cell]] = [[run.corpus, label, *cells(run)] for label, run in pairs]
    places = {} if decimals is None else dict.fromkeys(header, decimals)
    missing = incomplete_notes([run for _, run in pairs]) if incomplete else []
    return Table(title, ["corpus", _method_header(runs), *header], rows, [*missing, *notes], places)


def uar_table(runs: Sequence[RunResult]) -> Table:
    """Test UAR mean ± std over folds: one row per method (or backbone and method), one column per corpus.

    Only runs with emotion classes are rows; a dimensional run is in `ccc_table` instead.
    """
    pairs = _labelled(runs, _classifies)
    corpora = unique(run.corpus for _, run in pairs)
    cells = {(label, run.corpus): stat(run, "uar") for label, run in pairs}
    rows: list[list[Cell]] = [
        [label, *(cells.get((label, corpus)) for corpus in corpora)] for label in unique(label for label, _ in pairs)
    ]
    notes = incomplete_notes([run for _, run in pairs])
    return Table("Test UAR (%) by corpus, mean ± std over folds", [_method_header(runs), *corpora], rows, notes)


def cross_corpus_table(runs: Sequence[RunResult]) -> Table | None:
    """Test UAR of each model (backbone / method) by training corpus (rows) and test corpus (columns), from runs
    (tested on their own corpus) and evaluation directories (`sertune evaluate`); None without any evaluation.

    Runs without emotion classes (dimensional) have no UAR and are left out."""
    runs = [run for run in runs if run.classifies]
    if not any(run.trained_on for run in runs):
        return None
    models = unique(f"{run.backbone} / {run.method}" for run in runs)
    several = len(models) > 1
    cells: dict[tuple[str, str], Stat | None] = {}
    for run in runs:
        trained_on = run.trained_on or run.corpus
        row = f"{run.backbone} / {run.method}: {trained_on}" if several else trained_on
        cells[row, run.corpus] = stat(run, "uar")
    rows_names = unique(row for row, _ in cells)
    corpora = unique(run.corpus for run in runs)
    rows: list[list[Cell]] = [[row, *(cells.get((row, corpus)) for corpus in corpora)] for row in rows_names]
    header = ["trained on" if not several else "model: trained on", *(f"tested on {c}" for c in corpora)]
    title = "Cross-corpus test UAR (%), mean ± std over folds" + ("" if several else f" ({models[0]})")
    return Table(title, header, rows, incomplete_notes(runs))


def _groups(keys: Iterable[str]) -> list[str]:
    return sorted({key.removeprefix(GROUP_UAR) for key in keys if key.startswith(GROUP_UAR)})


def gender_groups(runs: Sequence[RunResult]) -> list[str]:
    """The groups (genders) that some run has a test UAR for, sorted."""
    return _groups(key for run in runs for key in run.test_summary)


FAIRNESS_TITLE = "Fairness by gender on test (gaps in percentage points, lower is fairer), mean ± std over folds"
FAIRNESS_HEADER = ["statistical parity", "equality of opportunity"]


def fairness_cells(run: RunResult, groups: Sequence[str]) -> list[Cell]:
    """The run's fairness gaps, then its UAR per group, for the columns `FAIRNESS_HEADER` + `UAR <group>`."""
    gaps = [stat(run, "fairness.statistical_parity"), stat(run, "fairness.equality_of_opportunity")]
    return [*gaps, *(stat(run, GROUP_UAR + group) for group in groups)]


def fairness_table(runs: Sequence[RunResult]) -> Table:
    """Statistical parity and equality of opportunity by gender (percentage points) and UAR per gender, for the
    runs with emotion classes (`ccc_fairness_table` has the dimensional runs')."""
    groups = gender_groups([run for run in runs if run.classifies])
    header = [*FAIRNESS_HEADER, *(f"UAR {group}" for group in groups)]
    return _per_run(runs, _classifies, FAIRNESS_TITLE, header, lambda run: fairness_cells(run, groups))


# Dimensional emotion: CCC (Lin's concordance correlation), Pearson's r and MAE per attribute dimension.

CCC_DECIMALS = 3  # a CCC, r or MAE of 0.41 against 0.413: two decimals hide differences the study compares
CCC_AVERAGE = "average"
CCC_TITLE = "Test CCC by dimension, mean ± std over folds"
CCC_NOTE = (
    "CCC: Lin's concordance correlation coefficient of each test fold (−1 to 1, higher is better), averaged over "
    f"folds; {CCC_AVERAGE}: each fold's mean CCC over its dimensions. – where no fold has a defined CCC."
)
GROUP_CCC = "dimension_fairness.ccc_per_group."
CCC_GAP = "dimension_fairness.ccc_gap."


def dimension_names(runs: Iterable[RunResult]) -> list[str]:
    """The dimensions some run predicts, in their first order."""
    return unique(name for run in runs for name in run.dimensions)


def ccc_header(dimensions: Sequence[str]) -> list[str]:
    """The columns of `ccc_cells`: a CCC per dimension, then their average."""
    return [*dimensions, CCC_AVERAGE]


def ccc_cells(run: RunResult, dimensions: Sequence[str]) -> list[Cell]:
    """The run's test CCC per dimension, then the average over dimensions (`ccc_header`)."""
    return [*(stat(run, f"dimensions.{name}.ccc") for name in dimensions), stat(run, "ccc_mean")]


def ccc_table(runs: Sequence[RunResult]) -> Table | None:
    """Test CCC per dimension and its average, mean ± std over folds, a row per run with dimensions (corpus,
    backbone / method as `uar_table` labels it); None when no run has dimensions."""
    if not any(run.dimensions for run in runs):
        return None
    dimensions = dimension_names(runs)
    return _per_run(runs, _regresses, CCC_TITLE, ccc_header(dimensions), lambda run: ccc_cells(run, dimensions),
                    [CCC_NOTE], CCC_DECIMALS)


def _scale_note(runs: Sequence[RunResult]) -> str:
    scales = []
    for corpus in unique(run.corpus for run in runs):
        recorded: dict[str, str] = {}
        for run in runs:
            if run.corpus == corpus:
                for name, (low, high) in run.scales.items():
                    recorded.setdefault(name, f"{name} {low:g}–{high:g}")
        if recorded:
            scales.append(f"{corpus}: {', '.join(recorded.values())}")
    return "MAE is on each corpus's rating scale" + (f" ({'; '.join(scales)})." if scales else ".")


def ccc_details_table(runs: Sequence[RunResult]) -> Table | None:
    """Test Pearson's r and mean absolute error per dimension, mean ± std over folds, a row per run with
    dimensions; None when no run has dimensions."""
    if not any(run.dimensions for run in runs):
        return None
    dimensions = dimension_names(runs)
    header = [*(f"r {name}" for name in dimensions), *(f"MAE {name}" for name in dimensions)]

    def cells(run: RunResult) -> list[Cell]:
        return [stat(run, f"dimensions.{name}.{metric}") for metric in ("pearson", "mae") for name in dimensions]

    shown = [run for run in runs if run.dimensions]
    title = "Test Pearson's r and mean absolute error (MAE) by dimension, mean ± std over folds"
    return _per_run(runs, _regresses, title, header, cells, [_scale_note(shown)], CCC_DECIMALS)


CCC_FAIRNESS_TITLE = (
    "Regression fairness by gender on test: CCC gap per dimension (largest minus smallest CCC over the genders, "
    "lower is fairer) and CCC per gender, mean ± std over folds"
)
CCC_FAIRNESS_NOTE = "A fold's gap needs two genders with a defined CCC in its test set; – where no fold has one."


def ccc_groups(runs: Sequence[RunResult]) -> list[str]:
    """The groups (genders) that some run has a test CCC for, sorted."""
    groups = set()
    for run in runs:
        for key in run.test_summary:
            if key.startswith(GROUP_CCC):
                groups.add(key.removeprefix(GROUP_CCC).partition(".")[2])  # <dimension>.<group>
    return sorted(group for group in groups if group)


def ccc_fairness_header(dimensions: Sequence[str], groups: Sequence[str]) -> list[str]:
    """The columns of `ccc_fairness_cells`: the gap per dimension, then the CCC per dimension and group."""
    return [*(f"CCC gap {name}" for name in dimensions),
            *(f"CCC {name} {group}" for name in dimensions for group in groups)]


def ccc_fairness_cells(run: RunResult, dimensions: Sequence[str], groups: Sequence[str]) -> list[Cell]:
    """The run's CCC gap per dimension, then its CCC per dimension and group (`ccc_fairness_header`)."""
    return [*(stat(run, CCC_GAP + name) for name in dimensions),
            *(stat(run, f"{GROUP_CCC}{name}.{group}") for name in dimensions for group in groups)]


def ccc_fairness_table(runs: Sequence[RunResult]) -> Table | None:
    """CCC gap by gender per dimension and CCC per gender, a row per run with dimensions; None without any."""
    shown = [run for run in runs if run.dimensions]
    if not shown:
        return None
    dimensions, groups = dimension_names(shown), ccc_groups(shown)
    return _per_run(runs, _regresses, CCC_FAIRNESS_TITLE, ccc_fairness_header(dimensions, groups),
                    lambda run: ccc_fairness_cells(run, dimensions, groups), [CCC_FAIRNESS_NOTE], CCC_DECIMALS)


PARAMETERS_TITLE = "Trained parameters and checkpoint size"
PARAMETERS_HEADER = ["tuning", "head", "total", "% of encoder", "checkpoint (MB)"]


def parameter_cells(run: RunResult) -> list[Cell]:
    """The run's trained parameters (tuning, head, total, % of the encoder) and checkpoint MB (`PARAMETERS_HEADER`)."""
    counts = run.parameters or {}
    share = 100.0 * counts["trained"] / counts["encoder"] if counts.get("encoder") else None
    size = run.checkpoint_bytes / 1e6 if run.checkpoint_bytes is not None else None
    return [counts.get("tuning"), counts.get("head"), counts.get("trained"), share, size]


def parameters_table(runs: Sequence[RunResult]) -> Table:
    """Trained parameters (tuning, head, total, share of the encoder) and checkpoint size per run."""
    # The sizes do not depend on which folds finished: no notes on missing folds.
    return _per_run(runs, lambda run: True, PARAMETERS_TITLE, PARAMETERS_HEADER, parameter_cells, incomplete=False)


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(part)
    return metrics


# What picks a fold's epoch (sertune.task_config.selection_score), as a folds table's title says it.
SELECTION = {CATEGORICAL: "dev UAR", DIMENSIONAL: "dev CCC", MULTITASK: "dev UAR and CCC"}
FOLDS_CCC_NOTE = "dev CCC, test CCC: the CCC averaged over the dimensions."
FOLDS_MULTITASK_NOTE = "The epoch is the one with the best mean of dev UAR (as a fraction) and dev CCC."


def folds_table(run: RunResult) -> Table:
    """One row per finished fold (selected epoch, dev and test scores, fairness gaps), then mean and std rows.

    A run with classes has UAR, accuracy, macro-F1 and the fairness gaps; a run with dimensions dev and test
    CCC (average over dimensions) and the test CCC per dimension; a multitask run both. A run without epochs
    (a baseline) has no epoch column, and the title says how its model was selected.
    """
    columns: list[tuple[str, str, str]] = []  # (header, "dev" or "test", metrics key)
    if run.classifies:
        columns += [("dev UAR", "dev", "uar"), ("test UAR", "test", "uar"), ("accuracy", "test", "accuracy"),
                    ("macro-F1", "test", "macro_f1"), ("statistical parity", "test", "fairness.statistical_parity"),
                    ("equality of opportunity", "test", "fairness.equality_of_opportunity")]
        columns += [(f"UAR {group}", "test", GROUP_UAR + group) for group in _groups(run.test_summary)]
    ccc_columns = [("dev CCC", "dev", "ccc_mean"), ("test CCC", "test", "ccc_mean")]
    ccc_columns += [(f"CCC {name}", "test", f"dimensions.{name}.ccc") for name in run.dimensions]
    if run.dimensions:
        columns += ccc_columns

    def lead(fold: str, epoch: Cell) -> list[Cell]:
        # A baseline run has no epochs (its model was chosen on dev scores otherwise): no epoch column.
        return [fold, epoch] if run.has_epochs else [fold]

    rows: list[list[Cell]] = [
        [*lead(fold.name, fold.best_epoch),
         *(_lookup(fold.dev if part == "dev" else fold.test, key) for _, part, key in columns)]
        for fold in run.folds
    ]
    # The test rows come from summary.json when it exists; dev scores are not summarised there.
    # An evaluation directory (`sertune evaluate`) has no dev scores.
    summaries = {"dev": summarize_folds([fold.dev for fold in run.folds]), "test": run.test_summary}
    for which in ("mean", "std"):
        rows.append([*lead(which, None), *(summaries[part].get(key, {}).get(which) for _, part, key in columns)])
    header = [*lead("fold", "best epoch"), *(name for name, _, _ in columns)]
    chosen_by = SELECTION.get(run.task, SELECTION[CATEGORICAL])
    if run.has_epochs:
        selection = f"at the best {chosen_by} epoch"
    else:
        selection = f"of the model selected by {chosen_by}; no epochs"
    title = f"{run.name}: {run.corpus}, {run.backbone}, {run.method} (test scores {selection})"
    decimals = dict.fromkeys((name for name, _, _ in ccc_columns), CCC_DECIMALS)
    notes = incomplete_notes([run]) + ([FOLDS_CCC_NOTE] if run.dimensions else [])
    notes += [FOLDS_MULTITASK_NOTE] if run.classifies and run.dimensions and run.has_epochs else []
    return Table(title, header, rows, notes, decimals)
