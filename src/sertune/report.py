"""Tables (markdown and CSV) and plots (PNG) of trained runs, in the layout of the PEFT-SER study.

A run directory (docs/runs.md) is read into a `RunResult`, finished or not. Table builders return a
`Table`, which renders to markdown (``mean ± std`` over folds) or to CSV (mean, std and number of folds
in separate columns, at full precision, so that the numbers parse back unchanged). `write_report`
writes every table and plot of a set of runs into one directory.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sertune.corpora.manifest import FOLDS as CORPUS_FOLDS
from sertune.errors import SertuneError
from sertune.fileio import atomic_path, write_text_atomic
from sertune.metrics import summarize_folds

# Names from docs/runs.md. The checkpoint names are not imported from sertune.checkpoint, which loads
# torch and transformers: reading a few JSON files should not cost that.
SUMMARY = "summary.json"
CONFIG = "config.yaml"
FOLDS = "folds"
METRICS = "metrics.json"
CHECKPOINT_METADATA = Path("checkpoint", "sertune.json")
CHECKPOINT_WEIGHTS = Path("checkpoint", "adapter.safetensors")

INCOMPLETE = "†"
GROUP_UAR = "fairness.uar_per_group."
DEFAULT_OUT = Path("report")

SUMMARY_ADVICE = "restore it, or delete it to report the run from its folds' metrics.json files"
FOLD_ADVICE = "restore it from a copy, or retrain the fold"


class RunSkipped(SertuneError):
    """The path is not a run directory, or none of its folds has finished: nothing to report yet."""


@dataclass
class FoldResult:
    """One finished fold: its history per epoch and its dev/test metrics at the selected epoch."""

    name: str
    best_epoch: int | None
    epochs: list[dict[str, Any]]
    dev: dict[str, Any]
    test: dict[str, Any]


@dataclass
class RunResult:
    """What a report needs from one run directory.

    `complete` is whether `summary.json` exists; an unfinished run holds its finished folds only and
    names the others in `pending`. `failed` maps the folds that summary.json reports as failed (e.g. a
    diverged loss) to the reason. `test_summary` is `summarize_folds` over the folds' test metrics.
    """

    path: Path
    corpus: str
    backbone: str
    method: str
    labels: list[str]
    folds: list[FoldResult]
    test_summary: dict[str, dict[str, Any]]
    complete: bool = True
    pending: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, int] | None = None
    checkpoint_bytes: int | None = None

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def partial(self) -> bool:
        """Whether some fold of the protocol is missing from the results (unfinished or failed)."""
        return not self.complete or bool(self.failed)


# ---------------------------------------------------------------------------------------------- loading


def _read_json(path: Path, advice: str) -> dict[str, Any]:
    if not path.is_file():
        raise SertuneError(f"{path} is missing; {advice}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SertuneError(f"{path} is corrupt ({error}); {advice}") from None
    if not isinstance(data, dict):
        raise SertuneError(f"{path} is corrupt (not a JSON object); {advice}")
    return data


def _require(data: dict[str, Any], key: str, path: Path, advice: str) -> Any:
    if key not in data:
        raise SertuneError(f"{path} has no '{key}' entry; {advice}")
    return data[key]


def _read_config(path: Path) -> dict[str, Any]:
    """The run's config.yaml, or {} without one (it only names corpus, backbone and method here)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SertuneError(f"{path} is not valid YAML ({error}); restore it from a copy") from None
    return data if isinstance(data, dict) else {}


def _corpus_name(corpus_dir: str | None) -> str:
    """The corpus name that summary.json would give: from the prepared corpus, else its directory name."""
    if not corpus_dir:
        return "unknown"
    try:
        return str(json.loads((Path(corpus_dir) / CORPUS_FOLDS).read_text(encoding="utf-8"))["corpus"])
    except (OSError, ValueError, KeyError, TypeError):
        # The corpus may have moved since training; the name is only a column heading.
        return Path(corpus_dir).name


