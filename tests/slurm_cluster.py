"""A real single-node SLURM cluster (munged + slurmctld + slurmd) started by the tests, as root, in a temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel")
PARTITION = "debug"


def _free_port() -> int:
    """A TCP port nobody listens on now (tiny race until the daemon binds it; fine for tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class SlurmCluster:
    """munged, slurmctld and slurmd on this machine, with all files under `root` and free ports.

    `env` holds SLURM_CONF (point any sbatch/squeue/scancel at it); `partition`, `cpus` and `memory_mb`
    are what the one node offers. Use as a context manager or call start()/stop().
    """

    def __init__(self, root: Path, timeout_s: float = 60.0) -> None:
        self.root, self.timeout_s = root, timeout_s
        self.partition = PARTITION
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, list[Path]] = {}
        # slurmd -C reports the node's name and hardware exactly as slurmd will see them when it registers.
        probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        hw = dict(item.split("=", 1) for item in probe.split() if "=" in item)
        self.node, self.cpus = hw["NodeName"], int(hw["CPUs"])
        # A bit below the real memory: slurmd drains a node that has less memory than configured.
        self.memory_mb = int(int(hw["RealMemory"]) * 0.9)
        self._hw = " ".join(
            f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        )
        # Unix socket paths are limited to 108 bytes: munged's socket and slurmstepd's (SlurmdSpoolDir/NODE_JOB.STEP,
        # up to ~25 + len(NODE) bytes) go in a short directory; a deep basetemp would break job launch.
        self.run_dir = root / "run"
        if len(str(self.run_dir)) + len(self.node) > 60:
            self.run_dir = Path(tempfile.mkdtemp(prefix="slurm"))

    def _write_config(self) -> None:
        for sub in ("log", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.run_dir / "d").mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.run_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)  # munged refuses a key readable by others
        r, ctld_port, d_port = self.root, _free_port(), _free_port()
        # Addresses are given explicitly (127.0.0.1) so that the hostname need not resolve (CI containers).
        self.conf.write_text(f"""\
ClusterName=sertune-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire s (default 120) and the next scheduling pass (default 60 s): short here.
AuthInfo=socket={self.run_dir}/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/spool
SlurmdSpoolDir={self.run_dir}/d
SlurmctldPidFile={self.run_dir}/slurmctld.pid
SlurmdPidFile={self.run_dir}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=2
NodeName={self.node} NodeAddr=127.0.0.1 {self._hw} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        # slurmd always initialises a cgroup plugin; on cgroup v2 it asks systemd over dbus for a scope, which a
        # container does not have: fall back to making the cgroup directories itself (ignored on cgroup v1).
        (self.root / "cgroup.conf").write_text("IgnoreSystemdOnFailure=yes\n")

    def _spawn(self, name: str, args: list[str], log: Path | None = None) -> None:
        out = self.root / "log" / f"{name}.out"
        self.logs[name] = [out] + ([log] if log else [])
        with out.open("wb") as fh:  # the child keeps its own copy of the descriptor
            # Own session: stop() can signal the daemon and anything it forked without touching other processes.
            self.procs[name] = subprocess.Popen(
                args, stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tails = "\n".join(f"--- {p}:\n{_tail(p)}" for p in self.logs[name])
                raise RuntimeError(f"{name} exited with code {proc.returncode} during start-up\n{tails}")

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p}:\n{_tail(p)}" for ps in self.logs.values() for p in ps)
                raise TimeoutError(f"{what} not ready after {self.timeout_s} s\n{logs}")
            time.sleep(0.5)

    def query(self, *args: str) -> str:
        """Output of a SLURM client command (sinfo, squeue, ...) run against this cluster."""
        return subprocess.run(args, capture_output=True, text=True, env=self.env).stdout.strip()

    def start(self) -> SlurmCluster:
        self._write_config()
        d, log = self.run_dir, self.root / "log"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={d}/munge.sock",
                f"--key-file={d}/munge.key",
                f"--log-file={log}/munged.log",
                f"--pid-file={d}/munged.pid",
                f"--seed-file={d}/munge.seed",
            ],
            log / "munged.log",
        )
        self._wait("munged", (d / "munge.sock").exists)
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], log / "slurmctld.log")
        # -N: register under the name slurmd -C printed, whatever `hostname` says.
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node], log / "slurmd.log")
        self._wait("node (sinfo idle)", lambda: self.query("sinfo", "-h", "-N", "-o", "%T") == "idle")
        return self

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            # Cancel leftover jobs first so that slurmd reaps their slurmstepd processes before it goes.
            self.query("scancel", f"--partition={self.partition}")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.query("squeue", "-h", "-t", "PD,R,CG"):
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)  # the group is ours: its id is the daemon's pid
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if not self.run_dir.is_relative_to(self.root):  # the short-path fallback lives outside the temp dir
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The running cluster; SLURM_CONF points at it in os.environ for the session (submitit calls sbatch)."""
    if os.geteuid() != 0:  # slurmd launches jobs as their owner, and the config says SlurmUser=root
        pytest.skip("the test SLURM cluster must run as root")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"SLURM not installed (missing {', '.join(missing)}): run `make system-deps` "
            "or apt-get install slurm-wlm munge"
        )
    old = os.environ.get("SLURM_CONF")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            yield cluster
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old
