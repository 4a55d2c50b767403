"""Atomic file writes and the user cache directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sertune.errors import SertuneError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
# The names `atomic_path` gives its temporaries: "." + target name + "." + mkstemp's 8 characters + ".tmp".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes.

    A crash or an exception leaves the previous file (or no file) in place, never a partial one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); the result should get the permissions of a plain open().
    tmp.chmod(0o666 & ~_UMASK)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `atomic_path` below `directory`; returns what was deleted.

    A process killed in the middle of a write leaves its temporary behind. Call this only where no
    write is in progress, e.g. when a run is resumed.
    """
    stale = [path for path in Path(directory).rglob(".*.tmp") if _TEMPORARY.fullmatch(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, advice: str) -> Any:
    """The JSON content of `path`; a corrupt or unreadable file is a `SertuneError` ending in `advice`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SertuneError(f"{path} is corrupt ({error}); {advice}") from None
    except OSError as error:
        raise SertuneError(f"{path} cannot be read ({error.strerror or error}); {advice}") from None


def cache_dir(*parts: str) -> Path:
    """The sertune cache folder (`$SERTUNE_CACHE`, else `$XDG_CACHE_HOME/sertune` or ~/.cache/sertune)."""
    root = os.environ.get("SERTUNE_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "sertune")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
