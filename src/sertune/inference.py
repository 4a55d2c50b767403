"""Predict emotions with a trained run: files or arrays in, labels and class probabilities out.

`load(run_dir)` finds the checkpoint a run serves (docs/runs.md), rebuilds the classifier on its
encoder, folds LoRA into the encoder when nothing else shares it, and returns a `Predictor`.
Audio is prepared as training evaluated it: 16 kHz mono through `sertune.audio.load_audio`, the
clip used whole up to the run's `eval_max_seconds`. Longer audio is cut into overlapping windows
(by default the training crop length, hop half of it); the clip's answer is the mean of the
windows' probabilities. `load_many` puts several runs that were trained on the same encoder onto
ONE copy of it, each as a named adapter (what `sertune serve` does).

`precision` ("auto", "no", "bf16", "fp16"; see `sertune.precision`) runs the classifier's forward
under torch autocast in bf16 or fp16; "auto" picks bf16 only where the device computes it natively.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sertune.audio import load_audio, resample
from sertune.backbones import Backbone
from sertune.backbones.whisper import HOP_LENGTH
from sertune.checkpoint import backbone_from_source, load_classifier, read_metadata
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.model import EmotionClassifier
from sertune.precision import resolve_precision
from sertune.prediction import (
    DEFAULT_BATCH_SIZE,
    MAX_WINDOW_SECONDS,
    AudioSettings,
    ModelInfo,
    Prediction,
    Span,
    WindowPlan,
    WindowPrediction,
)
from sertune.runs import ResolvedRun, resolve_run

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[float]

# RMS below this (dB relative to full scale) counts as silence: far under any recorded speech, above
# digital zero and dithering.
SILENCE_DBFS = -60.0
# Float samples are relative to full scale 1.0. Peaks somewhat over it occur (unclipped float masters),
# but 1e4 (80 dB over full scale) or more is a broken or unscaled file; far larger values overflow the
# encoders' float32 arithmetic (squared, summed over a frame) into NaN logits.
MAX_ABS_SAMPLE = 1e4
_MAX_CHANNELS = 32  # a 2-D array with more columns than this is taken to be [channels, samples]


# -- the predictor ---------------------------------------------------------------------------------
_LOCKS: weakref.WeakKeyDictionary[Backbone, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def backbone_lock(backbone: Backbone) -> threading.Lock:
    """The one lock of a backbone: held around activate + forward, so that predictors sharing the
    encoder from several threads never run with each other's adapter active."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(backbone, threading.Lock())


