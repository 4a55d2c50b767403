"""Tables (markdown and CSV) and plots (PNG) of trained runs and sweeps, in the layout of the PEFT-SER study.

A run directory (docs/runs.md) is read into a `RunResult`, finished or not. Table builders return a
`Table`, which renders to markdown (``mean ± std`` over folds) or to CSV (mean, std and number of folds
in separate columns, rounded to 6 decimals so that float noise does not show). `write_report`
writes every table and plot of a set of runs into one directory: UAR, confusion and fairness gaps for the
runs with emotion classes (categorical, multitask), CCC, Pearson's r, MAE and CCC per gender for the runs
with attribute dimensions (dimensional, multitask). A sweep directory (`sertune sweep`,
sweep.json) is read with `load_sweeps` and reported by `write_sweep_report` (`sertune.report.study`): per
corpus, backbone × method tables, parameters, fairness, paired bootstrap comparisons, and figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from sertune.report.paired import PairedDifference, paired_bootstrap
from sertune.report.plots import (
    plot_confusion,
    plot_cross_corpus,
    plot_learning_curves,
    plot_scatter,
    plot_uar_vs_parameters,
)
from sertune.report.results import FoldResult, RunResult, RunSkipped, default_out_dir, load_run, load_runs
from sertune.report.study import Study, write_sweep_report
from sertune.report.sweeps import Sweep, SweepCell, default_sweep_out_dir, is_sweep, load_sweep, load_sweeps
from sertune.report.tables import (
    Stat,
    Table,
    ccc_details_table,
    ccc_fairness_table,
    ccc_table,
    cross_corpus_table,
    fairness_table,
    file_stems,
    folds_table,
    parameters_table,
    run_status,
    uar_table,
)
from sertune.report.writer import ReportWriter


def _card_link(run: RunResult, out: Path) -> str:
    """A link to the run's model card (README.md, written when training finished), relative to the report."""
    card = Path(run.path) / "README.md"
    return f" ([model card]({Path(os.path.relpath(card, out)).as_posix()}))" if card.is_file() else ""


def write_report(runs: Sequence[RunResult], out_dir: str | Path) -> list[Path]:
    """Write report.md, the tables as CSV and the plots of `runs` into `out_dir`; returns the files written.

    Cross-run files: `parameters.csv`; with runs that have emotion classes `uar.csv`, `fairness.csv`,
    `uar_vs_params.png`, and with evaluation directories among them (`sertune evaluate`) `cross_corpus.csv` and
    `cross_corpus.png`; with runs that have attribute dimensions `ccc.csv` (CCC per dimension),
    `ccc_details.csv` (Pearson's r and MAE) and `ccc_fairness.csv` (CCC per gender and its gap). Per run, named
    after its directory: `<run>-folds.csv`, for runs with classes `<run>-confusion.png`, for runs with
    dimensions `<run>-scatter.png` (when its folds wrote predictions.csv) and, for runs trained in epochs (not
    baselines), `<run>-curves.png`.
    """
    files = ReportWriter(out_dir)
    out = files.out
    # The task is named per run only when it is not the same for all.
    tasks = len({run.task for run in runs}) > 1
    sections = ["# sertune report\n\n" + "".join(
        f"- `{run.path}`{f' ({run.task})' if tasks else ''}{run_status(run)}{_card_link(run, out)}\n" for run in runs
    )]
    if any(run.classifies for run in runs):
        sections += [files.table("uar", uar_table(runs)), files.table("fairness", fairness_table(runs))]
    for name, table in (("ccc", ccc_table(runs)), ("ccc_details", ccc_details_table(runs)),
                        ("ccc_fairness", ccc_fairness_table(runs))):
        if table is not None:
            sections.append(files.table(name, table))
    sections.append(files.table("parameters", parameters_table(runs)))
    plot = plot_uar_vs_parameters(runs, out / "uar_vs_params.png")
    if plot is not None:
        sections.append("## Test UAR vs trained parameters\n\n" + files.image(plot, "UAR vs trained parameters"))
    matrix = cross_corpus_table(runs)
    if matrix is not None:
        heat_map = plot_cross_corpus(matrix, out / "cross_corpus.png")
        sections += [files.table("cross_corpus", matrix), files.image(heat_map, "cross-corpus UAR") + "\n"]
    for run, stem in zip(runs, file_stems(runs), strict=True):
        sections.append(files.table(f"{stem}-folds", folds_table(run)))
        plotters: list[tuple[str, Callable[[RunResult, Path], Path | None]]] = []
        if run.classifies:
            plotters.append(("confusion", plot_confusion))
        if run.dimensions:
            plotters.append(("scatter", plot_scatter))
        if run.has_epochs:
            plotters.append(("curves", plot_learning_curves))
        for kind, plotter in plotters:
            path = plotter(run, out / f"{stem}-{kind}.png")
            if path is not None:
                sections.append(files.image(path, f"{stem} {kind}"))
    return files.finish(sections)


__all__ = [
    "FoldResult",
    "PairedDifference",
    "RunResult",
    "RunSkipped",
    "Stat",
    "Study",
    "Sweep",
    "SweepCell",
    "Table",
    "ccc_details_table",
    "ccc_fairness_table",
    "ccc_table",
    "default_out_dir",
    "default_sweep_out_dir",
    "fairness_table",
    "folds_table",
    "is_sweep",
    "load_run",
    "load_runs",
    "load_sweep",
    "load_sweeps",
    "paired_bootstrap",
    "parameters_table",
    "plot_confusion",
    "plot_learning_curves",
    "plot_scatter",
    "plot_uar_vs_parameters",
    "uar_table",
    "write_report",
    "write_sweep_report",
]
