"""Column labels of sweep cells: the method label, plus the settings that tell apart cells sharing it.

A study table has one row per backbone and one column per method configuration, as in the PEFT-SER
paper. The column is the cell's `label` (the method and its own varied parameters: `lora-r16`,
`adapter-d64`, `frozen`). When the sweep also varies other axes (a learning rate, a seed, a LoRA
alpha), cells with the same label get the settings on which they differ appended, one
`name=value` each in the order of the sweep's axes: `lora-r16 lr=0.001`, `lora-r16 seed=2`.

Seeds are deliberately not averaged: the folds are the unit the ± std is over, and pooling seeds with
folds would mix two sources of variation into one std (and weigh a fold by its seed count); a
separate column per seed shows the seed-to-seed spread directly.

An axis that does not act on a cell is left out of its column: sweep.json records a cell's settings
only on the axes that apply to its method (a LoRA rank does not change an adapter or a frozen
encoder), so a grid over `tuning.method` × `tuning.lora_rank` gives one `adapter-d64` column, not one
per rank; for an axis that only another sweep reported alongside varies, the method decides. If
cells still collide (the same configuration twice, e.g. from two sweeps), the cell id is appended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError
from sertune.report.sweeps import SweepCell
from sertune.sweep.spec import format_setting
from sertune.tuning.config import parse_method, setting_acts_on

# Axes a study table lays out itself (rows, the table per corpus) or that the label already names.
LAID_OUT = ("corpus", "backbone", "tuning.method")
# Axes whose last part says too little on its own: `task=dimensional`, not `kind=dimensional`.
AXIS_NAMES = {"task.kind": "task"}


def method_parts(method: str) -> tuple[str, ...]:
    """The parts of a method name (`lora+prompt` -> lora, prompt); an unknown name is split on '+'."""
    try:
        return parse_method(method)
    except SertuneError:
        # A sweep written by a newer version may name a method this one does not know; still label it.
        return tuple(part.strip() for part in method.split("+"))


def acts_on(axis: str, cell: SweepCell) -> bool:
    """Whether the setting `axis` can change the cell's run (tuning.lora_rank does not change an adapter's).

    A sweep records a cell's settings only on the axes that apply to it, so an axis of the cell's own sweep
    acts on it exactly when the cell has a setting there; another sweep's axis is judged by the method.
    """
    if axis in cell.settings:
        return True
    if axis in cell.axes:
        return False
    section, _, name = axis.partition(".")
    return section != "tuning" or setting_acts_on(name, method_parts(cell.method))


def _by_tail(names: Sequence[str], tail: Callable[[str], str]) -> dict[str, str]:
    tails = Counter(tail(name) for name in set(names))
    return {name: tail(name) if tails[tail(name)] == 1 else name for name in names}


def short_names(axes: Sequence[str]) -> dict[str, str]:
    """Each axis by its last part (`train.lr` -> `lr`; `task.kind` -> `task`) unless two axes would share it."""
    return _by_tail(axes, lambda axis: AXIS_NAMES.get(axis, axis.rsplit(".", 1)[-1]))


def short_backbones(backbones: Sequence[str]) -> dict[str, str]:
    """Backbones as figures name them: a local directory or hub id by its last part, unless two would share it."""
    return _by_tail(backbones, lambda backbone: Path(backbone).name or backbone)


def _varying(cells: Sequence[SweepCell], axes: Iterable[str]) -> list[str]:
    """The axes that act on the cells and on which some of them differ."""
    return [
        axis for axis in axes
        if len({repr(cell.value(axis)) for cell in cells if acts_on(axis, cell)}) > 1
    ]


def setting_suffixes(
    cells: Sequence[SweepCell], axes: Sequence[str], group: Sequence[str] = ("label",), exclude: Iterable[str] = ()
) -> list[str]:
    """Per cell, ` name=value` for each of `axes` (but `exclude` and `LAID_OUT`) that varies among the cells
    sharing its `group` attributes and acts on its method; '' when none does."""
    considered = [axis for axis in axes if axis not in LAID_OUT and axis not in set(exclude)]
    names = short_names(considered)
    members: dict[tuple[Any, ...], list[SweepCell]] = {}
    for cell in cells:
        members.setdefault(tuple(getattr(cell, key) for key in group), []).append(cell)
    varying = {key: _varying(group_cells, considered) for key, group_cells in members.items()}
    suffixes = []
    for cell in cells:
        shown = [axis for axis in varying[tuple(getattr(cell, key) for key in group)] if acts_on(axis, cell)]
        suffixes.append("".join(f" {names[axis]}={format_setting(cell.value(axis))}" for axis in shown))
    return suffixes


def all_axes(axes_lists: Iterable[Sequence[str]]) -> list[str]:
    """The axes of several sweeps, each once, in their first order."""
    return list(dict.fromkeys(axis for axes in axes_lists for axis in axes))


def column_labels(cells: Sequence[SweepCell], axes: Sequence[str]) -> list[str]:
    """Each cell's column in a study table: its label, the settings telling it apart, the id if still needed."""
    labels = [cell.label + suffix for cell, suffix in zip(cells, setting_suffixes(cells, axes), strict=True)]
    places = Counter((cell.corpus, cell.backbone, label) for cell, label in zip(cells, labels, strict=True))
    return [
        f"{label} ({cell.id})" if places[cell.corpus, cell.backbone, label] > 1 else label
        for cell, label in zip(cells, labels, strict=True)
    ]