class Predictor:
    """A trained classifier ready for inference: `predict(audio)` -> `Prediction`.

    Thread-safe: predictors that share a backbone take turns on it.
    """

    def __init__(
        self,
        classifier: EmotionClassifier,
        audio: AudioSettings,
        *,
        run: ResolvedRun | None = None,
        name: str | None = None,
        window: float | None = None,
        hop: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str = "auto",
    ) -> None:
        self.classifier = classifier.eval()
        self.audio = audio
        self.run = run
        self.name = name
        self.batch_size = max(1, batch_size)
        # (precision, why): "auto" resolved for the device the classifier is on, e.g. ("no", "auto: CPU ...").
        self.precision, self.precision_reason = resolve_precision(precision, self.backbone.device.type)
        self._lock = backbone_lock(classifier.backbone)
        self.default_plan = self.plan(window, hop)  # checks the run's settings once, at load time

    # -- what the model is ---------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def dimensions(self) -> list[Dimension]:
        return self.classifier.dimensions

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    @property
    def backbone(self) -> Backbone:
        return self.classifier.backbone

    def info(self) -> ModelInfo:
        """Name, labels, encoder, method and checkpoint of the model (what GET /models lists)."""
        return ModelInfo(
            name=self.name,
            labels=self.labels,
            backbone=self.backbone.name,
            method=self.classifier.tuning_config.method,
            merged=self.classifier.merged,
            checkpoint=str(self.run.checkpoint) if self.run else None,
            fold=self.run.fold if self.run else None,
            sample_rate=self.sample_rate,
            window_seconds=self.default_plan.window / self.sample_rate,
            eval_max_seconds=self.default_plan.whole_limit / self.sample_rate,
            precision=self.precision,
            normalization=self.classifier.head_config.normalization,
            dimensions=[dimension.to_dict() for dimension in self.dimensions],
        )

    # -- preparing input -----------------------------------------------------------------------
    def plan_for(self, window: float | None, hop: float | None) -> WindowPlan:
        """The windowing a call asks for: the predictor's own (`default_plan`) unless it gives a window or hop."""
        return self.default_plan if window is None and hop is None else self.plan(window, hop)

    def plan(self, window: float | None = None, hop: float | None = None) -> WindowPlan:
        """Windowing for these window/hop seconds (None: the run's training crop, half of it as hop).

        Without an explicit window, clips up to the run's `eval_max_seconds` are taken whole, as
        training evaluated them; with one, anything longer than the window is windowed.
        """
        rate = self.sample_rate
        limit = self._encoder_limit()
        for name, value in (("window", window), ("hop", hop)):
            if value is not None and not 0 < value <= MAX_WINDOW_SECONDS:
                raise SertuneError(
                    f"{name} {value:g} s: need a finite number of seconds in (0, {MAX_WINDOW_SECONDS:g}]"
                )
        whole_seconds = self.audio.eval_max_seconds if window is None else window
        window = self.audio.max_seconds if window is None else window
        hop = window / 2 if hop is None else hop
        if not (window > 0 and 0 < hop <= window):
            raise SertuneError(f"window {window:g} s and hop {hop:g} s: need 0 < hop <= window")
        window_samples, hop_samples = round(window * rate), max(1, round(hop * rate))
        if window_samples < self.backbone.min_samples:
            raise SertuneError(f"a {window:g}-s window is shorter than {self.backbone.name}'s minimum input")
        if limit is not None and window_samples > limit:
            raise SertuneError(f"a {window:g}-s window is longer than {self.backbone.name} encodes at once")
        whole = round(whole_seconds * rate)
        # Whisper cannot take more than 30 s at once however the run was evaluated.
        whole = min(whole, limit) if limit is not None else whole
        return WindowPlan(whole_limit=max(whole, window_samples), window=window_samples, hop=hop_samples)

    def _encoder_limit(self) -> int | None:
        """The most samples the encoder takes at once (Whisper: its 1500-frame positional table)."""
        frames = getattr(self.backbone, "max_frames", None)
        return None if frames is None else frames * 2 * HOP_LENGTH  # conv2 halves the mel frames

    def waveform(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """`audio` as the model's float32 mono waveform, checked for what the model can take.

        A path is read with `load_audio` (any format soundfile reads; `sample_rate` is ignored).
        An array is `[samples]`, `[samples, channels]` or `[channels, samples]`, float in [-1, 1]
        or integer PCM, at `sample_rate` Hz (default: the model's rate). Samples that are not finite or
        reach `MAX_ABS_SAMPLE` are refused as out of range.
        """
        if isinstance(audio, (str, os.PathLike)):
            wave, name = load_audio(audio, self.sample_rate), os.fspath(audio)
        else:
            wave, name = self._from_array(audio, sample_rate), "the audio"
        check_range(wave, name)
        if len(wave) < self.backbone.min_samples:
            raise SertuneError(
                f"{name} is too short: {len(wave) / self.sample_rate * 1000:.1f} ms, but {self.backbone.name} "
                f"needs at least {self.backbone.min_samples / self.sample_rate * 1000:.1f} ms"
            )
        return wave

    def _from_array(self, audio: np.ndarray | torch.Tensor | Sequence[float], sample_rate: int | None) -> np.ndarray:
        array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if np.issubdtype(array.dtype, np.integer):  # PCM: full scale is the type's range
            array = array / float(np.iinfo(array.dtype).max + 1)
        array = array.astype(np.float32, copy=False)
        if array.ndim == 2:
            if array.shape[1] > _MAX_CHANNELS >= array.shape[0]:
                array = array.T
            array = array.mean(axis=1)
        if array.ndim != 1:
            raise SertuneError(f"expected a waveform of shape [samples] or [samples, channels], got {array.shape}")
        if array.size == 0:
            raise SertuneError("the audio holds no samples")
        return resample(array, sample_rate or self.sample_rate, self.sample_rate)

    # -- predicting ----------------------------------------------------------------------------
    def predict(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        window: float | None = None,
        hop: float | None = None,
    ) -> Prediction:
        """Label and per-class probabilities of one file or array (windows too, for long audio)."""
        return self.predict_many([audio], sample_rate, window=window, hop=hop)[0]

    def predict_many(
        self,
        inputs: Iterable[AudioInput],
        sample_rate: int | None = None,
        *,
        window: float | None = None,
        hop: float | None = None,
    ) -> list[Prediction]:
        """`predict` for many inputs, their clips and windows run through the encoder in batches."""
        waves, sources = [], []
        for item in inputs:
            waves.append(self.waveform(item, sample_rate))
            sources.append(os.fspath(item) if isinstance(item, (str, os.PathLike)) else None)
        return self.predict_waveforms(waves, sources=sources, window=window, hop=hop)

    def predict_waveforms(
        self,
        waves: Sequence[np.ndarray],
        *,
        sources: Sequence[str | None] | None = None,
        window: float | None = None,
        hop: float | None = None,
    ) -> list[Prediction]:
        """Predictions for waveforms already prepared by `waveform` (the model's rate, mono)."""
        plan = self.plan_for(window, hop)
        spans = [plan.spans(len(wave)) for wave in waves]
        segments = [wave[start:end] for wave, clip_spans in zip(waves, spans, strict=True) for start, end in clip_spans]
        logits = iter(self.logits(segments))
        sources = sources or [None] * len(waves)
        predictions = []
        for wave, clip_spans, source in zip(waves, spans, sources, strict=True):
            parts = [(span, next(logits)) for span in clip_spans]
            predictions.append(self.assemble(wave, parts, source))
        return predictions

    def logits(self, waves: Sequence[np.ndarray], statistics: tuple[np.ndarray, np.ndarray] | None = None
               ) -> np.ndarray:
        """Raw outputs [len(waves), classes + dimensions] of each waveform taken whole, in batches: the class
        logits, then the dimensions normalised to [0, 1].

        `statistics` (mean, std [layers + 1, hidden]) normalise every wave's layer outputs, e.g. those of
        the waves' own speaker; without them a speaker-normalised head uses its training statistics.
        """
        output = np.zeros((len(waves), len(self.labels) + len(self.dimensions)), dtype=np.float32)
        for batch in self._batches([len(wave) for wave in waves]):
            output[batch] = self._forward([waves[i] for i in batch], statistics)
        if not np.isfinite(output).all():
            raise SertuneError("the model produced non-finite logits; the checkpoint may be corrupt")
        return output

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches of similar length (longest first, for less padding).

        A group-norm conv front end (wav2vec2 / HuBERT base, WavLM Base+) normalises over the padding
        too (measured: logits move by 1e-2), so there only equal lengths share a batch: a clip's
        answer must not depend on what it was predicted with.
        """
        pads_exactly = getattr(self.backbone.model.config, "feat_extract_norm", "layer") == "layer"
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for index in order:
            last = batches[-1] if batches else None
            fits = last is not None and len(last) < self.batch_size
            if fits and (pads_exactly or lengths[last[0]] == lengths[index]):
                last.append(index)
            else:
                batches.append([index])
        return batches

    def _forward(self, waves: list[np.ndarray], statistics: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> np.ndarray:
        lengths = torch.tensor([len(wave) for wave in waves])
        batch = torch.zeros(len(waves), int(lengths.max()))
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = torch.from_numpy(wave)
        device = self.backbone.device
        if statistics is not None:
            statistics = tuple(torch.from_numpy(s).to(device).expand(len(waves), *s.shape) for s in statistics)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with self._lock, torch.inference_mode(), autocast:
            logits = self.classifier(batch.to(device), lengths.to(device), statistics)
        return logits.float().cpu().numpy()

    def _scores(self, outputs: np.ndarray, wave: np.ndarray) -> dict[str, Any]:
        n = len(self.labels)
        logits = outputs[:n]
        probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy() if n else logits
        return {**self._answer(probabilities, outputs[n:]), "logits": logits.tolist() if n else None,
                "silent": is_silent(wave)}

    def _answer(self, probabilities: np.ndarray, normalized: np.ndarray) -> dict[str, Any]:
        """Label, probabilities and dimensions (both scales) from class probabilities and normalised values."""
        answer: dict[str, Any] = {
            "label": self.labels[int(np.argmax(probabilities))] if self.labels else None,
            "probabilities": dict(zip(self.labels, probabilities.tolist(), strict=True)),
        }
        if self.dimensions:
            answer["dimensions"] = {
                d.name: float(d.denormalize(float(value))) for d, value in zip(self.dimensions, normalized, strict=True)
            }
            answer["dimensions_normalized"] = {
                d.name: float(value) for d, value in zip(self.dimensions, normalized, strict=True)
            }
        return answer

    def assemble(self, wave: np.ndarray, parts: list[tuple[Span, np.ndarray]], source: str | None) -> Prediction:
        """The answer for `wave` from the outputs of its spans (one span: the clip whole; more: windows)."""
        rate = self.sample_rate
        duration = len(wave) / rate
        if len(parts) == 1 and parts[0][0] == (0, len(wave)):
            return Prediction(**self._scores(parts[0][1], wave), duration=duration, source=source, model=self.name)
        windows = [
            WindowPrediction(**self._scores(outputs, wave[start:end]), start=start / rate, end=end / rate)
            for (start, end), outputs in parts
        ]
        probabilities = np.mean([[w.probabilities[label] for label in self.labels] for w in windows], axis=0)
        normalized = np.mean([[w.dimensions_normalized[d.name] for d in self.dimensions] for w in windows], axis=0)
        return Prediction(
            **self._answer(probabilities if self.labels else np.zeros(0), normalized if self.dimensions else None),
            logits=None,
            silent=is_silent(wave),
            duration=duration,
            windows=windows,
            source=source,
            model=self.name,
        )


def check_range(wave: np.ndarray, name: str) -> None:
    """Refuse samples the encoders cannot compute with: NaN, infinite, or `MAX_ABS_SAMPLE` and beyond.

    Without this such input comes out as non-finite logits, which reads as a broken checkpoint.
    """
    if not np.isfinite(wave).all():
        raise SertuneError(f"{name}: input out of range: it holds NaN or infinite samples; re-export the audio")
    peak = float(np.abs(wave).max(initial=0.0))
    if peak >= MAX_ABS_SAMPLE:
        raise SertuneError(
            f"{name}: input out of range: peak sample {peak:.3g} where full scale is 1.0 (limit {MAX_ABS_SAMPLE:g}); "
            "rescale the audio to [-1, 1]"
        )


def is_silent(wave: np.ndarray) -> bool:
    """Whether the RMS level of `wave` is below `SILENCE_DBFS`."""
    rms = math.sqrt(float(np.mean(np.square(wave, dtype=np.float64)))) if len(wave) else 0.0
    return rms == 0.0 or 20 * math.log10(rms) < SILENCE_DBFS


# -- loading ---------------------------------------------------------------------------------------
def default_device() -> str:
    """A GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device | None) -> str | torch.device:
    """`device` (default: `default_device()`) if this machine has it; else a one-line `SertuneError`."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise SertuneError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N (or mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SertuneError(f"device {str(device)!r}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SertuneError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SertuneError(f"device {str(device)!r}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise SertuneError(f"device {str(device)!r}: sertune runs on cpu, cuda or mps")
    return device


def load(
    run_dir: str | os.PathLike,
    *,
    fold: str | None = None,
    device: str | torch.device | None = None,
    window: float | None = None,
    hop: float | None = None,
    merge: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
) -> Predictor:
    """A `Predictor` for a trained run (checkpoint, fold or run directory; see `resolve_run`).

    LoRA is folded into the encoder (`merge=False` keeps it separate: bit-for-bit the training
    forward, slightly slower). `window`/`hop` (seconds) override how long audio is cut.
    `precision` is the forward's autocast (see the module docstring).
    """
    run = resolve_run(run_dir, fold)
    classifier = load_classifier(run.checkpoint, device=check_device(device))
    if merge:
        classifier.merge()
    audio = AudioSettings.from_metadata(read_metadata(run.checkpoint))
    return Predictor(classifier, audio, run=run, window=window, hop=hop, batch_size=batch_size, precision=precision)


class EncoderPool:
    """Encoders loaded once each; every run added becomes a named adapter on its run's encoder.

    Runs share an encoder when their sertune.json names the same backbone and source. `full`
    fine-tuning changes the encoder's own weights, so such a run always gets a copy of its own.
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        window: float | None = None,
        hop: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str = "auto",
    ) -> None:
        self.device = check_device(device)
        self.settings = {"window": window, "hop": hop, "batch_size": batch_size, "precision": precision}
        self.backbones: dict[str, Backbone] = {}
        self.predictors: dict[str, Predictor] = {}

    def add(self, name: str, path: str | os.PathLike, *, fold: str | None = None) -> Predictor:
        """Load run `path` as model `name`, on an encoder already in the pool when it has the run's one."""
        check_model_name(name)
        if name in self.predictors:
            raise SertuneError(f"a model named {name!r} is already loaded")
        run = resolve_run(path, fold)
        metadata = read_metadata(run.checkpoint)
        key = backbone_key(metadata) if metadata["tuning"].get("method") != "full" else f"full:{name}"
        backbone = self.backbones.get(key)
        if backbone is None:
            spec = metadata["backbone"]
            backbone = self.backbones[key] = backbone_from_source(spec["name"], spec["source"], device=self.device)
        with warnings.catch_warnings():
            # peft warns that a second adapter joins the model: sharing the encoder is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            classifier = load_classifier(run.checkpoint, backbone=backbone, adapter_name=name, device=self.device)
        predictor = Predictor(classifier, AudioSettings.from_metadata(metadata), run=run, name=name, **self.settings)
        self.predictors[name] = predictor
        return predictor

    def merge_lone_adapters(self) -> None:
        """Fold LoRA into every encoder that holds a single run (LoRA cannot be merged into a shared one)."""
        for predictor in self.predictors.values():
            if len(predictor.backbone.tuning.configs) == 1:
                predictor.classifier.merge()


def load_many(
    runs: Mapping[str, str | os.PathLike],
    *,
    device: str | torch.device | None = None,
    window: float | None = None,
    hop: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
) -> dict[str, Predictor]:
    """Predictors for named runs (name -> run, fold or checkpoint directory), ONE copy of each encoder
    in memory (see `EncoderPool`); an encoder that serves a single run gets its LoRA merged.
    `precision` is every predictor's forward autocast (see the module docstring)."""
    pool = EncoderPool(device=device, window=window, hop=hop, batch_size=batch_size, precision=precision)
    for name, path in runs.items():
        pool.add(name, path)
    pool.merge_lone_adapters()
    return pool.predictors


def backbone_key(metadata: Mapping[str, Any]) -> str:
    """Identity of the encoder a run was trained on: its name and where it was loaded from."""
    backbone = metadata["backbone"]
    return json.dumps([backbone["name"], backbone.get("source")], sort_keys=True)


def check_model_name(name: str) -> None:
    """Model names become adapter names inside the encoder: letters, digits, '-' and '_' only."""
    if not name or not name[0].isalpha() or not all(c.isalnum() or c in "-_" for c in name) or len(name) > 64:
        raise SertuneError(f"model name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter")
