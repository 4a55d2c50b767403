"""Progress bars that suit where they are shown: a live tqdm bar on a terminal, sparse lines in a log.

tqdm redraws its bar on every update; when stderr is a file or a pipe (`make demo > log 2>&1`)
each redraw becomes a line of its own, and a run of thousands of steps floods the log. Off a
terminal `progress_bar` therefore returns a `LogProgress`, which prints at most one line per
`interval` seconds and one when it closes.
"""

from __future__ import annotations

import sys
import threading
from time import monotonic
from typing import Any, TextIO

from tqdm import tqdm

# Seconds between two lines of a bar that writes to a log.
LOG_INTERVAL = 30.0


class LogProgress:
    """The part of tqdm's interface sertune uses, printing plain lines instead of redrawing a bar."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO, interval: float = LOG_INTERVAL) -> None:
        self.total, self.desc, self.unit, self.file, self.interval = total, desc, unit, file, interval
        self.n = 0
        self.postfix = ""
        self.began = self.printed = monotonic()
        self.closed = False
        self._lock = threading.Lock()  # corpus preparation updates from worker threads

    def update(self, n: int = 1) -> None:
        """Count `n` more items; print a line if the last one is `interval` seconds old."""
        with self._lock:
            self.n += n
            if monotonic() - self.printed >= self.interval:
                self._print()

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count on the next line (as tqdm's set_postfix)."""
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def write(self, message: str, file: TextIO | None = None) -> None:
        """Print a message of its own (as tqdm.write)."""
        print(message, file=file or self.file, flush=True)

    def close(self) -> None:
        """Print the final line (once)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._print()

    def _print(self) -> None:
        self.printed = monotonic()
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        elapsed = tqdm.format_interval(self.printed - self.began)
        line = f"{self.desc + ': ' if self.desc else ''}{count} {self.unit} [{elapsed}]"
        print(f"{line} {self.postfix}" if self.postfix else line, file=self.file, flush=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None, desc: str = "", unit: str = "it", *, disable: bool = False, leave: bool = True,
    file: TextIO | None = None,
) -> tqdm | LogProgress:
    """A tqdm bar on `file` (default stderr) when it is a terminal, else a `LogProgress` on it.

    `disable` gives a bar that shows nothing (other processes of a distributed run); `leave=False`
    clears a terminal bar when it closes, while a log still gets its final line.
    """
    file = file or sys.stderr
    if disable or getattr(file, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc or None, unit=unit, disable=disable, leave=leave, file=file)
    return LogProgress(total, desc, unit, file)
