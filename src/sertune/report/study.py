"""The report of one or more sweeps (`sertune report SWEEP_DIR...`): per corpus, the study's tables and
paired comparisons, then its figures; report.md links a CSV per table and embeds the PNGs.

Files (`<corpus>` is the corpus name made safe for a file name): `cells.csv`, `<corpus>-uar.csv`,
`<corpus>-macro_f1.csv`, `<corpus>-parameters.csv`, `<corpus>-fairness.csv`, `<corpus>-paired.csv`,
`uar_vs_params.png`, `uar_vs_<axis>.png` per ablation axis (e.g. `uar_vs_lora_rank.png`), `fairness.png`
and `report.md`. A sweep may vary the task (`task.kind`): the UAR, macro-F1, fairness and paired tables and
the figures are of the cells with emotion classes (categorical, multitask); a corpus with cells that have
attribute dimensions (dimensional, multitask) also gets `<corpus>-ccc_mean.csv` (CCC averaged over the
dimensions), `<corpus>-ccc_<dimension>.csv` per dimension and `<corpus>-ccc_fairness.csv` (CCC per gender).
The paired bootstrap compares UAR only. How columns are labelled is in `sertune.report.columns`; the paired
statistics in `sertune.report.paired`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sertune.report.columns import all_axes, column_labels, short_names
from sertune.report.comparisons import paired_table
from sertune.report.paired import RESAMPLES, SEED
from sertune.report.study_plots import ablation_axes, plot_ablation, plot_study_fairness, plot_study_uar_vs_parameters
from sertune.report.study_tables import (
    ccc_grids,
    classifying,
    metric_grid,
    regressing,
    study_ccc_fairness_table,
    study_fairness_table,
    study_parameters_table,
)
from sertune.report.sweeps import NOT_RUN, Sweep, SweepCell
from sertune.report.tables import Cell, Table, unique
from sertune.report.writer import ReportWriter


@dataclass
class Study:
    """The cells of the sweeps reported together, each with its column label, and the axes any sweep varies."""

    sweeps: list[Sweep]
    cells: list[SweepCell]
    columns: list[str]
    axes: list[str]

    @classmethod
    def of(cls, sweeps: Sequence[Sweep]) -> Study:
        """Gather the sweeps' cells in order and label their columns (`sertune.report.columns`)."""
        cells = [cell for sweep in sweeps for cell in sweep.cells]
        axes = all_axes(sweep.axes for sweep in sweeps)
        return cls(list(sweeps), cells, column_labels(cells, axes), axes)

    @property
    def corpora(self) -> list[str]:
        """The corpora of the cells, in their first order."""
        return unique(cell.corpus for cell in self.cells)

    def on(self, corpus: str) -> tuple[list[SweepCell], list[str]]:
        """The cells on `corpus` and their columns."""
        pairs = [(cell, column) for cell, column in zip(self.cells, self.columns, strict=True) if cell.corpus == corpus]
        return [cell for cell, _ in pairs], [column for _, column in pairs]


def _status(cell: SweepCell) -> str:
    if cell.run is None:
        return NOT_RUN if cell.status == NOT_RUN else f"skipped: {cell.reason}"
    details = [f"still training: {', '.join(cell.run.pending)}"] if cell.run.pending else []
    details += [f"{name} failed" for name in cell.run.failed]
    return cell.status + (f" ({'; '.join(details)})" if details else "")


def cells_table(study: Study) -> Table:
    """Every cell of the sweeps: where it sits in the tables, its status and the folds it reports."""
    rows: list[list[Cell]] = [
        [cell.sweep, cell.name, cell.corpus, cell.backbone, column, cell.task, _status(cell),
         len(cell.run.folds) if cell.run else None, str(cell.run_dir)]
        for cell, column in zip(study.cells, study.columns, strict=True)
    ]
    header = ["sweep", "cell", "corpus", "backbone", "method", "task", "status", "folds reported", "run"]
    return Table("Cells", header, rows)


