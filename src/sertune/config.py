"""Every setting of a training run as dataclasses, read from YAML and flags, and the `paper` preset.

Precedence, lowest first: the defaults here, a preset, the `--config` YAML file, command-line flags.
The resolved settings are saved in the run directory (`config.yaml`), which `--resume` reads back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sertune.errors import SertuneError
from sertune.head import HeadConfig
from sertune.tuning import TuningConfig

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """How a fold is trained and evaluated; the defaults are the study's recipe (DESIGN.md section 3)."""

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
    # Opt-in: on the synthetic corpus, batches of similar length kept the head at chance (loss ln 4)
    # where random batches learned, since length carries the emotion there (docs/training.md).
    bucketing: bool = False
    grad_accum: int = 1
    max_grad_norm: float | None = None
    precision: str = "no"
    seed: int = 0
    workers: int = 2
    # Cache the frozen encoder's layer outputs (only used when no method touches the encoder).
    feature_cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(float(beta) for beta in self.betas)  # YAML gives a list
        if len(self.betas) != 2:
            raise SertuneError(f"betas needs two numbers, got {list(self.betas)}")
        if self.precision not in PRECISIONS:
            raise SertuneError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise SertuneError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "max_seconds", "eval_max_seconds"):
            if not getattr(self, name) > 0:
                raise SertuneError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise SertuneError(f"workers must be 0 or more, got {self.workers}")


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

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML (tuples become lists)."""
        return {
            "corpus": self.corpus,
            "backbone": self.backbone,
            "folds": self.folds,
            "tuning": self.tuning.to_dict(),
            "head": self.head.to_dict(),
            "train": {**asdict(self.train), "betas": list(self.train.betas)},
        }


SECTIONS: dict[str, type] = {"tuning": TuningConfig, "head": HeadConfig, "train": TrainConfig}
TOP_LEVEL = ("corpus", "backbone", "folds")

# The study's recipe, every value pinned so that later changes of the defaults do not move it.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "tuning": {"lora_rank": 16, "lora_alpha": 1.0, "lora_dropout": 0.0, "lora_targets": "ffn",
                   "adapter_dim": 128, "adapter_scale": 0.1, "adapter_dropout": 0.1, "prompt_length": 5},
        "head": {"channels": 256, "dropout": 0.1, "include_embedding": False},
        "train": {"epochs": 30, "batch_size": 32, "lr": 5e-4, "weight_decay": 1e-4, "betas": [0.9, 0.98],
                  "plateau_patience": 5, "plateau_factor": 0.5, "min_lr": 5e-5, "class_weights": True,
                  "max_seconds": 6.0, "augment": True, "bucketing": False},
    },
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
    sections = {name: cls(**settings.get(name, {})) for name, cls in SECTIONS.items()}
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
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
