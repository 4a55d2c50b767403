"""Command-line options shared by the commands that build a classifier (params, train)."""

from __future__ import annotations

import argparse
import dataclasses

from sertune.head import HeadConfig
from sertune.tuning import TuningConfig
from sertune.tuning.config import ALIASES, BASELINES, PEFT_PARTS


def _layer_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_tuning_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    """Add --method and the settings of every tuning method and of the head.

    Without defaults, options the user did not give are absent from the parsed arguments, so that
    they do not override a config file.
    """
    defaults = TuningConfig() if with_defaults else _Absent()
    group = parser.add_argument_group("tuning method")
    known = ", ".join((*BASELINES, *PEFT_PARTS, *ALIASES))
    group.add_argument("--method", default=defaults.method, help=f"{known}, or parts joined by '+' (lora+prompt)")
    group.add_argument("--rank", dest="lora_rank", type=int, default=defaults.lora_rank, help="LoRA rank")
    group.add_argument("--lora-alpha", type=float, default=defaults.lora_alpha, help="LoRA alpha (scaling alpha/rank)")
    group.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    group.add_argument(
        "--lora-targets", default=defaults.lora_targets, help="ffn, attn, all, or comma-separated module names"
    )
    group.add_argument("--adapter-dim", type=int, default=defaults.adapter_dim, help="bottleneck size")
    group.add_argument("--adapter-scale", type=float, default=defaults.adapter_scale)
    group.add_argument("--adapter-dropout", type=float, default=defaults.adapter_dropout)
    group.add_argument("--prompt-length", type=int, default=defaults.prompt_length, help="prompt vectors per layer")
    group.add_argument(
        "--layers", type=_layer_list, default=defaults.layers, help="layers to tune, e.g. 6,7,8 or -1,-2"
    )
    flag_default = False if with_defaults else argparse.SUPPRESS
    group.add_argument(
        "--train-feature-encoder", action="store_true", default=flag_default,
        help="with --method full, also train the conv front end",
    )
    group.add_argument(
        "--include-embedding", action="store_true", default=flag_default,
        help="the head also weighs the embedding / conv output",
    )


class _Absent:
    """Stands in for TuningConfig's defaults: every setting reads as 'not given'."""

    def __getattr__(self, name: str) -> str:
        return argparse.SUPPRESS


def tuning_config_from_args(args: argparse.Namespace) -> TuningConfig:
    """The TuningConfig described by parsed arguments (every setting has an option of the same name)."""
    return TuningConfig(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(TuningConfig) if field.init}
    )


def head_config_from_args(args: argparse.Namespace) -> HeadConfig:
    """The HeadConfig described by parsed arguments."""
    return HeadConfig(include_embedding=args.include_embedding)