def _sweep_line(sweep: Sweep) -> str:
    counts: dict[str, int] = {}
    for cell in sweep.cells:
        counts[cell.status] = counts.get(cell.status, 0) + 1
    states = ", ".join(f"{count} {state}" for state, count in counts.items())
    return f"- `{sweep.path}` ({sweep.name}): axes {', '.join(sweep.axes)}; {len(sweep.cells)} cell(s): {states}\n"


def _stem(corpus: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", corpus)


PAIRED_UAR_ONLY = (
    "The paired bootstrap compares test UAR only: the dimensional cells (no classes) are not compared; their "
    "CCC is in the tables above."
)
FIGURES_UAR_ONLY = "The figures plot test UAR: the dimensional cells (no classes) are not in them."


def write_sweep_report(
    sweeps: Sequence[Sweep], out_dir: str | Path, *, resamples: int = RESAMPLES, seed: int = SEED
) -> list[Path]:
    """Write the study report of `sweeps` (see the module docstring) into `out_dir`; returns the files written.

    `resamples` and `seed` are the paired bootstrap's (1000 and 0 by default: the same report every time).
    """
    study = Study.of(sweeps)
    files = ReportWriter(out_dir)
    names = ", ".join(sweep.name for sweep in sweeps)
    sections = [f"# sertune sweep report: {names}\n\n" + "".join(map(_sweep_line, sweeps)), files.table(
        "cells", cells_table(study))]
    for corpus in study.corpora:
        cells, columns = study.on(corpus)
        stem = _stem(corpus)
        classes = classifying(cells, columns)
        has_classes, has_dimensions = bool(classes[0]), bool(regressing(cells, columns)[0])
        some_dimensional = any(not cell.classifies for cell in cells)
        grids = [(key, metric_grid(*classes, key)) for key in ("uar", "macro_f1")] if has_classes else []
        grids += ccc_grids(cells, columns) if has_dimensions else []
        sections.append(f"## {corpus}\n")
        sections += [files.table(f"{stem}-{name}", grid, level=3) for name, grid in grids]
        sections.append(files.table(f"{stem}-parameters", study_parameters_table(cells, columns), level=3))
        if has_classes:
            sections.append(files.table(f"{stem}-fairness", study_fairness_table(cells, columns), level=3))
        if has_dimensions:
            sections.append(files.table(f"{stem}-ccc_fairness", study_ccc_fairness_table(cells, columns), level=3))
        if has_classes:
            paired = paired_table(*classes, resamples=resamples, seed=seed)
            if some_dimensional:
                paired.notes.append(PAIRED_UAR_ONLY)
            sections.append(files.table(f"{stem}-paired", paired, level=3))
        elif some_dimensional:
            sections.append(f"{PAIRED_UAR_ONLY}\n")
    sections.append("## Figures\n")
    if any(not cell.classifies for cell in study.cells):
        sections.append(f"{FIGURES_UAR_ONLY}\n")
    out = files.out
    figures = [("Test UAR vs trained parameters", plot_study_uar_vs_parameters(
        study.cells, study.columns, out / "uar_vs_params.png"))]
    names_of = short_names(study.axes)
    for axis in ablation_axes(study.cells, study.axes):
        path = out / f"uar_vs_{_stem(names_of[axis])}.png"
        figures.append((f"Test UAR vs {axis}", plot_ablation(study.cells, axis, study.axes, path)))
    # Only cells with classes: a dimensional cell would be a legend entry without bars.
    fairness = plot_study_fairness(*classifying(study.cells, study.columns), out / "fairness.png")
    figures.append(("Fairness gaps by method", fairness))
    for title, path in figures:
        body = files.image(path, title) if path else "No cell has the values this figure needs.\n"
        sections.append(f"### {title}\n\n{body}")
    return files.finish(sections)
