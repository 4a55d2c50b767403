"""PyTorch, ONNX float32 and ONNX int8 (`sertune export --quantize int8`) inference, measured side by side.

A Whisper tiny.en classifier with LoRA-16 whose trained tensors are moved off their initial values
(lora_B and the head, so that the merge and the labels matter; no training) is exported as
`sertune export` does it (merged, checked against PyTorch), and quantised with `quantize_int8`,
the function behind `--quantize int8`. Candidates, timed in interleaved rounds (`_timing.py`) on
6-s clips of espeak-ng speech (the synthetic corpus' clips joined and cut to length) at batch 1 and 8:

* `pytorch merged`: the merged classifier's forward in inference mode (the export's source);
* `onnx float32`: the exported graph in onnxruntime (the reference of the ratios);
* `onnx int8`: the int8 file that `--quantize int8` writes;
* `onnx int8, ORT defaults`: `quantize_dynamic` with its default settings (per-tensor scales,
  full 8-bit range), what the chosen settings are weighed against (leave out with `--no-defaults`).

Besides the times it prints the file sizes and, on `--clips` clips run one at a time, the label
agreement and max probability difference of each int8 file with the float32 graph. Goal: int8 at
least 1.5x faster than float32 ONNX at batch 1 with at least 98% agreement.

    python benchmarks/export_int8.py                    # about 2-3 min on 2 CPU cores
    python benchmarks/export_int8.py --repeats 40 --clips 64
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from _timing import (
    environment,
    fastest_ratio,
    interleave,
    load_average,
    log,
    median,
    paired_ratios,
    setup,
    spread,
    table,
)
from sertune import export
from sertune.audio import load_audio
from sertune.backbones import load_backbone
from sertune.corpora import load_corpus
from sertune.corpora.synthetic import SynthSettings, synthesize
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

SAMPLE_RATE = 16000
LABELS = ["neutral", "angry", "sad", "happy"]
MODEL = "whisper-tiny.en"
REFERENCE = "onnx float32"
INT8 = "onnx int8"
DEFAULTS = "onnx int8, ORT defaults"
GOAL_SPEEDUP, GOAL_AGREEMENT = 1.5, 98.0


def cpu_flags() -> str:
    """Which int8 instruction sets the CPU has: without VNNI, int8 products take more instructions."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
    except (OSError, StopIteration):
        return "# CPU flags unknown"
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return "# CPU int8 support: " + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)


def make_classifier(seed: int = 0) -> EmotionClassifier:
    """Whisper tiny.en + LoRA-16 with lora_B and the head's output layer moved off their init, in eval mode."""
    classifier = EmotionClassifier(load_backbone(MODEL), LABELS, TuningConfig(method="lora")).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.15 * torch.randn(parameter.shape, generator=generator))
            elif name.startswith("head.output_layers.2"):
                parameter.mul_(30.0)  # spread the probabilities, so that a changed label is a real change
    return classifier


