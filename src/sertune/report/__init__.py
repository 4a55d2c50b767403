"""Tables (markdown and CSV) and plots (PNG) of trained runs, in the layout of the PEFT-SER study.

A run directory (docs/runs.md) is read into a `RunResult`, finished or not. Table builders return a
`Table`, which renders to markdown (``mean ± std`` over folds) or to CSV (mean, std and number of folds
in separate columns, rounded to 6 decimals so that float noise does not show). `write_report`
writes every table and plot of a set of runs into one directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sertune.fileio import write_text_atomic
from sertune.report.plots import plot_confusion, plot_learning_curves, plot_uar_vs_parameters
from sertune.report.results import FoldResult, RunResult, RunSkipped, default_out_dir, load_run, load_runs
from sertune.report.tables import (
    Stat,
    Table,
    fairness_table,
    file_stems,
    folds_table,
    parameters_table,
    run_status,
    uar_table,
)


def write_report(runs: Sequence[RunResult], out_dir: str | Path) -> list[Path]:
    """Write report.md, the tables as CSV and the plots of `runs` into `out_dir`; returns the files written.

    Cross-run files: `uar.csv`, `fairness.csv`, `parameters.csv`, `uar_vs_params.png`. Per run, named
    after its directory: `<run>-folds.csv`, `<run>-confusion.png` and, for runs trained in epochs (not
    baselines), `<run>-curves.png`.
    """
    out = Path(out_dir)
    written: list[Path] = []

    def write_table(name: str, table: Table) -> str:
        path = out / f"{name}.csv"
        write_text_atomic(path, table.to_csv())
        written.append(path)
        return f"## {table.title}\n\n{table.to_markdown()}\nCSV: [{path.name}]({path.name})\n"

    sections = [
        "# sertune report\n\n" + "".join(f"- `{run.path}`{run_status(run)}\n" for run in runs),
        write_table("uar", uar_table(runs)),
        write_table("fairness", fairness_table(runs)),
        write_table("parameters", parameters_table(runs)),
    ]
    plot = plot_uar_vs_parameters(runs, out / "uar_vs_params.png")
    if plot is not None:
        written.append(plot)
        sections.append(f"## Test UAR vs trained parameters\n\n![UAR vs trained parameters]({plot.name})\n")
    for run, stem in zip(runs, file_stems(runs), strict=True):
        sections.append(write_table(f"{stem}-folds", folds_table(run)))
        plotters = [("confusion", plot_confusion)]
        if run.has_epochs:
            plotters.append(("curves", plot_learning_curves))
        for kind, plotter in plotters:
            image = plotter(run, out / f"{stem}-{kind}.png")
            written.append(image)
            sections.append(f"![{stem} {kind}]({image.name})\n")
    report = out / "report.md"
    write_text_atomic(report, "\n".join(sections))
    written.append(report)
    return written


__all__ = [
    "FoldResult",
    "RunResult",
    "RunSkipped",
    "Stat",
    "Table",
    "default_out_dir",
    "fairness_table",
    "folds_table",
    "load_run",
    "load_runs",
    "parameters_table",
    "plot_confusion",
    "plot_learning_curves",
    "plot_uar_vs_parameters",
    "uar_table",
    "write_report",
]
