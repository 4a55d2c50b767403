"""A task of a sweep (train one cell, or fill one shared feature cache) as a command line, and the
one function every executor uses to run it: start it, record its state, keep its output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sertune.sweep.layout import SweepDir

ERROR_PREFIX = "error: "
# Exit statuses of a task stopped by a signal (as a subprocess, or as `sertune`'s own 130 for Ctrl-C).
INTERRUPTED = {-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP, 130}
ATTEMPT = "\n=== attempt "  # starts each attempt's part of a task's log


@dataclass(frozen=True)
class Task:
    """What an executor runs: `argv` with `gpus` GPUs, plus `resume_flag` if `resume_marker` exists when
    the task starts (a requeued SLURM job resumes the run its first attempt began)."""

    id: str
    name: str
    argv: tuple[str, ...]
    gpus: int = 0
    resume_marker: str | None = None
    resume_flag: str = "--resume"

    def command(self) -> list[str]:
        """The command line to start now."""
        resume = self.resume_marker is not None and Path(self.resume_marker).is_file()
        return [*self.argv, *([self.resume_flag] if resume else [])]


def train_task(sweep: SweepDir, cell_id: str, name: str, *, gpus: int) -> Task:
    """The `sertune train` command of a cell: a new run from its config, or `--resume` of a started one.

    With more than one GPU the cell runs under `accelerate launch`, one process per GPU.
    """
    run_dir = sweep.run_dir(cell_id).resolve()
    launcher = [sys.executable, "-m"]
    if gpus > 1:
        launcher += ["accelerate.commands.launch", "--num_processes", str(gpus), "--multi_gpu", "-m"]
    argv = (*launcher, "sertune", "train", "--config", str(sweep.config_path(cell_id).resolve()),
            "--out", str(run_dir))
    return Task(cell_id, name, argv, gpus, str(run_dir / "config.yaml"))


def run_task(sweep: SweepDir, task: Task, env: Mapping[str, str] | None = None, **where: object) -> bool:
    """Run `task` to its end, its output appended to its log; record running, then done or failed.

    `where` (e.g. `slurm_job`) goes into the state record. Returns whether the task succeeded.
    """
    log_path = sweep.log_path(task.id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    attempt = int(sweep.read_record(task.id).get("attempt", 0)) + 1
    with open(log_path, "a", encoding="utf-8") as log:
        command = task.command()
        log.write(f"{ATTEMPT}{attempt} on {socket.gethostname()} at {time.ctime(started)}: {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
        sweep.record(task.id, state="running", pid=process.pid, host=socket.gethostname(), started=started,
                     attempt=attempt, **where)
        returncode = process.wait()
    seconds = round(time.time() - started, 1)
    if returncode == 0:
        sweep.record(task.id, state="done", seconds=seconds, attempt=attempt, **where)
        return True
    if returncode in INTERRUPTED:  # stopped from outside (Ctrl-C, kill): pending, resumed by the next sweep
        sweep.record(task.id, state="interrupted", returncode=returncode, seconds=seconds, attempt=attempt, **where)
        return False
    sweep.record(task.id, state="failed", returncode=returncode, error=failure_message(log_path, returncode),
                 log=str(log_path.relative_to(sweep.root)), seconds=seconds, attempt=attempt, **where)
    return False


def failure_message(log_path: Path, returncode: int) -> str:
    """What a failed attempt printed last as an error (`sertune train: error: ...`, a traceback's last line)."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.rpartition(ATTEMPT)[2].splitlines()[1:] if line.strip()]
    errors = [line for line in lines if ERROR_PREFIX in line]
    if errors:
        return errors[-1]
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return lines[-1] if lines else f"exited with status {returncode} and printed nothing"
