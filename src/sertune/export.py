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

With `quantize` (`--quantize int8`) the checked float32 graph is an intermediate in a temporary folder:
onnxruntime's dynamic quantization turns the weights of its linear layers into int8, and the int8 file
is written only if its labels agree with the float32 graph's on the run's own test clips
(docs/export.md).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import subprocess
import tempfile
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
from sertune.audio import DEFAULT_SAMPLE_RATE, load_audio, resample
from sertune.backbones import Backbone
from sertune.backbones.whisper import HOP_LENGTH, N_FFT, LogMel, WhisperBackbone
from sertune.checkpoint import load_classifier
from sertune.config import read_yaml
from sertune.corpora import load_corpus
from sertune.corpora.synthetic import require_espeak
from sertune.errors import SertuneError
from sertune.fileio import atomic_path
from sertune.model import EmotionClassifier
from sertune.runs import ResolvedRun, resolve_run
from sertune.train import CONFIG, FOLDS

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
QUANTIZATIONS = ("int8",)
# The int8 file is refused when fewer check clips (%) keep the float32 model's most probable class.
MIN_AGREEMENT = 98.0
# ... or when a normalised dimension score ([0, 1]) moves by more than this on a check clip.
INT8_DIMENSION_TOLERANCE = 0.05
# The int8 check runs every clip alone, as edge inference does: a test part is sampled down to this many.
MAX_INT8_CHECK_CLIPS = 64
# The float32 graph's name in the temporary folder of an int8 export.
FLOAT_INTERMEDIATE = "float32.onnx"
# What `quantize_int8` does, as the metadata's `quantization` records it.
INT8_SCHEME = "int8 dynamic: MatMul/Gemm weights int8 per output channel (7-bit range), activations uint8 per call"


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
    # With `quantize`: the int8 check's figures (`size_bytes` is then the int8 file's size).
    int8: Int8Report | None = None


@dataclass(frozen=True)
class Int8Check:
    """The clips an int8 model is compared with its float32 graph on, and the agreement it must reach."""

    clips: Sequence[np.ndarray]
    source: str  # where the clips come from, for the report and the metadata
    min_agreement: float = MIN_AGREEMENT

    def __post_init__(self) -> None:
        check_min_agreement(self.min_agreement)
        if not self.clips:
            raise SertuneError("the int8 check needs at least one audio clip")


@dataclass
class Int8Report:
    """How closely the int8 model follows its float32 graph, clip by clip."""

    float_size_bytes: int
    clips: int
    source: str
    min_agreement: float
    label_agreement: float | None = None  # % of clips whose most probable class int8 keeps (models with classes)
    max_probability_diff: float | None = None
    max_dimension_diff: float | None = None  # in `dimensions_normalized` (dimensional models)

    def passed(self) -> bool:
        """Whether the int8 model may be written (NaN figures fail)."""
        labels_ok = self.label_agreement is None or (
            self.label_agreement >= self.min_agreement and math.isfinite(self.max_probability_diff)
        )
        dimensions_ok = self.max_dimension_diff is None or self.max_dimension_diff <= INT8_DIMENSION_TOLERANCE
        return labels_ok and dimensions_ok

    def figures(self) -> str:
        """The figures in one line, with the limits they are held to."""
        parts = []
        if self.label_agreement is not None:
            parts.append(
                f"label agreement {self.label_agreement:.1f}% (at least {self.min_agreement:g}% required), "
                f"max probability difference {self.max_probability_diff:.4f}"
            )
        if self.max_dimension_diff is not None:
            parts.append(
                f"max difference of dimensions_normalized {self.max_dimension_diff:.4f} "
                f"(at most {INT8_DIMENSION_TOLERANCE:g} allowed)"
            )
        return f"{', '.join(parts)} on {self.clips} clips, each alone ({self.source})"

    def metadata(self) -> dict[str, str]:
        """The int8 entries of the file's `metadata_props`."""
        metadata = {
            "quantization": INT8_SCHEME,
            "int8_check_clips": str(self.clips),
            "int8_check_source": self.source,
        }
        if self.label_agreement is not None:
            metadata["int8_label_agreement"] = f"{self.label_agreement:.2f}"
            metadata["int8_max_probability_diff"] = f"{self.max_probability_diff:.3g}"
            metadata["int8_min_agreement"] = f"{self.min_agreement:g}"
        if self.max_dimension_diff is not None:
            metadata["int8_max_dimension_diff"] = f"{self.max_dimension_diff:.3g}"
        return metadata


