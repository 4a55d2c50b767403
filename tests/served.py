"""A real `python -m sertune serve` on a free loopback port, for the tests that talk to it over HTTP."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A started server: its process, base URL and stderr log."""

    process: subprocess.Popen
    url: str
    log: Path

    def wait_until_up(self, headers: Mapping[str, str] | None = None, timeout: float = 120.0) -> str:
        """Wait until /health answers; returns the base URL (the test fails if the server exits or is slow)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2, headers=headers).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start in {timeout:.0f} s:\n{self.log.read_text()}")
            time.sleep(0.25)


@contextlib.contextmanager
def launched_server(models: Mapping[str, Path], log: Path, *options: str) -> Iterator[ServerProcess]:
    """Start the server on `models` (name -> run) with extra command-line `options`, without waiting for it;
    stop it by PID afterwards. Its stderr goes to `log`, which must then hold no traceback."""
    port = free_port()
    command = [sys.executable, "-m", "sertune", "serve", "--port", str(port), "--threads", "1"]
    command += [f"--model={name}={path}" for name, path in models.items()]
    command += ["--log-level", "warning", *options]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield ServerProcess(process, f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()


@contextlib.contextmanager
def running_server(models: Mapping[str, Path], log: Path, *options: str, headers: Mapping[str, str] | None = None,
                   ) -> Iterator[str]:
    """`launched_server`, once /health answers (with `headers`); yields the base URL."""
    with launched_server(models, log, *options) as server:
        yield server.wait_until_up(headers)