def speech_clips(count: int, seconds: float, folder: Path) -> list[np.ndarray]:
    """`count` clips of exactly `seconds` s: synthetic-corpus utterances joined in order and cut."""
    speakers = 4
    sentences = max(2, -(-count * round(seconds / 2.0) // (speakers * 4)))  # about 2-3 s per utterance
    synthesize(folder, SynthSettings(speakers=speakers, sentences=sentences, seed=1), progress=False)
    waves = [load_audio(utterance.path) for utterance in load_corpus(folder).utterances]
    stream = np.concatenate(waves)
    samples = round(seconds * SAMPLE_RATE)
    if len(stream) < count * samples:
        raise SystemExit(f"the synthetic corpus holds {len(stream) / SAMPLE_RATE:.0f} s, fewer than {count} clips")
    return [stream[i * samples : (i + 1) * samples].astype(np.float32) for i in range(count)]


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_call(model: onnxruntime.InferenceSession, waveforms: np.ndarray, lengths: np.ndarray) -> Callable[[], object]:
    def call() -> object:
        return model.run(None, {"waveform": waveforms, "length": lengths})

    return call


def torch_call(classifier: EmotionClassifier, waveforms: np.ndarray, lengths: np.ndarray) -> Callable[[], object]:
    x, n = torch.from_numpy(waveforms), torch.from_numpy(lengths)

    def call() -> object:
        with torch.inference_mode():
            return torch.softmax(classifier(x, n), dim=-1)

    return call


def probabilities(model: onnxruntime.InferenceSession, clips: list[np.ndarray]) -> np.ndarray:
    """Each clip alone, as edge inference runs (int8 activations are quantised over the whole batch)."""
    return np.concatenate([onnx_call(model, clip[None], np.array([len(clip)]))()[0] for clip in clips])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds at batch 1 (larger batches: a third)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--clips", type=int, default=48, help="clips for the label agreement (at least the batch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-defaults", action="store_true", help="leave out quantize_dynamic's default settings")
    args = parser.parse_args(argv)
    if args.clips < max(args.batches) or not 0 < args.seconds <= 20:
        parser.error("--clips must be at least the largest batch, and --seconds within (0, 20]")

    setup(args.threads)
    print(environment(args.threads))
    print(cpu_flags())
    print(
        f"# {MODEL} + LoRA-16 (merged), {args.seconds:g}-s espeak-ng speech clips; median over interleaved rounds "
        f"after {args.warmup} warm-up; ratios float32 ONNX time / candidate time, paired within each round"
    )
    with tempfile.TemporaryDirectory(prefix="export-int8-") as scratch_name:
        scratch = Path(scratch_name)
        clips = speech_clips(args.clips, args.seconds, scratch / "corpus")
        log(f"exporting {MODEL} (merged, checked against PyTorch) and quantising")
        classifier = make_classifier()
        float_report = export.export_classifier(classifier, scratch / "float32.onnx", clips[:3])
        export.quantize_int8(scratch / "float32.onnx", scratch / "int8.onnx")
        files = {REFERENCE: scratch / "float32.onnx", INT8: scratch / "int8.onnx"}
        if not args.no_defaults:
            from onnxruntime.quantization import quantize_dynamic

            logging.disable(logging.WARNING)  # its advice to pre-process the model first
            quantize_dynamic(scratch / "float32.onnx", scratch / "defaults.onnx", op_types_to_quantize=["MatMul"])
            logging.disable(logging.NOTSET)
            files[DEFAULTS] = scratch / "defaults.onnx"
        sessions = {name: session(path, args.threads) for name, path in files.items()}

        reference = probabilities(sessions[REFERENCE], clips)
        quality = []
        for name in files:
            found = probabilities(sessions[name], clips)
            agreement = 100.0 * float(np.mean(found.argmax(-1) == reference.argmax(-1)))
            size = files[name].stat().st_size
            diff = "-" if name == REFERENCE else f"{np.abs(found - reference).max():.4f}"
            quality.append([name, f"{size / 1e6:.1f}", f"{size / files[REFERENCE].stat().st_size:.2f}",
                            f"{agreement:.1f}", diff])
        log(f"float32 export vs PyTorch: max abs diff {float_report.max_abs_diff:.1e}")

        rows = []
        speedups: dict[str, float] = {}
        for batch in args.batches:
            waveforms = np.stack(clips[:batch])
            lengths = np.full(batch, waveforms.shape[1], dtype=np.int64)
            calls = {"pytorch merged": torch_call(classifier, waveforms, lengths)}
            calls.update({name: onnx_call(model, waveforms, lengths) for name, model in sessions.items()})
            repeats = args.repeats if batch == 1 else max(3, args.repeats // 3)
            times = interleave(
                calls, repeats=repeats, warmup=args.warmup, progress=lambda text, b=batch: log(f"batch {b}: {text}")
            )
            for name in calls:
                ratios = paired_ratios(times, REFERENCE, name)
                fastest = fastest_ratio(times, REFERENCE, name)
                rows.append([str(batch), name, str(repeats), f"{1000 * median(times[name]):.1f}",
                             f"{median(ratios):.2f}", spread(ratios), f"{fastest:.2f}"])
                if batch == 1:
                    speedups[name] = median(ratios)

    print(f"\n## Latency, {args.threads} threads (x float32 = float32 ONNX time / this time; > 1 is faster)")
    header = ["batch", "candidate", "rounds", "median ms", "x float32", "range", "fastest/fastest"]
    print(table(header, rows, text_columns=2))
    print(f"\n## Files and labels (int8 vs float32 ONNX, {args.clips} clips, each alone)")
    print(table(["file", "MB", "/ float32", "label agreement %", "max prob diff"], quality))
    if 1 in args.batches:
        agreement = float(quality[1][3])
        met = speedups[INT8] >= GOAL_SPEEDUP and agreement >= GOAL_AGREEMENT
        print(
            f"\n# goal int8 >= {GOAL_SPEEDUP}x float32 ONNX at batch 1 with >= {GOAL_AGREEMENT:g}% agreement: "
            f"{'met' if met else 'not met'} ({speedups[INT8]:.2f}x, {agreement:.1f}%)"
        )
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
