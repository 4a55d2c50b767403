"""`sertune prepare CORPUS SOURCE --out DIR`: turn a corpus as distributed into a checked manifest.

Reads a speech-emotion corpus in its distributed layout and writes manifest.csv, folds.json and
prepare-report.json to --out. Bad items are reported and skipped. `sertune prepare combine DIR DIR...
--out DIR [--protocol per-corpus|peft-ser-package|leave-one-corpus-out]` writes several prepared
corpora as one (docs/corpora.md).
"""

from __future__ import annotations

import argparse
import os

from sertune.commands._help import LazyChoices


def _corpus_names() -> list[str]:
    from sertune.corpora import CORPORA

    return [*sorted(CORPORA), COMBINE]


COMBINE = "combine"
PROTOCOL_HELP = ("combine: per-corpus (fold k = every input's fold k), peft-ser-package (the study package's split), "
                 "leave-one-corpus-out")


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `prepare`."""
    # A metavar keeps argparse from listing the choices (and importing the corpora) while it builds the parser.
    parser.add_argument(
        "corpus", metavar="CORPUS", choices=LazyChoices(_corpus_names),
        help="which corpus layout SOURCE has: %(choices)s (combine: SOURCE is two or more prepared corpora)",
    )
    parser.add_argument(
        "source", metavar="SOURCE", nargs="+",
        help="the corpus root directory (folder: a CSV file or a label-folder tree)",
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
    parser.add_argument("--protocol", help=PROTOCOL_HELP + " (default: per-corpus)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the corpus (or combine prepared ones) and print the report summary."""
    from sertune.corpora import CORPORA, prepare
    from sertune.errors import SertuneError

    if args.corpus == COMBINE:
        return _combine(args)
    if len(args.source) != 1 or args.protocol:
        raise SertuneError(f"prepare {args.corpus} takes one SOURCE directory; --protocol is for `prepare combine`")
    corpus, report = prepare(
        CORPORA[args.corpus],
        args.source[0],
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


def _combine(args: argparse.Namespace) -> int:
    from sertune.corpora.combine import combine
    from sertune.errors import SertuneError

    if args.audio_cache or args.encoding:
        raise SertuneError("prepare combine reads prepared corpora: --audio-cache and --encoding do not apply")
    corpus, report = combine(args.source, args.out, labels=args.labels, protocol=args.protocol or "per-corpus")
    print("\n".join(report.summary()))
    print(f"wrote {corpus.root}/manifest.csv, folds.json, prepare-report.json ({len(corpus.folds)} fold(s), "
          f"protocol {corpus.protocol})")
    return 0
