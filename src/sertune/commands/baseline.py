"""`sertune baseline CORPUS_DIR`: reference scores on the corpus's folds, before any encoder is tuned.

Without --features: MFCC statistics (normalised per speaker) + logistic regression. With
--features BACKBONE: the linear probe, the encoder's frozen layer outputs mean-pooled over each clip
+ logistic regression (--layer: one layer, all layers concatenated, or a learned weighting of the
layers), read through the same feature cache as `sertune train --method frozen`. Either way the
regularisation is picked by dev UAR and the test UAR is printed per fold. With --task dimensional
(MFCC statistics only): a ridge regression per attribute dimension, its regularisation picked by that
dimension's dev CCC, and the test CCC per dimension printed per fold. --out writes a run directory that
`sertune report` shows beside trained runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sertune.commands._format import mean_std

CCC_WIDTH = 15  # room for '0.512 ± 0.034' under a dimension's name


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `baseline`."""
    parser.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="a prepared corpus directory")
    parser.add_argument("--folds", help="comma-separated fold names (default: all)")
    parser.add_argument(
        "--task", choices=("categorical", "dimensional"), default="categorical",
        help="classify the emotion (logistic regression) or regress the attribute dimensions (ridge regression, "
        "MFCC statistics only)",
    )
    parser.add_argument(
        "--dimensions", help="with --task dimensional: comma-separated dimensions (default: arousal,valence,dominance)"
    )
    parser.add_argument(
        "--features", metavar="BACKBONE",
        help="linear probe on this frozen encoder (short name, hub id or local directory) instead of MFCCs",
    )
    parser.add_argument(
        "--layer", default="weighted",
        help="linear probe input: a layer number (0 = embedding output, negative from the top), 'all' "
        "(concatenated) or 'weighted' (learned softmax weights over the layers)",
    )
    parser.add_argument(
        "--normalization", choices=("global", "speaker"), default="global",
        help="linear probe: standardise the pooled features over the training clips (global, SUPERB's probe) or "
        "first per speaker over each speaker's own clips (speaker)",
    )
    parser.add_argument("--cache-dir", help="feature cache folder (default: ~/.cache/sertune/features)")
    parser.add_argument("--workers", type=int, default=2, help="parallel MFCC extraction jobs")
    parser.add_argument(
        "--out", type=Path, help="also write the result as a run directory, for `sertune report` beside trained runs"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score the baseline, print the test UAR (or CCC per dimension) per fold, and write the run directory if asked."""
    from sertune.baseline import mfcc_baseline, write_baseline_run
    from sertune.errors import SertuneError

    folds = [name.strip() for name in args.folds.split(",")] if args.folds else None
    dimensional = args.task == "dimensional"
    if args.dimensions and not dimensional:
        raise SertuneError("--dimensions applies to --task dimensional only")
    if args.features and dimensional:
        raise SertuneError(
            "the linear probe (--features) is categorical only; drop --features for the MFCC-statistics ridge "
            "baseline of --task dimensional"
        )
    if args.features:
        from sertune.probe import linear_probe_baseline

        result = linear_probe_baseline(
            args.corpus, args.features, folds=folds, layer=args.layer, normalization=args.normalization,
            cache_root=args.cache_dir,
        )
        title = f"linear probe ({args.layer}, {args.normalization} normalisation) on frozen {args.features}"
    else:
        result = mfcc_baseline(
            args.corpus, folds=folds, workers=args.workers, task=args.task, dimensions=args.dimensions,
        )
        title = "MFCC-statistics " + ("ridge baseline" if dimensional else "baseline")
    if dimensional:
        print_dimensional(result, f"{title} on {args.corpus}")
    else:
        print(f"{title} on {args.corpus} (test UAR per speaker-independent fold)")
        for name, fold in result["folds"].items():
            print(f"  {name:<12} {fold['test']['uar']:6.1f}%")
        print(f"  {'mean ± std':<12} {mean_std(result['test']['uar'], width=6)}%")
    if args.out:
        write_baseline_run(result, args.out)
        print(f"run directory written to {args.out}")
    return 0


def print_dimensional(result: dict[str, Any], title: str) -> None:
    """A table of the test CCC per fold (rows) and dimension (columns), and its mean ± std over the folds."""
    names = [dimension["name"] for dimension in result["dimensions"]]
    print(f"{title} (test CCC per speaker-independent fold)")
    print(f"  {'':<12}" + "".join(f"{name:>{CCC_WIDTH}}" for name in names))
    for fold_name, fold in result["folds"].items():
        cccs = [fold["test"]["dimensions"][name]["ccc"] for name in names]
        print(f"  {fold_name:<12}" + "".join(
            f"{'undefined' if ccc is None else f'{ccc:.3f}':>{CCC_WIDTH}}" for ccc in cccs
        ))
    summaries = [mean_std(result["test"].get(f"dimensions.{name}.ccc", {}), digits=3) for name in names]
    print(f"  {'mean ± std':<12}" + "".join(f"{text:>{CCC_WIDTH}}" for text in summaries))
