"""submitit against the real single-node SLURM cluster of tests/slurm_cluster.py: one job and a 2-task array."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from slurm_cluster import SlurmCluster, slurm_cluster_fixture  # noqa: F401  (the fixture is used by name)

pytestmark = pytest.mark.slow
# submitit pickles functions by reference, and the job's python cannot import this test module (tests/ is on
# sys.path only inside pytest): ship this module's functions by value instead.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square_on_node(x: int) -> tuple[str, str, int]:
    """Runs in the job: the job id as submitit spells it (arrays: ARRAYID_TASK), the node's name, x squared."""
    env = os.environ
    job_id = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env:  # each array task has its own SLURM_JOB_ID; submitit names it by the array's
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return job_id, env["SLURMD_NODENAME"], x * x


def _results(cluster: SlurmCluster, jobs: list[submitit.Job], timeout_s: float = 45) -> list:
    """The jobs' results, or a TimeoutError saying what SLURM thinks of them."""
    # Job.result() would wait forever on a job that cannot launch (SLURM requeues it held): without slurmdbd,
    # sacct cannot report the failure to submitit, so the state stays UNKNOWN.
    deadline = time.monotonic() + timeout_s
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            queue = cluster.query("squeue", "-o", "%i %T %r")
            slurmd_log = "\n".join(p.read_text(errors="replace")[-3000:] for p in cluster.logs["slurmd"] if p.exists())
            raise TimeoutError(f"jobs not done after {timeout_s} s\nsqueue:\n{queue}\nslurmd:\n{slurmd_log}")
        time.sleep(0.5)
    return [job.result() for job in jobs]


def _executor(folder: Path, cluster: SlurmCluster) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(
        partition=cluster.partition, cpus_per_task=1, mem="256MB", time=5, array_parallelism=2, signal_delay_s=30
    )
    return executor


def test_single_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = _executor(tmp_path, slurm_cluster).submit(square_on_node, 7)
    assert _results(slurm_cluster, [job]) == [(job.job_id, slurm_cluster.node, 49)]


def test_job_array(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    jobs = _executor(tmp_path, slurm_cluster).map_array(square_on_node, [3, 4])
    assert [job.job_id.split("_")[1] for job in jobs] == ["0", "1"]
    assert _results(slurm_cluster, jobs) == [
        (job.job_id, slurm_cluster.node, value) for job, value in zip(jobs, [9, 16], strict=True)
    ]
