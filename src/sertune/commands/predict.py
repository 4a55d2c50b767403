"""`sertune predict RUN_DIR INPUT...`: emotion labels of audio files, folders and globs."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from sertune.errors import SertuneError
from sertune.inference import DEFAULT_BATCH_SIZE, Prediction, Predictor, load

# Files read from disk per batch of predictions: bounds memory for thousands of inputs.
FILES_PER_CHUNK = 32
# Extensions looked for inside folders: every container soundfile (libsndfile) reads, plus aliases.
AUDIO_SUFFIXES = {f".{name.lower()}" for name in sf.available_formats()} | {
    ".wave",
    ".aif",
    ".aifc",
    ".oga",
    ".opus",
    ".snd",
    ".sph",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="predict the emotion of audio files with a trained run",
        description="Predict the emotion of audio files with a trained run (a run, fold or checkpoint "
        "directory). Inputs are files, folders (searched recursively) or glob patterns. Unreadable "
        "files are reported on stderr and skipped; the exit status is then 1.",
    )
    parser.add_argument("run", type=Path, help="a trained run, fold or checkpoint directory")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders or glob patterns")
    parser.add_argument("--fold", help="serve this fold of a run directory (default: best dev UAR)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    output.add_argument("--csv", action="store_true", help="print CSV: one row per input and per window")
    parser.add_argument("--window", type=float, help="cut audio longer than this many seconds into windows")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half the window)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="clips per forward pass")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.set_defaults(func=run)


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by `patterns` (files, folders searched recursively, globs), in order, without
    duplicates; and (pattern, reason) for patterns that name nothing."""
    files: dict[Path, None] = {}
    missing: list[tuple[str, str]] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                missing.append((pattern, "folder holds no audio files"))
        elif path.exists():
            found = [path]
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                missing.append((pattern, "no file matches this pattern"))
        else:
            found = []
            missing.append((pattern, "no such file"))
        files.update(dict.fromkeys(found))
    return list(files), missing


def predict_files(
    predictor: Predictor, files: list[Path], *, window: float | None, hop: float | None
) -> Iterator[tuple[Path, Prediction | None, str | None]]:
    """(file, prediction, None) or (file, None, reason) per file, in order; reads files a chunk at a time."""
    for start in range(0, len(files), FILES_PER_CHUNK):
        chunk = files[start : start + FILES_PER_CHUNK]
        waves, good, failures = [], [], {}
        for path in chunk:
            try:
                waves.append(predictor.waveform(path))
                good.append(path)
            except SertuneError as error:
                message = str(error)
                failures[path] = message if str(path) in message else f"{path}: {message}"
        predictions = predictor.predict_waveforms(waves, sources=[str(p) for p in good], window=window, hop=hop)
        answers = dict(zip(good, predictions, strict=True))
        for path in chunk:
            yield path, answers.get(path), failures.get(path)


def run(args: argparse.Namespace) -> int:
    """Predict every input; print the results on stdout and the failures on stderr."""
    files, missing = expand_inputs(args.inputs)
    for pattern, reason in missing:
        print(f"sertune predict: {pattern}: {reason}", file=sys.stderr)
    if not files:
        return 1
    predictor = load(
        args.run, fold=args.fold, device=args.device, window=args.window, hop=args.hop, batch_size=args.batch_size
    )
    results: list[Prediction] = []
    failed = len(missing)
    progress = tqdm(total=len(files), unit="file", file=sys.stderr, disable=len(files) < 2 or None)
    with progress:
        for _path, prediction, reason in predict_files(predictor, files, window=args.window, hop=args.hop):
            if prediction is None:
                failed += 1
                progress.write(f"sertune predict: {reason}", file=sys.stderr)
            else:
                results.append(prediction)
            progress.update()
    write_results(results, predictor.labels, "json" if args.json else "csv" if args.csv else "table")
    if failed:
        print(f"sertune predict: {failed} input(s) failed, {len(results)} predicted", file=sys.stderr)
    return 1 if failed else 0


def write_results(results: list[Prediction], labels: list[str], style: str) -> None:
    """Print predictions on stdout as a table, JSON or CSV."""
    if style == "json":
        json.dump([{"input": r.source, **r.to_dict()} for r in results], sys.stdout, indent=2)
        print()
    elif style == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["input", "segment", "start", "end", "label", "silent", *labels])
        for r in results:
            writer.writerow([r.source, "clip", 0.0, r.duration, r.label, r.silent, *_probabilities(r, labels)])
            for w in r.windows or []:
                writer.writerow([r.source, "window", w.start, w.end, w.label, w.silent, *_probabilities(w, labels)])
    else:
        print(_table(results, labels))


def _probabilities(scores: Prediction, labels: list[str]) -> list[str]:
    return [f"{scores.probabilities[label]:.6f}" for label in labels]


def _table(results: list[Prediction], labels: list[str]) -> str:
    width = max([len("input"), *(len(r.source or "") for r in results)])
    columns = [f"{label[:8]:>8}" for label in labels]
    lines = [f"{'input':<{width}}  {'label':<10} {' '.join(columns)}  note"]
    for r in results:
        probabilities = " ".join(f"{r.probabilities[label]:>8.3f}" for label in labels)
        notes = [f"{len(r.windows)} windows, {r.duration:.1f} s"] if r.windows else []
        notes += ["silent"] if r.silent else []
        lines.append(f"{r.source:<{width}}  {r.label:<10} {probabilities}  {'; '.join(notes)}".rstrip())
        for w in r.windows or []:
            span = f"  {w.start:.1f}-{w.end:.1f} s"
            probabilities = " ".join(f"{w.probabilities[label]:>8.3f}" for label in labels)
            lines.append(f"{span:<{width}}  {w.label:<10} {probabilities}  {'silent' if w.silent else ''}".rstrip())
    return "\n".join(lines)
