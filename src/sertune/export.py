"""ONNX export of a trained classifier: LoRA merged in, class probabilities out, checked against PyTorch.

The exported graph takes `waveform` float32 [batch, samples] (16 kHz, zero-padded) and `length`
int64 [batch] (valid samples per clip), both with a dynamic batch and length, and returns
`probabilities` float32 [batch, classes] for a model with classes, and for a model with attribute
dimensions `dimensions` [batch, dimensions] on the training corpus's scale and `dimensions_normalized`
in [0, 1]; the label and dimension names (with their scales) are in the model's metadata.

Exporter: torch.onnx's `torch.export`-based exporter (the default since torch 2.9; the TorchScript one
is deprecated). The wav2vec2/WavLM/HuBERT classifiers are traced through their own forward. Whisper's
backbone computes its sizes from tensor values (`lengths.max()`) and swaps its positional table per
batch, which a graph cannot do, so `WhisperGraph` runs the same encoder modules with sizes taken from
the input's shape instead; padded frames are masked as in PyTorch, so a clip's result does not depend
on how much padding follows it. Every export is checked with onnxruntime on real speech before the
file is put in place.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from sertune import __version__
from sertune.audio import DEFAULT_SAMPLE_RATE, resample
from sertune.backbones import Backbone
from sertune.backbones.whisper import HOP_LENGTH, N_FFT, LogMel, WhisperBackbone
from sertune.checkpoint import load_classifier
from sertune.corpora.synthetic import require_espeak
from sertune.errors import SertuneError
from sertune.fileio import atomic_path
from sertune.model import EmotionClassifier
from sertune.runs import resolve_run

# Largest max abs difference between onnxruntime's and PyTorch's probabilities that passes the check.
TOLERANCE = 1e-3
# Whisper's positional table covers 30 s; a graph cannot refuse longer input with a message.
WHISPER_MAX_SAMPLES = 30 * DEFAULT_SAMPLE_RATE
# Check clips longer than this are cut: the check is about parity, not about long audio.
MAX_CHECK_SAMPLES = 20 * DEFAULT_SAMPLE_RATE
MIN_CHECK_SAMPLES = DEFAULT_SAMPLE_RATE // 2
CHECK_SPEECH = (
    ("en-us", "The lecture starts right after lunch."),
    ("en+f3", "He walked the dog along the river this morning, and then he came back home."),
    ("en+m3", "I put the blue folder on the kitchen table."),
)
# A single ONNX file holds at most 2 GB of weights (protobuf's limit).
ONNX_FILE_LIMIT = 2**31


@dataclass
class ExportReport:
    """What an export produced and how closely onnxruntime agrees with PyTorch."""

    path: Path
    backbone: str
    method: str
    labels: list[str]
    size_bytes: int
    max_abs_diff: float
    tolerance: float
    clips: int
    seconds: float
    checkpoint: Path | None = None
    dimensions: list[str] | None = None


def export_run(
    path: str | Path,
    out: str | Path,
    *,
    fold: str | None = None,
    clips: Sequence[np.ndarray] | None = None,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export the run, fold or checkpoint at `path` to the ONNX file `out`, checked on `clips` (default: speech)."""
    checkpoint = resolve_run(path, fold).checkpoint
    classifier = load_classifier(checkpoint)
    report = export_classifier(classifier, out, clips if clips is not None else speech_clips(), tolerance=tolerance)
    report.checkpoint = checkpoint
    return report