def _read_fold(fold_dir: Path) -> FoldResult | None:
    """The fold's results, or None while it is still training."""
    path = fold_dir / METRICS
    data = _read_json(path, FOLD_ADVICE)
    if not data.get("complete"):
        return None
    return FoldResult(
        name=fold_dir.name,
        best_epoch=data.get("best_epoch"),
        epochs=data.get("epochs") or [],
        dev=_require(data, "dev", path, FOLD_ADVICE),
        test=_require(data, "test", path, FOLD_ADVICE),
    )


def _natural_key(name: str) -> list[Any]:
    # fold2 before fold10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_run(path: str | Path) -> RunResult:
    """Read a run directory written by `sertune train`.

    Raises `RunSkipped` when `path` is not a run directory or no fold has finished yet, and
    `SertuneError` naming the file when a JSON file the run needs is missing or corrupt.
    """
    run_dir = Path(path)
    if not run_dir.is_dir() or not any((run_dir / name).exists() for name in (SUMMARY, CONFIG, FOLDS)):
        raise RunSkipped(f"{run_dir} is not a run directory (no {SUMMARY}, {CONFIG} or {FOLDS}/)")
    if (run_dir / SUMMARY).is_file():
        return _finished_run(run_dir)
    return _unfinished_run(run_dir)


def _finished_run(run_dir: Path) -> RunResult:
    path = run_dir / SUMMARY
    summary = _read_json(path, SUMMARY_ADVICE)
    folds = []
    for name in _require(summary, "folds", path, SUMMARY_ADVICE):
        fold = _read_fold(run_dir / FOLDS / name)
        if fold is None:
            raise SertuneError(
                f"{run_dir / FOLDS / name / METRICS} marks the fold unfinished although {path} lists it; "
                f"resume the training of that fold, or delete {path} to report the finished folds"
            )
        folds.append(fold)
    return RunResult(
        path=run_dir,
        corpus=str(_require(summary, "corpus", path, SUMMARY_ADVICE)),
        backbone=str(_require(summary, "backbone", path, SUMMARY_ADVICE)),
        method=str(_require(summary, "method", path, SUMMARY_ADVICE)),
        labels=list(_require(summary, "labels", path, SUMMARY_ADVICE)),
        folds=folds,
        test_summary=_require(summary, "test", path, SUMMARY_ADVICE),
        failed=dict(summary.get("failed_folds") or {}),
        parameters=summary.get("parameters"),
        checkpoint_bytes=summary.get("checkpoint_bytes"),
    )


def _unfinished_run(run_dir: Path) -> RunResult:
    fold_root = run_dir / FOLDS
    fold_dirs = [entry for entry in fold_root.iterdir() if entry.is_dir()] if fold_root.is_dir() else []
    folds, pending = [], []
    for fold_dir in sorted(fold_dirs, key=lambda entry: _natural_key(entry.name)):
        # A fold directory without metrics.json has not finished its first epoch yet.
        fold = _read_fold(fold_dir) if (fold_dir / METRICS).is_file() else None
        if fold is None:
            pending.append(fold_dir.name)
        else:
            folds.append(fold)
    if not folds:
        in_progress = f" ({len(pending)} in progress)" if pending else ""
        raise RunSkipped(f"{run_dir} has no finished fold yet{in_progress}: nothing to report")

    # Without summary.json the settings come from config.yaml and the first finished fold's checkpoint.
    config = _read_config(run_dir / CONFIG)
    first_fold = fold_root / folds[0].name
    has_metadata = (first_fold / CHECKPOINT_METADATA).is_file()
    metadata = _read_json(first_fold / CHECKPOINT_METADATA, FOLD_ADVICE) if has_metadata else {}
    weights = first_fold / CHECKPOINT_WEIGHTS
    return RunResult(
        path=run_dir,
        corpus=_corpus_name(config.get("corpus")),
        backbone=str(config.get("backbone") or metadata.get("backbone", {}).get("name", "unknown")),
        method=str((config.get("tuning") or metadata.get("tuning") or {}).get("method", "unknown")),
        # per_class_recall is keyed by the labels, in their order
        labels=list(folds[0].test["per_class_recall"]),
        folds=folds,
        test_summary=summarize_folds([fold.test for fold in folds]),
        complete=False,
        pending=pending,
        parameters=metadata.get("parameters"),
        checkpoint_bytes=weights.stat().st_size if weights.is_file() else None,
    )