def check_min_agreement(value: float) -> None:
    """Refuse a minimum label agreement that is not a percentage (NaN included)."""
    if not 0 <= value <= 100:
        raise SertuneError(f"the minimum label agreement is a percentage from 0 to 100, got {value}")


def export_run(
    path: str | Path,
    out: str | Path,
    *,
    fold: str | None = None,
    clips: Sequence[np.ndarray] | None = None,
    tolerance: float = TOLERANCE,
    quantize: str | None = None,
    min_agreement: float = MIN_AGREEMENT,
) -> ExportReport:
    """Export the run, fold or checkpoint at `path` to the ONNX file `out`, checked on `clips` (default: speech).

    With `quantize="int8"` the file holds the int8 model, checked against the float32 graph on
    `clips` if given, else on the run's own test clips (`run_test_clips`), else on the espeak-ng speech.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise SertuneError(f"unknown quantization {quantize!r}; known: {', '.join(QUANTIZATIONS)}")
    check_min_agreement(min_agreement)  # before the model loads
    resolved = resolve_run(path, fold)
    classifier = load_classifier(resolved.checkpoint)
    check_clips = clips if clips is not None else speech_clips()
    int8 = None
    if quantize == "int8" and clips is not None:
        int8 = Int8Check(clips, "the given clips", min_agreement)
    elif quantize == "int8":
        try:
            int8 = Int8Check(*run_test_clips(resolved, classifier.backbone.min_samples), min_agreement)
        except SertuneError as error:
            int8 = Int8Check(
                check_clips, f"espeak-ng speech; the run's test clips are not at hand: {error}", min_agreement
            )
    report = export_classifier(classifier, out, check_clips, tolerance=tolerance, int8=int8)
    report.checkpoint = resolved.checkpoint
    return report


def export_classifier(
    classifier: EmotionClassifier,
    out: str | Path,
    clips: Sequence[np.ndarray],
    *,
    tolerance: float = TOLERANCE,
    int8: Int8Check | None = None,
) -> ExportReport:
    """Merge, export and check `classifier`; `out` appears only if onnxruntime matches PyTorch within `tolerance`.

    The reference is the classifier before LoRA is merged, so the check covers the merge too.
    Merging changes `classifier` in place. With `int8`, the checked float32 graph is quantised and
    `out` holds the int8 model, written only if it passes `int8`'s check (`Int8Report.passed`).
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
    int8_report = None

    def save_checked(path: Path) -> float:
        program.save(path, external_data=False)
        found = _run_onnx(path, batches)
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
        return diff

    with atomic_path(out) as tmp:
        if int8 is None:
            diff = save_checked(tmp)
        else:
            with tempfile.TemporaryDirectory(prefix="sertune-export-") as scratch:
                float_path = Path(scratch) / FLOAT_INTERMEDIATE
                diff = save_checked(float_path)
                quantize_int8(float_path, tmp)
                int8_report = _check_int8(classifier, float_path, tmp, int8)
            if not int8_report.passed():
                raise SertuneError(
                    f"the int8 model strays too far from float32: {int8_report.figures()}; {out} was not written"
                )
            _add_metadata(tmp, int8_report.metadata())
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
        int8=int8_report,
    )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization of the ONNX file `source` into `target` (`INT8_SCHEME`).

    Only MatMul with a constant weight is quantised; the quantizer turns Gemm (the head's linears)
    into MatMul first. The STFT, the convolutions, layer norms, attention's score products and the
    log-mel filter product stay float32: with the convolutions as ConvInteger the Whisper tiny.en
    model ran no faster than float32 on an AVX2 CPU, and the front ends see raw audio. Per-channel
    scales in a 7-bit range (`reduce_range`, which also avoids the int16 overflow of u8 x s8 products
    on x86 CPUs without VNNI) cut the largest probability change from 0.04 (per-tensor, 8-bit: the
    defaults) to 0.007 at the same speed (benchmarks/export_int8.py).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # the root logger: it warns there about optional pre-processing
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
        )