def export_classifier(
    classifier: EmotionClassifier,
    out: str | Path,
    clips: Sequence[np.ndarray],
    *,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Merge, export and check `classifier`; `out` appears only if onnxruntime matches PyTorch within `tolerance`.

    The reference is the classifier before LoRA is merged, so the check covers the merge too.
    Merging changes `classifier` in place.
    """
    _require_export_packages()
    started = time.perf_counter()
    batches = check_batches(clips, classifier.backbone.min_samples)
    classifier.eval()
    with torch.no_grad():
        expected = [[part.numpy() for part in named_outputs(classifier, classifier(*batch))] for batch in batches]
    classifier.merge()
    _check_size(classifier)
    program = _export(OutputGraph(classifier).eval(), batches[0], classifier.backbone)
    program.model.metadata_props.update(onnx_metadata(classifier))
    out = Path(out)
    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
        found = _run_onnx(tmp, batches)
        diff = max(
            float(np.abs(f - e).max())
            for found_parts, expected_parts in zip(found, expected, strict=True)
            for f, e in zip(found_parts, expected_parts, strict=True)
        )
        if not diff <= tolerance:  # also refuses NaN
            raise SertuneError(
                f"the ONNX model disagrees with PyTorch: max abs difference {diff:.3g} in "
                f"{' and '.join(output_names(classifier))} (tolerance {tolerance:g}); {out} was not written"
            )
    return ExportReport(
        path=out,
        backbone=classifier.backbone.name,
        method=classifier.tuning_config.method,
        labels=list(classifier.labels),
        dimensions=[dimension.name for dimension in classifier.dimensions],
        size_bytes=out.stat().st_size,
        max_abs_diff=diff,
        tolerance=tolerance,
        clips=sum(len(lengths) for _, lengths in batches),
        seconds=time.perf_counter() - started,
    )


def _require_export_packages() -> None:
    """Name the missing package up front instead of failing deep inside the exporter."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError:
            raise SertuneError(f"ONNX export needs the {package} package: pip install 'sertune[export]'") from None


def _check_size(classifier: EmotionClassifier) -> None:
    weights = sum(t.numel() * t.element_size() for t in (*classifier.parameters(), *classifier.buffers()))
    if weights >= ONNX_FILE_LIMIT:
        raise SertuneError(
            f"{classifier.backbone.name} has {weights / 1e9:.1f} GB of weights, more than one ONNX file can hold "
            "(2 GB); exporting with external weight files is not supported yet"
        )


def onnx_metadata(classifier: EmotionClassifier) -> dict[str, str]:
    """What a consumer of the ONNX file needs to know: class order, input rate and limits, provenance."""
    backbone = classifier.backbone
    metadata = {
        "labels": json.dumps(classifier.labels),
        "dimensions": json.dumps([dimension.to_dict() for dimension in classifier.dimensions]),
        "sample_rate": str(backbone.sample_rate),
        "min_samples": str(backbone.min_samples),
        "backbone": backbone.name,
        "method": classifier.tuning_config.method,
        "sertune_version": __version__,
    }
    if isinstance(backbone, WhisperBackbone):
        metadata["max_samples"] = str(WHISPER_MAX_SAMPLES)
    return metadata


class WhisperGraph(nn.Module):
    """Whisper's encoder (log-mel included) as `WhisperBackbone` runs it, in a form a graph can hold.

    Sizes come from the input's shape, not from `lengths.max()`: extra padding only adds masked
    frames. Each clip's reflect padding is a gather, and the STFT a convolution with a windowed DFT
    basis, since the per-clip loop and complex tensors of `LogMel` have no ONNX form. The masks that
    the backbone's own hooks apply inside `encode` are applied here instead (those hooks stay idle
    outside `encode`); the tuning methods' hooks run as they do in PyTorch.
    """

    def __init__(self, backbone: WhisperBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        bins = N_FFT // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(bins), torch.arange(N_FFT)).double() / N_FFT
        basis = torch.cat([torch.cos(angle), torch.sin(angle)]) * backbone.log_mel.window.double()
        self.register_buffer("dft", basis.float()[:, None, :], persistent=False)  # [2 * bins, 1, N_FFT]

    def log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The log-mel features of `LogMel`, for as many frames as the padded input holds."""
        samples = waveforms.shape[1]
        # Index of the clip sample at each position of its reflect-padded copy.
        index = (torch.arange(samples + N_FFT, device=waveforms.device)[None, :] - N_FFT // 2).abs()
        last = (lengths - 1)[:, None]
        # Positions past the padded clip only feed frames that are masked below; clamping keeps them in range.
        index = torch.where(index > last, 2 * last - index, index).clamp(0, samples - 1)
        padded = torch.gather(waveforms, 1, index)
        width = samples // HOP_LENGTH
        spectrum = nn.functional.conv1d(padded[:, None, :], self.dft, stride=HOP_LENGTH)[..., :width]
        real, imaginary = spectrum.chunk(2, dim=1)
        mel = self.backbone.log_mel.filters @ (real.square() + imaginary.square())
        log_mel = mel.clamp(min=1e-10).log10()
        valid = _steps_below(LogMel.frames(lengths), width)[:, None, :]
        peak = log_mel.masked_fill(~valid, -torch.inf).amax(dim=(1, 2), keepdim=True)
        log_mel = (torch.maximum(log_mel, peak - 8.0) + 4.0) / 4.0
        return log_mel.masked_fill(~valid, 0.0)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """L+1 hidden states and frame lengths, as `WhisperBackbone.encode` returns them."""
        encoder = self.backbone.model
        features = self.log_mel(waveforms, lengths)
        steps = (features.shape[-1] + 1) // 2
        features = nn.functional.pad(features, (0, 2 * steps - features.shape[-1]))
        hidden = encoder.conv1(features)
        # conv2 looks one frame past a clip's end: that frame must be zero, as for the clip alone.
        hidden = hidden * _steps_below(LogMel.frames(lengths), hidden.shape[-1])[:, None, :].to(hidden.dtype)
        hidden = nn.functional.gelu(hidden)
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + encoder.embed_positions.weight[:steps]
        frames = self.backbone.frame_lengths(lengths)
        mask = self._attention_mask(_steps_below(frames, steps), hidden.dtype)
        states = [hidden]
        for layer in self.backbone.layers:  # called as modules: the tuning methods' hooks apply
            hidden = layer(hidden, mask)
            states.append(hidden)
        states[-1] = encoder.layer_norm(hidden)
        return tuple(states), frames

    def _attention_mask(self, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The key-padding mask in the form the layers' attention takes (additive for eager, else boolean)."""
        if self.backbone.model.config._attn_implementation == "eager":
            blocked = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
            return blocked.masked_fill(~keep, torch.finfo(dtype).min)[:, None, None, :]
        return keep[:, None, None, :]


def _steps_below(counts: torch.Tensor, steps: int) -> torch.Tensor:
    """Boolean [B, steps]: True where the step index is below the clip's count."""
    return torch.arange(steps, device=counts.device)[None, :] < counts[:, None]


def output_names(classifier: EmotionClassifier) -> list[str]:
    """The exported graph's outputs: `probabilities` for classes, `dimensions` and `dimensions_normalized`."""
    names = ["probabilities"] if classifier.labels else []
    return names + (["dimensions", "dimensions_normalized"] if classifier.dimensions else [])


def named_outputs(classifier: EmotionClassifier, outputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The classifier's raw outputs as the graph returns them, in `output_names` order."""
    n = len(classifier.labels)
    parts = (torch.softmax(outputs[:, :n], dim=-1),) if n else ()
    if classifier.dimensions:
        low = torch.tensor([d.low for d in classifier.dimensions], dtype=outputs.dtype, device=outputs.device)
        high = torch.tensor([d.high for d in classifier.dimensions], dtype=outputs.dtype, device=outputs.device)
        normalized = outputs[:, n:]
        parts += (normalized * (high - low) + low, normalized)
    return parts


class OutputGraph(nn.Module):
    """What is exported: (waveform, length) -> the named outputs (`output_names`) of a (merged) classifier."""

    def __init__(self, classifier: EmotionClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        backbone = classifier.backbone
        self.whisper = WhisperGraph(backbone) if isinstance(backbone, WhisperBackbone) else None

    def forward(self, waveform: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.whisper is None:
            outputs = self.classifier(waveform, length)
        else:
            outputs = self.classifier.head(*self.whisper(waveform, length))
        return named_outputs(self.classifier, outputs)


def _export(
    graph: OutputGraph, example: tuple[torch.Tensor, torch.Tensor], backbone: Backbone
) -> torch.onnx.ONNXProgram:
    """The ONNX program of `graph`, with a dynamic batch and length."""
    try:
        with _quiet_exporter(), torch.no_grad():
            return torch.onnx.export(
                graph,
                example,
                input_names=["waveform", "length"],
                output_names=output_names(graph.classifier),
                # Named axes are Dim.DYNAMIC to torch.export: it records its guards instead of refusing
                # the ones its solver cannot prove (e.g. on the conv stack's floor divisions).
                dynamic_shapes={"waveform": {0: "batch", 1: "samples"}, "length": {0: "batch"}},
                dynamo=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; the user needs the family and the cause
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SertuneError(f"ONNX export of {backbone.name} (family {backbone.family}) failed: {cause}") from error


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter and its optimizer log progress and internal notes that say nothing to a user.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run_onnx(path: Path, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[np.ndarray]]:
    """onnxruntime's outputs (`output_names` order) for each batch."""
    import onnxruntime  # an optional dependency (the `export` extra)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [
        session.run(None, {"waveform": waveforms.numpy(), "length": lengths.numpy()})
        for waveforms, lengths in batches
    ]


def check_batches(clips: Sequence[np.ndarray], min_samples: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two padded batches of different sizes and lengths: every clip together, and a cut of the shortest alone.

    The first batch also traces the graph, so it gets at least two clips (a batch of one would fix
    the batch size in the graph).
    """
    clips = [np.asarray(clip, dtype=np.float32)[:MAX_CHECK_SAMPLES] for clip in clips]
    if not clips:
        raise SertuneError("the ONNX check needs at least one audio clip")
    shortest = max(MIN_CHECK_SAMPLES, min_samples)
    if min(map(len, clips)) < shortest:
        raise SertuneError(f"check clips must be at least {shortest / DEFAULT_SAMPLE_RATE:.2f} s long")
    if len(clips) == 1:
        clips.append(clips[0][: len(clips[0]) * 2 // 3])
    alone = min(clips, key=len)
    return [pad_batch(clips), pad_batch([alone[: max(min_samples, len(alone) * 3 // 4)]])]


def pad_batch(clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded float32 waveforms [B, longest] and int64 lengths [B]."""
    lengths = torch.tensor([len(clip) for clip in clips], dtype=torch.long)
    waveforms = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for row, clip in zip(waveforms, clips, strict=True):
        row[: len(clip)] = torch.from_numpy(clip)
    return waveforms, lengths


def speech_clips() -> list[np.ndarray]:
    """Three spoken sentences of different lengths and voices (espeak-ng, 16 kHz), the default check clips."""
    espeak = require_espeak()
    clips = []
    for voice, sentence in CHECK_SPEECH:
        result = subprocess.run([espeak, "-v", voice, "--stdout", sentence], capture_output=True, check=False)
        if result.returncode != 0 or not result.stdout:
            raise SertuneError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()}")
        wave, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
        clips.append(resample(wave, rate, DEFAULT_SAMPLE_RATE))
    return clips
