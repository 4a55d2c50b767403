"""`sertune params`: trained parameters of a method (or of a trained run), split into tuning and head.

With --backbone the classifier is built on the meta device (no weights, no download) and the
checkpoint size estimated; with a run, fold or checkpoint directory (a run: its fold with the best
dev UAR, or --fold) the counts and size are those of the saved checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sertune.errors import SertuneError
from sertune.options import add_tuning_arguments, head_config_from_args, tuning_config_from_args

FLOAT32_BYTES = 4


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `params`."""
    parser.add_argument(
        "run", nargs="?", type=Path, metavar="RUN_DIR",
        help="a trained run, fold or checkpoint directory (instead of --backbone)",
    )
    parser.add_argument("--fold", help="the fold of a run directory to count (default: best dev UAR)")
    parser.add_argument("--backbone", help="short backbone name (see `sertune backbones`)")
    parser.add_argument("--classes", type=int, default=4, help="number of emotion classes")
    add_tuning_arguments(parser)
    parser.set_defaults(func=run)


def count_for_method(args: argparse.Namespace) -> tuple[dict[str, int], str]:
    """Counts for a backbone architecture and method, built on the meta device (no weights, no download)."""
    import torch

    from sertune.backbones import build_backbone, get_spec
    from sertune.model import EmotionClassifier

    spec = get_spec(args.backbone)
    labels = [f"class{i}" for i in range(args.classes)]
    with torch.device("meta"):
        backbone = build_backbone(spec)
        classifier = EmotionClassifier(backbone, labels, tuning_config_from_args(args), head_config_from_args(args))
    counts = classifier.parameter_counts()
    return counts, f"{spec.name}, {args.method}"


def count_for_run(path: Path, fold: str | None) -> tuple[dict[str, int], str, float]:
    """Counts, title and checkpoint size (MB) of the checkpoint a run, fold or checkpoint directory stands for."""
    from sertune.checkpoint import WEIGHTS, read_metadata
    from sertune.peft_format import HEAD_WEIGHTS, PEFT_WEIGHTS, is_peft_directory
    from sertune.runs import resolve_run

    run = resolve_run(path, fold)
    metadata = read_metadata(run.checkpoint)
    where = f"fold {run.fold}, " if run.fold else ""
    title = f"{path} ({where}{metadata['backbone']['name']}, {metadata['tuning']['method']})"
    names = (PEFT_WEIGHTS, HEAD_WEIGHTS) if is_peft_directory(run.checkpoint) else (WEIGHTS,)
    size = 0
    for name in names:
        weights = run.checkpoint / name
        if not weights.is_file():
            raise SertuneError(f"{weights} is missing: the run did not finish saving, or the file was removed")
        size += weights.stat().st_size
    return metadata["parameters"], title, size / 1e6


def run(args: argparse.Namespace) -> int:
    """Print the parameter counts and the checkpoint size."""
    if args.run is not None:
        counts, title, size_mb = count_for_run(args.run, args.fold)
        note = ""
    elif args.backbone:
        counts, title = count_for_method(args)
        size_mb = counts["trained"] * FLOAT32_BYTES / 1e6
        note = " (estimated, float32)"
    else:
        raise SertuneError("give a trained run directory or --backbone NAME")
    share = 100.0 * counts["trained"] / counts["encoder"]
    print(title)
    print(f"  tuning parameters   {counts['tuning']:>14,}")
    print(f"  head parameters     {counts['head']:>14,}")
    print(f"  trained in total    {counts['trained']:>14,}  ({share:.2f}% of the encoder's {counts['encoder']:,})")
    print(f"  checkpoint size     {size_mb:>14.2f} MB{note}")
    return 0
