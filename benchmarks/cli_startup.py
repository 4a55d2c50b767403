"""Start-up time of the `sertune` command line against a bare Python interpreter, measured side by side.

Each candidate is a fresh process, timed from spawn to exit, in interleaved rounds (see _timing.py):

* python:      `python -c pass`, the floor any Python command line starts from (the reference);
* --help:      `sertune --help`, which builds the parser of every subcommand;
* train --help: `sertune train --help`, the largest parser (its defaults come from the config dataclasses);
* --version:   `sertune --version`.

The figure is the median over rounds of each command's time divided by the reference's time of the
same round; the goal is at most 3x. Commands import torch, transformers, sklearn and matplotlib only
when they run (tests/test_cli_startup.py checks that help leaves them out).

    python benchmarks/cli_startup.py                 # 20 rounds, a few seconds
    python benchmarks/cli_startup.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _timing import fastest_ratio, interleave, load_average, log, median, median_ratio, paired_ratios, spread, table

GOAL = 3.0


def sertune_command() -> list[str]:
    """The installed `sertune` console script beside this interpreter, else `python -m sertune`."""
    script = Path(sys.executable).parent / "sertune"
    if script.is_file():
        return [str(script)]
    found = shutil.which("sertune")
    return [found] if found else [sys.executable, "-m", "sertune"]


def spawn(argv: list[str]) -> Callable[[], object]:
    """A call that runs `argv` to completion, its output discarded; a failure stops the benchmark."""

    def call() -> object:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (file-system caches)")
    args = parser.parse_args()

    sertune = sertune_command()
    candidates = {
        "python": spawn([sys.executable, "-c", "pass"]),
        "--help": spawn([*sertune, "--help"]),
        "train --help": spawn([*sertune, "train", "--help"]),
        "--version": spawn([*sertune, "--version"]),
    }
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} cores; {' '.join(sertune)}; {load_average()}")
    times = interleave(candidates, repeats=args.repeats, warmup=args.warmup, progress=log)
    rows = []
    for name, seconds in times.items():
        if name == "python":
            rows.append([name, f"{median(seconds) * 1000:.1f}", "1.00 (reference)", "", ""])
            continue
        ratio = median_ratio(times, name, "python")
        rows.append([
            name,
            f"{median(seconds) * 1000:.1f}",
            f"{ratio:.2f}" + ("" if ratio <= GOAL else f"  (over the {GOAL:g}x goal)"),
            spread(paired_ratios(times, name, "python")),
            f"{fastest_ratio(times, name, 'python'):.2f}",
        ])
    header = ["command", "median ms", f"x python (median of {args.repeats})", "range", "fastest/fastest"]
    print(table(header, rows, text_columns=1))
    print(f"# {load_average()}")


if __name__ == "__main__":
    main()
