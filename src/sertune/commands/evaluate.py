"""`sertune evaluate RUN_DIR CORPUS_DIR`: score a trained run on another prepared corpus (cross-corpus).

Every finished fold of the run (or --fold) predicts the whole corpus (--part all, the default) or
the train, dev or test part of its fold of the same name; metrics are written in the run format
(per-class recall, confusion, fairness, per-corpus rows for a combined corpus) to
RUN_DIR/evaluations/<corpus>-<part>/ or --out. Classes are matched by name; clips of a class the run
does not know are left out and counted. `sertune report` draws the cross-corpus matrix from runs
and their evaluation directories.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `evaluate`."""
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="run directory of `sertune train`")
    parser.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="prepared corpus to score it on")
    parser.add_argument("--part", choices=("all", "test", "dev", "train"), default="all",
                        help="all clips, or a part of the corpus's fold named like each run fold")
    parser.add_argument("--fold", help="evaluate this fold of the run only (default: every finished fold)")
    parser.add_argument("--out", type=Path, help="evaluation directory (default: RUN_DIR/evaluations/<corpus>-<part>)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the UAR (and/or CCC) over folds and what was left out."""
    import logging

    from sertune.commands._format import summary_figures
    from sertune.cross_corpus import evaluate_run
    from sertune.train import headline

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = evaluate_run(args.run, args.corpus, args.out, part=args.part, fold=args.fold, device=args.device)
    where = summary["evaluation"]
    test = summary["test"]
    print(f"{where['trained_on']} -> {summary['corpus']} ({where['part']}): test {summary_figures(test)} over "
          f"{max(entry['n'] for entry in test.values())} fold(s)")
    for name, fold in summary["folds"].items():
        left_out = where["left_out"].get(name)
        note = f"; left out (class unknown to the run): {left_out}" if left_out else ""
        clips = fold["test"].get("n") or max(d["n"] for d in fold["test"]["dimensions"].values())
        print(f"  {name}: {headline(fold['test'])} on {clips} clips{note}")
    return 0
