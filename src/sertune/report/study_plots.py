"""The study's figures over a sweep's cells (PNG, one panel per corpus).

UAR against trained parameters (a colour per backbone, a marker per method), UAR against an ablation
axis (a line per backbone, method and other varied settings; band: ± std over folds) and the fairness
gaps per method (bars grouped by backbone). Error bars and bands are the sample std over folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sertune.report.columns import acts_on, setting_suffixes, short_backbones
from sertune.report.plots import log_count_axis, save_figure
from sertune.report.results import INCOMPLETE
from sertune.report.study_tables import ordered
from sertune.report.sweeps import SweepCell
from sertune.report.tables import unique
from sertune.sweep.spec import format_setting

MARKERS = "os^DvPX*h<>p"
NOT_ABLATIONS = ("corpus", "backbone", "folds", "train.seed")
FAIRNESS_GAPS = (("fairness.statistical_parity", "statistical parity"),
                 ("fairness.equality_of_opportunity", "equality of opportunity"))
LINE_STYLES = ("-", "--", ":", "-.")
# Up to this many points a panel labels each with its column; more would cover the points.
MAX_LABELLED_POINTS = 12


def palette(count: int) -> list[Any]:
    """`count` distinguishable colours: tab10, tab20 beyond 10, evenly spaced turbo beyond 20."""
    if count <= 10:
        return [f"C{index}" for index in range(count)]
    if count <= 20:
        return list(colormaps["tab20"].colors[:count])
    return [colormaps["turbo"](value) for value in np.linspace(0, 1, count)]


def _mean_std(cell: SweepCell, key: str = "uar") -> tuple[float, float] | None:
    """The cell's test mean and std (0 with one fold) of `key`, None without a mean."""
    entry = cell.run.test_summary.get(key, {}) if cell.run else {}
    if entry.get("mean") is None:
        return None
    return entry["mean"], entry.get("std") or 0.0


def _panels(corpora: Sequence[str], rows: int = 1, width: float = 6.0, height: float = 4.5) -> tuple[Figure, Any]:
    figure = Figure(figsize=(0.8 + width * len(corpora), height * rows), layout="constrained")
    return figure, figure.subplots(rows, len(corpora), squeeze=False)


def plot_study_uar_vs_parameters(cells: Sequence[SweepCell], columns: Sequence[str], path: str | Path) -> Path | None:
    """Test UAR (error bar: std over folds) against trained parameters (tuning + head, log axis) per corpus.

    One colour per backbone, one marker per method, each point labelled with its column. Returns None when no
    cell has both a parameter count and a UAR.
    """
    points = [
        (cell, column) for cell, column in ordered(cells, columns)
        if cell.run.parameters and cell.run.parameters.get("trained") and _mean_std(cell)
    ]
    if not points:
        return None
    corpora = unique(cell.corpus for cell, _ in points)
    backbones, methods = unique(cell.backbone for cell, _ in points), unique(cell.method for cell, _ in points)
    colours = palette(len(backbones))
    figure, panels = _panels(corpora)
    for axes, corpus in zip(panels[0], corpora, strict=True):
        for cell, column in points:
            if cell.corpus != corpus:
                continue
            mean, std = _mean_std(cell)
            x = cell.run.parameters["trained"]
            axes.errorbar([x], [mean], yerr=[std], capsize=3, color=colours[backbones.index(cell.backbone)],
                          marker=MARKERS[methods.index(cell.method) % len(MARKERS)], linestyle="none")
            if sum(other.corpus == corpus for other, _ in points) <= MAX_LABELLED_POINTS:
                mark = INCOMPLETE if cell.run.partial else ""
                axes.annotate(f"{column}{mark}", (x, mean), textcoords="offset points", xytext=(5, 5), fontsize=7)
        log_count_axis(axes, [cell.run.parameters["trained"] for cell, _ in points if cell.corpus == corpus])
        axes.margins(x=0.25)  # room for the labels of the outermost points
        axes.set(title=corpus, xlabel="trained parameters (tuning + head)", ylabel="test UAR (%)")
        axes.grid(alpha=0.3, which="both")
    names = short_backbones(backbones)
    handles = [Line2D([], [], color=colours[i], marker="o", linestyle="none", label=names[b])
               for i, b in enumerate(backbones)]
    handles += [Line2D([], [], color="gray", marker=MARKERS[i % len(MARKERS)], linestyle="none", label=m)
                for i, m in enumerate(methods)]
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    return save_figure(figure, Path(path))


