"""Every setting of a training run as dataclasses, read from YAML and flags, and the `paper` preset.

Precedence, lowest first: the defaults here, a preset, the `--config` YAML file, command-line flags.
The resolved settings are saved in the run directory (`config.yaml`), which `--resume` reads back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError
from sertune.head_config import HeadConfig
from sertune.precision import check_precision
from sertune.task_config import TaskConfig
from sertune.tuning import TuningConfig


@dataclass(frozen=True)
class Limit:
    """The values a numeric setting accepts: whole or real numbers, finite, within optional bounds."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False
    optional: bool = False  # None is accepted (e.g. no gradient clipping)
    count: int | None = None  # a list of exactly this many numbers (Adam's betas)

    def describe(self) -> str:
        """What the setting must be, e.g. "a number in (0, 1)"."""
        what = "a whole number" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        return what

    def check(self, value: Any) -> Any:
        """`value` as the setting's type, or ValueError if it is not acceptable."""
        if value is None and self.optional:
            return None
        if self.count is not None:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != self.count:
                raise ValueError
            return [self._number(item) for item in value]
        return self._number(value)

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError
        # PyYAML reads 1e-3 (no dot) as a string, so numbers written that way are converted here.
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError
        if self.kind is int:
            if number != int(number):
                raise ValueError
            number = int(number)
        else:
            number = float(number)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            raise ValueError
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            raise ValueError
        return number


_AT_LEAST_ONE = Limit(int, 1)
_POSITIVE = Limit(float, 0, low_open=True)
_NON_NEGATIVE = Limit(float, 0)
_DROPOUT = Limit(float, 0, 1, high_open=True)

# Every numeric setting of each config section; YAML, flags and the Python API all pass through these.
LIMITS: dict[str, dict[str, Limit]] = {
    "train": {
        "epochs": _AT_LEAST_ONE, "batch_size": _AT_LEAST_ONE, "eval_batch_size": _AT_LEAST_ONE,
        "grad_accum": _AT_LEAST_ONE, "plateau_patience": Limit(int), "seed": Limit(int, 0), "workers": Limit(int, 0),
        "head_warmup_epochs": Limit(int, 0),
        "lr": _POSITIVE, "weight_decay": _NON_NEGATIVE, "betas": Limit(float, 0, 1, high_open=True, count=2),
        "plateau_factor": Limit(float, 0, 1, low_open=True, high_open=True), "min_lr": _NON_NEGATIVE,
        "max_seconds": _POSITIVE, "eval_max_seconds": _POSITIVE,
        "unknown_speaker_rate": Limit(float, 0, 1), "max_grad_norm": Limit(float, 0, low_open=True,
                                                                                         optional=True),
    },
    "tuning": {
        "lora_rank": _AT_LEAST_ONE, "lora_alpha": _POSITIVE, "lora_dropout": _DROPOUT, "adapter_dim": _AT_LEAST_ONE,
        "adapter_scale": _POSITIVE, "adapter_dropout": _DROPOUT, "prompt_length": _AT_LEAST_ONE,
    },
    "head": {"channels": _AT_LEAST_ONE, "dropout": _DROPOUT},
    "task": {"dim_weight": _POSITIVE},
}


