"""Tables of runs: markdown (``mean ± std`` over folds) and CSV (mean, std, n; numbers to 6 decimals)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sertune.metrics import summarize_folds
from sertune.report.results import GROUP_UAR, INCOMPLETE, SUMMARY, RunResult


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


def _markdown_cell(cell: Cell) -> str:
    if isinstance(cell, Stat):
        if cell.mean is None:
            return "–"
        spread = "" if cell.std is None else f" ± {cell.std:.2f}"
        text = f"{cell.mean:.2f}{spread}{cell.mark}"
        return f"**{text}**" if cell.bold else text
    if cell is None:
        return "–"
    if isinstance(cell, int):
        return f"{cell:,}"
    if isinstance(cell, float):
        return f"{cell:.2f}"
    return cell.replace("|", r"\|")


@dataclass
class Table:
    """A titled table of cells; `notes` are footnotes printed under its markdown."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table (text columns left-aligned, numbers right), then the notes."""
        text_column = [all(isinstance(row[i], str) for row in self.rows) for i in range(len(self.header))]
        lines = [
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" if text else "---:" for text in text_column) + "|",
            *("| " + " | ".join(map(_markdown_cell, row)) + " |" for row in self.rows),
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


def row_labels(runs: Sequence[RunResult]) -> list[str]:
    """Method (with the backbone when runs differ in it); the run name is added where a label repeats on a corpus."""
    labels = [f"{run.backbone} / {run.method}" if _several_backbones(runs) else run.method for run in runs]
    repeats = Counter(zip(labels, (run.corpus for run in runs), strict=True))
    return [
        f"{label} ({stem})" if repeats[label, run.corpus] > 1 else label
        for label, run, stem in zip(labels, runs, file_stems(runs), strict=True)
    ]


def _method_header(runs: Sequence[RunResult]) -> str:
    return "backbone / method" if _several_backbones(runs) else "method"


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


def uar_table(runs: Sequence[RunResult]) -> Table:
    """Test UAR mean ± std over folds: one row per method (or backbone and method), one column per corpus."""
    labels = row_labels(runs)
    corpora = unique(run.corpus for run in runs)
    cells = {(label, run.corpus): stat(run, "uar") for label, run in zip(labels, runs, strict=True)}
    rows: list[list[Cell]] = [
        [label, *(cells.get((label, corpus)) for corpus in corpora)] for label in unique(labels)
    ]
    return Table(
        "Test UAR (%) by corpus, mean ± std over folds", [_method_header(runs), *corpora], rows, incomplete_notes(runs)
    )


def cross_corpus_table(runs: Sequence[RunResult]) -> Table | None:
    """Test UAR of each model (backbone / method) by training corpus (rows) and test corpus (columns), from runs
    (tested on their own corpus) and evaluation directories (`sertune evaluate`); None without any evaluation."""
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
    """Statistical parity and equality of opportunity by gender (percentage points) and UAR per gender."""
    groups = gender_groups(runs)
    rows: list[list[Cell]] = [
        [run.corpus, label, *fairness_cells(run, groups)] for label, run in zip(row_labels(runs), runs, strict=True)
    ]
    header = ["corpus", _method_header(runs), *FAIRNESS_HEADER, *(f"UAR {group}" for group in groups)]
    return Table(FAIRNESS_TITLE, header, rows, incomplete_notes(runs))


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
    rows: list[list[Cell]] = [
        [run.corpus, label, *parameter_cells(run)] for label, run in zip(row_labels(runs), runs, strict=True)
    ]
    return Table(PARAMETERS_TITLE, ["corpus", _method_header(runs), *PARAMETERS_HEADER], rows)


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(part)
    return metrics


def folds_table(run: RunResult) -> Table:
    """One row per finished fold (selected epoch, dev and test scores, fairness gaps), then mean and std rows.

    A run without epochs (a baseline) has no epoch column, and the title says how its model was selected.
    """
    groups = _groups(run.test_summary)
    keys = ["uar", "accuracy", "macro_f1", "fairness.statistical_parity", "fairness.equality_of_opportunity"]
    keys += [GROUP_UAR + group for group in groups]

    def lead(fold: str, epoch: Cell) -> list[Cell]:
        # A baseline run has no epochs (its model was chosen on dev UAR otherwise): no epoch column.
        return [fold, epoch] if run.has_epochs else [fold]

    rows: list[list[Cell]] = [
        [*lead(fold.name, fold.best_epoch), fold.dev.get("uar"), *(_lookup(fold.test, key) for key in keys)]
        for fold in run.folds
    ]
    # The test rows come from summary.json when it exists; dev UAR is not summarised there.
    # An evaluation directory (`sertune evaluate`) has no dev scores.
    dev = summarize_folds([fold.dev for fold in run.folds]).get("uar", {})
    for which in ("mean", "std"):
        rows.append([*lead(which, None), dev.get(which), *(run.test_summary.get(key, {}).get(which) for key in keys)])
    header = [*lead("fold", "best epoch"), "dev UAR", "test UAR", "accuracy", "macro-F1", "statistical parity"]
    header += ["equality of opportunity", *(f"UAR {group}" for group in groups)]
    selection = "at the best dev UAR epoch" if run.has_epochs else "of the model selected by dev UAR; no epochs"
    title = f"{run.name}: {run.corpus}, {run.backbone}, {run.method} (test scores {selection})"
    return Table(title, header, rows, incomplete_notes([run]))