def _numeric(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def ablation_axes(cells: Sequence[SweepCell], axes: Sequence[str]) -> list[str]:
    """The sweep axes worth an ablation figure: numeric, with two or more values among cells they act on.

    A seed is numeric but not an ablation: UAR against the seed has no trend to read.
    """
    found = []
    for axis in axes:
        values = [cell.value(axis) for cell in cells if cell.run and acts_on(axis, cell)]
        if axis not in NOT_ABLATIONS and values and all(map(_numeric, values)) and len(set(values)) > 1:
            found.append(axis)
    return found


def _set_axis_scale(axes: Axes, values: Sequence[float]) -> None:
    # Ranks, bottleneck sizes and learning rates are chosen on a geometric grid: spread them evenly.
    if min(values) > 0 and max(values) / min(values) >= 8:
        axes.set_xscale("log", base=2 if all(float(v).is_integer() for v in values) else 10)
    axes.set_xticks(sorted(set(values)), [format_setting(v) for v in sorted(set(values))])
    axes.minorticks_off()


def plot_ablation(cells: Sequence[SweepCell], axis: str, axes_names: Sequence[str], path: str | Path) -> Path | None:
    """Test UAR against the sweep axis `axis` (e.g. tuning.lora_rank) per corpus: a line per backbone, method and
    other varied settings (`axes_names`: every axis of the sweep), mean with a ± std band over folds.

    Only cells that `axis` acts on count. Returns None when no line has two points.
    """
    members = [cell for cell in cells if cell.run and acts_on(axis, cell) and _numeric(cell.value(axis))
               and _mean_std(cell)]
    suffixes = setting_suffixes(members, axes_names, group=("backbone", "method"), exclude=(axis,))
    backbones = short_backbones([cell.backbone for cell in members])
    # A line per (backbone, rest): the colour tells the backbone, the marker and dashes the method and settings.
    lines: dict[tuple[str, str, str], list[SweepCell]] = {}
    for cell, suffix in zip(members, suffixes, strict=True):
        lines.setdefault((cell.corpus, backbones[cell.backbone], f"{cell.method}{suffix}"), []).append(cell)
    if not any(len({cell.value(axis) for cell in line}) > 1 for line in lines.values()):
        return None
    corpora = unique(corpus for corpus, _, _ in lines)
    shown_backbones, rests = unique(b for _, b, _ in lines), unique(rest for _, _, rest in lines)
    colours = palette(len(shown_backbones))

    def style(backbone: str, rest: str) -> dict[str, Any]:
        index = rests.index(rest)
        return {"color": colours[shown_backbones.index(backbone)], "marker": MARKERS[index % len(MARKERS)],
                "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}

    figure, panels = _panels(corpora)
    for axes, corpus in zip(panels[0], corpora, strict=True):
        values = []
        for (line_corpus, backbone, rest), line in lines.items():
            if line_corpus != corpus:
                continue
            line = sorted(line, key=lambda cell: cell.value(axis))
            x = np.array([cell.value(axis) for cell in line], dtype=float)
            mean, std = np.array([_mean_std(cell) for cell in line]).T
            axes.plot(x, mean, **style(backbone, rest))
            axes.fill_between(x, mean - std, mean + std, color=style(backbone, rest)["color"], alpha=0.15)
            values += list(x)
        _set_axis_scale(axes, values)
        axes.set(title=corpus, xlabel=axis, ylabel="test UAR (%)")
        axes.grid(alpha=0.3)
    handles = [Line2D([], [], label=f"{backbone} / {rest}", **style(backbone, rest))
               for backbone, rest in unique((b, r) for _, b, r in lines)]
    figure.legend(handles=handles, loc="outside right upper", fontsize=7)
    return save_figure(figure, Path(path))


def plot_study_fairness(cells: Sequence[SweepCell], columns: Sequence[str], path: str | Path) -> Path | None:
    """Statistical parity and equality of opportunity by gender (points, lower is fairer) per method: bars grouped
    by backbone, error bars std over folds; a row of panels per gap, a column per corpus.

    Returns None when no cell has a gap (e.g. every test fold holds one gender).
    """
    reported = ordered(cells, columns)
    if not any(_mean_std(cell, key) for cell, _ in reported for key, _ in FAIRNESS_GAPS):
        return None
    corpora = unique(cell.corpus for cell, _ in reported)
    heads = unique(column for _, column in reported)
    names = short_backbones([cell.backbone for cell, _ in reported])
    figure, panels = _panels(corpora, rows=len(FAIRNESS_GAPS), height=3.6)
    colours = palette(len(heads))
    width = 0.8 / len(heads)
    for row, (key, title) in enumerate(FAIRNESS_GAPS):
        for axes, corpus in zip(panels[row], corpora, strict=True):
            members = [(cell, column) for cell, column in reported if cell.corpus == corpus]
            backbones = unique(cell.backbone for cell, _ in members)
            for cell, column in members:
                value = _mean_std(cell, key)
                if value is None:
                    continue
                x = backbones.index(cell.backbone) + (heads.index(column) - (len(heads) - 1) / 2) * width
                axes.bar(x, value[0], width, yerr=value[1], capsize=2, color=colours[heads.index(column)])
            axes.set_xticks(range(len(backbones)), [names[backbone] for backbone in backbones], fontsize=8)
            axes.set(title=f"{corpus}: {title}", ylabel="gap (points)")
            axes.grid(alpha=0.3, axis="y")
    handles = [Line2D([], [], color=colours[i], marker="s", linestyle="none", label=h) for i, h in enumerate(heads)]
    figure.legend(handles=handles, loc="outside right upper", fontsize=8, title="method")
    return save_figure(figure, Path(path))