def load_runs(paths: Iterable[str | Path]) -> tuple[list[RunResult], list[str]]:
    """Load several runs, as `sertune report runs/*` gives them.

    Returns the runs and one message per path skipped (not a run, or no finished fold); raises
    `SertuneError` when nothing is left to report.
    """
    runs: list[RunResult] = []
    skipped: list[str] = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except RunSkipped as reason:
            skipped.append(str(reason))
    if not runs:
        raise SertuneError("no run to report: " + "; ".join(skipped))
    return runs, skipped


def default_out_dir(runs: Sequence[RunResult]) -> Path:
    """Where a report goes without --out: RUN_DIR/report for one run, ./report for several."""
    return runs[0].path / "report" if len(runs) == 1 else DEFAULT_OUT


# ----------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Stat:
    """A mean ± std over folds; `mark` is a footnote sign shown after it in markdown."""

    mean: float | None
    std: float | None
    n: int
    mark: str = ""


Cell = str | int | float | Stat | None


def _markdown_cell(cell: Cell) -> str:
    if isinstance(cell, Stat):
        if cell.mean is None:
            return "–"
        spread = "" if cell.std is None else f" ± {cell.std:.2f}"
        return f"{cell.mean:.2f}{spread}{cell.mark}"
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
        """CSV with numbers at full precision; a column of `Stat`s becomes `<name> mean`, `std` and `n`."""
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
            writer.writerow(cells)
        return buffer.getvalue()


def _stat(run: RunResult, key: str) -> Stat | None:
    entry = run.test_summary.get(key)
    if entry is None:
        return None
    return Stat(entry.get("mean"), entry.get("std"), entry.get("n", 0), INCOMPLETE if run.partial else "")


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _file_stems(runs: Sequence[RunResult]) -> list[str]:
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


def _row_labels(runs: Sequence[RunResult]) -> list[str]:
    """Method (with the backbone when runs differ in it); the run name is added where a label repeats on a corpus."""
    labels = [f"{run.backbone} / {run.method}" if _several_backbones(runs) else run.method for run in runs]
    repeats = Counter(zip(labels, (run.corpus for run in runs), strict=True))
    return [
        f"{label} ({stem})" if repeats[label, run.corpus] > 1 else label
        for label, run, stem in zip(labels, runs, _file_stems(runs), strict=True)
    ]


def _method_header(runs: Sequence[RunResult]) -> str:
    return "backbone / method" if _several_backbones(runs) else "method"


def _status(run: RunResult) -> str:
    unfinished = "" if run.complete else f" unfinished run (no {SUMMARY})"
    return unfinished + (" with failed folds" if run.failed else "")


def _incomplete_notes(runs: Sequence[RunResult]) -> list[str]:
    notes = []
    for run in runs:
        if not run.partial:
            continue
        reported = ", ".join(fold.name for fold in run.folds)
        note = f"{INCOMPLETE} {run.path}:{_status(run)}; {len(run.folds)} finished fold(s) reported ({reported})"
        if run.pending:
            note += f", still training: {', '.join(run.pending)}"
        note += "".join(f"; {name} failed: {reason}" for name, reason in run.failed.items())
        notes.append(note)
    return notes


def uar_table(runs: Sequence[RunResult]) -> Table:
    """Test UAR mean ± std over folds: one row per method (or backbone and method), one column per corpus."""
    labels = _row_labels(runs)
    corpora = _unique(run.corpus for run in runs)
    cells = {(label, run.corpus): _stat(run, "uar") for label, run in zip(labels, runs, strict=True)}
    rows: list[list[Cell]] = [
        [label, *(cells.get((label, corpus)) for corpus in corpora)] for label in _unique(labels)
    ]
    return Table(
        "Test UAR (%) by corpus, mean ± std over folds", [_method_header(runs), *corpora], rows, _incomplete_notes(runs)
    )


def _groups(keys: Iterable[str]) -> list[str]:
    return sorted({key.removeprefix(GROUP_UAR) for key in keys if key.startswith(GROUP_UAR)})


