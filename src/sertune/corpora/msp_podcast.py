"""MSP-Podcast: podcast segments with crowd-sourced labels and an official speaker-aware split.

Layout: `Audios/*.wav` and `Labels/labels_consensus.csv` (older releases:
`labels_concensus.csv`, sic) with FileName, EmoClass, SpkrID, Gender and Split_Set columns (plus
EmoAct/EmoVal/EmoDom). Protocol: the official Train / Development sets with one fold per test set
(Test1, and Test2 when present). Unknown speakers are kept with an empty speaker.
"""

from __future__ import annotations

from pathlib import Path

from sertune.corpora.folds import official_splits
from sertune.corpora.manifest import Fold, Utterance
from sertune.corpora.pipeline import Candidate, CorpusSpec, csv_rows, label_name
from sertune.corpora.report import PrepareReport

CODES = {
    "N": "neutral",
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "O": "other",
    "X": "no-agreement",
}
CLASSES = ("neutral", "angry", "sad", "happy", "surprise", "fear", "disgust", "contempt", "other")
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
TRAIN, DEV, TESTS = "Train", "Development", ("Test1", "Test2")
REQUIRED = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
_SCORES = {"EmoAct": "activation", "EmoVal": "valence", "EmoDom": "dominance"}


def _label_file(source: Path) -> Path | None:
    for folder in (source / "Labels", source):
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def scan(source: Path, report: PrepareReport) -> list[Candidate]:
    """Every row of the consensus label file, with its audio in `source/Audios`."""
    label_file = _label_file(source)
    if label_file is None:
        report.warnings.append(f"no Labels/{' or Labels/'.join(LABEL_FILES)} under {source}")
        return []
    candidates = []
    for line, row in csv_rows(label_file, REQUIRED):
        where = f"{label_file}:{line}"
        if not row["FileName"] or row["Split_Set"] not in (TRAIN, DEV, *TESTS):
            report.skip(where, f"malformed row: FileName {row['FileName']!r}, Split_Set {row['Split_Set']!r}")
            continue
        name = label_name(CODES, row["EmoClass"], where, report)
        if name is None:
            continue
        speaker = "" if row["SpkrID"].lower() in ("", "unknown") else row["SpkrID"]
        gender = row["Gender"].lower() if row["Gender"].lower() in ("female", "male") else ""
        extras = {column: row[key] for key, column in _SCORES.items() if key in row}
        extras["split"] = row["Split_Set"]
        path = source / "Audios" / row["FileName"]
        candidates.append(Candidate(Path(row["FileName"]).stem, path, name, speaker, gender, where, extras))
    return candidates


def make_folds(utterances: list[Utterance], seed: int) -> tuple[str, list[Fold]]:
    """The official split; it is fixed by the release, so `seed` is unused."""
    del seed
    folds = official_splits(utterances, lambda u: u.extras["split"], TRAIN, DEV, list(TESTS))
    return "official Train / Development / Test sets", folds


# The consensus attribute scores are averages of 7-point ratings (1-7).
SCALES = {"arousal": (1.0, 7.0), "valence": (1.0, 7.0), "dominance": (1.0, 7.0)}
SPEC = CorpusSpec("msp-podcast", CLASSES, make_folds, scan, scales=SCALES)
