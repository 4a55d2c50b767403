"""Long recordings cut at their pauses: Silero VAD finds the speech, each segment is predicted alone.

`speech_segments` runs Silero VAD (its model ships inside the `silero-vad` package: no download);
`fit_segments` brings the segments to lengths the model was trained on (short ones merged with a
neighbour, long ones split into near-equal parts); `timeline` predicts them in shared batches and
returns a `Timeline`; `plot_timeline` draws it. Everything here may be called from several threads at
once: the only shared state is the VAD model, loaded once under a lock, and the model used
(Silero's batched "sequence" ONNX model) keeps no state between calls.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sertune.audio import resample
from sertune.errors import SertuneError
from sertune.fileio import atomic_path
from sertune.prediction import SegmentPrediction, Timeline

if TYPE_CHECKING:
    from sertune.inference import Predictor

Segment = tuple[float, float]  # (start, end) in seconds

VAD_RATE = 16000  # Silero VAD takes 8 or 16 kHz; the encoders' rate is 16 kHz anyway
# Speech shorter than this is dropped by the VAD (Silero's own default): clicks, breaths.
DEFAULT_MIN_SPEECH = 0.25
# Padding Silero adds around each stretch of speech, so that onsets and word ends are not clipped.
DEFAULT_SPEECH_PAD = 0.03
# A short segment is merged with a neighbour at most this far away; farther, it stays on its own rather
# than take in a long silence.
DEFAULT_MAX_GAP = 1.0
# Segments shorter than this say little about emotion: the default `min_segment` (unless the encoder needs more).
DEFAULT_MIN_SEGMENT = 1.0
# Floating-point slack when deciding how many parts a long segment needs (a 12.0000001-s segment of a
# 6-s maximum is 2 parts, not 3).
_SLACK = 1e-6


# -- voice activity ------------------------------------------------------------------------------
class SileroVad:
    """Silero VAD's per-frame (32 ms) speech probabilities, callable from several threads at once.

    The batched "sequence" ONNX model (onnxruntime) keeps its LSTM state in local variables, so calls
    never share state, and it is 5-10x faster than the streaming models on CPU (measured on 2 cores for
    60 s of audio: 0.06-0.13 s, against 0.6 s for the streaming ONNX model and 0.5-1.0 s for TorchScript),
    with the streaming ONNX model's probabilities bit for bit. Without onnxruntime the TorchScript model is used: it
    keeps state between calls, hence the lock around it; its timestamps are the same.
    """

    def __init__(self) -> None:
        import torch

        # silero_vad sets torch's thread count to 1 for the whole process when imported: that would
        # slow every encoder forward after it, so the count is put back.
        threads = torch.get_num_threads()
        try:
            import silero_vad
        finally:
            torch.set_num_threads(threads)
        self._timestamps = silero_vad.get_speech_timestamps_from_probs
        self._lock = threading.Lock()
        try:
            self._model = silero_vad.load_silero_vad(sequence=True)
            self.backend = "onnx-sequence"
        except ImportError:  # onnxruntime is not installed
            self._model = silero_vad.load_silero_vad(onnx=False)
            self.backend = "torchscript"

    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """Speech probability of every 512-sample frame of a 16-kHz waveform (the last one zero-padded)."""
        if self.backend == "onnx-sequence":
            return self._model.audio_forward(wave, VAD_RATE)
        import torch

        with self._lock, torch.inference_mode():
            return self._model.audio_forward(torch.from_numpy(wave), VAD_RATE).numpy().reshape(-1)

    def speech(self, wave: np.ndarray, **settings: float) -> list[tuple[int, int]]:
        """(start, end) samples of the speech in a 16-kHz waveform; `settings` as Silero's
        `get_speech_timestamps` takes them."""
        stamps = self._timestamps(
            self.probabilities(wave).tolist(), sampling_rate=VAD_RATE, audio_length_samples=len(wave), **settings
        )
        return [(stamp["start"], stamp["end"]) for stamp in stamps]


_VAD: SileroVad | None = None
_VAD_GUARD = threading.Lock()


def vad_model() -> SileroVad:
    """The process's Silero VAD, loaded on first use (10-100 ms)."""
    global _VAD
    with _VAD_GUARD:
        if _VAD is None:
            _VAD = SileroVad()
        return _VAD