def fairness_table(runs: Sequence[RunResult]) -> Table:
    """Statistical parity and equality of opportunity by gender (percentage points) and UAR per gender."""
    groups = _groups(key for run in runs for key in run.test_summary)
    rows: list[list[Cell]] = [
        [
            run.corpus,
            label,
            _stat(run, "fairness.statistical_parity"),
            _stat(run, "fairness.equality_of_opportunity"),
            *(_stat(run, GROUP_UAR + group) for group in groups),
        ]
        for label, run in zip(_row_labels(runs), runs, strict=True)
    ]
    header = ["corpus", _method_header(runs), "statistical parity", "equality of opportunity"]
    return Table(
        "Fairness by gender on test (gaps in percentage points, lower is fairer), mean ± std over folds",
        header + [f"UAR {group}" for group in groups],
        rows,
        _incomplete_notes(runs),
    )


def parameters_table(runs: Sequence[RunResult]) -> Table:
    """Trained parameters (tuning, head, total, share of the encoder) and checkpoint size per run."""
    rows: list[list[Cell]] = []
    for label, run in zip(_row_labels(runs), runs, strict=True):
        counts = run.parameters or {}
        share = 100.0 * counts["trained"] / counts["encoder"] if counts.get("encoder") else None
        size = run.checkpoint_bytes / 1e6 if run.checkpoint_bytes is not None else None
        rows.append(
            [run.corpus, label, counts.get("tuning"), counts.get("head"), counts.get("trained"), share, size]
        )
    header = ["corpus", _method_header(runs), "tuning", "head", "total", "% of encoder", "checkpoint (MB)"]
    return Table("Trained parameters and checkpoint size", header, rows)


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(metrics, dict):
            return None
        metrics = metrics.get(part)
    return metrics


def folds_table(run: RunResult) -> Table:
    """One row per finished fold (selected epoch, dev and test scores, fairness gaps), then mean and std rows."""
    groups = _groups(run.test_summary)
    keys = ["uar", "accuracy", "macro_f1", "fairness.statistical_parity", "fairness.equality_of_opportunity"]
    keys += [GROUP_UAR + group for group in groups]
    rows: list[list[Cell]] = [
        [fold.name, fold.best_epoch, fold.dev.get("uar"), *(_lookup(fold.test, key) for key in keys)]
        for fold in run.folds
    ]
    # The test rows come from summary.json when it exists; dev UAR is not summarised there.
    dev = summarize_folds([fold.dev for fold in run.folds])["uar"]
    for which in ("mean", "std"):
        rows.append([which, None, dev[which], *(run.test_summary.get(key, {}).get(which) for key in keys)])
    header = ["fold", "best epoch", "dev UAR", "test UAR", "accuracy", "macro-F1", "statistical parity"]
    header += ["equality of opportunity", *(f"UAR {group}" for group in groups)]
    title = f"{run.name}: {run.corpus}, {run.backbone}, {run.method} (test scores at the best dev UAR epoch)"
    return Table(title, header, rows, _incomplete_notes([run]))


# ------------------------------------------------------------------------------------------------ plots


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path


