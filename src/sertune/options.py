"""Command-line options shared by commands: the inference --precision (predict, serve), and the tuning
and head options of the commands that build a classifier (params, train).

Nothing here imports torch: building a command's parser stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from sertune.commands._help import show_default
from sertune.head_config import NORMALIZATIONS, HeadConfig
from sertune.precision import PRECISIONS
from sertune.tuning.config import ALIASES, BASELINES, PEFT_PARTS, TuningConfig


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """Add --precision for inference (predict, serve): the autocast of the classifier's forward pass."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="autocast of the forward pass; auto: bf16 where the device computes it natively, else float32",
    )


def number_in(low: float, high: float, *, kind: type = float, low_open: bool = True) -> Any:
    """An argparse type: a finite number of `kind` in (low, high] (or [low, high] with `low_open=False`);
    inf, nan and out-of-range values are refused with the range in the message."""
    opening = "(" if low_open else "["

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        inside = value is not None and value == value and (low < value if low_open else low <= value) and value <= high
        if not inside:
            what = "a whole number" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"{text!r}: need {what} in {opening}{low:g}, {high:g}]")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _layer_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_tuning_arguments(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    """Add --method and the settings of every tuning method and of the head.

    Without defaults, options the user did not give are absent from the parsed arguments, so that
    they do not override a config file; help shows TuningConfig's defaults either way.
    """
    defaults = TuningConfig()
    group = parser.add_argument_group("tuning method")

    def option(flag: str, name: str, **kwargs: Any) -> None:
        value = getattr(defaults, name)
        default = value if with_defaults else argparse.SUPPRESS
        metavar = flag[2:].upper().replace("-", "_")  # from the flag, as argparse does; dest is the config field
        action = group.add_argument(flag, dest=name, metavar=metavar, default=default, **kwargs)
        show_default(action, value)

    known = ", ".join((*BASELINES, *PEFT_PARTS, *ALIASES))
    option("--method", "method", help=f"{known}, or parts joined by '+' (lora+prompt)")
    option("--rank", "lora_rank", type=int, help="LoRA rank")
    option("--lora-alpha", "lora_alpha", type=float, help="LoRA alpha (scaling alpha/rank)")
    option("--lora-dropout", "lora_dropout", type=float, help="dropout on the LoRA branch's input")
    option("--lora-targets", "lora_targets", help="ffn, attn, all, or comma-separated module names")
    option("--adapter-dim", "adapter_dim", type=int, help="bottleneck size of the adapters")
    option("--adapter-scale", "adapter_scale", type=float, help="factor on the adapter's output")
    option("--adapter-dropout", "adapter_dropout", type=float, help="dropout inside the adapter")
    option("--prompt-length", "prompt_length", type=int, help="prompt vectors per layer")
    option("--layers", "layers", type=_layer_list, help="layers to tune, e.g. 6,7,8 or -1,-2 (default: all)")
    flag_default = False if with_defaults else argparse.SUPPRESS
    group.add_argument(
        "--train-feature-encoder", action="store_true", default=flag_default,
        help="with --method full, also train the conv front end",
    )
    group.add_argument(
        "--include-embedding", action="store_true", default=flag_default,
        help="the head also weighs the embedding / conv output",
    )
    group.add_argument(
        "--normalization", choices=NORMALIZATIONS, default=HeadConfig.normalization if with_defaults
        else argparse.SUPPRESS,
        help="standardise each layer output with each speaker's statistics (speaker, default), the training "
        "clips' (global) or not at all (none, the study's head)",
    )


def tuning_config_from_args(args: argparse.Namespace) -> TuningConfig:
    """The TuningConfig described by parsed arguments (every setting has an option of the same name)."""
    return TuningConfig(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(TuningConfig) if field.init}
    )


def head_config_from_args(args: argparse.Namespace) -> HeadConfig:
    """The HeadConfig described by parsed arguments."""
    return HeadConfig(include_embedding=args.include_embedding, normalization=args.normalization)
