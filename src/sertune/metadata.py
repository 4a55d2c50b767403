"""`sertune.json`, the settings a trained run records, and its one validated reader.

Every reader of the file goes through `read_metadata`, so a file that parses but is malformed (a
section missing, a value of the wrong type or out of range, an unknown setting) is a one-line
`SertuneError` naming the file and the field, never a KeyError or TypeError from deep inside
loading. The `tuning` and `head` sections are checked against the fields of `TuningConfig` and
`HeadConfig` themselves, and those classes' own checks run too.

Sections that are settings (`tuning`, `head`, `audio`) refuse unknown keys: this version would
otherwise ignore, or fail on, a setting it does not know. Records (the top level, `backbone`, its
`source`, `parameters`) tolerate extra keys. `audio` may be absent (older runs): readers then use
the study's defaults (`sertune.inference.AudioSettings`). The module imports without torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sertune.dimensions import DIMENSIONS
from sertune.errors import SertuneError
from sertune.fileio import read_json
from sertune.head_config import HeadConfig, upgrade_saved_head
from sertune.tuning.config import TuningConfig

METADATA = "sertune.json"


@dataclass(frozen=True)
class Rule:
    """A range a value must lie in, and how to say so ("a positive integer")."""

    test: Callable[[Any], bool]
    meaning: str


@dataclass(frozen=True)
class Field:
    """One key of a section. `kind` is a type annotation (`int`, `list[int] | None`, ...) or a nested `Section`."""

    name: str
    kind: Any
    required: bool = True
    rule: Rule | None = None


@dataclass(frozen=True)
class Section:
    """The fields of one JSON object; a `closed` section refuses keys it does not list."""

    fields: tuple[Field, ...]
    closed: bool = False


class _Invalid(Exception):
    """A problem inside the file; `validate_metadata` puts the file's name in front."""


POSITIVE_INTEGER = Rule(lambda value: value > 0, "a positive integer")
POSITIVE_NUMBER = Rule(lambda value: value > 0, "a positive number")
NON_EMPTY = Rule(bool, "a non-empty string")
COUNT = Rule(lambda value: value >= 0, "a non-negative integer")
PROBABILITY = Rule(lambda value: 0 <= value <= 1, "a number from 0 to 1")
LABELS = Rule(
    lambda labels: len(labels) != 1 and all(labels) and len(set(labels)) == len(labels),
    "a list of distinct, non-empty strings: at least two, or none for a dimensional run",
)
DIMENSION_NAMES = Rule(lambda name: name in DIMENSIONS, f"one of {', '.join(DIMENSIONS)}")
DIMENSION = Section(
    (Field("name", str, rule=DIMENSION_NAMES), Field("low", float), Field("high", float)), closed=True
)
# Ranges the config dataclasses leave unchecked but torch would refuse with a traceback.
CONFIG_RULES: dict[type, dict[str, Rule]] = {
    TuningConfig: {"lora_dropout": PROBABILITY, "adapter_dropout": PROBABILITY},
    HeadConfig: {"channels": POSITIVE_INTEGER, "dropout": PROBABILITY},
}


def config_section(cls: type) -> Section:
    """The closed section holding a config dataclass: a field per constructor argument, typed by its
    annotation; arguments with a default may be left out (older runs lack newer settings)."""
    hints = typing.get_type_hints(cls)
    rules = CONFIG_RULES.get(cls, {})
    return Section(
        tuple(
            Field(
                spec.name,
                hints[spec.name],
                required=spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING,
                rule=rules.get(spec.name),
            )
            for spec in dataclasses.fields(cls)
            if spec.init
        ),
        closed=True,
    )


TUNING = config_section(TuningConfig)
HEAD = config_section(HeadConfig)
SOURCE = Section((Field("kind", str),))
# What `checkpoint.backbone_from_source` reads for each kind of source; other kinds load by name.
SOURCE_KINDS = {
    "random": Section((Field("config", Section((Field("model_type", str),))), Field("seed", int | None))),
    "local": Section((Field("path", str),)),
    "ct2": Section((Field("path", str),)),
}
BY_NAME = Section((Field("revision", str | None, required=False),))
BACKBONE = Section(
    (
        Field("name", str, rule=NON_EMPTY),
        # Compared with the loaded encoder's family by `checkpoint.check_backbone`.
        Field("family", str, rule=NON_EMPTY),
        Field("hidden_size", int, rule=POSITIVE_INTEGER),
        Field("num_layers", int, rule=POSITIVE_INTEGER),
        Field("source", SOURCE),
    )
)
PARAMETERS = Section(
    (
        Field("tuning", int, rule=COUNT),
        Field("head", int, rule=COUNT),
        Field("trained", int, rule=COUNT),
        Field("encoder", int, rule=POSITIVE_INTEGER),
    )
)
AUDIO = Section(
    (
        Field("sample_rate", int, required=False, rule=POSITIVE_INTEGER),
        Field("max_seconds", float, required=False, rule=POSITIVE_NUMBER),
        Field("eval_max_seconds", float, required=False, rule=POSITIVE_NUMBER),
    ),
    closed=True,
)
SCHEMA = Section(
    (
        Field("sertune_version", str, required=False),
        Field("backbone", BACKBONE),
        Field("tuning", TUNING),
        Field("head", HEAD),
        Field("labels", list[str], rule=LABELS),
        Field("parameters", PARAMETERS),
        Field("audio", AUDIO, required=False),
        # The attribute dimensions a dimensional or multitask run predicts, after the classes.
        Field("dimensions", list[dict], required=False),
    )
)


