"""`sertune corpus info DIR`: summary tables of a prepared corpus.

`info` prints utterances and hours per class, per gender and per fold part, and the speakers of
each part, of a directory written by `sertune prepare` or `sertune synth`.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Add the actions of `corpus` (info)."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info", help="utterances and hours per class, gender and fold part; speakers per part", description=__doc__
    )
    info.add_argument("directory", metavar="DIR", help="a directory written by `sertune prepare` or `sertune synth`")
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print the tables of `corpus info`."""
    from sertune.corpora import load_corpus
    from sertune.corpora.info import corpus_info

    print(corpus_info(load_corpus(args.directory)), end="")
    return 0
