"""`sertune export RUN_DIR --onnx OUT.onnx | --peft DIR`: the merged classifier as one ONNX file, checked with
onnxruntime, or a LoRA run as a standard peft adapter directory.

RUN_DIR is a run (its fold with the best dev UAR, or --fold), a fold or a checkpoint directory. The
export is compared with PyTorch on speech clips (espeak-ng sentences, or --audio files); OUT.onnx is
written only if their outputs (class probabilities, dimensions) agree within 1e-3. With --quantize
int8, OUT.onnx holds the int8 model instead, written only if its labels agree with the float32 ones
on at least --min-agreement % of the run's test clips (or of the --audio files). --peft DIR writes the
encoder's LoRA as peft writes an adapter (adapter_config.json, adapter_model.safetensors), the head beside it,
and a README on loading either way (docs/export.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sertune.errors import SertuneError
from sertune.options import number_in

# For --help only: sertune.export.MIN_AGREEMENT, which this module does not import (it loads torch); a test
# keeps the two equal.
DEFAULT_MIN_AGREEMENT = 98.0


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `export`."""
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a run, fold or checkpoint directory")
    parser.add_argument("--onnx", type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--peft", type=Path, metavar="DIR", help="write a LoRA run as a peft adapter directory")
    parser.add_argument("--fold", help="the fold of a run directory to export (default: best dev UAR)")
    parser.add_argument(
        "--audio", type=Path, nargs="+", metavar="FILE",
        help="clips for the parity check and the int8 check (default: espeak-ng speech; int8: the run's test clips)",
    )
    parser.add_argument(
        "--quantize", choices=("int8",),
        help="write the model with int8 weights (onnxruntime dynamic quantization), checked against float32",
    )
    parser.add_argument(
        "--min-agreement", type=number_in(0, 100, low_open=False), metavar="PERCENT",
        help=f"with --quantize: the least %% of check clips on which int8 keeps the label "
        f"(default {DEFAULT_MIN_AGREEMENT:g})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check against PyTorch (and int8 against float32), and print what was written."""
    if args.onnx is None and args.peft is None:
        raise SertuneError("name what to write: --onnx OUT.onnx, --peft DIR, or both")
    if args.onnx is None and (args.quantize or args.min_agreement is not None or args.audio):
        raise SertuneError("--quantize, --min-agreement and --audio apply to --onnx")
    if args.min_agreement is not None and args.quantize is None:
        raise SertuneError("--min-agreement applies only with --quantize int8")
    if args.peft is not None:
        from sertune.peft_format import export_peft

        written = export_peft(args.run, args.peft, fold=args.fold)
        print(f"wrote the peft adapter of {args.run} to {written} (load it with peft or sertune: {written}/README.md)")
    if args.onnx is None:
        return 0
    from sertune.audio import load_audio
    from sertune.export import MIN_AGREEMENT, export_run

    clips = [load_audio(path) for path in args.audio] if args.audio else None
    minimum = MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    report = export_run(
        args.run, args.onnx, fold=args.fold, clips=clips, quantize=args.quantize, min_agreement=minimum
    )
    print(f"exported {report.checkpoint} ({report.backbone}, {report.method}) to {report.path}")
    int8 = report.int8
    if int8 is None:
        print(f"  file size       {report.size_bytes / 1e6:.1f} MB")
    else:
        share = report.size_bytes / int8.float_size_bytes
        print(
            f"  file size       {report.size_bytes / 1e6:.1f} MB int8, {share:.2f}x the float32 graph's "
            f"{int8.float_size_bytes / 1e6:.1f} MB (which is not kept)"
        )
    print(
        f"  max abs diff    {report.max_abs_diff:.2e} in the outputs, onnxruntime {'float32 ' if int8 else ''}vs "
        f"PyTorch ({report.clips} clips in two batches, tolerance {report.tolerance:g})"
    )
    if int8 is not None:
        print(f"  int8 vs float32 {int8.figures()}")
    if report.labels:
        print(f"  labels          {', '.join(report.labels)} (output order; also in the file's metadata)")
    if report.dimensions:
        print(f"  dimensions      {', '.join(report.dimensions)} (outputs dimensions on the corpus scale and "
              "dimensions_normalized; scales in the file's metadata)")
    print(f"  export time     {report.seconds:.1f} s")
    return 0
