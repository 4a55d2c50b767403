"""`sertune train`: speaker-independent cross-validation of one backbone + method on a prepared corpus.

Settings come from the defaults (the study's recipe, LoRA alpha 16), `--preset paper` (the study's
recipe exactly), a `--config` YAML file, and flags, later ones winning. The run directory gets the
resolved config.yaml, one folds/<fold>/ directory per fold and summary.json (docs/runs.md). Run it
under `accelerate launch -m sertune train ...` for several GPUs or nodes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from sertune.commands._format import summary_figures
from sertune.commands._help import show_default
from sertune.config import BALANCES, PRESETS, SECTIONS, TrainConfig, read_yaml, resolve_config
from sertune.dimensions import parse_dimensions
from sertune.errors import SertuneError
from sertune.options import add_tuning_arguments
from sertune.precision import PRECISIONS
from sertune.task_config import DIMENSION_LOSSES, TASKS, TaskConfig

CHOICES = {"precision": PRECISIONS, "balance": BALANCES}
TRAIN_HELP = {
    "epochs": "training epochs per fold",
    "batch_size": "clips per training batch (per process)",
    "lr": "Adam learning rate",
    "weight_decay": "Adam weight decay (L2)",
    "betas": "Adam betas",
    "plateau_patience": "epochs without dev-loss improvement before the learning rate drops (0: never)",
    "plateau_factor": "learning-rate factor on plateau",
    "min_lr": "lowest learning rate of the plateau schedule",
    "class_weights": "weigh the loss by inverse class frequency",
    "max_seconds": "training crop length in seconds",
    "eval_max_seconds": "evaluation uses each clip from its start up to this many seconds",
    "eval_batch_size": "clips per evaluation batch (per process)",
    "augment": "Gaussian noise (SNR 10-30 dB) and time masks on training clips",
    "unknown_speaker_rate": "with --normalization speaker: share of training clips normalised with the training "
    "clips' statistics instead of their speaker's (as a clip of an unknown speaker is at inference)",
    "balance": "draw training clips so that each source corpus, class or (corpus, class) pair is equally "
    "frequent (a combined corpus); the class-weighted loss still applies unless --no-class-weights",
    "bucketing": "batch clips of similar length together",
    "head_warmup_epochs": "methods that tune the encoder start from a head trained this many epochs on the frozen "
    "encoder's cached features (0: from a random head, the study's recipe)",
    "grad_accum": "batches per optimizer step",
    "max_grad_norm": "clip gradients to this norm (default: no clipping)",
    "precision": "mixed precision; auto: bf16 where the hardware computes it natively, else fp16 on a GPU, no on a CPU",
    "seed": "seed of every random choice",
    "workers": "data-loading worker processes",
    "feature_cache": "with --method frozen, cache the encoder's layer outputs on disk",
    "cache_dir": "feature cache folder (default: ~/.cache/sertune/features)",
    "allow_speaker_overlap": "train even if folds.json puts a speaker in two parts of a fold (a warning, not an error)",
}


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `train`; options not given stay absent, so that they do not override --config."""
    parser.argument_default = argparse.SUPPRESS
    parser.add_argument(
        "corpus", nargs="?", metavar="CORPUS_DIR", help="prepared corpus directory (optional with --resume)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument("--backbone", help="encoder: short name (`sertune backbones`), hub id or local directory")
    parser.add_argument("--folds", help="comma-separated fold names or 1-based numbers (default: all)")
    parser.add_argument("--config", type=Path, help="YAML file of settings (see docs/training.md)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a published recipe, e.g. paper")
    parser.add_argument("--resume", action="store_true", default=False, help="continue the run in --out")
    add_tuning_arguments(parser, with_defaults=False)
    _add_task_options(parser.add_argument_group("task (docs/training.md)"))
    group = parser.add_argument_group("training")
    for field in dataclasses.fields(TrainConfig):
        _add_train_option(group, field)
    parser.set_defaults(func=run)


def _dimensions(text: str) -> list[str]:
    try:
        return parse_dimensions(text)
    except SertuneError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_task_options(group: argparse._ArgumentGroup) -> None:
    defaults = TaskConfig()
    show_default(group.add_argument(
        "--task", dest="kind", choices=TASKS, help="predict emotion classes, attribute dimensions, or both"
    ), defaults.kind)
    show_default(group.add_argument(
        "--dimensions", type=_dimensions, help="comma-separated attribute dimensions to predict"
    ), ",".join(defaults.dimensions))
    show_default(group.add_argument(
        "--dim-loss", choices=DIMENSION_LOSSES, help="dimensional loss: 1 - CCC per dimension, or squared error"
    ), defaults.dim_loss)
    show_default(group.add_argument(
        "--dim-weight", type=float, help="multitask: weight of the dimensional loss beside the cross-entropy"
    ), defaults.dim_weight)


def _add_train_option(group: argparse._ArgumentGroup, field: dataclasses.Field) -> None:
    flag = "--" + field.name.replace("_", "-")
    help_text = TRAIN_HELP[field.name]
    if field.type in ("bool", bool):
        action = group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
    elif field.name == "betas":
        action = group.add_argument(flag, type=float, nargs=2, metavar=("B1", "B2"), help=help_text)
    elif field.name in CHOICES:
        action = group.add_argument(flag, choices=CHOICES[field.name], help=help_text)
    else:
        kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0], str)
        action = group.add_argument(flag, type=kind, help=help_text)
    show_default(action, field.default)


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, arranged in config sections."""
    given = vars(args)
    settings: dict[str, Any] = {key: given[key] for key in ("corpus", "backbone", "folds") if given.get(key)}
    if "corpus" in settings:
        settings["corpus"] = str(Path(settings["corpus"]).resolve())
    for section, cls in SECTIONS.items():
        values = {f.name: given[f.name] for f in dataclasses.fields(cls) if f.init and f.name in given}
        if values:
            settings[section] = values
    return settings


def run(args: argparse.Namespace) -> int:
    """Resolve the settings, train every fold, and print the test UAR over folds."""
    import logging

    from sertune.train import CONFIG, saved_config, train_run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.resume and (args.out / CONFIG).is_file():
        yaml_settings, origin = saved_config(args.out), str(args.out / CONFIG)
    elif "config" in args:
        yaml_settings, origin = read_yaml(args.config), str(args.config)
    else:
        yaml_settings, origin = {}, "config"
    config = resolve_config(
        preset=getattr(args, "preset", None), yaml_settings=yaml_settings, flags=flag_settings(args),
        yaml_origin=origin,
    )
    if not config.corpus:
        raise SertuneError("give the prepared corpus directory (or `corpus:` in --config)")
    summary = train_run(config, args.out, resume=args.resume)
    test = summary["test"]
    print(f"{summary['corpus']} {summary['backbone']} {summary['method']}: test {summary_figures(test)} over "
          f"{max(entry['n'] for entry in test.values())} fold(s); run saved in {args.out}")
    if "test_unknown_speaker" in summary:
        print(f"  with each test clip's speaker unknown (as `predict` and `serve` see a clip): "
              f"{summary_figures(summary['test_unknown_speaker'])}")
    from sertune.references import compare_with_references, find_references

    lines, _ = compare_with_references(summary, find_references(args.out, summary))
    for line in lines:
        print(line)
    return 0