def _check_int8(classifier: EmotionClassifier, float_path: Path, int8_path: Path, check: Int8Check) -> Int8Report:
    """The int8 model's outputs against the float32 graph's, every clip alone (the activations are
    quantised per call, over the whole batch, so batching a clip with others changes its result a little)."""
    batches = [pad_batch([np.asarray(clip, dtype=np.float32)[:MAX_CHECK_SAMPLES]]) for clip in check.clips]
    reference = _run_onnx(float_path, batches)
    found = _run_onnx(int8_path, batches)
    report = Int8Report(
        float_size_bytes=float_path.stat().st_size,
        clips=len(batches),
        source=check.source,
        min_agreement=check.min_agreement,
    )
    names = output_names(classifier)

    def stacked(outputs: list[list[np.ndarray]], name: str) -> np.ndarray:
        return np.concatenate([parts[names.index(name)] for parts in outputs])

    if classifier.labels:
        expected, quantized = stacked(reference, "probabilities"), stacked(found, "probabilities")
        report.label_agreement = 100.0 * float(np.mean(expected.argmax(-1) == quantized.argmax(-1)))
        report.max_probability_diff = float(np.abs(expected - quantized).max())
    if classifier.dimensions:
        name = "dimensions_normalized"
        report.max_dimension_diff = float(np.abs(stacked(reference, name) - stacked(found, name)).max())
    return report


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx  # an optional dependency (the `export` extra)

    model = onnx.load(path)
    entries = {prop.key: prop.value for prop in model.metadata_props}
    entries.pop("onnx.infer", None)  # the quantizer's note that it ran shape inference; says nothing to a user
    entries.update(metadata)
    onnx.helper.set_model_props(model, entries)
    onnx.save(model, path)


def run_test_clips(resolved: ResolvedRun, min_samples: int) -> tuple[list[np.ndarray], str]:
    """Up to `MAX_INT8_CHECK_CLIPS` test clips of the resolved fold, evenly spread over its test part, and
    where they come from (the corpus that the run's config.yaml names).

    A `SertuneError` says why there are none: a checkpoint outside a run, no config.yaml or corpus,
    a fold the corpus does not have, or no clip of at least `min_samples` samples.
    """
    fold_dir = resolved.checkpoint.parent
    if resolved.fold is None or fold_dir.parent.name != FOLDS:
        raise SertuneError(f"{resolved.checkpoint} is not the checkpoint of a fold of a run")
    settings = read_yaml(fold_dir.parent.parent / CONFIG)
    if not settings.get("corpus"):
        raise SertuneError(f"{fold_dir.parent.parent / CONFIG} names no corpus")
    corpus = load_corpus(settings["corpus"])
    fold = next((fold for fold in corpus.folds if fold.name == fold_dir.name), None)
    if fold is None:
        raise SertuneError(f"the corpus {corpus.root} has no fold {fold_dir.name!r}")
    ids = fold.test
    if len(ids) > MAX_INT8_CHECK_CLIPS:
        ids = [ids[i * len(ids) // MAX_INT8_CHECK_CLIPS] for i in range(MAX_INT8_CHECK_CLIPS)]
    clips = [load_audio(corpus.by_id[uid].path) for uid in ids]
    clips = [clip for clip in clips if len(clip) >= min_samples]
    if not clips:
        raise SertuneError(f"fold {fold.name} of {corpus.root} has no test clip")
    return clips, f"test part of fold {fold.name} of the corpus {corpus.name}"


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
        power = real.square() + imaginary.square()
        return self.backbone.log_mel.scaled(power, _steps_below(LogMel.frames(lengths), width))

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
        with _quiet("torch.onnx", "onnxscript", "onnx_ir"), torch.no_grad():
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
def _quiet(*names: str) -> Iterator[None]:
    # The exporter, its optimizer and the quantizer log progress and internal notes that say nothing to a user.
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    # `logging.warning()` configures a stderr handler on a root logger that has none: a null one stops that.
    guard = logging.NullHandler()
    root = logging.getLogger()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    root.addHandler(guard)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(guard)
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
