"""`sertune baseline CORPUS_DIR`: the MFCC-statistics logistic-regression baseline on the corpus's folds."""

from __future__ import annotations

import argparse
from pathlib import Path

from sertune.baseline import mfcc_baseline, write_baseline_run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("baseline", help="score the MFCC-statistics baseline", description=__doc__)
    parser.add_argument("corpus", type=Path, help="a prepared corpus directory")
    parser.add_argument("--folds", help="comma-separated fold names (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="parallel feature extraction jobs")
    parser.add_argument(
        "--out", type=Path, help="also write the result as a run directory, for `sertune report` beside trained runs"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folds = [name.strip() for name in args.folds.split(",")] if args.folds else None
    result = mfcc_baseline(args.corpus, folds=folds, workers=args.workers)
    print(f"MFCC-statistics baseline on {args.corpus} (test UAR per speaker-independent fold)")
    for name, fold in result["folds"].items():
        print(f"  {name:<12} {fold['test']['uar']:6.1f}%")
    uar = result["test"]["uar"]
    spread = f" ± {uar['std']:.1f}" if uar["std"] is not None else ""
    print(f"  {'mean ± std':<12} {uar['mean']:6.1f}{spread}%")
    if args.out:
        write_baseline_run(result, args.out)
        print(f"run directory written to {args.out}")
    return 0
