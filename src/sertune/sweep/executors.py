"""Executors: where a sweep's tasks run. One interface, `run(sweep, tasks) -> {task id: succeeded}`.

`LocalExecutor` runs up to `jobs` tasks at once on this machine: on GPUs, each task gets its own
`gpus_per_cell` devices through CUDA_VISIBLE_DEVICES; on a CPU, the cores are split between the
jobs (OMP/MKL thread counts). `SlurmExecutor` submits the tasks as one job array through submitit;
a job that reaches its time limit or is pre-empted is requeued by submitit and resumes its run.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sertune.errors import SertuneError
from sertune.sweep.layout import SweepDir
from sertune.sweep.tasks import Task, run_task

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Executor(Protocol):
    """Runs tasks and says which succeeded."""

    def run(self, sweep: SweepDir, tasks: Sequence[Task], *, wait: bool = True) -> dict[str, bool]:
        """Run `tasks`; with `wait` False an executor may return once they are queued (an empty result)."""
        ...

    def task_gpus(self) -> int:
        """How many GPUs each task gets (0: it runs on CPU)."""
        ...


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device for device in listed.split(",") if device.strip() and device.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def cpu_count() -> int:
    """The cores this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class LocalExecutor:
    """Run tasks as subprocesses of this machine, `jobs` at a time."""

    jobs: int = 1
    gpus_per_cell: int = 1
    gpus: list[str] = field(default_factory=visible_gpus)

    def __post_init__(self) -> None:
        if self.jobs < 1 or self.gpus_per_cell < 0:
            raise SertuneError("--jobs must be at least 1 and --gpus-per-cell at least 0")
        if self.gpus_per_cell == 0:
            self.gpus = []
        if self.gpus:
            slots = len(self.gpus) // self.gpus_per_cell
            if slots == 0:
                raise SertuneError(f"--gpus-per-cell {self.gpus_per_cell}: this machine has only "
                                   f"{len(self.gpus)} GPU(s) ({','.join(self.gpus)})")
            self.jobs = min(self.jobs, slots)

    def slots(self) -> list[dict[str, str]]:
        """The environment of each concurrent job: its GPUs, or its share of the CPU cores."""
        if self.gpus:
            k = self.gpus_per_cell
            return [{"CUDA_VISIBLE_DEVICES": ",".join(self.gpus[i * k:(i + 1) * k])} for i in range(self.jobs)]
        threads = str(max(1, cpu_count() // self.jobs))
        return [dict.fromkeys(THREAD_VARIABLES, threads) for _ in range(self.jobs)]

    def task_gpus(self) -> int:
        return self.gpus_per_cell if self.gpus else 0

    def run(self, sweep: SweepDir, tasks: Sequence[Task], *, wait: bool = True) -> dict[str, bool]:
        free: queue.Queue[dict[str, str]] = queue.Queue()
        for slot in self.slots():
            free.put(slot)

        def one(task: Task) -> bool:
            slot = free.get()
            try:
                return run_task(sweep, task, slot)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            outcomes = list(pool.map(one, tasks))
        return {task.id: outcome for task, outcome in zip(tasks, outcomes, strict=True)}


class SlurmTask:
    """A task as a SLURM job's callable; requeued (by submitit) after a time-out or pre-emption."""

    def __init__(self, sweep_root: str) -> None:
        self.sweep_root = sweep_root

    def __call__(self, task: Task) -> bool:
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID", "")
        threads = os.environ.get("SLURM_CPUS_PER_TASK")
        env = dict.fromkeys(THREAD_VARIABLES, threads) if threads else {}
        return run_task(SweepDir(self.sweep_root), task, env, slurm_job=job)

    def checkpoint(self, task: Task) -> Any:
        """What submitit resubmits when the job is stopped: the same task, which resumes its run."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, task)


@dataclass
class SlurmExecutor:
    """Submit tasks as one SLURM job array (submitit); `wait` for them, or return once they are queued."""

    partition: str | None = None
    time_minutes: int = 24 * 60
    gpus_per_cell: int = 1
    cpus_per_cell: int = 8
    mem_gb: float | None = None
    array_parallelism: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    def task_gpus(self) -> int:
        return self.gpus_per_cell

    def executor(self, sweep: SweepDir) -> Any:
        """A submitit executor with these resources; its job files go to SWEEP_DIR/slurm."""
        import submitit

        executor = submitit.AutoExecutor(folder=sweep.root / "slurm" / "%j", cluster="slurm")
        parameters: dict[str, Any] = {
            "timeout_min": self.time_minutes, "cpus_per_task": self.cpus_per_cell, "tasks_per_node": 1,
            "nodes": 1, "slurm_array_parallelism": self.array_parallelism, "name": f"sweep-{sweep.root.name}",
        }
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.gpus_per_cell:
            parameters["gpus_per_node"] = self.gpus_per_cell
        if self.mem_gb:
            parameters["mem_gb"] = self.mem_gb
        if self.extra:
            parameters["slurm_additional_parameters"] = dict(self.extra)
        executor.update_parameters(**parameters)
        return executor

    def run(self, sweep: SweepDir, tasks: Sequence[Task], *, wait: bool = True) -> dict[str, bool]:
        if not tasks:
            return {}
        jobs = self.executor(sweep).map_array(SlurmTask(str(sweep.root.resolve())), list(tasks))
        for task, job in zip(tasks, jobs, strict=True):
            # recorded at once, so that a second `sertune sweep` meanwhile does not submit the cell again
            sweep.record(task.id, state="running", slurm_job=job.job_id,
                         attempt=sweep.read_record(task.id).get("attempt", 0))
        if not wait:
            return {}
        outcomes = {}
        for task, job in zip(tasks, jobs, strict=True):
            try:
                outcomes[task.id] = bool(job.result())
            except Exception as error:  # a job SLURM killed raises here; the others go on
                sweep.record(task.id, state="failed", slurm_job=job.job_id, error=f"SLURM job {job.job_id}: "
                             f"{str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}")
                outcomes[task.id] = False
        return outcomes
