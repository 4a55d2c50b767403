"""IEMOCAP: five dyadic sessions, one female and one male actor each.

Layout: `Session{1..5}/sentences/wav/<dialog>/<utterance>.wav`; labels in
`Session*/dialog/EmoEvaluation/<dialog>.txt`, one line per utterance:
`[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]` (valence,
activation, dominance). The letter before the utterance number is the speaker's gender, and the
speaker is session + gender. Protocol: leave one session out, dev on the next session.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertune.corpora.folds import session_protocol
from sertune.corpora.pipeline import GENDER_LETTERS, Candidate, CorpusSpec, label_name, text_lines
from sertune.corpora.report import PrepareReport

CODES = {
    "neu": "neutral",
    "ang": "angry",
    "sad": "sad",
    "hap": "happy",
    "exc": "excited",
    "fru": "frustrated",
    "fea": "fear",
    "sur": "surprise",
    "dis": "disgust",
    "oth": "other",
    "xxx": "no-agreement",
}
CLASSES = (
    "neutral",
    "angry",
    "sad",
    "happy",
    "excited",
    "frustrated",
    "fear",
    "surprise",
    "disgust",
    "other",
)
_LINE = re.compile(
    r"^\[(?P<start>[\d.]+) - (?P<end>[\d.]+)\]\t(?P<id>(?P<dialog>Ses(?P<session>\d\d)[FM]_\w+?)_"
    r"(?P<gender>[FM])\d+)\t(?P<code>\w+)\t\[(?P<val>[\d.]+), (?P<act>[\d.]+), (?P<dom>[\d.]+)\]\s*$"
)


def scan(source: Path, report: PrepareReport) -> list[Candidate]:
    """Every labelled utterance of the sessions found under `source`."""
    label_files = sorted(source.glob("Session*/dialog/EmoEvaluation/*.txt"))
    if not label_files:
        report.warnings.append(f"no Session*/dialog/EmoEvaluation/*.txt under {source}")
    candidates = []
    for label_file in label_files:
        session_dir = label_file.parents[2]
        for number, line in enumerate(text_lines(label_file), start=1):
            if not line.startswith("["):
                continue  # headers, blank lines and the per-annotator lines
            where = f"{label_file}:{number}"
            match = _LINE.match(line)
            if not match:
                report.skip(where, f"malformed label line {line.strip()!r}")
                continue
            name = label_name(CODES, match["code"], where, report)
            if name is None:
                continue
            uid, dialog = match["id"], match["dialog"]
            gender = GENDER_LETTERS[match["gender"]]
            candidates.append(
                Candidate(
                    uid,
                    session_dir / "sentences" / "wav" / dialog / f"{uid}.wav",
                    name,
                    f"Ses{match['session']}{match['gender']}",
                    gender,
                    where,
                    {
                        "session": session_dir.name,
                        "dialog": dialog,
                        "start": match["start"],
                        "end": match["end"],
                        "valence": match["val"],
                        "activation": match["act"],
                        "dominance": match["dom"],
                    },
                )
            )
    return candidates


# Annotators rated each attribute on a 1-5 self-assessment-manikin scale.
SCALES = {"arousal": (1.0, 5.0), "valence": (1.0, 5.0), "dominance": (1.0, 5.0)}
SPEC = CorpusSpec("iemocap", CLASSES, session_protocol, scan, merges={"excited": "happy"}, scales=SCALES)