def speech_segments(
    wave: np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_silence: float = 0.3,
    min_speech: float = DEFAULT_MIN_SPEECH,
    pad: float = DEFAULT_SPEECH_PAD,
) -> list[Segment]:
    """Where `wave` (mono, `sample_rate` Hz) holds speech, per Silero VAD: (start, end) seconds in order.

    A frame is speech from a probability of `threshold` on; speech ends at a pause of `min_silence`
    seconds or more; stretches shorter than `min_speech` are dropped and each is padded by `pad` seconds
    (Silero's `get_speech_timestamps` settings). Silence or noise gives an empty list.
    """
    if not 0 < threshold < 1:
        raise SertuneError(f"VAD threshold {threshold:g}: must be between 0 and 1")
    for name, value in (("min_silence", min_silence), ("min_speech", min_speech), ("pad", pad)):
        if not (math.isfinite(value) and value >= 0):
            raise SertuneError(f"VAD {name} {value:g}: must be a finite number of seconds, 0 or more")
    wave = resample(np.asarray(wave, dtype=np.float32).reshape(-1), sample_rate, VAD_RATE)
    if not len(wave):
        return []
    spans = vad_model().speech(
        wave, threshold=threshold, min_speech_duration_ms=min_speech * 1000,
        min_silence_duration_ms=min_silence * 1000, speech_pad_ms=pad * 1000,
    )
    return [(start / VAD_RATE, end / VAD_RATE) for start, end in spans]


# -- segment lengths -----------------------------------------------------------------------------
def fit_segments(
    segments: Sequence[Segment],
    *,
    min_segment: float,
    max_segment: float,
    total: float,
    max_gap: float = DEFAULT_MAX_GAP,
) -> list[Segment]:
    """`segments` (seconds, in time order) brought to lengths between `min_segment` and `max_segment`.

    Segments are clipped to [0, `total`]. One shorter than `min_segment` is merged with its nearer
    neighbour when that is at most `max_gap` seconds away (repeatedly, until long enough); an isolated
    short one stays as it is rather than take in a long silence. Then every segment longer than
    `max_segment` is split into the fewest near-equal parts that fit.
    """
    _check_lengths(min_segment, max_segment)
    if not (math.isfinite(max_gap) and max_gap >= 0):
        raise SertuneError(f"max_gap {max_gap:g}: must be a finite number of seconds, 0 or more")
    clipped = sorted((max(0.0, start), min(total, end)) for start, end in segments)
    clipped = [(start, end) for start, end in clipped if end > start]
    return [part for segment in _merge_short(clipped, min_segment, max_gap) for part in _split(segment, max_segment)]


def _check_lengths(min_segment: float, max_segment: float) -> None:
    if not (math.isfinite(min_segment) and min_segment > 0):
        raise SertuneError(f"minimum segment {min_segment:g} s: must be a positive number of seconds")
    if not (math.isfinite(max_segment) and max_segment >= min_segment):
        raise SertuneError(
            f"maximum segment {max_segment:g} s: must be a number of seconds no shorter than the minimum, "
            f"{min_segment:g} s"
        )


def _merge_short(segments: list[Segment], min_segment: float, max_gap: float) -> list[Segment]:
    """One pass in time order: a short segment joins its nearer neighbour (within `max_gap`).

    A finished segment on the left is either long enough or isolated (more than `max_gap` from the
    next), so joining it never leaves a short one behind; a join to the right is looked at again.
    """
    done: list[Segment] = []
    pending = segments[::-1]  # a stack: the next segment is last
    while pending:
        start, end = pending.pop()
        left_gap = start - done[-1][1] if done else math.inf
        right_gap = pending[-1][0] - end if pending else math.inf
        if end - start >= min_segment or min(left_gap, right_gap) > max_gap:
            done.append((start, end))
        elif left_gap <= right_gap:
            done[-1] = (done[-1][0], end)
        else:
            pending.append((start, pending.pop()[1]))
    return done


def _split(segment: Segment, max_segment: float) -> list[Segment]:
    start, end = segment
    parts = max(1, math.ceil((end - start) / max_segment - _SLACK))
    step = (end - start) / parts
    return [(start + i * step, end if i == parts - 1 else start + (i + 1) * step) for i in range(parts)]


# -- the timeline --------------------------------------------------------------------------------
def default_lengths(predictor: Predictor) -> tuple[float, float]:
    """The run's segment lengths: (1 s or the encoder's minimum input if longer, the training crop)."""
    longest = predictor.audio.max_seconds
    shortest = max(DEFAULT_MIN_SEGMENT, predictor.backbone.min_samples / predictor.sample_rate)
    return min(shortest, longest), longest


