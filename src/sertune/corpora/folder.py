"""Your own data: a CSV of clips, or a directory with one sub-folder per label.

CSV: columns `path,label` and optionally `speaker,gender`; paths are relative to the CSV file,
which is read as UTF-8 unless another encoding is named. Directory: `SOURCE/<label>/**/<clip>`
for every audio file soundfile can read. With a speaker for every clip the protocol is 5 speaker
folds; otherwise label-stratified folds over clips, which are NOT speaker independent (the
protocol name says so).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import soundfile as sf

from sertune.corpora.folds import speaker_protocol, utterance_folds
from sertune.corpora.manifest import Fold, Utterance, read_text
from sertune.corpora.pipeline import Candidate, CorpusSpec, csv_rows
from sertune.corpora.report import PrepareReport

N_FOLDS = 5
GENDERS = {
    "f": "female",
    "female": "female",
    "woman": "female",
    "m": "male",
    "male": "male",
    "man": "male",
    "": "",
    "unknown": "",
}
AUDIO_SUFFIXES = {f".{ext.lower()}" for ext in sf.available_formats()} | {".wav", ".flac", ".ogg", ".mp3"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
HASH_DIGITS = 8


def _slug(listed: Path) -> str:
    return _UNSAFE.sub("-", listed.with_suffix("").as_posix())


def clip_ids(listed: list[Path], root: Path) -> list[str]:
    """The id of each clip path in `listed` (relative to `root`): equal for one file, distinct for two.

    A clip's id is its readable slug: the path without its suffix, every character other than a
    letter, digit, `.`, `_` or `-` turned into `-`. Files whose slugs collide (`a b.flac` and
    `a-b.flac`, `sub/x.flac` and `sub-x.flac`, `y.flac` and `y.wav`) each get `<slug>-<hash>`: the
    first 8 hex digits (more if those are taken) of the SHA-256 of the file's real path relative to
    `root`. The ids depend only on which files are listed, so a re-run gives the same ids.
    """
    real_root = os.path.realpath(root)
    # The same physical file listed twice (`x.wav`, `./x.wav`) gets one id, so it is a duplicate.
    files = [os.path.relpath(os.path.realpath(root / path), real_root) for path in listed]
    slugs: dict[str, str] = {}
    for path, file in zip(listed, files, strict=True):
        slugs.setdefault(file, _slug(path))
    owners = Counter(slugs.values())
    ids = {file: slug for file, slug in slugs.items() if owners[slug] == 1}
    taken = set(ids.values())
    for file in sorted(set(slugs) - set(ids)):
        digest = hashlib.sha256(Path(file).as_posix().encode()).hexdigest()
        # A longer prefix only when another clip's id already reads like this one: ids never clash.
        ids[file] = next(
            uid for n in range(HASH_DIGITS, len(digest) + 1) if (uid := f"{slugs[file]}-{digest[:n]}") not in taken
        )
        taken.add(ids[file])
    return [ids[file] for file in files]


def _scan_csv(source: Path, report: PrepareReport, encoding: str) -> list[Candidate]:
    fix = "save it as UTF-8, or name its encoding with `sertune prepare folder --encoding NAME` (e.g. latin-1)"
    candidates, listed = [], []
    for line, row in csv_rows(source, ("path", "label"), read_text(source, fix, encoding)):
        where = f"{source}:{line}"
        gender = GENDERS.get(row.get("gender", "").lower())
        if not row["path"] or not row["label"] or gender is None:
            report.skip(where, "malformed row: needs a path, a label and gender female/male/empty")
            continue
        if row["label"].lstrip("-").isdigit():
            report.skip(where, f"label {row['label']!r} is a number; labels must be class names")
            continue
        relative = Path(row["path"])
        listed.append(relative)
        candidates.append(Candidate("", source.parent / relative, row["label"], row.get("speaker", ""), gender, where))
    return _with_ids(candidates, listed, source.parent)


def _scan_directory(source: Path) -> list[Candidate]:
    candidates, listed = [], []
    for label_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        for path in sorted(label_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
                listed.append(path.relative_to(source))
                candidates.append(Candidate("", path, label_dir.name, "", "", str(path)))
    return _with_ids(candidates, listed, source)


def _with_ids(candidates: list[Candidate], listed: list[Path], root: Path) -> list[Candidate]:
    # Ids are given once every clip is listed: whether a slug collides depends on all of them.
    for candidate, uid in zip(candidates, clip_ids(listed, root), strict=True):
        candidate.id = uid
    return candidates


def scan(source: Path, report: PrepareReport, encoding: str = "utf-8") -> list[Candidate]:
    """The clips listed in the CSV `source` (text in `encoding`), or found in the label folders of directory `source`.

    Their ids are `clip_ids` of the paths relative to the CSV's folder, or to the directory.
    """
    return _scan_directory(source) if source.is_dir() else _scan_csv(source, report, encoding)


def make_folds(utterances: list[Utterance], seed: int) -> tuple[str, list[Fold]]:
    """Speaker folds when every clip has a speaker, else stratified clip folds (not speaker independent)."""
    unknown = sum(1 for u in utterances if not u.speaker)
    if not unknown:
        return speaker_protocol(N_FOLDS)(utterances, seed)
    folds = utterance_folds(utterances, N_FOLDS, seed)
    return (
        f"{len(folds)} label-stratified clip folds (seed {seed}), dev = next fold; NOT speaker "
        f"independent: {unknown} clips have no speaker",
        folds,
    )


SPEC = CorpusSpec("folder", (), make_folds, scan, scan_with_encoding=scan)
