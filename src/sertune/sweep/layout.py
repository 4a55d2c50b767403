"""The sweep directory: the plan (sweep.json), one run directory per cell, and each task's state.

```
SWEEP_DIR/
  sweep.json        the expanded grid: every cell's id, name, label, grid settings and resolved config,
                    and the shared feature caches the cells read
  configs/<id>.yaml the cell's settings, as `sertune train --config` reads them
  runs/<id>/        the cell's run directory, exactly what `sertune train --out` writes
  state/<id>.json   the last attempt of a task: running (pid, host or SLURM job) or failed (its error)
  logs/<id>.log     the task's output, appended at every attempt
  caches/<id>.json  what filling a shared feature cache did: clips encoded, clips already there
  slurm/            submitit's job files, when the slurm executor ran
```
A cell is done when its run's summary.json lists no failed fold; that, not the state file, is the
truth, so a run finished by any means counts.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError
from sertune.fileio import read_json, write_json_atomic

PLAN, RUNS, CONFIGS, STATE, LOGS, CACHES = "sweep.json", "runs", "configs", "state", "logs", "caches"
FORMAT = 1
STATES = ("pending", "running", "done", "failed")


@dataclass
class TaskState:
    """Where a task stands: one of STATES, with the last attempt's record (error, times, where it ran)."""

    state: str
    record: dict[str, Any]


class SweepDir:
    """Paths and state files of one sweep directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN

    def run_dir(self, task_id: str) -> Path:
        return self.root / RUNS / task_id

    def config_path(self, task_id: str) -> Path:
        return self.root / CONFIGS / f"{task_id}.yaml"

    def state_path(self, task_id: str) -> Path:
        return self.root / STATE / f"{task_id}.json"

    def log_path(self, task_id: str) -> Path:
        return self.root / LOGS / f"{task_id}.log"

    def read_plan(self) -> dict[str, Any]:
        """sweep.json; an error naming the path when this is not a sweep directory."""
        if not self.plan_path.is_file():
            raise SertuneError(f"{self.root} is not a sweep directory (no {PLAN}); start it with `sertune sweep SPEC "
                               f"--out {self.root}`")
        plan = read_json(self.plan_path, "restart the sweep with its spec to write it again")
        if not isinstance(plan, dict) or plan.get("format") != FORMAT or not isinstance(plan.get("cells"), list):
            raise SertuneError(f"{self.plan_path} is not a sweep plan of format {FORMAT}; restart the sweep with "
                               "its spec to write it again")
        return plan

    def record(self, task_id: str, **record: Any) -> None:
        """Replace the task's state record (atomically)."""
        write_json_atomic(self.state_path(task_id), {**record, "updated": time.time()})

    def read_record(self, task_id: str) -> dict[str, Any]:
        """The task's last state record, or {} if it never started (or the file was damaged)."""
        path = self.state_path(task_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def cell_state(self, task_id: str) -> TaskState:
        """done (the run's summary has no failed fold), failed, running (a live process or SLURM job), else
        pending (never started, or interrupted)."""
        record = self.read_record(task_id)
        summary = self.run_dir(task_id) / "summary.json"
        if summary.is_file():
            try:
                if not json.loads(summary.read_text(encoding="utf-8")).get("failed_folds"):
                    return TaskState("done", record)
            except ValueError:
                pass
        state = record.get("state")
        if state == "failed":
            return TaskState("failed", record)
        if state == "running" and attempt_alive(record):
            return TaskState("running", record)
        return TaskState("pending", record)


def attempt_alive(record: dict[str, Any]) -> bool:
    """Whether the attempt a `running` record describes still runs: its process on this host, or its
    SLURM job still queued or running (asked of squeue)."""
    job = record.get("slurm_job")
    if job:
        return slurm_job_active(str(job))
    if record.get("host") != socket.gethostname():
        return True  # another machine's process: cannot be checked from here, so trusted
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except (OSError, ValueError):
        return False
    return True


def slurm_job_active(job: str) -> bool:
    """Whether squeue still lists the SLURM job (pending, running, requeued)."""
    import subprocess

    try:
        listed = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True  # no answer from SLURM: assume it still runs rather than start it twice
    return listed.returncode == 0 and bool(listed.stdout.strip())
