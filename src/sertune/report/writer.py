"""The files of one report directory: CSV tables and PNG figures, linked from report.md."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sertune.fileio import write_text_atomic
from sertune.report.tables import Table

REPORT = "report.md"


class ReportWriter:
    """Writes a report's files into `out_dir` and returns the markdown that links each; `written` lists them."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.written: list[Path] = []

    def table(self, name: str, table: Table, level: int = 2) -> str:
        """Write `<name>.csv`; returns the table's markdown section under a heading of `level`."""
        path = self.out / f"{name}.csv"
        write_text_atomic(path, table.to_csv())
        self.written.append(path)
        return f"{'#' * level} {table.title}\n\n{table.to_markdown()}\nCSV: [{path.name}]({path.name})\n"

    def image(self, path: Path, caption: str) -> str:
        """Record a PNG that a plot function wrote into the directory; returns its markdown embedding."""
        self.written.append(path)
        return f"![{caption}]({path.name})\n"

    def finish(self, sections: Iterable[str]) -> list[Path]:
        """Write report.md from `sections` (one paragraph or more each); returns every file written."""
        report = self.out / REPORT
        write_text_atomic(report, "\n".join(sections))
        self.written.append(report)
        return self.written
