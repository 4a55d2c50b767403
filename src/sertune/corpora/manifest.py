"""The prepared-corpus format every corpus module writes and the training code reads.

A prepared directory holds `manifest.csv` (one row per utterance), `folds.json` (corpus name,
ordered label list, protocol and the folds as utterance ids) and `prepare-report.json`.
Relative paths in the manifest are relative to the directory itself, so a corpus whose audio was
cached inside it can be moved as a whole.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic, write_text_atomic

MANIFEST = "manifest.csv"
FOLDS = "folds.json"
REPORT = "prepare-report.json"
AUDIO_DIR = "audio"
BASE_COLUMNS = ("id", "path", "duration", "label", "speaker", "gender")
GENDERS = ("female", "male", "")
FOLD_PARTS = ("train", "dev", "test")
REBUILD = "the prepared corpus is damaged: re-run `sertune prepare` (or `sertune synth`) to rebuild it"


@dataclass
class Utterance:
    """One clip: where it is, how long, its class name and who speaks it."""

    id: str
    path: Path
    duration: float
    label: str
    speaker: str
    gender: str
    extras: dict[str, str] = field(default_factory=dict)


@dataclass
class Fold:
    """One train/dev/test split, as utterance ids."""

    name: str
    train: list[str]
    dev: list[str]
    test: list[str]

    def parts(self) -> dict[str, list[str]]:
        """The three parts by name, in train, dev, test order."""
        return {"train": self.train, "dev": self.dev, "test": self.test}


@dataclass
class Corpus:
    """A prepared corpus: its utterances, ordered class names and evaluation folds."""

    root: Path
    name: str
    labels: list[str]
    utterances: list[Utterance]
    folds: list[Fold]
    protocol: str = ""
    # Each attribute dimension's rating scale (low, high), e.g. {"arousal": (1, 5)}; empty: none recorded.
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    @cached_property
    def by_id(self) -> dict[str, Utterance]:
        """Utterances keyed by id."""
        return {utterance.id: utterance for utterance in self.utterances}


def format_duration(seconds: float) -> str:
    """Durations are stored with fixed precision so that re-runs give identical bytes."""
    return f"{seconds:.4f}"


def manifest_text(utterances: list[Utterance], root: Path) -> str:
    """The CSV text of a manifest: base columns, then every extra column in sorted order."""
    extra_columns = sorted({key for utterance in utterances for key in utterance.extras})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*BASE_COLUMNS, *extra_columns])
    for utterance in sorted(utterances, key=lambda u: u.id):
        path = utterance.path
        if path.is_relative_to(root):
            path = path.relative_to(root)
        writer.writerow(
            [
                utterance.id,
                path.as_posix(),
                format_duration(utterance.duration),
                utterance.label,
                utterance.speaker,
                utterance.gender,
                *(utterance.extras.get(column, "") for column in extra_columns),
            ]
        )
    return buffer.getvalue()


def write_corpus_files(corpus: Corpus, seed: int) -> None:
    """Write `manifest.csv` and `folds.json` of `corpus` into `corpus.root`, each atomically."""
    root = corpus.root.resolve()
    write_text_atomic(root / MANIFEST, manifest_text(corpus.utterances, root))
    write_json_atomic(
        root / FOLDS,
        {
            "corpus": corpus.name,
            "labels": corpus.labels,
            "protocol": corpus.protocol,
            "seed": seed,
            **({"scales": {name: list(scale) for name, scale in corpus.scales.items()}} if corpus.scales else {}),
            "folds": [{"name": fold.name, **fold.parts()} for fold in corpus.folds],
        },
    )


def read_text(path: Path, fix: str, encoding: str = "utf-8") -> str:
    """The text of `path` decoded strictly (UTF-8 may start with a byte-order mark).

    Bytes that are not text in `encoding` raise a `SertuneError` naming the file, the line and `fix`,
    instead of turning into replacement characters or a traceback.
    """
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise SertuneError(f"unknown text encoding {encoding!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    data = path.read_bytes()
    if codec == "utf-8":
        data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SertuneError(
            f"{path} line {line}: byte {data[error.start]:#04x} is not {encoding} text; {fix}"
        ) from None


def _read_manifest(path: Path, root: Path, labels: list[str]) -> list[Utterance]:
    reader = csv.reader(io.StringIO(read_text(path, REBUILD)))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise SertuneError(f"{path} line {reader.line_num}: not a CSV row ({error}); {REBUILD}") from None
    if not rows or tuple(rows[0][: len(BASE_COLUMNS)]) != BASE_COLUMNS:
        raise SertuneError(f"{path} line 1: the header must start with {','.join(BASE_COLUMNS)}")
    header = rows[0]
    extra_columns = header[len(BASE_COLUMNS) :]
    utterances: list[Utterance] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path} line {line}"
        if len(row) != len(header):
            raise SertuneError(f"{where}: {len(row)} fields, the header has {len(header)}")
        uid, rel, duration_text, label, speaker, gender = row[: len(BASE_COLUMNS)]
        if not uid or uid in seen:
            raise SertuneError(f"{where}: {'duplicate' if uid else 'empty'} id {uid!r}")
        seen.add(uid)
        try:
            duration = float(duration_text)
        except ValueError:
            duration = math.nan
        if not duration > 0 or math.isinf(duration):
            raise SertuneError(f"{where}: duration {duration_text!r} is not a positive number of seconds")
        if label not in labels:
            raise SertuneError(f"{where}: label {label!r} is not one of {labels} listed in {FOLDS}")
        if gender not in GENDERS:
            raise SertuneError(f"{where}: gender {gender!r} must be female, male or empty")
        audio = (root / rel).resolve()
        if not audio.is_file():
            raise SertuneError(f"{where}: audio file {audio} does not exist")
        extras = dict(zip(extra_columns, row[len(BASE_COLUMNS) :], strict=True))
        utterances.append(Utterance(uid, audio, duration, label, speaker, gender, extras))
    return utterances


def _parse_folds(path: Path, data: dict, known: set[str]) -> list[Fold]:
    folds = []
    for index, entry in enumerate(data.get("folds", [])):
        try:
            fold = Fold(str(entry["name"]), *(list(map(str, entry[part])) for part in FOLD_PARTS))
        except (KeyError, TypeError):
            raise SertuneError(f"{path}: fold {index} needs a name and train, dev and test id lists") from None
        seen: set[str] = set()
        for part, ids in fold.parts().items():
            unknown = [uid for uid in ids if uid not in known]
            if unknown:
                raise SertuneError(f"{path}: fold {fold.name} {part} lists ids not in {MANIFEST}: {unknown[:3]}")
            if seen.intersection(ids):
                raise SertuneError(f"{path}: fold {fold.name} puts {sorted(seen & set(ids))[:3]} in two parts")
            seen.update(ids)
        folds.append(fold)
    if not folds:
        raise SertuneError(f"{path}: no folds")
    return folds


def load_corpus(directory: str | Path) -> Corpus:
    """Read and validate a prepared corpus directory; problems name the file and line."""
    root = Path(directory).resolve()
    manifest_path, folds_path = root / MANIFEST, root / FOLDS
    for required in (manifest_path, folds_path):
        if not required.is_file():
            raise SertuneError(
                f"{required} not found: {root} is not a prepared corpus "
                "(make one with `sertune prepare` or `sertune synth`)"
            )
    try:
        data = json.loads(read_text(folds_path, REBUILD))
    except json.JSONDecodeError as error:
        raise SertuneError(f"{folds_path} line {error.lineno}: not valid JSON ({error.msg}); {REBUILD}") from None
    if not isinstance(data, dict):
        raise SertuneError(f"{folds_path}: not a JSON object; {REBUILD}")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise SertuneError(f"{folds_path}: 'labels' must be a non-empty list of class names")
    utterances = _read_manifest(manifest_path, root, labels)
    folds = _parse_folds(folds_path, data, {u.id for u in utterances})
    name, protocol = str(data.get("corpus", root.name)), str(data.get("protocol", ""))
    return Corpus(root, name, labels, utterances, folds, protocol, _parse_scales(folds_path, data.get("scales", {})))


def _parse_scales(path: Path, data: Any) -> dict[str, tuple[float, float]]:
    if not isinstance(data, dict):
        raise SertuneError(f"{path}: 'scales' must map dimension names to [low, high]; {REBUILD}")
    scales = {}
    for name, scale in data.items():
        numbers = isinstance(scale, list) and len(scale) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in scale
        )
        if not numbers or scale[0] >= scale[1]:
            raise SertuneError(f"{path}: scale of {name!r} must be [low, high] with low < high, got {scale!r}")
        scales[str(name)] = (float(scale[0]), float(scale[1]))
    return scales