def base_model_id(source: Mapping[str, Any], name: str) -> str:
    """The encoder a run was trained on, as others name it: its hub id, else its local path, else its name."""
    return str(source.get("id") or source.get("path") or name)


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The run's `sertune.json`, checked against the schema: a one-line error if it is missing,
    unreadable or malformed."""
    path = Path(directory) / METADATA
    if not path.is_file():
        raise SertuneError(f"{directory} is not a trained sertune run: {METADATA} is missing")
    return validate_metadata(read_json(path, "retrain or restore the file"), path)


def validate_metadata(data: Any, origin: str | Path) -> dict[str, Any]:
    """`data` (a parsed `sertune.json`) if it fits the schema, else a `SertuneError` naming `origin` and the field."""
    try:
        if not isinstance(data, dict):
            raise _Invalid(f"the file must hold a JSON object, got {_shown(data)}")
        _check_section(data, SCHEMA, "")
        _check_dimensions(data)
        backbone = data["backbone"]
        _check_section(backbone["source"], SOURCE_KINDS.get(backbone["source"]["kind"], BY_NAME), "backbone.source")
        tuning = _build(TuningConfig, data["tuning"], "tuning")
        try:
            upgrade_saved_head(data["head"])
        except ValueError as error:
            raise _Invalid(str(error)) from None
        _build(HeadConfig, data["head"], "head")
        try:
            tuning.layer_indices(backbone["num_layers"])
        except SertuneError as error:
            raise _Invalid(f"tuning.layers: {error} (backbone.num_layers)") from None
    except _Invalid as error:
        raise SertuneError(f"{origin}: {error}") from None
    return data


def _check_dimensions(data: dict[str, Any]) -> None:
    dimensions = data.get("dimensions", [])
    for index, dimension in enumerate(dimensions):
        _check_section(dimension, DIMENSION, f"dimensions[{index}]")
        if not dimension["low"] < dimension["high"]:
            raise _Invalid(f"dimensions[{index}]: low must be below high, got {dimension['low']}, {dimension['high']}")
    names = [dimension["name"] for dimension in dimensions]
    if len(set(names)) != len(names):
        raise _Invalid(f"dimensions names {names} repeat")
    if not data["labels"] and not dimensions:
        raise _Invalid("labels is empty and there are no dimensions: the run predicts nothing")


def _check_section(values: Any, section: Section, where: str) -> None:
    if not isinstance(values, dict):
        raise _Invalid(f"{where} must be an object, got {_shown(values)}")
    missing = [_key(where, field.name) for field in section.fields if field.required and field.name not in values]
    if missing:
        raise _Invalid(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    known = [field.name for field in section.fields]
    unknown = [key for key in values if key not in known]
    if section.closed and unknown:
        raise _Invalid(f"{_key(where, unknown[0])} is not a known setting (known: {', '.join(known)})")
    for field in section.fields:
        if field.name not in values:
            continue
        value, at = values[field.name], _key(where, field.name)
        if isinstance(field.kind, Section):
            _check_section(value, field.kind, at)
        elif not _matches(value, field.kind) or (field.rule is not None and not field.rule.test(value)):
            meaning = field.rule.meaning if field.rule is not None else _describe(field.kind)
            raise _Invalid(f"{at} must be {meaning}, got {_shown(value)}")


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """`cls(**values)`, its own checks' errors naming the key that caused them."""
    try:
        return cls(**values)
    except SertuneError as error:
        raise _Invalid(f"{_culprit(cls, values, where)}: {error}") from None


def _culprit(cls: type, values: Mapping[str, Any], where: str) -> str:
    # The config classes' messages say what is wrong but not which key of the file holds it: the
    # culprit is the first key that fails on its own.
    for name, value in values.items():
        try:
            cls(**{name: value})
        except SertuneError:
            return _key(where, name)
    return where


def _matches(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(kind))
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_matches(element, item) for element in value)
    if isinstance(value, bool) and kind is not bool:
        return False  # JSON true is no number
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


_NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
    dict: ("an object", "objects"),
    type(None): ("null", "nulls"),
}


def _describe(kind: Any, plural: bool = False) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option, plural) for option in typing.get_args(kind))
    if origin is list:
        return ("lists of " if plural else "a list of ") + _describe(typing.get_args(kind)[0], plural=True)
    return _NOUNS[kind][plural]


def _shown(value: Any, limit: int = 60) -> str:
    """The value as JSON, or what it is when that would be too long for a one-line message."""
    text = json.dumps(value)
    if len(text) <= limit:
        return text
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return text[: limit - 3] + "..."


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