def timeline(
    predictor: Predictor,
    wave: np.ndarray,
    *,
    min_segment: float | None = None,
    max_segment: float | None = None,
    max_gap: float = DEFAULT_MAX_GAP,
    threshold: float = 0.5,
    min_silence: float = 0.3,
    source: str | None = None,
) -> Timeline:
    """The emotion timeline of a recording: its speech segments (see `speech_segments`, `fit_segments`),
    each predicted alone, all in shared batches.

    `wave` is the model's waveform (`predictor.waveform(path_or_array)`). `min_segment` / `max_segment`
    default to `default_lengths(predictor)`. A segment is scored exactly as `predictor.predict` scores
    the same samples as a clip. A recording without speech gives a timeline without segments
    (`no_speech`), not an error. Safe to call from several threads (see the module docstring).
    """
    default_min, default_max = default_lengths(predictor)
    max_segment = default_max if max_segment is None else max_segment
    min_segment = min(default_min, max_segment) if min_segment is None else min_segment
    _check_lengths(min_segment, max_segment)
    rate = predictor.sample_rate
    found = speech_segments(wave, rate, threshold=threshold, min_silence=min_silence)
    fitted = fit_segments(found, min_segment=min_segment, max_segment=max_segment, total=len(wave) / rate,
                          max_gap=max_gap)
    spans = [(round(start * rate), round(end * rate)) for start, end in fitted]
    # A segment the encoder cannot take (only from a tiny `max_segment`) is better dropped than an error.
    spans = [(start, end) for start, end in spans if end - start >= predictor.backbone.min_samples]
    predictions = predictor.predict_waveforms([wave[start:end] for start, end in spans]) if spans else []
    segments = [
        SegmentPrediction(
            label=p.label, probabilities=p.probabilities, logits=p.logits, silent=p.silent, dimensions=p.dimensions,
            dimensions_normalized=p.dimensions_normalized, start=start / rate, end=end / rate,
        )
        for (start, end), p in zip(spans, predictions, strict=True)
    ]
    return Timeline(
        duration=len(wave) / rate, segments=segments, labels=list(predictor.labels),
        dimensions=[d.name for d in predictor.dimensions], min_segment=min_segment, max_segment=max_segment,
        source=source, model=predictor.name,
    )


# -- the plot ------------------------------------------------------------------------------------
def plot_timeline(timeline: Timeline, path: str | os.PathLike) -> None:
    """Draw `timeline` as a PNG at `path` (written atomically): a band per segment coloured by its label,
    the class probabilities over time, and the dimensions (normalised to [0, 1]) when the model has them.

    Uses matplotlib's object API (no pyplot), so plots may be drawn from several threads at once.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colormaps["tab10"].colors
    colours = {label: palette[i % len(palette)] for i, label in enumerate(timeline.labels)}
    curves = [("probability", timeline.labels, "probabilities", colours)] if timeline.labels else []
    if timeline.dimensions:
        dark = colormaps["Dark2"].colors
        dimension_colours = {name: dark[i % len(dark)] for i, name in enumerate(timeline.dimensions)}
        curves.append(("dimension (0-1)", timeline.dimensions, "dimensions_normalized", dimension_colours))
    width = min(24.0, max(8.0, timeline.duration / 5))
    figure = Figure(figsize=(width, 1.5 + 2.2 * len(curves)), layout="constrained")
    rows = figure.subplots(1 + len(curves), 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": [0.6] + [2] * len(curves)})[:, 0]
    bands = rows[0]
    for segment in timeline.segments:
        bands.axvspan(segment.start, segment.end, color=colours.get(segment.label, "0.6"), alpha=0.85, lw=0)
    bands.set_yticks([])
    bands.set_xlim(0, max(timeline.duration, 1e-3))
    if timeline.no_speech:
        bands.text(0.5, 0.5, "no speech", transform=bands.transAxes, ha="center", va="center")
    elif timeline.labels:
        used = [label for label in timeline.labels if any(s.label == label for s in timeline.segments)]
        bands.legend(handles=[Patch(color=colours[label], label=label) for label in used], loc="upper left",
                     bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    title = os.path.basename(timeline.source) if timeline.source else "timeline"
    bands.set_title(f"{title}: {len(timeline.segments)} speech segment(s), {timeline.duration:.1f} s", fontsize=10)
    for axes, (name, keys, attribute, palette_of) in zip(rows[1:], curves, strict=True):
        for key in keys:
            times, values = _steps(timeline, lambda s, key=key, attribute=attribute: getattr(s, attribute)[key])
            axes.plot(times, values, color=palette_of[key], label=key, lw=1.4)
        axes.set_ylim(-0.02, 1.02)
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    rows[-1].set_xlabel("time (s)")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def _steps(timeline: Timeline, value: Callable[[SegmentPrediction], float]) -> tuple[list[float], list[float]]:
    """A step curve: each segment's value held over its span, broken (NaN) across the pauses."""
    times: list[float] = []
    values: list[float] = []
    for segment in timeline.segments:
        level = value(segment)
        times += [segment.start, segment.end, segment.end]
        values += [level, level, math.nan]
    return times, values
