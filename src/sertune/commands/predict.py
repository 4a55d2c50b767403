"""`sertune predict RUN_DIR INPUT...`: emotion labels of audio files, folders and globs.

RUN_DIR is a trained run (its fold with the best dev UAR, or --fold), a fold or a checkpoint
directory. Inputs are files, folders (searched recursively) or glob patterns. A file that cannot be
predicted (unreadable, truncated, too short, samples out of range) is reported on stderr with its
reason while the others are predicted; the exit status is then 1.

With `--segment vad` every input is a recording cut at its pauses (Silero VAD) into speech segments of
the run's training lengths, each predicted alone: an emotion timeline per input (see docs/serving.md).
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sertune.errors import SertuneError
from sertune.options import add_precision_argument, number_in
from sertune.prediction import DEFAULT_BATCH_SIZE, MAX_WINDOW_SECONDS, Prediction, Scores, Timeline

if TYPE_CHECKING:
    import numpy as np

    from sertune.inference import Predictor

# Files read from disk per batch of predictions: bounds memory for thousands of inputs.
FILES_PER_CHUNK = 32
_seconds = number_in(0, MAX_WINDOW_SECONDS)


@functools.cache
def audio_suffixes() -> frozenset[str]:
    """Extensions looked for inside folders: every container soundfile (libsndfile) reads, plus aliases."""
    import soundfile as sf

    aliases = {".wave", ".aif", ".aifc", ".oga", ".opus", ".snd", ".sph"}
    return frozenset({f".{name.lower()}" for name in sf.available_formats()} | aliases)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `predict`."""
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a trained run, fold or checkpoint directory")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders or glob patterns")
    parser.add_argument("--fold", help="predict with this fold of a run directory (default: best dev UAR)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    output.add_argument("--csv", action="store_true",
                        help="print CSV: one row per input and per window (with --segment vad: per segment)")
    parser.add_argument(
        "--window", type=_seconds,
        help="cut audio longer than this many seconds into windows (default: the run's training crop, for clips "
        "longer than its evaluation took whole)",
    )
    parser.add_argument("--hop", type=_seconds, help="seconds between window starts (default: half the window)")
    segment = parser.add_argument_group("timeline of a long recording")
    segment.add_argument(
        "--segment", choices=["vad"],
        help="vad: cut each input at its pauses (Silero VAD) and predict every speech segment: an emotion timeline",
    )
    segment.add_argument(
        "--min-segment", type=_seconds, metavar="S",
        help="merge shorter segments with a neighbour (default: 1 s, or the encoder's minimum input if longer)",
    )
    segment.add_argument(
        "--max-segment", type=_seconds, metavar="S",
        help="split longer segments into near-equal parts (default: the run's training crop)",
    )
    segment.add_argument(
        "--plot", type=Path, metavar="PNG",
        help="draw the timeline into this PNG; with several inputs, one per input: <name>-<input stem>.png",
    )
    parser.add_argument("--batch-size", type=number_in(0, 4096, kind=int), default=DEFAULT_BATCH_SIZE,
                        help="clips per forward pass")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    add_precision_argument(parser)
    parser.set_defaults(func=run)


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by `patterns` (files, folders searched recursively, globs), in order, without
    duplicates; and (pattern, reason) for patterns that name nothing."""
    files: dict[Path, None] = {}
    missing: list[tuple[str, str]] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in audio_suffixes())
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
    """(file, prediction, None) or (file, None, reason) per file, in order; reads files a chunk at a time.

    Every file is checked on its own before the chunk is batched; one bad file never costs the others
    their predictions.
    """
    for start in range(0, len(files), FILES_PER_CHUNK):
        chunk = files[start : start + FILES_PER_CHUNK]
        waves: dict[Path, np.ndarray] = {}
        failures: dict[Path, str] = {}
        for path in chunk:
            try:
                waves[path] = predictor.waveform(path)
            except SertuneError as error:
                failures[path] = _naming(path, error)
        answers, failed = _predict_chunk(predictor, waves, window=window, hop=hop)
        failures.update(failed)
        for path in chunk:
            yield path, answers.get(path), failures.get(path)


def _predict_chunk(
    predictor: Predictor, waves: dict[Path, np.ndarray], *, window: float | None, hop: float | None
) -> tuple[dict[Path, Prediction], dict[Path, str]]:
    """Predictions of checked waveforms in shared batches; when a batch still fails, each file alone,
    so that only the file at fault is reported."""
    try:
        predictions = predictor.predict_waveforms(
            list(waves.values()), sources=[str(path) for path in waves], window=window, hop=hop
        )
        return dict(zip(waves, predictions, strict=True)), {}
    except SertuneError:
        # A clip that passed the checks still broke a shared batch (non-finite logits): find it.
        answers: dict[Path, Prediction] = {}
        failures: dict[Path, str] = {}
        for path, wave in waves.items():
            try:
                answers[path] = predictor.predict_waveforms([wave], sources=[str(path)], window=window, hop=hop)[0]
            except SertuneError as error:
                failures[path] = _naming(path, error)
        return answers, failures


def _naming(path: Path, error: SertuneError) -> str:
    """The error's message, starting with the file it is about."""
    message = str(error)
    return message if str(path) in message else f"{path}: {message}"


