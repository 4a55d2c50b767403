"""Emotional attributes (arousal, valence, dominance): where a corpus keeps them and on what scale.

Corpora rate clips on their own scales (IEMOCAP and MSP-IMPROV 1-5, MSP-Podcast 1-7) and name the
columns their own way (IEMOCAP's and MSP-IMPROV's `activation` is arousal). A prepared corpus records
each dimension's scale in `folds.json` (`scales`); training works on scores normalised to [0, 1] by
that scale and reports predictions back in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sertune.errors import SertuneError

# numpy is imported where it is used: the settings import this module, and `sertune train --help` must start fast.
if TYPE_CHECKING:
    import numpy as np

DIMENSIONS = ("arousal", "valence", "dominance")
Scale = tuple[float, float]  # (low, high) of a rating scale
# The manifest columns a dimension is read from, first found wins.
COLUMNS: dict[str, tuple[str, ...]] = {
    "arousal": ("arousal", "activation"),
    "valence": ("valence",),
    "dominance": ("dominance",),
}


@dataclass(frozen=True)
class Dimension:
    """One predicted attribute and the scale its corpus rates it on."""

    name: str
    low: float
    high: float

    def normalize(self, values: np.ndarray | float) -> np.ndarray | float:
        """Scores on the corpus scale mapped to [0, 1]."""
        return (values - self.low) / (self.high - self.low)

    def denormalize(self, values: np.ndarray | float) -> np.ndarray | float:
        """Values in [0, 1] (the model's output) mapped back to the corpus scale."""
        return values * (self.high - self.low) + self.low

    def to_dict(self) -> dict[str, float | str]:
        """Plain data, as `sertune.json` records it."""
        return {"name": self.name, "low": self.low, "high": self.high}


def parse_dimensions(text: str | Sequence[str]) -> list[str]:
    """`arousal,valence` (or a list) as dimension names, checked and without repeats."""
    names = [part.strip() for part in text.split(",")] if isinstance(text, str) else [str(part) for part in text]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown or not names:
        raise SertuneError(
            f"dimensions must be a non-empty subset of {', '.join(DIMENSIONS)}, got {', '.join(names) or 'none'}"
        )
    return list(dict.fromkeys(names))


def score_text(extras: Mapping[str, str], name: str) -> str:
    """The raw score of dimension `name` among a clip's manifest columns ('' when it has none)."""
    for column in COLUMNS[name]:
        if extras.get(column, "").strip():
            return extras[column].strip()
    return ""


def check_scores(
    extras: dict[str, str], scales: Mapping[str, Scale], where: str
) -> list[str]:
    """Blank, in `extras`, every score that is not a number on its recorded scale; returns why, per score.

    The clip itself stays (its class label is still good); only the score is left out, and the
    messages name `where` (the label file and line) so that the source can be corrected.
    """
    problems = []
    for name, (low, high) in scales.items():
        for column in COLUMNS[name]:
            text = extras.get(column, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not low <= value <= high:
                problems.append(f"{where}: {column} {text!r} is not on the corpus's {low:g}-{high:g} scale; "
                                "the score is left out (the clip is kept)")
                extras[column] = ""
    return problems


def dimension_scores(utterances: Sequence, names: Sequence[str]) -> np.ndarray:
    """Scores [clips, dimensions] on the corpus scale, NaN where a clip has none."""
    import numpy as np

    scores = np.full((len(utterances), len(names)), np.nan)
    for row, utterance in enumerate(utterances):
        for column, name in enumerate(names):
            text = score_text(utterance.extras, name)
            if not text:
                continue
            try:
                scores[row, column] = float(text)
            except ValueError:
                raise SertuneError(
                    f"clip {utterance.id}: {name} score {text!r} is not a number; re-run `sertune prepare`"
                ) from None
    return scores


def normalized_targets(utterances: Sequence, dimensions: Sequence[Dimension]) -> np.ndarray:
    """The clips' scores of `dimensions` normalised to [0, 1] by their scales, float32 [clips, dimensions]
    (NaN where a clip has no score): what a model is trained on and compared with."""
    import numpy as np

    scores = dimension_scores(utterances, [d.name for d in dimensions])
    for column, dimension in enumerate(dimensions):
        scores[:, column] = dimension.normalize(scores[:, column])
    return scores.astype(np.float32)


def on_scales(values: np.ndarray, dimensions: Sequence[Dimension]) -> np.ndarray:
    """Normalised values [n, dimensions] back on each dimension's scale, as float64."""
    import numpy as np

    scaled = np.array(values, dtype=np.float64)
    for column, dimension in enumerate(dimensions):
        scaled[:, column] = dimension.denormalize(scaled[:, column])
    return scaled


def corpus_dimensions(corpus, names: Sequence[str]) -> list[Dimension]:
    """The `names` dimensions of a prepared corpus with their scales, or a one-line error naming the
    corpus and the columns looked for when it has no scores of one."""
    scales = corpus_scales(corpus)
    present = {column for utterance in corpus.utterances for column, text in utterance.extras.items() if text}
    missing = [name for name in names if name not in scales or not present.intersection(COLUMNS[name])]
    if missing:
        looked = "; ".join(f"{name}: {' or '.join(COLUMNS[name])}" for name in missing)
        reason = (
            "no attribute scale in folds.json" if all(name not in scales for name in missing)
            else "no clip has a score"
        )
        raise SertuneError(
            f"corpus {corpus.name} ({corpus.root}) has no {', '.join(missing)} scores ({reason}); looked for the "
            f"manifest column(s) {looked}. Use --task categorical, or a corpus with attribute scores "
            "(IEMOCAP, MSP-IMPROV, MSP-Podcast, or `sertune synth`)"
        )
    return [Dimension(name, *scales[name]) for name in names]


def corpus_scales(corpus) -> dict[str, Scale]:
    """Each dimension's scale: as `folds.json` records it, or (corpora prepared before scales were
    recorded) as the corpus's reader knows it."""
    if corpus.scales:
        return dict(corpus.scales)
    from sertune.corpora import CORPORA  # the registry imports every corpus module

    spec = CORPORA.get(corpus.name)
    return dict(spec.scales) if spec is not None else {}


def shared_scales(scales: Iterable[Mapping[str, Scale]]) -> tuple[dict[str, Scale], list[str]]:
    """The scales several corpora agree on, and the dimensions left out because their scales differ."""
    collected = list(scales)
    names = sorted({name for each in collected for name in each}, key=DIMENSIONS.index)
    agreed, dropped = {}, []
    for name in names:
        found = {tuple(each[name]) for each in collected if name in each}
        if len(found) == 1 and all(name in each for each in collected):
            agreed[name] = found.pop()
        else:
            dropped.append(name)
    return agreed, dropped
