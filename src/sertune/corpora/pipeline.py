"""The steps every corpus shares after its own scanner has read the label files.

A corpus module only turns its layout into `Candidate`s (reporting what it cannot parse); this
module applies the label set, drops duplicates, checks every clip, optionally caches the audio,
makes the folds and writes the prepared directory.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sertune.audio import DEFAULT_SAMPLE_RATE, AudioInfo, audio_info
from sertune.corpora.cache import cache_audio
from sertune.corpora.folds import Protocol, speaker_overlaps
from sertune.corpora.labels import resolve_label_set
from sertune.corpora.manifest import REPORT, Corpus, Utterance, write_corpus_files
from sertune.corpora.report import PrepareReport
from sertune.dimensions import check_scores
from sertune.errors import SertuneError

GENDER_LETTERS = {"F": "female", "M": "male"}


@dataclass
class Candidate:
    """An utterance as a corpus scanner found it, before any checks."""

    id: str
    path: Path
    label: str  # the corpus's own class name, e.g. "excited"
    speaker: str
    gender: str
    where: str  # where it was read (label file and line, or the audio path), for the report
    extras: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusSpec:
    """What makes one corpus different: its classes, how to read it and its protocol."""

    name: str
    classes: tuple[str, ...]  # every class in `--labels all` order; empty: whatever the data holds
    make_folds: Protocol
    scan: Callable[[Path, PrepareReport], list[Candidate]] | None = None  # None: not made by `prepare`
    merges: dict[str, str] = field(default_factory=dict)  # extra classes folded into the default set
    # The scanner given the user's text encoding (`prepare --encoding`); only user-written sources have one.
    scan_with_encoding: Callable[[Path, PrepareReport, str], list[Candidate]] | None = None
    # The rating scale (low, high) of each attribute dimension the corpus scores (sertune.dimensions).
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)


def label_name(codes: dict[str, str], code: str, where: str, report: PrepareReport) -> str | None:
    """The class name of a corpus label code; an unknown code is reported as skipped."""
    name = codes.get(code)
    if name is None:
        report.skip(where, f"unknown label {code!r} (known: {', '.join(sorted(codes))})")
    return name


def _unique(candidates: list[Candidate], report: PrepareReport) -> list[Candidate]:
    first: dict[str, Candidate] = {}
    for candidate in candidates:  # scanners read in a fixed order, so "first" is reproducible
        if candidate.id in first:
            report.skip(candidate.where, f"duplicate id (first read at {first[candidate.id].where})", candidate.id)
        else:
            first[candidate.id] = candidate
    return list(first.values())


def _probe(paths: list[Path], workers: int) -> list[AudioInfo | SertuneError]:
    def one(path: Path) -> AudioInfo | SertuneError:
        try:
            info = audio_info(path)
        except SertuneError as error:
            return error
        return info if info.frames > 0 else SertuneError(f"{path}: the audio stream holds no samples")

    # Header reads wait on the disk, not the CPU, so threads are enough.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, paths))


def _format_note(info: AudioInfo) -> str:
    found = f"{info.sample_rate} Hz" + (f", {info.channels} channels" if info.channels != 1 else "")
    return f"{found}, converted to {DEFAULT_SAMPLE_RATE} Hz mono when loaded"


def write_corpus(
    spec: CorpusSpec,
    candidates: list[Candidate],
    out: Path,
    report: PrepareReport,
    labels: str = "default",
    audio_cache: bool = False,
    workers: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> Corpus:
    """Check, label, fold and write `candidates` as a prepared corpus in `out`."""
    out = Path(out).resolve()
    report.label_set = labels
    report.found = len(candidates)
    corpus_classes = spec.classes or tuple(sorted({c.label for c in candidates}))
    label_set = resolve_label_set(labels, corpus_classes, spec.merges)
    chosen: list[tuple[Candidate, str]] = []
    for candidate in _unique(candidates, report):
        target = label_set.map(candidate.label)
        if target is None:
            report.exclude(candidate.label)
        else:
            chosen.append((candidate, target))
    utterances = []
    for (candidate, target), info in zip(chosen, _probe([c.path for c, _ in chosen], workers), strict=True):
        if isinstance(info, SertuneError):
            report.skip(candidate.where, str(info), candidate.id)
            continue
        if info.sample_rate != DEFAULT_SAMPLE_RATE or info.channels != 1:
            report.note(candidate.id, _format_note(info))
        extras = {**candidate.extras, "source_label": candidate.label}
        report.warnings.extend(check_scores(extras, spec.scales, candidate.where))
        utterances.append(
            Utterance(
                candidate.id,
                candidate.path.resolve(),
                info.duration,
                target,
                candidate.speaker,
                candidate.gender,
                extras,
            )
        )
    if audio_cache:
        utterances = cache_audio(utterances, out, report, workers, progress)
    counts = Counter(u.label for u in utterances)
    classes = [name for name in label_set.classes if counts[name]]
    report.warnings.extend(f"no utterance of class {name!r} was kept" for name in label_set.classes if not counts[name])
    report.kept = len(utterances)
    report.classes = {name: counts[name] for name in classes}
    if not utterances:
        report.save(out / REPORT)
        raise SertuneError(f"nothing was kept from {report.source}; see {out / REPORT}")
    report.protocol, folds = spec.make_folds(utterances, seed)
    report.folds = len(folds)
    corpus = Corpus(
        out, spec.name, classes, sorted(utterances, key=lambda u: u.id), folds, report.protocol, dict(spec.scales)
    )
    report.warnings.extend(speaker_overlaps(folds, corpus.by_id))
    write_corpus_files(corpus, seed)
    report.save(out / REPORT)
    return corpus


def prepare(
    spec: CorpusSpec,
    source: str | Path,
    out: str | Path,
    labels: str = "default",
    audio_cache: bool = False,
    workers: int = 1,
    seed: int = 0,
    progress: bool = True,
    encoding: str | None = None,
) -> tuple[Corpus, PrepareReport]:
    """Read `source` with the corpus's scanner and write the prepared corpus to `out`.

    `encoding` names the text encoding of a user-written source (the folder corpus's CSV; default
    UTF-8); corpora read as distributed refuse it.
    """
    source = Path(source)
    if not source.exists():
        raise SertuneError(f"{source}: no such file or directory")
    if spec.scan is None:
        raise SertuneError(f"the {spec.name} corpus is not read from a source directory")
    report = PrepareReport(corpus=spec.name, source=str(source.resolve()))
    if encoding is None:
        candidates = spec.scan(source, report)
    elif spec.scan_with_encoding is not None:
        candidates = spec.scan_with_encoding(source, report, encoding)
    else:
        raise SertuneError(f"--encoding applies to `prepare folder` only; {spec.name} files are read as distributed")
    corpus = write_corpus(spec, candidates, Path(out), report, labels, audio_cache, workers, seed, progress)
    return corpus, report


def text_lines(path: Path) -> list[str]:
    """The lines of a label file; stray bytes that are not UTF-8 must not stop a whole corpus."""
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def csv_rows(path: Path, required: tuple[str, ...], text: str | None = None) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV file whose header must contain `required` columns.

    `text` is the file's content when the caller has decoded it; otherwise the file is read as UTF-8
    with stray bytes replaced, since one odd byte in a distributed label table must not stop a corpus.
    """
    if text is None:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    try:
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise SertuneError(f"{path} line 1: missing column(s) {', '.join(missing)}")
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
    except csv.Error as error:
        raise SertuneError(f"{path} line {reader.line_num}: not a CSV row ({error})") from None