def check_segment_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together: timeline options without `--segment vad`, windows with it."""
    if args.segment is None:
        given = [flag for flag, value in (("--min-segment", args.min_segment), ("--max-segment", args.max_segment),
                                          ("--plot", args.plot)) if value is not None]
        if given:
            raise SertuneError(f"{given[0]} belongs to a timeline: add --segment vad")
        return
    if args.window is not None or args.hop is not None:
        raise SertuneError("--segment vad cuts audio at its pauses: it does not take --window or --hop")
    if args.min_segment is not None and args.max_segment is not None and args.min_segment > args.max_segment:
        raise SertuneError(f"--min-segment {args.min_segment:g} is longer than --max-segment {args.max_segment:g}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise SertuneError(f"--plot {args.plot}: the plot is a PNG; name it *.png")


def plot_paths(plot: Path, files: list[Path]) -> dict[Path, Path]:
    """Where each input's timeline is drawn: `plot` itself for one input, else `<plot stem>-<input stem>.png`
    beside it. Two inputs of the same stem would overwrite each other's plot, so they are refused."""
    if len(files) == 1:
        return {files[0]: plot}
    paths: dict[Path, Path] = {}
    owners: dict[Path, Path] = {}
    for path in files:
        target = plot.with_name(f"{plot.stem}-{path.stem}{plot.suffix}")
        if target in owners:
            raise SertuneError(f"--plot: {owners[target]} and {path} would both be drawn to {target}; plot them apart")
        owners[target] = paths[path] = target
    return paths


def run(args: argparse.Namespace) -> int:
    """Predict every input; print the results on stdout (nothing if none) and the failures on stderr."""
    from sertune.inference import check_device, load
    from sertune.progress import progress_bar

    check_segment_options(args)
    check_device(args.device)  # before the inputs are searched: a wrong device is one line, not a traceback
    files, missing = expand_inputs(args.inputs)
    for pattern, reason in missing:
        print(f"sertune predict: {pattern}: {reason}", file=sys.stderr)
    if not files:
        return 1
    plots = plot_paths(args.plot, files) if args.plot is not None else {}
    predictor = load(
        args.run, fold=args.fold, device=args.device, window=args.window, hop=args.hop, batch_size=args.batch_size,
        precision=args.precision,
    )
    if args.precision == "auto":
        print(f"sertune predict: precision {predictor.precision} ({predictor.precision_reason})", file=sys.stderr)
    style = "json" if args.json else "csv" if args.csv else "table"
    if args.segment:
        answers = timeline_files(predictor, files, min_segment=args.min_segment, max_segment=args.max_segment)
    else:
        answers = predict_files(predictor, files, window=args.window, hop=args.hop)
    results: list[Prediction | Timeline] = []
    failed = len(missing)
    with progress_bar(len(files), unit="file", disable=len(files) < 2) as progress:
        for path, result, reason in answers:
            if result is None:
                failed += 1
                progress.write(f"sertune predict: {reason}", file=sys.stderr)
            else:
                results.append(result)
                if path in plots:
                    _plot(result, plots[path])
            progress.update()
    if results:
        dimensions = [d.name for d in predictor.dimensions]
        if args.segment:
            write_timelines(results, predictor.labels, style, dimensions)
        else:
            write_results(results, predictor.labels, style, dimensions)
    if failed:
        print(f"sertune predict: {failed} input(s) failed, {len(results)} predicted", file=sys.stderr)
    return 1 if failed else 0


def _plot(timeline: Timeline, path: Path) -> None:
    from sertune.segmentation import plot_timeline

    plot_timeline(timeline, path)
    print(f"sertune predict: {timeline.source}: timeline drawn to {path}", file=sys.stderr)


def timeline_files(
    predictor: Predictor, files: list[Path], *, min_segment: float | None, max_segment: float | None
) -> Iterator[tuple[Path, Timeline | None, str | None]]:
    """(file, timeline, None) or (file, None, reason) per file, in order, one recording in memory at a time."""
    from sertune.segmentation import timeline

    for path in files:
        try:
            wave = predictor.waveform(path)
            yield path, timeline(predictor, wave, min_segment=min_segment, max_segment=max_segment,
                                 source=str(path)), None
        except SertuneError as error:
            yield path, None, _naming(path, error)


