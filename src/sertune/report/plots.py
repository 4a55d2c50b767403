"""PNG plots of runs: confusion matrices, learning curves, UAR against trained parameters, and for dimensional
runs predicted against true scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter

from sertune.dimension_metrics import concordance
from sertune.errors import SertuneError
from sertune.fileio import atomic_path
from sertune.report.results import INCOMPLETE, RunResult, pooled_test_scores
from sertune.report.tables import Stat, Table, row_labels, unique


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as PNG, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path


def plot_confusion(run: RunResult, path: str | Path) -> Path:
    """Test confusion matrix summed over folds: row-normalised percentages, counts annotated.

    Raises `SertuneError` for a run without emotion classes (a dimensional run: see `plot_scatter`).
    """
    if not run.classifies:
        raise SertuneError(f"{run.path} is a {run.task} run: it has no classes, hence no confusion matrix")
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
    return save_figure(figure, Path(path))


def log_count_axis(axes: Axes, counts: Sequence[float]) -> None:
    """A log x axis for parameter counts, ticks read as 208k or 1.5M (not 2.074×10^5)."""
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(EngFormatter(places=1 if max(counts) < 10 * min(counts) else 0, sep=""))
    axes.xaxis.set_minor_formatter(NullFormatter())
    if max(counts) < 10 * min(counts):
        # Within one decade a log axis has no major tick: place a few, at round values.
        ticks = np.unique([float(f"{tick:.3g}") for tick in np.geomspace(min(counts), max(counts), 4)])
        axes.set_xticks(ticks)


CURVES = (("train_loss", "train loss"), ("dev_loss", "dev loss"), ("dev_uar", "dev UAR (%)"),
          ("dev_ccc", "dev CCC (average over dimensions)"))
LOSSES = ("train_loss", "dev_loss")


def plot_learning_curves(run: RunResult, path: str | Path) -> Path:
    """Train loss, dev loss, and dev UAR and/or dev CCC (those the epochs record) per epoch, one line per fold,
    the selected epoch starred.

    Raises `SertuneError` for a run without epochs (`run.has_epochs` is false: a baseline run).
    """
    if not run.has_epochs:
        raise SertuneError(f"{run.path} has no per-epoch history to plot (a baseline run is not trained in epochs)")
    # A categorical run's epochs record dev UAR, a dimensional run's dev CCC, a multitask run's both.
    curves = [(key, title) for key, title in CURVES
              if key in LOSSES or any(key in epoch for fold in run.folds for epoch in fold.epochs)]
    figure = Figure(figsize=(4.3 * len(curves), 3.8), layout="constrained")
    panels = figure.subplots(1, len(curves))
    for index, fold in enumerate(run.folds):
        color = f"C{index % 10}"
        for axes, (key, _) in zip(panels, curves, strict=True):
            points = {epoch["epoch"]: epoch[key] for epoch in fold.epochs if epoch.get(key) is not None}
            axes.plot(list(points), list(points.values()), color=color, label=fold.name)
            if fold.best_epoch in points:
                axes.plot(fold.best_epoch, points[fold.best_epoch], marker="*", markersize=12, color=color)
    for axes, (_, title) in zip(panels, curves, strict=True):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    panels[-1].plot([], [], "*", color="gray", markersize=12, label="selected epoch")
    panels[-1].legend(fontsize=8)
    figure.suptitle(f"{run.name}: {run.corpus}, {run.backbone}, {run.method}")
    return save_figure(figure, Path(path))


def _fold_ccc(run: RunResult, name: str) -> str:
    # With one fold the mean over folds is the pooled CCC: not worth repeating.
    entry = run.test_summary.get(f"dimensions.{name}.ccc") or {}
    if entry.get("mean") is None or entry.get("std") is None:
        return ""
    return f", fold mean {entry['mean']:.3f} ± {entry['std']:.3f}"


def plot_scatter(run: RunResult, path: str | Path) -> Path | None:
    """Predicted against true test scores per dimension (a panel each), the test folds pooled, on the corpus
    scale, with the identity line; each title gives the pooled CCC and, with several folds, the mean ± std of the
    folds' CCCs (what the tables report).

    Returns None when the run has no dimensions, or no fold has a predictions.csv.
    """
    scores = pooled_test_scores(run) if run.dimensions else {}
    if not scores:
        return None
    figure = Figure(figsize=(0.6 + 4.0 * len(scores), 5.0), layout="constrained")
    panels = figure.subplots(1, len(scores), squeeze=False)[0]
    for axes, (name, (true, predicted)) in zip(panels, scores.items(), strict=True):
        # The axes span the rating scale and whatever the model predicted beyond it.
        bounds = [*run.scales.get(name, ()), *true, *predicted] or [0.0, 1.0]
        low, high = min(bounds), max(bounds)
        pad = 0.03 * (high - low or 1.0)
        limits = (low - pad, high + pad)
        axes.plot(limits, limits, color="gray", linestyle="--", linewidth=1, label="identity")
        axes.scatter(true, predicted, s=12, alpha=0.6, color="C0", edgecolors="none")
        pooled = concordance(true, predicted) if len(true) else None
        ccc = "undefined" if pooled is None else f"{pooled:.3f}"
        axes.set_title(f"{name} (n = {len(true)})\nCCC {ccc} pooled{_fold_ccc(run, name)}", fontsize=9)
        axes.set(xlim=limits, ylim=limits, xlabel=f"true {name}", ylabel=f"predicted {name}", aspect="equal")
        axes.grid(alpha=0.3)
    panels[0].legend(fontsize=8, loc="upper left")
    figure.suptitle(f"{run.name}: {run.corpus}, {run.backbone}, {run.method}: test, {len(run.folds)} fold(s) pooled")
    return save_figure(figure, Path(path))


def plot_uar_vs_parameters(runs: Sequence[RunResult], path: str | Path) -> Path | None:
    """Test UAR (error bar: std over folds) against trained parameters on a log axis, one colour per corpus.

    Runs without a recorded parameter count or UAR are left out; returns None when none is left.
    """
    points = [
        (run, label)
        for run, label in zip(runs, row_labels(runs), strict=True)
        if run.parameters and run.test_summary.get("uar", {}).get("mean") is not None
    ]
    if not points:
        return None
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    for index, corpus in enumerate(unique(run.corpus for run, _ in points)):
        members = [(run, label) for run, label in points if run.corpus == corpus]
        x = [run.parameters["trained"] for run, _ in members]
        y = [run.test_summary["uar"]["mean"] for run, _ in members]
        spread = [run.test_summary["uar"].get("std") or 0.0 for run, _ in members]
        axes.errorbar(x, y, yerr=spread, fmt="o", capsize=3, color=f"C{index % 10}", label=corpus)
        for xi, yi, (run, label) in zip(x, y, members, strict=True):
            mark = INCOMPLETE if run.partial else ""
            axes.annotate(f"{label}{mark}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    log_count_axis(axes, [run.parameters["trained"] for run, _ in points])
    axes.margins(x=0.25)  # room for the labels of the outermost points
    axes.set_xlabel("trained parameters (tuning + head)")
    axes.set_ylabel("test UAR (%)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(title="corpus", fontsize=8)
    return save_figure(figure, Path(path))


def plot_cross_corpus(table: Table, path: str | Path) -> Path:
    """The cross-corpus table as a heat map: rows trained on, columns tested on, the mean UAR printed in each cell."""
    values = np.array([[cell.mean if isinstance(cell, Stat) and cell.mean is not None else np.nan
                        for cell in row[1:]] for row in table.rows], dtype=float)
    figure = Figure(figsize=(1.6 + 1.5 * values.shape[1], 1.2 + 0.55 * values.shape[0]), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        text = "–" if np.isnan(value) else f"{value:.1f}"
        axes.text(j, i, text, ha="center", va="center", color="white" if np.isnan(value) or value < 60 else "black")
    axes.set_xticks(range(values.shape[1]), [name.removeprefix("tested on ") for name in table.header[1:]])
    axes.set_yticks(range(values.shape[0]), [str(row[0]) for row in table.rows])
    axes.set_xlabel("tested on")
    axes.set_ylabel("trained on")
    figure.colorbar(image, ax=axes, label="test UAR (%)")
    return save_figure(figure, Path(path))
