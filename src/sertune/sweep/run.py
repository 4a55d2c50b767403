"""Plan a sweep (expand, validate, write sweep.json and each cell's config) and run what is left of it.

Re-running is idempotent: finished cells are skipped, started ones resume (`sertune train --resume`),
failed ones wait for `retry_failed`, cells another live process or SLURM job is running are left
alone. Shared feature caches are filled before the cells that read them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sertune.config import dump_yaml
from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic, write_text_atomic
from sertune.sweep.caches import plan_caches
from sertune.sweep.executors import Executor
from sertune.sweep.layout import FORMAT, RUNS, SweepDir
from sertune.sweep.spec import Cell, canonical_key, expand
from sertune.sweep.tasks import Task, train_task

log = logging.getLogger(__name__)


def cell_checker() -> Callable[[Cell], None]:
    """A check of what spec resolution cannot see: the corpus is prepared, its folds exist, the backbone
    is a known name, a local directory or a hub id. Each corpus is read once."""
    from sertune.backbones.registry import SPECS, get_spec
    from sertune.corpora import load_corpus
    from sertune.train import select_folds

    corpora: dict[str, Any] = {}

    def check(cell: Cell) -> None:
        config = cell.config
        try:
            if config.corpus not in corpora:
                corpora[config.corpus] = load_corpus(config.corpus)
        except SertuneError as error:
            raise SertuneError(f"corpus: {error}") from None
        try:
            select_folds(corpora[config.corpus], config.folds)
        except SertuneError as error:
            raise SertuneError(f"folds: {error}") from None
        backbone = config.backbone
        if backbone not in SPECS and not Path(backbone).is_dir() and "/" not in backbone:
            try:
                get_spec(backbone)
            except SertuneError as error:
                raise SertuneError(f"backbone: {error}") from None

    return check


@dataclass
class Plan:
    """A planned sweep: its directory, cells and shared caches."""

    sweep: SweepDir
    cells: list[Cell]
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan_sweep(spec: dict[str, Any], origin: str, out: str | Path) -> Plan:
    """Expand and validate `spec`, then write SWEEP_DIR/sweep.json and configs/; nothing runs yet."""
    cells = expand(spec, origin, check=cell_checker())
    sweep = SweepDir(out)
    if sweep.root.exists() and not sweep.root.is_dir():
        raise SertuneError(f"--out {sweep.root} is a file; choose a directory")
    caches = plan_caches(cells)
    for cell in cells:
        write_text_atomic(sweep.config_path(cell.id), dump_yaml(cell.config))
    write_json_atomic(sweep.plan_path, {
        "format": FORMAT, "name": sweep.root.resolve().name, "spec": spec,
        "axes": [canonical_key(str(key)) for key in spec["grid"]],
        "cells": [cell.to_dict(f"{RUNS}/{cell.id}") for cell in cells],
        "caches": caches,
    })
    return Plan(sweep, cells, caches)


def cache_task(sweep: SweepDir, key: str, group: dict[str, Any], gpus: int) -> Task:
    """The task that fills shared cache `key`."""
    name = f"cache {Path(group['corpus']).name}/{Path(group['backbone']).name}"
    argv = (sys.executable, "-m", "sertune.sweep.caches", str(sweep.root.resolve()), key)
    return Task(key, name, argv, min(gpus, 1))


@dataclass
class Outcome:
    """What one `run_sweep` did: cells that ran and succeeded or failed, and those it left alone."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # cell id -> its state (done, failed, running)
    queued: list[str] = field(default_factory=list)


def run_sweep(plan: Plan, executor: Executor, *, retry_failed: bool = False, wait: bool = True) -> Outcome:
    """Run the cells of `plan` that are not done (failed ones only with `retry_failed`)."""
    sweep, outcome = plan.sweep, Outcome()
    to_run = []
    for cell in plan.cells:
        state = sweep.cell_state(cell.id).state
        if state == "pending" or (state == "failed" and retry_failed):
            to_run.append(cell)
        else:
            outcome.skipped[cell.id] = state
    states = list(outcome.skipped.values())
    left_alone = ", ".join(f"{states.count(state)} {state}" for state in ("done", "failed", "running"))
    print(f"{len(plan.cells)} cell(s): {len(to_run)} to run, {left_alone}", flush=True)
    if not to_run:
        return outcome
    gpus = executor.task_gpus()
    wanted = {cell.id for cell in to_run}
    caches = [cache_task(sweep, key, group, gpus) for key, group in plan.caches.items() if wanted & set(group["cells"])]
    for key, succeeded in executor.run(sweep, caches).items():
        if not succeeded:  # its cells fill what they need themselves
            log.warning("filling shared cache %s failed (%s); its cells will encode their own clips", key,
                        sweep.read_record(key).get("error"))
    tasks = [train_task(sweep, cell.id, cell.name, gpus=gpus) for cell in to_run]
    results = executor.run(sweep, tasks, wait=wait)
    if not wait:
        outcome.queued = [cell.id for cell in to_run]
        return outcome
    for cell in to_run:
        (outcome.succeeded if results.get(cell.id) else outcome.failed).append(cell.id)
    return outcome
