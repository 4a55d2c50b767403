"""Atomic writes: all or nothing, with ordinary file permissions, and no temporaries left by killed writes."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from sertune.fileio import atomic_path, remove_stale_temporaries, write_json_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"uar": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "uar": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_written_files_get_the_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", [])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~previous


def test_stale_temporaries_of_killed_writes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "last").mkdir()
    fd, stale_state = tempfile.mkstemp(prefix=".state.pt.", suffix=".tmp", dir=tmp_path / "last")
    os.write(fd, b"half a checkpoint")  # what a kill -9 in the middle of torch.save leaves
    os.close(fd)
    fd, stale_metrics = tempfile.mkstemp(prefix=".metrics.json.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    kept = [tmp_path / name for name in ("metrics.json", ".hidden", "notes.tmp", ".gitignore", ".a.tmp")]
    for path in kept:
        path.write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([Path(stale_state), Path(stale_metrics)])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