def checked(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """The numeric settings among `values` of `section`, converted to their type; SertuneError if one is bad."""
    result = {}
    for name, limit in LIMITS[section].items():
        if name not in values:
            continue
        try:
            result[name] = limit.check(values[name])
        except (TypeError, ValueError):
            what = f"{limit.count} numbers, each {limit.describe()}" if limit.count else limit.describe()
            raise SertuneError(f"{section}.{name} must be {what}, got {values[name]!r}") from None
    return result


BALANCES = ("none", "corpus", "class", "corpus+class")


@dataclass
class TrainConfig:
    """How a fold is trained and evaluated; the defaults are the study's recipe (docs/architecture.md)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    # ReduceLROnPlateau on the dev loss; patience 0 or less turns it off.
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    min_lr: float = 5e-5
    class_weights: bool = True
    # Training clips are randomly cropped to this; evaluation uses the whole clip up to eval_max_seconds.
    max_seconds: float = 6.0
    eval_max_seconds: float = 30.0
    eval_batch_size: int = 32
    augment: bool = True
    # With head.normalization speaker: the share of training clips given the training clips' statistics
    # instead of their speaker's, so that the model also works on a clip whose speaker is unknown.
    unknown_speaker_rate: float = 0.5
    # Sample training clips so that every source corpus, class or (corpus, class) pair is drawn equally
    # often (`corpus`, `class`, `corpus+class`; a combined corpus's MSP-Podcast would otherwise drown the rest).
    balance: str = "none"
    # Opt-in: on the synthetic corpus, batches of similar length kept the head at chance (loss ln 4)
    # where random batches learned, since length carries the emotion there (docs/training.md).
    bucketing: bool = False
    # Methods that tune the encoder start from a head trained this many epochs on the frozen encoder's
    # cached features (linear probing, then fine-tuning); 0: from a random head, as the study does.
    head_warmup_epochs: int = 20
    grad_accum: int = 1
    max_grad_norm: float | None = None
    # "auto" is resolved when the run starts (sertune.precision) and the choice saved in config.yaml.
    precision: str = "auto"
    seed: int = 0
    workers: int = 2
    # Cache the frozen encoder's layer outputs (only used when no method touches the encoder).
    feature_cache: bool = True
    cache_dir: str | None = None
    # A speaker in two parts of a fold stops the run; with this set it is only a warning.
    allow_speaker_overlap: bool = False

    def __post_init__(self) -> None:
        for name, value in checked("train", vars(self)).items():
            setattr(self, name, value)
        self.betas = tuple(self.betas)  # YAML gives a list
        check_precision(self.precision, "train.precision")
        if self.balance not in BALANCES:
            raise SertuneError(f"train.balance must be one of {', '.join(BALANCES)}, got {self.balance!r}")


@dataclass
class RunConfig:
    """A whole run: which corpus, encoder and folds, and how to tune, head and train."""

    corpus: str = ""
    backbone: str = "wavlm-base-plus"
    # Fold names or 1-based positions in the corpus protocol; None = all folds.
    folds: list[str] | None = None
    tuning: TuningConfig = field(default_factory=TuningConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        # TuningConfig, HeadConfig and TaskConfig check only what their own code needs; ranges are checked here.
        checked("tuning", vars(self.tuning))
        checked("head", vars(self.head))
        checked("task", vars(self.task))

    @property
    def cache_store(self) -> str | None:
        """What the run keeps in the feature cache: the frozen encoder's layer outputs (`frames`: a frozen
        run, or the head warm-up of one that tunes the encoder), only their moments for the head's
        normalisation statistics (`moments`), or nothing (None)."""
        if (self.tuning.method == "frozen" or self.warms_up_head) and self.train.feature_cache:
            return "frames"
        return "moments" if self.head.normalization != "none" else None

    @property
    def warms_up_head(self) -> bool:
        """Whether each fold first trains the head on frozen features (a method that tunes the encoder)."""
        return self.train.head_warmup_epochs > 0 and self.tuning.method != "frozen"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML (tuples become lists)."""
        return {
            "corpus": self.corpus,
            "backbone": self.backbone,
            "folds": self.folds,
            "tuning": self.tuning.to_dict(),
            "head": self.head.to_dict(),
            "train": {**asdict(self.train), "betas": list(self.train.betas)},
            "task": self.task.to_dict(),
        }


SECTIONS: dict[str, type] = {"tuning": TuningConfig, "head": HeadConfig, "train": TrainConfig, "task": TaskConfig}
TOP_LEVEL = ("corpus", "backbone", "folds")

