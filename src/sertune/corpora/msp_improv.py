"""MSP-IMPROV: six sessions of dyadic improvisations, one female and one male actor each.

Audio: `session*/.../MSP-IMPROV-S01A-F01-S-FM01.wav` (sentence + target emotion, speaker,
scenario letter, dyad). Labels: `Evalution.txt` (sic), where an utterance line reads
`UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:2.8; V:3.2; D:3.0; N:3.0;` and the consensus class letter
follows the first `"; "`. The speaker id (F01, M03...) gives gender and session. Protocol: leave
one session out (6 folds), dev on the next session.
"""

from __future__ import annotations

import re
from pathlib import Path

from sertune.corpora.folds import session_protocol
from sertune.corpora.pipeline import GENDER_LETTERS, Candidate, CorpusSpec, label_name, text_lines
from sertune.corpora.report import PrepareReport

CODES = {"N": "neutral", "A": "angry", "S": "sad", "H": "happy", "X": "no-agreement", "O": "other"}
CLASSES = ("neutral", "angry", "sad", "happy", "other")
LABEL_FILES = ("Evalution.txt", "Evaluation.txt")
_KEY = re.compile(r"S\d\d[A-Z]-(?P<gender>[FM])(?P<number>\d\d)-(?P<scenario>[A-Z])-[A-Z]{2}\d\d")
_LINE = re.compile(r"^(?:UTD|MSP)-IMPROV-(?P<key>\S+?)\.(?:avi|wav)\s*;\s*(?P<code>[A-Za-z]+)\s*;(?P<rest>.*)$")
_SCORES = {"A": "activation", "V": "valence", "D": "dominance", "N": "naturalness"}


def _label_file(source: Path) -> Path | None:
    for name in LABEL_FILES:
        found = sorted(source.rglob(name))
        if found:
            return found[0]
    return None


def scan(source: Path, report: PrepareReport) -> list[Candidate]:
    """Every utterance line of the evaluation file, matched to its audio under `source`."""
    audio = {path.stem.removeprefix("MSP-IMPROV-"): path for path in sorted(source.rglob("MSP-IMPROV-*.wav"))}
    label_file = _label_file(source)
    if label_file is None:
        report.warnings.append(f"no {' or '.join(LABEL_FILES)} under {source}")
        return []
    candidates = []
    for number, line in enumerate(text_lines(label_file), start=1):
        if not re.match(r"^(?:UTD|MSP)-IMPROV-", line):
            continue  # the per-evaluator lines that follow each utterance line
        where = f"{label_file}:{number}"
        match = _LINE.match(line.strip())
        key = _KEY.fullmatch(match["key"]) if match else None
        if not match or not key:
            report.skip(where, f"malformed utterance line {line.strip()!r}")
            continue
        name = label_name(CODES, match["code"], where, report)
        if name is None:
            continue
        scores = dict(re.findall(r"([AVDN]):\s*([\d.]+)", match["rest"]))
        extras = {_SCORES[k]: v for k, v in scores.items()}
        extras |= {"session": f"session{int(key['number'])}", "scenario": key["scenario"]}
        uid = f"MSP-IMPROV-{match['key']}"
        path = audio.get(match["key"], source / f"{uid}.wav")
        speaker = f"{key['gender']}{key['number']}"
        candidates.append(Candidate(uid, path, name, speaker, GENDER_LETTERS[key["gender"]], where, extras))
    return candidates


# Attributes were rated on 5-point scales (1-5).
SCALES = {"arousal": (1.0, 5.0), "valence": (1.0, 5.0), "dominance": (1.0, 5.0)}
SPEC = CorpusSpec("msp-improv", CLASSES, session_protocol, scan, scales=SCALES)
