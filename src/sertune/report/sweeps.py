"""Sweep directories of `sertune sweep` (sweep.json, format 1) read into cells, each with its run's results.

A cell's run directory (`run`, relative to the sweep directory) is read with `load_run`: a finished or
unfinished run gives a `RunResult`; a run directory that does not exist yet is "not run yet", and one
without a finished fold is skipped (its `status` says why), so a sweep still in progress can be reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError
from sertune.fileio import read_json
from sertune.report.results import CATEGORICAL, DEFAULT_OUT, DIMENSIONAL, RunResult, RunSkipped, corpus_name, load_run

SWEEP_FILE = "sweep.json"
FORMAT = 1
CELL_KEYS = ("id", "name", "label", "run", "settings", "config")
SWEEP_ADVICE = "restore it from a copy, or write it again with `sertune sweep`"

NOT_RUN = "not run yet"
SKIPPED = "skipped"


@dataclass
class SweepCell:
    """One cell of a sweep: its settings on the sweep's axes, its resolved run config and its results.

    `axes` are its sweep's axes. `run` is None when the cell has nothing to report; `status` is then
    `NOT_RUN` or `SKIPPED`, and `reason` says why it was skipped.
    """

    id: str
    name: str
    label: str
    run_dir: Path
    settings: dict[str, Any]
    config: dict[str, Any]
    sweep: str
    axes: list[str]
    run: RunResult | None = None
    status: str = NOT_RUN
    reason: str = ""

    # The resolved config before the grid setting: a sweep records a grid value as written (a relative
    # directory, say), while the config and the run hold it resolved.
    @property
    def corpus(self) -> str:
        """The corpus name (as summary.json gives it), also for a cell not run yet."""
        return self.run.corpus if self.run else corpus_name(self.config.get("corpus") or self.settings.get("corpus"))

    @property
    def backbone(self) -> str:
        """The backbone as the run records it (as its config names it, for a cell not run yet)."""
        return self.run.backbone if self.run else str(self.config.get("backbone") or self.settings.get("backbone"))

    @property
    def task(self) -> str:
        """categorical, dimensional or multitask: as the run records it (its config's task.kind, not run yet)."""
        return self.run.task if self.run else str(self.value("task.kind") or CATEGORICAL)

    @property
    def classifies(self) -> bool:
        """Whether the cell predicts emotion classes (its task is not dimensional), so has a UAR."""
        return self.task != DIMENSIONAL

    @property
    def method(self) -> str:
        """The tuning method (`lora`, `adapter+prompt`, `frozen`, ...)."""
        return str(self.value("tuning.method"))

    def value(self, axis: str) -> Any:
        """The cell's setting on `axis` ("backbone", "train.lr", ...): from `settings`, else from its config."""
        if axis in self.settings:
            return self.settings[axis]
        node: Any = self.config
        for part in axis.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node


@dataclass
class Sweep:
    """A sweep directory: its name, the axes it varies and its cells in sweep.json's order."""

    path: Path
    name: str
    axes: list[str]
    cells: list[SweepCell]


def is_sweep(path: str | Path) -> bool:
    """Whether `path` is a sweep directory (it holds sweep.json)."""
    return (Path(path) / SWEEP_FILE).is_file()


def _checked(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SertuneError(f"{path} is corrupt (not a JSON object); {SWEEP_ADVICE}")
    if data.get("format") != FORMAT:
        raise SertuneError(
            f"{path} has sweep format {data.get('format')!r}; this sertune reads format {FORMAT}: "
            "report it with the sertune version that wrote it"
        )
    for key, kind in (("axes", list), ("cells", list)):
        if not isinstance(data.get(key), kind):
            raise SertuneError(f"{path} has no '{key}' list; {SWEEP_ADVICE}")
    for index, cell in enumerate(data["cells"]):
        missing = [key for key in CELL_KEYS if not isinstance(cell, dict) or key not in cell]
        if missing:
            raise SertuneError(f"{path}: cell {index + 1} has no {', '.join(map(repr, missing))}; {SWEEP_ADVICE}")
    return data


def _load_cell(entry: dict[str, Any], sweep_dir: Path, sweep: str, axes: list[str]) -> SweepCell:
    cell = SweepCell(
        id=str(entry["id"]), name=str(entry["name"]), label=str(entry["label"]), run_dir=sweep_dir / entry["run"],
        settings=dict(entry["settings"] or {}), config=dict(entry["config"] or {}), sweep=sweep,
        axes=axes,
    )
    if not cell.run_dir.exists():
        return cell
    try:
        cell.run = load_run(cell.run_dir)
    except RunSkipped as reason:
        # The sweep made the directory but no fold has finished (or even started) yet.
        cell.status = SKIPPED
        cell.reason = "run " + str(reason).removeprefix(f"{cell.run_dir} ").removesuffix(": nothing to report")
        return cell
    cell.status = "finished" if cell.run.complete else "unfinished"
    return cell


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep directory: sweep.json and each cell's run directory.

    Raises `SertuneError` naming the file when sweep.json is missing, corrupt or of another format, or when
    a run directory that a cell needs holds a missing or corrupt file (see `load_run`).
    """
    sweep_dir = Path(path)
    file = sweep_dir / SWEEP_FILE
    if not file.is_file():
        raise SertuneError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE})")
    data = _checked(read_json(file, SWEEP_ADVICE), file)
    name = str(data.get("name") or sweep_dir.resolve().name)
    axes = [str(axis) for axis in data["axes"]]
    cells = [_load_cell(entry, sweep_dir, name, axes) for entry in data["cells"]]
    return Sweep(path=sweep_dir, name=name, axes=axes, cells=cells)


def load_sweeps(paths: Iterable[str | Path]) -> list[Sweep]:
    """Read several sweep directories; raises `SertuneError` when no cell of any has results to report."""
    sweeps = [load_sweep(path) for path in paths]
    cells = [cell for sweep in sweeps for cell in sweep.cells]
    if not any(cell.run for cell in cells):
        waiting = sum(cell.status == NOT_RUN for cell in cells)
        raise SertuneError(
            f"nothing to report: no cell of {', '.join(str(sweep.path) for sweep in sweeps)} has a finished fold yet "
            f"({len(cells)} cell(s), {waiting} not run yet)"
        )
    return sweeps


def default_sweep_out_dir(sweeps: list[Sweep]) -> Path:
    """Where a sweep report goes without --out: SWEEP_DIR/report for one sweep, ./report for several."""
    return sweeps[0].path / "report" if len(sweeps) == 1 else DEFAULT_OUT
