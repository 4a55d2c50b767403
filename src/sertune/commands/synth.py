"""`sertune synth --out DIR`: generate the espeak-ng emotional-speech corpus used by demos and tests.

Speakers are espeak-ng voices, emotions are prosody profiles with random jitter. Writes audio/,
manifest.csv, folds.json and prepare-report.json; the same seed gives the same audio.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

from sertune.commands._help import show_default

# SynthSettings field -> (type, help). Their defaults live in sertune.corpora.synthetic, which imports
# numpy and soundfile: help reads them only when it is printed.
SETTINGS = {
    "speakers": (int, "number of voices, half female"),
    "sentences": (int, "sentences per speaker and emotion"),
    "seed": (int, "random seed (audio and folds)"),
    "snr": (float, "white-noise SNR in dB; 'inf' for clean audio"),
    "workers": (int, "parallel synthesis jobs"),
}


def _default(name: str) -> object:
    from sertune.corpora.synthetic import SynthSettings

    return getattr(SynthSettings(), name)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `synth`."""
    parser.add_argument("--out", required=True, help="directory to write the corpus to")
    for name, (kind, text) in SETTINGS.items():
        action = parser.add_argument(f"--{name}", type=kind, default=argparse.SUPPRESS, help=text)
        show_default(action, functools.partial(_default, name))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the corpus and print what was written."""
    from sertune.corpora.synthetic import SynthSettings, synthesize

    settings = SynthSettings(**{name: getattr(args, name) for name in SETTINGS if name in args})
    settings = dataclasses.replace(settings, workers=max(1, settings.workers))
    start = time.perf_counter()
    corpus, report = synthesize(args.out, settings)
    print("\n".join(report.summary()))
    print(f"wrote {len(corpus.utterances)} clips to {corpus.root} in {time.perf_counter() - start:.1f} s")
    return 0
