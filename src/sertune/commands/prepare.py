"""`sertune prepare CORPUS SOURCE --out DIR`: turn a corpus as distributed into a checked manifest.

Reads a speech-emotion corpus in its distributed layout and writes manifest.csv, folds.json and
prepare-report.json to --out. Bad items are reported and skipped.
"""

from __future__ import annotations

import argparse
import os

from sertune.commands._help import LazyChoices


def _corpus_names() -> list[str]:
    from sertune.corpora import CORPORA

    return sorted(CORPORA)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `prepare`."""
    # A metavar keeps argparse from listing the choices (and importing the corpora) while it builds the parser.
    parser.add_argument(
        "corpus", metavar="CORPUS", choices=LazyChoices(_corpus_names),
        help="which corpus layout SOURCE has: %(choices)s",
    )
    parser.add_argument(
        "source", metavar="SOURCE", help="the corpus root directory (folder: a CSV file or a label-folder tree)"
    )
    parser.add_argument("--out", required=True, help="directory to write the prepared corpus to")
    parser.add_argument(
        "--labels",
        default="default",
        help="'default' (neutral, angry, sad, happy), 'all' (every class) or a YAML map file",
    )
    parser.add_argument(
        "--audio-cache", action="store_true", help="convert the audio to 16 kHz mono FLAC under --out/audio"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers")
    parser.add_argument("--seed", type=int, default=0, help="seed of the speaker-fold assignment")
    parser.add_argument(
        "--encoding", metavar="NAME", help="folder only: the CSV's text encoding, e.g. latin-1 (default: UTF-8)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the corpus and print the report summary."""
    from sertune.corpora import CORPORA, prepare

    corpus, report = prepare(
        CORPORA[args.corpus],
        args.source,
        args.out,
        labels=args.labels,
        audio_cache=args.audio_cache,
        workers=max(1, args.workers),
        seed=args.seed,
        encoding=args.encoding,
    )
    print("\n".join(report.summary()))
    print(f"wrote {corpus.root}/manifest.csv, folds.json, prepare-report.json")
    return 0
