"""`sertune sweep SPEC` (or `--preset NAME CORPUS...`): a grid of training runs, one command, resumable.

SPEC is a YAML file with `base:` (settings as in `train --config`), `grid:` (lists of values per
setting) and optional `exclude:`; every cell is validated before any runs, then each is trained as
an ordinary run directory under OUT/runs/. Run the same command again to resume: finished cells are
skipped, interrupted ones resume, failed ones re-run with --retry-failed. `sertune sweep status OUT`
shows where each cell stands; `sertune report OUT` writes the study's tables and figures.
See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SLURM_SETTINGS = ("partition", "time_limit", "cpus_per_cell", "mem_gb", "gpus_per_cell", "array_parallelism",
                  "additional")


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `sweep`."""
    from sertune.sweep.presets import SWEEP_PRESETS

    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="a sweep spec (YAML); with --preset, the prepared corpora; or `status SWEEP_DIR`")
    parser.add_argument("--preset", choices=sorted(SWEEP_PRESETS), help="one of the study's grids (docs/sweeps.md)")
    parser.add_argument("--out", type=Path, help="sweep directory (default: sweeps/<spec name or preset>)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="run the cells here (local) or as a SLURM job array")
    parser.add_argument("--jobs", type=int, default=1,
                        help="local: cells at once, at most one per --gpus-per-cell GPUs")
    parser.add_argument("--gpus-per-cell", type=int,
                        help="GPUs per cell (default: 1 where there are GPUs; 0 runs on CPU; more than 1 runs "
                        "the cell under accelerate launch)")
    parser.add_argument("--retry-failed", action="store_true", help="run the cells that failed before again")
    parser.add_argument("--dry-run", action="store_true", help="validate, write sweep.json and list the cells; "
                        "run nothing")
    parser.add_argument("--json", action="store_true", help="status: print the cells as JSON")
    slurm = parser.add_argument_group("slurm (also settable in the spec's `slurm:` section)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time-limit", type=int, metavar="MINUTES", help="time limit per cell (default: 1440); "
                       "a cell that reaches it is requeued and resumes")
    slurm.add_argument("--cpus-per-cell", type=int, help="CPUs per cell (default: 8)")
    slurm.add_argument("--mem-gb", type=float, help="memory per cell in GB (default: the partition's)")
    slurm.add_argument("--array-parallelism", type=int, help="cells running at once (default: 64)")
    slurm.add_argument("--no-wait", action="store_true", help="return once the cells are queued")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan the sweep, run what is left of it, print the status; exit status 1 if a cell failed."""
    if args.targets[:1] == ["status"] and not args.preset:
        return _status(args)
    import logging

    from sertune.sweep.layout import SweepDir
    from sertune.sweep.run import plan_sweep, run_sweep
    from sertune.sweep.status import cell_rows, format_rows

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, origin, default_name = _spec(args)
    out = args.out or Path("sweeps") / default_name
    plan = plan_sweep(spec, origin, out)
    print(f"{len(plan.cells)} cell(s) in {out / 'sweep.json'}", flush=True)
    if args.dry_run:
        for cell in plan.cells:
            print(f"  {cell.id}  {cell.name}")
        return 0
    outcome = run_sweep(plan, _executor(args, spec.get("slurm") or {}), retry_failed=args.retry_failed,
                        wait=not args.no_wait)
    if outcome.queued:
        print(f"{len(outcome.queued)} cell(s) queued on SLURM; follow them with `sertune sweep status {out}`")
        return 0
    print(format_rows(cell_rows(SweepDir(out))))
    print(f"tables and figures: sertune report {out}")
    if outcome.failed:
        print(f"sertune sweep: {len(outcome.failed)} cell(s) failed; see above, fix, then rerun with --retry-failed",
              file=sys.stderr)
        return 1
    return 0


def _spec(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    from sertune.config import read_yaml
    from sertune.errors import SertuneError
    from sertune.sweep.presets import preset_spec

    if args.preset:
        return preset_spec(args.preset, args.targets), f"preset {args.preset}", args.preset
    if len(args.targets) != 1:
        raise SertuneError("give one sweep spec (YAML), or --preset NAME with the prepared corpus directories")
    path = Path(args.targets[0])
    return read_yaml(path), str(path), path.stem


def _executor(args: argparse.Namespace, settings: dict[str, Any]) -> Any:
    from sertune.errors import SertuneError
    from sertune.sweep.executors import LocalExecutor, SlurmExecutor

    unknown = sorted(set(settings) - set(SLURM_SETTINGS))
    if unknown:
        raise SertuneError(f"spec: unknown slurm setting(s) {unknown}; known: {', '.join(SLURM_SETTINGS)}")
    if args.executor == "local":
        if args.gpus_per_cell is None:
            return LocalExecutor(jobs=args.jobs)
        return LocalExecutor(jobs=args.jobs, gpus_per_cell=args.gpus_per_cell)

    def pick(name: str, default: Any) -> Any:
        given = getattr(args, name, None)
        return given if given is not None else settings.get(name, default)

    return SlurmExecutor(
        partition=pick("partition", None), time_minutes=int(pick("time_limit", 24 * 60)),
        gpus_per_cell=int(pick("gpus_per_cell", 1)), cpus_per_cell=int(pick("cpus_per_cell", 8)),
        mem_gb=pick("mem_gb", None), array_parallelism=int(pick("array_parallelism", 64)),
        extra=dict(settings.get("additional") or {}),
    )


def _status(args: argparse.Namespace) -> int:
    from sertune.errors import SertuneError
    from sertune.sweep.layout import SweepDir
    from sertune.sweep.status import cell_rows, format_rows

    if len(args.targets) != 2:
        raise SertuneError("usage: sertune sweep status SWEEP_DIR [--json]")
    rows = cell_rows(SweepDir(args.targets[1]))
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0
