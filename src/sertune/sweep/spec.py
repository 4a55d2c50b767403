"""A sweep spec (YAML: `base`, `grid`, `exclude`) expanded into validated cells.

Grid keys are `corpus`, `backbone`, `folds`, any setting of `sertune train` as `section.field`
(`train.lr`, `tuning.lora_rank`), its bare field name where that is unambiguous (`lr`, `lora_rank`,
`method`), or a short alias (`rank`, `alpha`). A method-specific setting only applies to the cells
whose method uses it: `method: [frozen, lora]` with `rank: [8, 16]` gives three cells, not four.
Every cell is resolved exactly as `sertune train --config` would resolve it, so a value that train
refuses is refused here, before anything runs, naming the cell and the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sertune.config import SECTIONS, TOP_LEVEL, RunConfig, field_names, merge_settings, resolve_config
from sertune.errors import SertuneError
from sertune.task_config import TaskConfig
from sertune.tuning.config import parse_method, setting_acts_on

SPEC_KEYS = ("base", "grid", "exclude", "preset", "slurm")
ALIASES = {"method": "tuning.method", "rank": "tuning.lora_rank", "alpha": "tuning.lora_alpha", "task": "task.kind"}
# The parameter each method part shows in a cell's label: lora-r16, adapter-d128, prompt-p5.
LABEL_PARAMETERS = {"lora": ("r", "lora_rank"), "adapter": ("d", "adapter_dim"),
                    "parallel-adapter": ("d", "adapter_dim"), "prompt": ("p", "prompt_length")}


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: its stable `id` (a hash of the resolved config), readable `name`, the
    method `label`, its values on the grid's axes (`settings`), and the resolved config."""

    id: str
    name: str
    label: str
    settings: dict[str, Any]
    config: RunConfig

    def to_dict(self, run: str) -> dict[str, Any]:
        """The cell's entry in sweep.json; `run` is its run directory relative to the sweep."""
        return {"id": self.id, "name": self.name, "label": self.label, "run": run, "settings": self.settings,
                "config": self.config.to_dict()}


def canonical_key(key: str) -> str:
    """`key` as `corpus`, `backbone`, `folds` or `section.field`; an unknown or ambiguous key is an error."""
    key = ALIASES.get(key, key)
    if key in TOP_LEVEL:
        return key
    section, dot, name = key.partition(".")
    if dot:
        if section not in SECTIONS or name not in field_names(SECTIONS[section]):
            raise SertuneError(f"unknown setting {key!r}; use a field of {', '.join(SECTIONS)} (docs/sweeps.md)")
        return key
    owners = [section for section, cls in SECTIONS.items() if key in field_names(cls)]
    if not owners:
        known = ", ".join([*TOP_LEVEL, *ALIASES])
        raise SertuneError(f"unknown setting {key!r}; use {known}, or any train setting as section.field "
                           "(train.lr, tuning.lora_rank, head.dropout)")
    if len(owners) > 1:
        raise SertuneError(f"setting {key!r} is ambiguous; write it as " + " or ".join(f"{o}.{key}" for o in owners))
    return f"{owners[0]}.{key}"


def spec_hash(config: RunConfig) -> str:
    """The stable id of a resolved config: the first 12 hex digits of the SHA-256 of its canonical JSON."""
    data = config.to_dict()
    if data["task"] == TaskConfig().to_dict():
        del data["task"]  # categorical cells keep the ids they had before runs had a task
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_spec(spec: dict[str, Any], origin: str) -> None:
    """Refuse unknown top-level keys and a grid or exclude of the wrong shape, naming the key."""
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise SertuneError(f"{origin}: unknown key(s) {unknown}; a sweep spec has {', '.join(SPEC_KEYS)}")
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SertuneError(f"{origin}: 'grid' must be a non-empty mapping of setting -> list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SertuneError(f"{origin}: grid.{key} must be a non-empty list of values, got {values!r}")
    if not isinstance(spec.get("base", {}), dict):
        raise SertuneError(f"{origin}: 'base' must be a mapping of train settings (the keys of --config)")
    exclude = spec.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(entry, dict) and entry for entry in exclude):
        raise SertuneError(f"{origin}: 'exclude' must be a list of mappings (setting: value or list of values)")


def _nested(assignment: dict[str, Any]) -> dict[str, Any]:
    """Canonical `section.field` keys as the nested settings of a config file."""
    settings: dict[str, Any] = {}
    for key, value in assignment.items():
        section, dot, name = key.partition(".")
        if dot:
            settings.setdefault(section, {})[name] = value
        else:
            settings[key] = value
    return settings


def _applies(key: str, method_parts: tuple[str, ...]) -> bool:
    section, _, name = key.partition(".")
    return section != "tuning" or setting_acts_on(name, method_parts)


