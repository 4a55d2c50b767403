"""The small-corpus measurements of docs/training.md: baselines and head settings on synthetic corpora.

Synthesises the two corpora (A: seed 0, 10 voices; B: seed 1, 8 voices), scores the MFCC baseline
and the linear probe (global and per-speaker normalisation) on all folds, trains each requested
setting of `sertune train` with Whisper tiny.en, and prints one row per setting: test UAR per fold,
mean and sample std. Runs that already finished in `--out` are read back, so an interrupted
measurement continues where it stopped. On a 2-core CPU a frozen run of 20 epochs takes about
10 minutes per corpus, a LoRA run of 6 epochs from a random head about an hour, and the default
LoRA run (a 20-epoch head warm-up on cached features, then 4 LoRA epochs) about 50 minutes.

    python benchmarks/small_corpus_recipe.py --out /tmp/recipe                     # frozen settings
    python benchmarks/small_corpus_recipe.py --out /tmp/recipe --lora --epochs 3 --only warm-up
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CORPORA = {"A": ["--seed", "0"], "B": ["--seed", "1", "--speakers", "8"]}
BACKBONE = "whisper-tiny.en"
# label: (run directory name, options of `sertune train`)
FROZEN = {
    "frozen, study's head (--normalization none)": ("frozen-none", ["--method", "frozen", "--normalization", "none"]),
    "frozen, --normalization global": ("frozen-global", ["--method", "frozen", "--normalization", "global"]),
    "frozen, speaker, --unknown-speaker-rate 0": ("frozen-speaker-rate0", ["--method", "frozen",
                                                                          "--unknown-speaker-rate", "0"]),
    "frozen, defaults (speaker, rate 0.5)": ("frozen-defaults", ["--method", "frozen"]),
}
LORA = {
    "lora, defaults (speaker, head warm-up 20 epochs)": ("lora-warmup", ["--method", "lora"]),
    "lora, random head (--head-warmup-epochs 0)": ("lora-defaults", ["--method", "lora", "--head-warmup-epochs", "0"]),
    "lora, study's head (--normalization none)": ("lora-none", ["--method", "lora", "--normalization", "none",
                                                                "--head-warmup-epochs", "0"]),
}
BASELINES = {
    "MFCC statistics baseline": ("mfcc", []),
    "linear probe (weighted layers)": ("probe", ["--features", BACKBONE]),
    "linear probe, speaker-normalised": ("probe-speaker", ["--features", BACKBONE, "--normalization", "speaker"]),
}

def sertune(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sertune", *args], check=True, stdout=subprocess.DEVNULL)


def row(summary_path: Path) -> str:
    folds = json.loads(summary_path.read_text())["folds"]
    uars = [fold["test"]["uar"] for fold in folds.values()]
    spread = f" ± {statistics.stdev(uars):4.1f}" if len(uars) > 1 else ""
    return f"{' '.join(f'{u:5.1f}' for u in uars)}  | {statistics.mean(uars):5.1f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the corpora and runs")
    parser.add_argument("--lora", action="store_true", help="measure the LoRA settings instead of the frozen ones")
    parser.add_argument("--folds", help="comma-separated folds of the trained runs (default: all)")
    parser.add_argument("--epochs", help="epochs of each trained run (default: 20 frozen, 6 LoRA)")
    parser.add_argument("--only", default="", help="train only the settings whose label contains this text")
    args = parser.parse_args()
    settings = {label: setting for label, setting in (LORA if args.lora else FROZEN).items() if args.only in label}
    epochs = args.epochs or ("6" if args.lora else "20")
    folds = ["--folds", args.folds] if args.folds else []
    for name, synth in CORPORA.items():
        corpus = args.out / f"corpus{name}"
        if not (corpus / "manifest.csv").is_file():
            sertune("synth", "--out", str(corpus), *synth)
        print(f"corpus {name} ({corpus}): test UAR per fold | mean ± std")
        for label, (directory, options) in BASELINES.items():
            out = args.out / name / directory
            if not (out / "summary.json").is_file():
                sertune("baseline", str(corpus), *options, "--out", str(out))
            print(f"  {label:<48} {row(out / 'summary.json')}")
        for label, (directory, options) in settings.items():
            out = args.out / name / f"{directory}-{epochs}ep"
            if not (out / "summary.json").is_file():
                resume = ["--resume"] if (out / "config.yaml").is_file() else []
                sertune("train", str(corpus), "--backbone", BACKBONE, "--workers", "0", "--epochs", epochs,
                        *options, *folds, "--out", str(out), *resume)
            print(f"  {label:<48} {row(out / 'summary.json')}", flush=True)

if __name__ == "__main__":
    main()
