"""`sertune export RUN_DIR --onnx OUT.onnx`: the merged classifier as one ONNX file, checked with onnxruntime.

RUN_DIR is a run (its fold with the best dev UAR, or --fold), a fold or a checkpoint directory. The
export is compared with PyTorch on speech clips (espeak-ng sentences, or --audio files); OUT.onnx is
written only if their outputs (class probabilities, dimensions) agree within 1e-3.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `export`."""
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a run, fold or checkpoint directory")
    parser.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--fold", help="the fold of a run directory to export (default: best dev UAR)")
    parser.add_argument(
        "--audio", type=Path, nargs="+", metavar="FILE", help="clips for the parity check (default: espeak-ng speech)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check against PyTorch, and print what was written."""
    from sertune.audio import load_audio
    from sertune.export import export_run

    clips = [load_audio(path) for path in args.audio] if args.audio else None
    report = export_run(args.run, args.onnx, fold=args.fold, clips=clips)
    print(f"exported {report.checkpoint} ({report.backbone}, {report.method}) to {report.path}")
    print(f"  file size       {report.size_bytes / 1e6:.1f} MB")
    print(
        f"  max abs diff    {report.max_abs_diff:.2e} in the outputs, onnxruntime vs PyTorch "
        f"({report.clips} clips in two batches, tolerance {report.tolerance:g})"
    )
    if report.labels:
        print(f"  labels          {', '.join(report.labels)} (output order; also in the file's metadata)")
    if report.dimensions:
        print(f"  dimensions      {', '.join(report.dimensions)} (outputs dimensions on the corpus scale and "
              "dimensions_normalized; scales in the file's metadata)")
    print(f"  export time     {report.seconds:.1f} s")
    return 0
