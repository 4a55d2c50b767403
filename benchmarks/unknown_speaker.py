"""Test UAR of a trained fold twice: with each test speaker's statistics, and as `predict` sees a clip.

A model whose head normalises per speaker (`--normalization speaker`) is evaluated during training
with every test speaker normalised by that speaker's own clips. `sertune predict` and `serve` get
one clip at a time from a speaker they do not know, so they normalise it with the training clips'
statistics stored in the checkpoint. This script predicts the fold's test clips one by one through
`sertune.load` (exactly what `predict` does) and prints both UARs side by side, which is how
docs/training.md measured what `train.unknown_speaker_rate` buys.

    python benchmarks/unknown_speaker.py runs/lora fold1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from sertune.corpora import load_corpus
from sertune.inference import load
from sertune.metrics import score_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory trained by `sertune train`")
    parser.add_argument("fold", help="the fold whose checkpoint and test part are used, e.g. fold1")
    args = parser.parse_args()

    settings = yaml.safe_load((args.run / "config.yaml").read_text())
    corpus = load_corpus(settings["corpus"])
    fold = next(f for f in corpus.folds if f.name == args.fold)
    trained = json.loads((args.run / "folds" / args.fold / "metrics.json").read_text())
    predictor = load(args.run, fold=args.fold, device="cpu", precision="no")
    clips = [corpus.by_id[uid] for uid in fold.test]
    predicted = predictor.predict_many([clip.path for clip in clips])
    index = {label: i for i, label in enumerate(corpus.labels)}
    truth = np.array([index[clip.label] for clip in clips])
    guesses = np.array([index[p.label] for p in predicted])
    alone = score_predictions(truth, guesses, [clip.gender for clip in clips], corpus.labels)["uar"]
    print(f"{args.run} {args.fold}: normalisation {settings['head'].get('normalization', 'none')}, "
          f"unknown_speaker_rate {settings['train'].get('unknown_speaker_rate', 0.0)}")
    print(f"  test UAR with each speaker's statistics (training's evaluation): {trained['test']['uar']:5.1f}")
    print(f"  test UAR one clip at a time, speaker unknown (predict, serve):    {alone:5.1f}")


if __name__ == "__main__":
    main()
