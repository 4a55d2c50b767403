"""Wall time of a sweep of frozen cells with one shared feature cache vs each cell filling its own.

Both sweeps run the same grid through `sertune sweep` (local executor, `--jobs 2` on 2 CPU cores by
default): N frozen cells on one backbone and corpus that differ only in their seed. In the
`shared` sweep the cells read one cache, filled once by the sweep before they start; in the `own`
sweep every cell has its own cache folder (`train.cache_dir`), so each one encodes the corpus,
which is what happens without the sweep's shared fill. Each sweep gets fresh, empty feature caches
(the encoder's converted offline weights stay in ~/.cache/sertune, warmed before the first round);
the two sweeps alternate over `--rounds` rounds and the ratio own / shared is taken within each round.

    python benchmarks/sweep_cache.py                        # WavLM Base+ sized, 4 cells, 1 epoch, 6 speakers
    python benchmarks/sweep_cache.py --backbone whisper-base  # real offline weights, a smaller encoder
    python benchmarks/sweep_cache.py --epochs 30 --rounds 1

A backbone without offline weights here (the default, the study's main encoder) is a randomly
initialised model of its architecture saved to a local directory: the time to encode does not
depend on the weights.

Encoding dominates a frozen cell when its epochs are short (cached epochs are seconds each), so the
ratio approaches the number of cells; with more epochs per cell it falls towards 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def write_spec(path: Path, corpus: Path, backbone: str, cells: int, epochs: int, caches: Path, own: bool) -> Path:
    """The grid: `cells` seeds of a frozen cell, their features under `caches`: one folder for all of
    them, or with `own` one folder per cell."""
    grid: dict = {"backbone": [backbone], "method": ["frozen"], "seed": list(range(cells))}
    base = {"corpus": str(corpus), "folds": ["1"], "train": {"epochs": epochs, "workers": 0, "cache_dir": str(caches)}}
    spec = {"base": base, "grid": grid}
    if own:
        # Each seed gets its own cache folder: the grid varies both together, so exclude the rest.
        grid["cache_dir"] = [str(caches / f"cell{seed}") for seed in range(cells)]
        spec["exclude"] = [{"seed": seed, "cache_dir": [str(caches / f"cell{other}") for other in range(cells)
                                                        if other != seed]} for seed in range(cells)]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def timed_sweep(spec: Path, out: Path, jobs: int) -> float:
    """Seconds for `sertune sweep SPEC` to finish."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sertune", "sweep", str(spec), "--out", str(out), "--jobs", str(jobs)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def encoder_for(name: str, directory: Path) -> str:
    """What `--backbone` the cells get: `name` if it loads here (offline weights, converted once now),
    else a random model of its architecture saved in `directory`."""
    from sertune.backbones import SPECS, build_backbone, load_backbone
    from sertune.errors import SertuneError

    try:
        load_backbone(name)
        return name
    except SertuneError:
        build_backbone(SPECS[name], seed=0).model.save_pretrained(directory)
        return str(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wavlm-base-plus")
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--speakers", type=int, default=6, help="voices of the synthetic corpus (100 clips each)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sweep-cache-"))
    corpus = work / "corpus"
    subprocess.run([sys.executable, "-m", "sertune", "synth", "--out", str(corpus), "--speakers",
                    str(args.speakers)], check=True, stdout=subprocess.DEVNULL)
    clips = sum(1 for _ in (corpus / "audio").iterdir())
    backbone = encoder_for(args.backbone, work / "encoder")
    print(f"{args.cells} frozen cells of {args.backbone} on {clips} clips, {args.epochs} epoch(s), "
          f"--jobs {args.jobs}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    ratios, times = [], {"shared": [], "own": []}
    for round_number in range(args.rounds):
        order = ["shared", "own"] if round_number % 2 == 0 else ["own", "shared"]
        seconds = {}
        for kind in order:
            place = work / f"{kind}-{round_number}"
            spec = write_spec(place.with_suffix(".yaml"), corpus, backbone, args.cells, args.epochs,
                              place / "features", own=kind == "own")
            seconds[kind] = timed_sweep(spec, place / "sweep", args.jobs)
            times[kind].append(seconds[kind])
            shutil.rmtree(place)
        ratios.append(seconds["own"] / seconds["shared"])
        print(f"round {round_number + 1}: shared {seconds['shared']:.0f} s, own {seconds['own']:.0f} s, "
              f"own/shared {ratios[-1]:.2f}x")
    print(f"own/shared: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"fastest/fastest {min(times['own']) / min(times['shared']):.2f}x; "
          f"load average {os.getloadavg()[0]:.1f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
