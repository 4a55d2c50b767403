"""`sertune report RUN_DIR...`: tables (markdown, CSV) and plots (PNG) of trained runs.

One run's report goes to RUN_DIR/report/, several runs' to ./report/ unless --out says otherwise. The
cross-run UAR table is also printed. Paths that are not runs, or runs with no finished fold yet, are
skipped with a warning (`sertune report runs/*`); unfinished runs are reported with their finished folds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `report`."""
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories of `sertune train`")
    parser.add_argument(
        "--out", type=Path, help="output directory (default: RUN_DIR/report for one run, ./report for several)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and print the cross-run UAR table."""
    from sertune.report import default_out_dir, load_runs, uar_table, write_report

    runs, skipped = load_runs(args.runs)
    for message in skipped:
        print(f"sertune report: warning: skipped {message}", file=sys.stderr)
    out = args.out or default_out_dir(runs)
    written = write_report(runs, out)
    table = uar_table(runs)
    print(f"{table.title}\n\n{table.to_markdown()}")
    print(f"wrote {len(written)} files to {out}/ (see {out / 'report.md'})")
    return 0