# The study's recipe, every value pinned so that later changes of the defaults do not move it.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "tuning": {"lora_rank": 16, "lora_alpha": 1.0, "lora_dropout": 0.0, "lora_targets": "ffn",
                   "adapter_dim": 128, "adapter_scale": 0.1, "adapter_dropout": 0.1, "prompt_length": 5},
        "head": {"channels": 256, "dropout": 0.1, "include_embedding": False, "normalization": "none"},
        "train": {"epochs": 30, "batch_size": 32, "lr": 5e-4, "weight_decay": 1e-4, "betas": [0.9, 0.98],
                  "plateau_patience": 5, "plateau_factor": 0.5, "min_lr": 5e-5, "class_weights": True,
                  "max_seconds": 6.0, "augment": True, "bucketing": False, "head_warmup_epochs": 0},
    },
}
# The recipe the study's package states for its released models (trained on combined corpora): the
# paper's, with LoRA, learning rate 2.5e-4, seed 8, audio up to 10 s and the conv output in the layer sum.
PRESETS["peft-ser-package"] = {
    "tuning": {**PRESETS["paper"]["tuning"], "method": "lora"},
    "head": {**PRESETS["paper"]["head"], "include_embedding": True},
    "train": {**PRESETS["paper"]["train"], "lr": 2.5e-4, "seed": 8, "max_seconds": 10.0, "eval_max_seconds": 10.0},
}


def field_names(section: type) -> list[str]:
    """The settable fields of a config dataclass."""
    return [f.name for f in dataclasses.fields(section) if f.init]


def merge_settings(base: dict[str, Any], update: dict[str, Any], origin: str) -> dict[str, Any]:
    """`base` updated by `update` section by section; unknown keys are an error naming `origin`."""
    merged = {key: (dict(value) if isinstance(value, dict) else value) for key, value in base.items()}
    for key, value in update.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise SertuneError(f"{origin}: '{key}' must be a mapping of settings")
            unknown = sorted(set(value) - set(field_names(SECTIONS[key])))
            if unknown:
                known = ", ".join(field_names(SECTIONS[key]))
                raise SertuneError(f"{origin}: unknown {key} setting(s) {unknown}; known: {known}")
            merged.setdefault(key, {}).update(value)
        elif key in TOP_LEVEL:
            merged[key] = value
        else:
            raise SertuneError(f"{origin}: unknown setting '{key}'; known: {', '.join((*TOP_LEVEL, *SECTIONS))}")
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML settings file as a dict; a missing or malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise SertuneError(f"config file {path} not found")
    import yaml  # imported here: `sertune train --help` builds its parser from this module

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SertuneError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise SertuneError(f"{path}: expected a mapping of settings at the top level")
    return data


def resolve_config(
    *, preset: str | None = None, yaml_settings: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None, yaml_origin: str = "config file",
) -> RunConfig:
    """Build the RunConfig from a preset, YAML settings and flag settings (each optional, later wins)."""
    yaml_settings = dict(yaml_settings or {})
    preset = yaml_settings.pop("preset", None) if preset is None else preset
    yaml_settings.pop("preset", None)
    settings: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise SertuneError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        settings = merge_settings(settings, PRESETS[preset], f"preset {preset}")
    settings = merge_settings(settings, yaml_settings, yaml_origin)
    settings = merge_settings(settings, flags or {}, "command line")
    return config_from_dict(settings)


def config_from_dict(settings: dict[str, Any]) -> RunConfig:
    """A RunConfig from plain data such as a saved config.yaml."""
    sections = {}
    for name, cls in SECTIONS.items():
        values = settings.get(name, {})
        sections[name] = cls(**{**values, **checked(name, values)})  # checked first: the classes assume numbers
    folds = settings.get("folds")
    if folds is not None:
        folds = [str(name) for name in (folds.split(",") if isinstance(folds, str) else folds)]
    return RunConfig(
        corpus=str(settings.get("corpus", "")),
        backbone=str(settings.get("backbone", RunConfig.backbone)),
        folds=folds,
        **sections,
    )


def dump_yaml(config: RunConfig) -> str:
    """The config as YAML text."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