def write_results(results: list[Prediction], labels: list[str], style: str, dimensions: Sequence[str] = ()) -> None:
    """Print predictions on stdout as a table, JSON or CSV: class probabilities, then each dimension on the
    training corpus's scale (CSV also normalised, as `<dimension>_normalized`)."""
    if style == "json":
        json.dump([{"input": r.source, **r.to_dict()} for r in results], sys.stdout, indent=2)
        print()
    elif style == "csv":
        rows = [
            row for r in results
            for row in [(r.source, "clip", 0.0, r.duration, r),
                        *((r.source, "window", w.start, w.end, w) for w in r.windows or [])]
        ]
        _write_csv(rows, labels, dimensions)
    else:
        print(_table(results, labels, dimensions))


def _write_csv(rows: list[tuple[str | None, str, Any, Any, Scores]], labels: Sequence[str],
               dimensions: Sequence[str]) -> None:
    """CSV on stdout: input, segment kind, start, end, label, silent, class probabilities, then each
    dimension on the corpus scale and normalised (`<dimension>_normalized`)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    normalized = [f"{name}_normalized" for name in dimensions]
    writer.writerow(["input", "segment", "start", "end", "label", "silent", *labels, *dimensions, *normalized])
    for source, segment, start, end, scores in rows:
        writer.writerow([source, segment, start, end, scores.label or "", scores.silent,
                         *(f"{value:.6f}" for value in _values(scores, labels, dimensions, normalized=True))])


def write_timelines(timelines: list[Timeline], labels: list[str], style: str, dimensions: Sequence[str] = ()) -> None:
    """Print timelines on stdout: a table per input, a JSON list of `Timeline.to_dict()` (with `input`), or CSV
    with the columns of `write_results` and one `speech` row per segment. An input without speech has no CSV
    row: it is named on stderr instead."""
    if style == "json":
        json.dump([{"input": t.source, **t.to_dict()} for t in timelines], sys.stdout, indent=2)
        print()
    elif style == "csv":
        for t in timelines:
            if t.no_speech:
                print(f"sertune predict: {t.source}: {t.message} ({t.duration:.1f} s)", file=sys.stderr)
        rows = [(t.source, "speech", f"{s.start:.3f}", f"{s.end:.3f}", s) for t in timelines for s in t.segments]
        _write_csv(rows, labels, dimensions)
    else:
        print("\n\n".join(_timeline_table(t, labels, dimensions) for t in timelines))


def _timeline_table(timeline: Timeline, labels: list[str], dimensions: Sequence[str]) -> str:
    count = len(timeline.segments)
    head = f"{timeline.source} ({timeline.duration:.1f} s): "
    if timeline.no_speech:
        return head + str(timeline.message)
    columns = " ".join(f"{name[:8]:>8}" for name in (*labels, *dimensions))
    lines = [head + f"{count} speech segment{'s' if count != 1 else ''}",
             f"{'start':>8} {'end':>8}  {'label':<10} {columns}"]
    for s in timeline.segments:
        values = " ".join(f"{value:>8.3f}" for value in _values(s, labels, dimensions))
        lines.append(f"{s.start:>8.2f} {s.end:>8.2f}  {s.label or '-':<10} {values}  {'silent' if s.silent else ''}"
                     .rstrip())
    return "\n".join(lines)


def _values(scores: Scores, labels: Sequence[str], dimensions: Sequence[str], *, normalized: bool = False
            ) -> list[float]:
    """The class probabilities, then the dimensions on the corpus scale (then normalised, if asked)."""
    values = [scores.probabilities[label] for label in labels]
    values += [scores.dimensions[name] for name in dimensions]
    if normalized:
        values += [scores.dimensions_normalized[name] for name in dimensions]
    return values


def _table(results: list[Prediction], labels: list[str], dimensions: Sequence[str]) -> str:
    width = max([len("input"), *(len(r.source or "") for r in results)])
    columns = [f"{name[:8]:>8}" for name in (*labels, *dimensions)]
    lines = [f"{'input':<{width}}  {'label':<10} {' '.join(columns)}  note"]

    def line(first: str, scores: Scores, notes: list[str]) -> str:
        values = " ".join(f"{value:>8.3f}" for value in _values(scores, labels, dimensions))
        return f"{first:<{width}}  {scores.label or '-':<10} {values}  {'; '.join(notes)}".rstrip()

    for r in results:
        notes = [f"{len(r.windows)} windows, {r.duration:.1f} s"] if r.windows else []
        lines.append(line(r.source, r, notes + (["silent"] if r.silent else [])))
        for w in r.windows or []:
            lines.append(line(f"  {w.start:.1f}-{w.end:.1f} s", w, ["silent"] if w.silent else []))
    return "\n".join(lines)
