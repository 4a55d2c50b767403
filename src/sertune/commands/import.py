"""`sertune import peft-ser --model NAME CLASSIFIER.pt LORA.pt --out DIR`: a model the PEFT-SER study released, as a
sertune checkpoint.

The study's `peft-ser` package releases six models (Whisper tiny, base and small, WavLM Base+ and Large, MMS;
LoRA rank 16 on every FFN, the conv output in the layer sum, trained on four corpora combined), each as two
torch files: the classifier (NAME.pt) and its LoRA weights (NAME_lora.pt). The import checks every tensor of
both against the package's modules for that model and writes DIR as a checkpoint directory (adapter.safetensors,
sertune.json, peft-ser.json) that `sertune predict`, `serve`, `export` and `sertune.load` take. A tensor missing,
left over or of the wrong shape fails the import, naming it; nothing is written then. See docs/import.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    """Add the sources of `import` (peft-ser)."""
    from sertune.peft_ser_import import RELEASED

    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    peft = sources.add_parser(
        "peft-ser", help="a model released by the PEFT-SER study's package (usc-sail/peft-ser)", description=__doc__
    )
    peft.add_argument(
        "--model", required=True, choices=list(RELEASED), metavar="NAME",
        help=f"the released model the files are of: {', '.join(RELEASED)}",
    )
    peft.add_argument("classifier", type=Path, metavar="CLASSIFIER.pt", help="the classifier file (NAME.pt)")
    peft.add_argument("lora", type=Path, metavar="LORA.pt", help="the LoRA file (NAME_lora.pt)")
    peft.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the checkpoint directory to write (new, or empty)"
    )
    peft.add_argument(
        "--backbone", metavar="NAME",
        help="put the weights on this encoder instead of the one the model was trained on (e.g. whisper-tiny.en "
        "for whisper-tiny where the hub cannot be reached); it must have the same layers, width and heads",
    )
    peft.set_defaults(func=run_peft_ser)


def run_peft_ser(args: argparse.Namespace) -> int:
    """Import the two files and print what was written."""
    from sertune.peft_ser_import import LABELS, RECIPE, import_peft_ser

    report = import_peft_ser(args.model, args.classifier, args.lora, args.out, backbone=args.backbone)
    tuning, counts = RECIPE["tuning"], report.parameters
    print(f"imported {report.model} onto {report.backbone} as {report.out}")
    print(f"  labels          {', '.join(LABELS)} (the package's output order)")
    print(f"  tensors         {report.tensors} ({counts['tuning']:,} LoRA + {counts['head']:,} head parameters); "
          f"LoRA rank {tuning['lora_rank']}, alpha {tuning['lora_alpha']:g} on every FFN")
    if report.ignored:
        print(f"  ignored         {', '.join(report.ignored)} (defined by the package, never used by its forward)")
    for note in report.notes:
        print(f"sertune import: note: {note}", file=sys.stderr)
    return 0
