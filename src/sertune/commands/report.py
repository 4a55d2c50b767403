"""`sertune report DIR...`: tables (markdown, CSV) and plots (PNG) of trained runs, or of sweeps.

Run directories: one run's report goes to RUN_DIR/report/, several runs' to ./report/ unless --out says
otherwise, and the cross-run UAR table (runs with emotion classes) and CCC table (runs with attribute
dimensions: dimensional and multitask runs) are printed. Paths that are not runs, or runs with no finished fold
yet, are skipped with a warning (`sertune report runs/*`); unfinished runs are reported with their
finished folds.

Sweep directories (they hold sweep.json, written by `sertune sweep`): the study's report, per corpus
(docs/report.md), goes to SWEEP_DIR/report/ for one sweep, ./report/ for several; each corpus's test
UAR table (backbone × method) is printed, and its average-CCC table when it has cells with dimensions.
Sweeps and runs are not reported together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sertune.errors import SertuneError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `report`."""
    parser.add_argument(
        "runs", nargs="+", type=Path, metavar="DIR",
        help="run directories of `sertune train`, or sweep directories of `sertune sweep` (not both)",
    )
    parser.add_argument(
        "--out", type=Path,
        help="output directory (default: DIR/report for one run or sweep, ./report for several)",
    )
    parser.add_argument(
        "--resamples", type=_positive, default=1000,
        help="sweeps: bootstrap resamples of the paired comparison of methods (default: 1000; seed fixed at 0)",
    )
    parser.set_defaults(func=run)


def _report_sweeps(args: argparse.Namespace) -> int:
    from sertune.report import Study, default_sweep_out_dir, load_sweeps, write_sweep_report
    from sertune.report.study_tables import headline_grids
    from sertune.report.sweeps import NOT_RUN, SKIPPED

    sweeps = load_sweeps(args.runs)
    study = Study.of(sweeps)
    for cell in study.cells:
        if cell.status == SKIPPED:
            print(f"sertune report: warning: skipped cell {cell.name}: {cell.reason}", file=sys.stderr)
    out = args.out or default_sweep_out_dir(sweeps)
    written = write_sweep_report(sweeps, out, resamples=args.resamples)
    for corpus in study.corpora:
        for table in headline_grids(*study.on(corpus)):
            print(f"{corpus}: {table.title}\n\n{table.to_markdown()}")
    waiting = sum(cell.status == NOT_RUN for cell in study.cells)
    pending = f"; {waiting} cell(s) not run yet" if waiting else ""
    print(f"wrote {len(written)} files to {out}/ (see {out / 'report.md'}){pending}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Write the report and print its UAR and CCC table(s)."""
    from sertune.report import ccc_table, default_out_dir, is_sweep, load_runs, uar_table, write_report

    sweeps = [path for path in args.runs if is_sweep(path)]
    if sweeps and len(sweeps) < len(args.runs):
        others = [str(path) for path in args.runs if not is_sweep(path)]
        raise SertuneError(
            f"{sweeps[0]} is a sweep (it holds sweep.json) but {', '.join(others)} is not: report sweeps and run "
            "directories separately (a sweep's report already holds its cells' runs)"
        )
    if sweeps:
        return _report_sweeps(args)
    runs, skipped = load_runs(args.runs)
    for message in skipped:
        print(f"sertune report: warning: skipped {message}", file=sys.stderr)
    out = args.out or default_out_dir(runs)
    written = write_report(runs, out)
    tables = [uar_table(runs) if any(run.classifies for run in runs) else None, ccc_table(runs)]
    for table in tables:
        if table is not None:
            print(f"{table.title}\n\n{table.to_markdown()}")
    print(f"wrote {len(written)} files to {out}/ (see {out / 'report.md'})")
    return 0