def plot_confusion(run: RunResult, path: str | Path) -> Path:
    """Test confusion matrix summed over folds: row-normalised percentages, counts annotated."""
    counts = np.sum([np.asarray(fold.test["confusion"]) for fold in run.folds], axis=0)
    totals = counts.sum(axis=1, keepdims=True)
    percent = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = len(run.labels)
    figure = Figure(figsize=(2.5 + 1.1 * size, 2 + 1.1 * size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, label="% of the true class")
    axes.set_xticks(range(size), run.labels, rotation=45, ha="right")
    axes.set_yticks(range(size), run.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), value in np.ndenumerate(percent):
        axes.text(
            column, row, f"{value:.1f}%\n({counts[row, column]})", ha="center", va="center", fontsize=8,
            color="white" if value > 50 else "black",
        )
    axes.set_title(f"{run.name}: test, {len(run.folds)} fold(s) summed", fontsize=10)
    return _save(figure, Path(path))


CURVES = (("train_loss", "train loss"), ("dev_loss", "dev loss"), ("dev_uar", "dev UAR (%)"))


def plot_learning_curves(run: RunResult, path: str | Path) -> Path:
    """Train loss, dev loss and dev UAR per epoch, one line per fold, the selected epoch starred."""
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    panels = figure.subplots(1, len(CURVES))
    for index, fold in enumerate(run.folds):
        color = f"C{index % 10}"
        for axes, (key, _) in zip(panels, CURVES, strict=True):
            points = {epoch["epoch"]: epoch[key] for epoch in fold.epochs if epoch.get(key) is not None}
            axes.plot(list(points), list(points.values()), color=color, label=fold.name)
            if fold.best_epoch in points:
                axes.plot(fold.best_epoch, points[fold.best_epoch], marker="*", markersize=12, color=color)
    for axes, (_, title) in zip(panels, CURVES, strict=True):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    panels[-1].plot([], [], "*", color="gray", markersize=12, label="selected epoch")
    panels[-1].legend(fontsize=8)
    figure.suptitle(f"{run.name}: {run.corpus}, {run.backbone}, {run.method}")
    return _save(figure, Path(path))


def plot_uar_vs_parameters(runs: Sequence[RunResult], path: str | Path) -> Path | None:
    """Test UAR (error bar: std over folds) against trained parameters on a log axis, one colour per corpus.

    Runs without a recorded parameter count or UAR are left out; returns None when none is left.
    """
    points = [
        (run, label)
        for run, label in zip(runs, _row_labels(runs), strict=True)
        if run.parameters and run.test_summary.get("uar", {}).get("mean") is not None
    ]
    if not points:
        return None
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    for index, corpus in enumerate(_unique(run.corpus for run, _ in points)):
        members = [(run, label) for run, label in points if run.corpus == corpus]
        x = [run.parameters["trained"] for run, _ in members]
        y = [run.test_summary["uar"]["mean"] for run, _ in members]
        spread = [run.test_summary["uar"].get("std") or 0.0 for run, _ in members]
        axes.errorbar(x, y, yerr=spread, fmt="o", capsize=3, color=f"C{index % 10}", label=corpus)
        for xi, yi, (run, label) in zip(x, y, members, strict=True):
            mark = INCOMPLETE if run.partial else ""
            axes.annotate(f"{label}{mark}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xscale("log")
    axes.margins(x=0.25)  # room for the labels of the outermost points
    axes.set_xlabel("trained parameters (tuning + head)")
    axes.set_ylabel("test UAR (%)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(title="corpus", fontsize=8)
    return _save(figure, Path(path))


# ----------------------------------------------------------------------------------------------- report


def write_report(runs: Sequence[RunResult], out_dir: str | Path) -> list[Path]:
    """Write report.md, the tables as CSV and the plots of `runs` into `out_dir`; returns the files written.

    Cross-run files: `uar.csv`, `fairness.csv`, `parameters.csv`, `uar_vs_params.png`. Per run, named
    after its directory: `<run>-folds.csv`, `<run>-confusion.png`, `<run>-curves.png`.
    """
    out = Path(out_dir)
    written: list[Path] = []

    def write_table(name: str, table: Table) -> str:
        path = out / f"{name}.csv"
        write_text_atomic(path, table.to_csv())
        written.append(path)
        return f"## {table.title}\n\n{table.to_markdown()}\nCSV: [{path.name}]({path.name})\n"

    sections = [
        "# sertune report\n\n" + "".join(f"- `{run.path}`{_status(run)}\n" for run in runs),
        write_table("uar", uar_table(runs)),
        write_table("fairness", fairness_table(runs)),
        write_table("parameters", parameters_table(runs)),
    ]
    plot = plot_uar_vs_parameters(runs, out / "uar_vs_params.png")
    if plot is not None:
        written.append(plot)
        sections.append(f"## Test UAR vs trained parameters\n\n![UAR vs trained parameters]({plot.name})\n")
    for run, stem in zip(runs, _file_stems(runs), strict=True):
        sections.append(write_table(f"{stem}-folds", folds_table(run)))
        for kind, plotter in (("confusion", plot_confusion), ("curves", plot_learning_curves)):
            image = plotter(run, out / f"{stem}-{kind}.png")
            written.append(image)
            sections.append(f"![{stem} {kind}]({image.name})\n")
    report = out / "report.md"
    write_text_atomic(report, "\n".join(sections))
    written.append(report)
    return written