def _matches(assignment: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether a grid assignment has every value of an exclude entry (a list there lists alternatives)."""
    for key, wanted in entry.items():
        value = assignment[key]
        names = [value, Path(str(value)).name] if key in ("corpus", "backbone") else [value]
        if not any(name == wanted or (isinstance(wanted, list) and name in wanted) for name in names):
            return False
    return True


def label_of(config: RunConfig) -> str:
    """The method with its own size parameter: `frozen`, `lora-r16`, `prompt-p5+lora-r16`."""
    tuning = config.tuning
    pieces = []
    for part in tuning.parts:
        letter, name = LABEL_PARAMETERS.get(part, ("", ""))
        pieces.append(f"{part}-{letter}{getattr(tuning, name)}" if name else part)
    return "+".join(pieces)


def format_setting(value: Any) -> str:
    """A setting as cell names and report columns show it: 0.001, 1e-05, 16, true, none, a,b for a list."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(format_setting, value))
    return "none" if value is None else str(value)


def expand(spec: dict[str, Any], origin: str, *, check: Any = None) -> list[Cell]:
    """The cells of `spec` in grid order, validated; `check(cell)` may refuse a cell (SertuneError).

    Raises SertuneError naming the cell and key for a value train would refuse, and for an exclude
    entry that matches no cell.
    """
    check_spec(spec, origin)
    grid = {}
    for key, values in spec["grid"].items():
        try:
            grid[canonical_key(str(key))] = values
        except SertuneError as error:
            raise SertuneError(f"{origin}: grid.{key}: {error}") from None
    excludes = []
    for number, entry in enumerate(spec.get("exclude", []), 1):
        try:
            canonical = {canonical_key(str(key)): value for key, value in entry.items()}
        except SertuneError as error:
            raise SertuneError(f"{origin}: exclude entry {number}: {error}") from None
        outside = sorted(set(canonical) - set(grid))
        if outside:
            raise SertuneError(f"{origin}: exclude entry {number} names {outside}, which the grid does not vary")
        excludes.append(canonical)
    base = merge_settings({}, spec.get("base") or {}, f"{origin}: base")
    # The method of a cell whose grid does not name one: the base's, or its preset's, or the default.
    base_method = resolve_config(preset=spec.get("preset"), yaml_settings=base,
                                 yaml_origin=f"{origin}: base").tuning.method
    used = [False] * len(excludes)
    cells: dict[str, Cell] = {}
    for values in itertools.product(*grid.values()):
        assignment = dict(zip(grid, values, strict=True))
        hits = [number for number, entry in enumerate(excludes) if _matches(assignment, entry)]
        for number in hits:
            used[number] = True
        if hits:
            continue
        cell = _resolve(base, assignment, origin, preset=spec.get("preset"), base_method=base_method)
        if check is not None:
            try:
                check(cell)
            except SertuneError as error:
                raise SertuneError(f"{origin}: cell {cell.name}: {error}") from None
        cells.setdefault(cell.id, cell)
    unused = [number for number, hit in enumerate(used, 1) if not hit]
    if unused:
        which = f"entry {unused[0]} matches" if len(unused) == 1 else f"entries {', '.join(map(str, unused))} match"
        raise SertuneError(f"{origin}: exclude {which} no cell of the grid; correct or remove them")
    if not cells:
        raise SertuneError(f"{origin}: the grid has no cell left after 'exclude'")
    return list(cells.values())


def _resolve(base: dict[str, Any], assignment: dict[str, Any], origin: str, *, preset: str | None,
             base_method: str) -> Cell:
    described = ", ".join(f"{key}={format_setting(value)}" for key, value in assignment.items())
    try:
        parts = parse_method(str(assignment.get("tuning.method", base_method)))
        kept = {key: value for key, value in assignment.items() if _applies(key, parts)}
        settings = merge_settings(base, _nested(kept), f"{origin}: grid")
        if "corpus" in settings:
            settings["corpus"] = str(Path(settings["corpus"]).expanduser().resolve())
        if "backbone" in settings and Path(str(settings["backbone"])).expanduser().is_dir():
            settings["backbone"] = str(Path(str(settings["backbone"])).expanduser().resolve())
        config = resolve_config(preset=preset, yaml_settings=settings, yaml_origin=f"{origin}: grid")
    except SertuneError as error:
        raise SertuneError(f"{origin}: cell ({described}): {error}") from None
    if not config.corpus:
        raise SertuneError(f"{origin}: cell ({described}) has no corpus; put `corpus` in the grid or base")
    label = label_of(config)
    in_label = {"corpus", "backbone", "tuning.method"} | {
        f"tuning.{LABEL_PARAMETERS[part][1]}" for part in config.tuning.parts if part in LABEL_PARAMETERS
    }
    extras = ",".join(f"{key.rpartition('.')[2]}={format_setting(value)}" for key, value in kept.items()
                      if key not in in_label)
    name = "/".join([Path(config.corpus).name, Path(config.backbone).name, label, *([extras] if extras else [])])
    return Cell(id=spec_hash(config), name=name, label=label, settings=kept, config=config)
