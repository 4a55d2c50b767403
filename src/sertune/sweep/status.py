"""`sertune sweep status`: each cell's state, test UAR so far and time, from the sweep directory alone."""

from __future__ import annotations

import time
from typing import Any

from sertune.sweep.layout import SweepDir


def cell_rows(sweep: SweepDir) -> list[dict[str, Any]]:
    """One row per cell of sweep.json: id, name, state, test UAR (mean, std, folds; a dimensional cell: its mean
    CCC, `test_ccc`), seconds, error."""
    from sertune.report.results import RunSkipped, load_run

    rows = []
    for cell in sweep.read_plan()["cells"]:
        state = sweep.cell_state(cell["id"])
        record = state.record
        scores: dict[str, Any] = {"test_uar": None, "test_ccc": None}
        try:
            run = load_run(sweep.root / cell["run"])  # RunSkipped: no fold yet
            done = {"of": len(run.folds) + len(run.pending)}
            for key, metric in (("test_uar", "uar"), ("test_ccc", "ccc_mean")):
                if metric in run.test_summary:
                    scores[key] = {**run.test_summary[metric], **done}
        except RunSkipped:
            pass
        seconds = record.get("seconds")
        if state.state == "running" and record.get("started"):
            seconds = round(time.time() - float(record["started"]), 1)
        rows.append({"id": cell["id"], "name": cell["name"], "state": state.state, **scores,
                     "seconds": seconds, "attempts": record.get("attempt"), "slurm_job": record.get("slurm_job"),
                     "error": record.get("error") if state.state == "failed" else None})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The status table as text: cell, state, test UAR over the folds finished so far, time."""
    from sertune.commands._format import mean_std

    lines = [("cell", "state", "test UAR % (or CCC)", "time"), ]
    for row in rows:
        uar, ccc = row["test_uar"], row.get("test_ccc")
        score = uar or ccc
        shown = "–"
        if score:
            value = mean_std(score) if uar else f"CCC {mean_std(score, digits=3)}"
            shown = f"{value} ({score['n']} fold{'s' if score['n'] != 1 else ''})"
        seconds = row["seconds"]
        lines.append((row["name"], row["state"], shown, "–" if seconds is None else _duration(float(seconds))))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = ["  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    counts = {state: sum(row["state"] == state for row in rows) for state in ("done", "running", "pending", "failed")}
    text.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    text += [f"failed: {row['name']}: {row['error']}" for row in rows if row["error"]]
    return "\n".join(text)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
