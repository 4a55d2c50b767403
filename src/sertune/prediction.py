"""What a prediction is and how a run's audio is cut, without torch: results, audio settings, windows.

`sertune.inference` computes these; they live apart so that the command line (and anything that
only reads results) can use them without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

Span = tuple[int, int]  # [start, end) in samples

# Used when a run's sertune.json predates the "audio" settings (the study's 6-s training crop).
DEFAULT_MAX_SECONDS = 6.0
DEFAULT_EVAL_MAX_SECONDS = 30.0
# Clips (or windows) per forward pass, unless the caller asks for another size.
DEFAULT_BATCH_SIZE = 8
# A window, hop or segment longer than an hour is a typo, and inf or 1e305 would overflow the sample arithmetic.
MAX_WINDOW_SECONDS = 3600.0


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Scores:
    """What the model says about one stretch of audio: its class (None for a model without classes) and
    probabilities, and its attribute dimensions on the training corpus's scale and normalised to [0, 1]."""

    label: str | None
    probabilities: dict[str, float]
    # Raw class logits of one forward pass; None for a windowed clip, whose answer averages probabilities.
    logits: list[float] | None
    silent: bool
    dimensions: dict[str, float] | None = None
    dimensions_normalized: dict[str, float] | None = None


@dataclass
class WindowPrediction(Scores):
    """The scores of one window of a long clip; `start` and `end` in seconds."""

    start: float = 0.0
    end: float = 0.0


@dataclass
class Prediction(Scores):
    """The answer for one input: its label and probabilities, and the windows it was cut into (if any).

    For a windowed clip `probabilities` is the mean of the windows' probabilities and `label` their
    argmax; its dimensions are the mean of the windows'.
    """

    duration: float = 0.0
    windows: list[WindowPrediction] | None = None
    source: str | None = None  # the file, when the input was one
    model: str | None = None  # the predictor's name, when it has one (served models do)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the shape `sertune predict --json` and the server return)."""
        return asdict(self)


@dataclass
class SegmentPrediction(WindowPrediction):
    """The scores of one speech segment of a recording cut at its pauses (`sertune.segmentation`)."""


@dataclass
class Timeline:
    """A recording's speech segments in time order, each scored alone; no segments when it holds no speech.

    `labels` and `dimensions` name the classes and dimensions every segment reports, in the model's order.
    """

    duration: float
    segments: list[SegmentPrediction]
    labels: list[str]
    dimensions: list[str] = field(default_factory=list)
    min_segment: float = 0.0
    max_segment: float = 0.0
    source: str | None = None
    model: str | None = None

    @property
    def no_speech(self) -> bool:
        """Whether voice activity detection found no speech at all (silence, noise): not an error."""
        return not self.segments

    @property
    def message(self) -> str | None:
        """The words "no speech" for a recording without speech; None otherwise."""
        return "no speech" if self.no_speech else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (`sertune predict --segment vad --json`), `no_speech` and `message` included."""
        return {**asdict(self), "no_speech": self.no_speech, "message": self.message}


@dataclass
class ModelInfo:
    """What a predictor serves; `eval_max_seconds` is the longest clip it takes whole, `precision` the
    autocast it computes in ("no": float32)."""

    name: str | None
    labels: list[str]
    backbone: str
    method: str
    merged: bool
    checkpoint: str | None
    fold: str | None
    sample_rate: int
    window_seconds: float
    eval_max_seconds: float
    precision: str
    shares_encoder_with: list[str] = field(default_factory=list)
    # The head's normalisation of layer outputs ("speaker", "global" or "none"): a "speaker" model
    # normalises each clip here with its training speakers' statistics (see docs/training.md).
    normalization: str = "none"
    # The attribute dimensions it predicts with their corpus scales: [{"name", "low", "high"}, ...].
    dimensions: list[dict[str, Any]] = field(default_factory=list)


# -- settings ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioSettings:
    """How a run's clips were prepared: rate, training crop, and the longest clip evaluated whole."""

    sample_rate: int = 16000
    max_seconds: float = DEFAULT_MAX_SECONDS
    eval_max_seconds: float = DEFAULT_EVAL_MAX_SECONDS

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> AudioSettings:
        """The `audio` entry of a `sertune.json`, with the study's defaults for what it lacks."""
        audio = metadata.get("audio") or {}
        return cls(
            sample_rate=int(audio.get("sample_rate", 16000)),
            max_seconds=float(audio.get("max_seconds") or DEFAULT_MAX_SECONDS),
            eval_max_seconds=float(audio.get("eval_max_seconds") or DEFAULT_EVAL_MAX_SECONDS),
        )


@dataclass(frozen=True)
class WindowPlan:
    """Clips longer than `whole_limit` samples are cut into `window`-sample windows, `hop` apart."""

    whole_limit: int
    window: int
    hop: int

    def spans(self, length: int) -> list[Span]:
        """Sample spans of a clip of `length` samples: the whole clip, or full windows covering it.

        The last window is moved back to end at the clip's end, so every window is full length
        (no short tail that would be scored on less audio, or be shorter than the encoder allows).
        """
        if length <= self.whole_limit:
            return [(0, length)]
        starts = [*range(0, length - self.window, self.hop), length - self.window]
        return [(start, start + self.window) for start in starts]
