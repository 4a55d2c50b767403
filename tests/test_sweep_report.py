"""`sertune report SWEEP_DIR`: the study's tables, figures and paired comparisons over a sweep's cells.

The sweep directory is built by hand as `sertune sweep` lays it out (sweep.json format 1, one run
directory per cell), its runs trained for real by `sertune train` on tiny random encoders.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

from sertune.cli import main
from sertune.corpora.synthetic import SynthSettings, synthesize
from sertune.metrics import classification_metrics
from sertune.report import RunResult, Stat, SweepCell, load_sweep, paired_bootstrap
from sertune.report.columns import column_labels
from sertune.report.comparisons import align
from sertune.report.study_tables import metric_grid
from test_report import CSV_ROUNDING, is_png, parse_csv

from conftest import save_tiny_encoder

TRAIN_FLAGS = ["--folds", "1,2", "--epochs", "1", "--workers", "0", "--max-seconds", "1", "--eval-max-seconds", "1"]
METHODS = {  # label -> (settings beyond corpus and backbone, train flags)
    "lora-r2": ({"tuning.method": "lora", "tuning.lora_rank": 2}, ["--method", "lora", "--rank", "2"]),
    "lora-r4": ({"tuning.method": "lora", "tuning.lora_rank": 4}, ["--method", "lora", "--rank", "4"]),
    "adapter-d4": ({"tuning.method": "adapter"}, ["--method", "adapter", "--adapter-dim", "4"]),
}
# The trained cells: (backbone, label). Not a full grid (as a sweep's `exclude` makes it): 4 runs are enough for
# two backbones, two methods, and a LoRA rank ablation.
TRAINED = [("whisper-0", "lora-r2"), ("whisper-0", "lora-r4"), ("whisper-1", "lora-r2"), ("whisper-1", "adapter-d4")]
AXES = ["corpus", "backbone", "tuning.method", "tuning.lora_rank"]
REPORT_FILES = {
    "report.md", "cells.csv", "synthetic-uar.csv", "synthetic-macro_f1.csv", "synthetic-parameters.csv",
    "synthetic-fairness.csv", "synthetic-paired.csv", "uar_vs_params.png", "uar_vs_lora_rank.png", "fairness.png",
}


def cell_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def cell_entry(name: str, label: str, settings: dict, config: dict) -> dict:
    return {"id": cell_id(name), "name": name, "label": label, "run": f"runs/{cell_id(name)}",
            "settings": settings, "config": config}


def train(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", *argv])
    assert stop.value.code == 0


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `TRAINED` cells, 2 folds each, plus a cell not run yet (frozen on the first backbone) and one whose run
    has no finished fold (prompt-p2 on the second)."""
    root = tmp_path_factory.mktemp("study")
    # 10 speakers: every test fold holds a woman and a man, so the fairness gaps exist.
    corpus = root / "corpus"
    synthesize(corpus, SynthSettings(speakers=10, sentences=1), progress=False)
    backbones = [save_tiny_encoder("whisper", root / f"whisper-{seed}", seed=seed) for seed in (0, 1)]
    sweep = root / "sweep"
    cells = []
    for backbone_name, label in TRAINED:
        backbone = root / backbone_name
        settings, flags = METHODS[label]
        name = f"synthetic/{backbone_name}/{label}"
        run = sweep / "runs" / cell_id(name)
        train([str(corpus), "--backbone", str(backbone), "--out", str(run), *TRAIN_FLAGS, *flags])
        config = yaml.safe_load((run / "config.yaml").read_text())
        cells.append(cell_entry(name, label, {"corpus": str(corpus), "backbone": str(backbone), **settings}, config))
    frozen = {**cells[0]["config"], "tuning": {**cells[0]["config"]["tuning"], "method": "frozen"}}
    cells.append(cell_entry(f"synthetic/{backbones[0].name}/frozen", "frozen",
                            {"corpus": str(corpus), "backbone": str(backbones[0]), "tuning.method": "frozen"}, frozen))
    prompt = {**cells[2]["config"], "tuning": {**cells[2]["config"]["tuning"], "method": "prompt", "prompt_length": 2}}
    waiting = cell_entry(f"synthetic/{backbones[1].name}/prompt-p2", "prompt-p2",
                         {"corpus": str(corpus), "backbone": str(backbones[1]), "tuning.method": "prompt"}, prompt)
    cells.append(waiting)
    fold = sweep / waiting["run"] / "folds" / "fold1"
    fold.mkdir(parents=True)
    (fold.parent.parent / "config.yaml").write_text(yaml.safe_dump(prompt))
    (fold / "metrics.json").write_text(json.dumps({"fold": "fold1", "complete": False, "epochs": []}))
    plan = {"format": 1, "name": "peft-ser", "axes": AXES, "cells": cells}
    (sweep / "sweep.json").write_text(json.dumps(plan, indent=2))
    return sweep


@pytest.fixture(scope="module")
def report(sweep_dir: Path) -> tuple[Path, str, str]:
    """`sertune report SWEEP_DIR` run once: the report directory, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(["report", str(sweep_dir)])
    assert stop.value.code == 0, err.getvalue()
    return sweep_dir / "report", out.getvalue(), err.getvalue()


def summary_of(sweep_dir: Path, name: str) -> dict:
    return json.loads((sweep_dir / "runs" / cell_id(name) / "summary.json").read_text())


def finished_cells(sweep_dir: Path) -> list[tuple[str, str, dict]]:
    """(backbone as recorded, label, summary.json) of each trained cell."""
    plan = json.loads((sweep_dir / "sweep.json").read_text())
    found = []
    for cell in plan["cells"]:
        path = sweep_dir / cell["run"] / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            found.append((summary["backbone"], cell["label"], summary))
    return found


def read_csv(path: Path) -> list[dict[str, str]]:
    return parse_csv(path.read_text())


def markdown_table(report_md: str, heading: str) -> dict[str, dict[str, str]]:
    """The first markdown table after `heading`: rows by first cell, then cells by column header."""
    lines = report_md[report_md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def test_report_writes_every_file_into_the_sweep(report) -> None:
    out, printed, errors = report
    assert {path.name for path in out.iterdir()} == REPORT_FILES  # and no temporary files left
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert is_png(out / name), name
    text = (out / "report.md").read_text()
    for name in REPORT_FILES - {"report.md"}:
        assert f"({name})" in text, name
    assert "Test UAR (%), mean ± std over folds (best per backbone in bold)" in printed
    assert "1 cell(s) not run yet" in printed
    assert "warning: skipped cell synthetic/whisper-1/prompt-p2" in errors and "has no finished fold yet" in errors


@pytest.mark.parametrize("key", ["uar", "macro_f1"])
def test_main_tables_equal_the_summaries_and_bold_the_best_per_backbone(sweep_dir, report, key) -> None:
    out, _, _ = report
    rows = {row["backbone"]: row for row in read_csv(out / f"synthetic-{key}.csv")}
    heading = "### Test UAR (%)" if key == "uar" else "### Test macro-F1 (%)"
    markdown = markdown_table((out / "report.md").read_text(), heading)
    assert list(next(iter(markdown.values()))) == ["lora-r2", "lora-r4", "adapter-d4", "frozen", "prompt-p2"]
    cells = finished_cells(sweep_dir)
    assert len(cells) == 4
    for backbone, label, summary in cells:
        entry = summary["test"][key]
        assert float(rows[backbone][f"{label} mean"]) == pytest.approx(entry["mean"], abs=CSV_ROUNDING)
        assert float(rows[backbone][f"{label} std"]) == pytest.approx(entry["std"], abs=CSV_ROUNDING)
        assert rows[backbone][f"{label} n"] == "2"
        best = max(s["test"][key]["mean"] for b, _, s in cells if b == backbone)
        shown = f"{entry['mean']:.2f} ± {entry['std']:.2f}"
        assert markdown[backbone][label] == (f"**{shown}**" if entry["mean"] == best else shown)
    # The cells without results are columns without numbers, and the notes say why.
    first, second = sorted({backbone for backbone, _, _ in cells})
    assert markdown[first]["frozen"] == markdown[second]["frozen"] == "–"
    assert rows[first]["frozen mean"] == rows[second]["prompt-p2 mean"] == ""
    assert rows[first]["frozen n"] == "0"


def test_cells_not_run_or_skipped_are_listed(report) -> None:
    out, _, _ = report
    status = {row["cell"]: row for row in read_csv(out / "cells.csv")}
    assert len(status) == 6
    assert status["synthetic/whisper-0/frozen"]["status"] == "not run yet"
    assert status["synthetic/whisper-1/prompt-p2"]["status"].startswith("skipped: ")
    assert status["synthetic/whisper-0/lora-r2"]["status"] == "finished"
    assert status["synthetic/whisper-0/lora-r2"]["folds reported"] == "2"
    text = (out / "report.md").read_text()
    assert "(cell synthetic/whisper-0/frozen, " in text and "): not run yet" in text
    assert "6 cell(s): 4 finished, 1 not run yet, 1 skipped" in text


def test_parameters_and_fairness_per_backbone_and_method(sweep_dir, report) -> None:
    out, _, _ = report
    parameters = {(row["backbone"], row["method"]): row for row in read_csv(out / "synthetic-parameters.csv")}
    fairness = {(row["backbone"], row["method"]): row for row in read_csv(out / "synthetic-fairness.csv")}
    cells = finished_cells(sweep_dir)
    assert set(parameters) == set(fairness) == {(backbone, label) for backbone, label, _ in cells}
    for backbone, label, summary in cells:
        row = parameters[backbone, label]
        counts = summary["parameters"]
        assert (int(row["tuning"]), int(row["head"]), int(row["total"])) == (
            counts["tuning"], counts["head"], counts["trained"])
        assert float(row["checkpoint (MB)"]) == pytest.approx(summary["checkpoint_bytes"] / 1e6, abs=CSV_ROUNDING)
        for column, key in (("statistical parity", "fairness.statistical_parity"),
                            ("equality of opportunity", "fairness.equality_of_opportunity")):
            entry = summary["test"][key]
            assert float(fairness[backbone, label][f"{column} mean"]) == pytest.approx(entry["mean"], abs=CSV_ROUNDING)
            assert float(fairness[backbone, label][f"{column} std"]) == pytest.approx(entry["std"], abs=CSV_ROUNDING)
    first = next(backbone for backbone, _, _ in cells if backbone.endswith("whisper-0"))
    # rank 2 trains half the LoRA parameters of rank 4
    assert 2 * int(parameters[first, "lora-r2"]["tuning"]) == int(parameters[first, "lora-r4"]["tuning"])


def test_paired_comparison_of_every_two_methods_per_backbone(sweep_dir, report) -> None:
    out, _, _ = report
    rows = read_csv(out / "synthetic-paired.csv")
    assert len(rows) == 2  # 1 pair on each backbone
    summaries = {(backbone, label): summary for backbone, label, summary in finished_cells(sweep_dir)}
    for row in rows:
        a, b = summaries[row["backbone"], row["A"]], summaries[row["backbone"], row["B"]]
        # Both predicted every test clip: the paired UARs are the folds' test UARs.
        assert row["folds"] == "2" and int(row["test clips"]) == a["test"]["n"]["mean"] * 2
        assert float(row["UAR A"]) == pytest.approx(a["test"]["uar"]["mean"], abs=CSV_ROUNDING)
        difference = a["test"]["uar"]["mean"] - b["test"]["uar"]["mean"]
        assert float(row["A − B"]) == pytest.approx(difference, abs=1e-5)
        assert float(row["CI low"]) - 1e-9 <= float(row["A − B"]) <= float(row["CI high"]) + 1e-9
    assert "1000 resamples (seed 0) of the test clips within each fold" in (out / "report.md").read_text()


def test_an_unfinished_cell_is_reported_with_its_finished_folds(sweep_dir, tmp_path, cli) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("report"))
    run = copy / "runs" / cell_id("synthetic/whisper-0/lora-r4")
    (run / "summary.json").unlink()
    shutil.rmtree(run / "folds" / "fold2" / "checkpoint")
    (run / "folds" / "fold2" / "metrics.json").write_text(json.dumps({"fold": "fold2", "complete": False}))
    code, _, err = cli(["report", str(copy), "--out", str(tmp_path / "out"), "--resamples", "50"])
    assert code == 0, err
    fold1 = json.loads((run / "folds" / "fold1" / "metrics.json").read_text())["test"]
    rows = {row["backbone"]: row for row in read_csv(tmp_path / "out" / "synthetic-uar.csv")}
    backbone = next(b for b, label, _ in finished_cells(copy) if label == "lora-r2" and b.endswith("whisper-0"))
    assert float(rows[backbone]["lora-r4 mean"]) == pytest.approx(fold1["uar"], abs=CSV_ROUNDING)
    assert rows[backbone]["lora-r4 n"] == "1"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "†" in text and "1 finished fold(s) reported (fold1), still training: fold2" in text
    assert not (copy / "report").exists()


def test_sweeps_and_runs_are_not_mixed_and_errors_are_one_line(sweep_dir, tmp_path, cli) -> None:
    run = sweep_dir / "runs" / cell_id("synthetic/whisper-0/lora-r2")
    code, _, err = cli(["report", str(sweep_dir), str(run)])
    assert code == 2 and "is a sweep (it holds sweep.json)" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sweep.json").write_text(json.dumps({"format": 1, "name": "e", "axes": [], "cells": [
        cell_entry("x", "lora-r16", {}, {"corpus": "/nowhere/synthetic", "backbone": "b", "tuning": {"method": "lora"}})
    ]}))
    code, _, err = cli(["report", str(empty)])
    assert code == 2 and "nothing to report" in err and "1 not run yet" in err
    (empty / "sweep.json").write_text(json.dumps({"format": 2, "cells": []}))
    code, _, err = cli(["report", str(empty)])
    assert code == 2 and "sweep format 2; this sertune reads format 1" in err


# Column labels and the best-per-row rule, on cells built in memory.


def make_cell(label: str, settings: dict, *, backbone: str = "wavlm", uar: float | None = None,
              axes: tuple[str, ...] = ("backbone", "tuning.method", "tuning.lora_rank", "train.lr", "train.seed")
              ) -> SweepCell:
    method = label.split("-")[0]
    config = {"corpus": "/data/iemocap", "backbone": backbone, "tuning": {"method": method, "lora_rank": 16},
              "train": {"lr": 5e-4, "seed": 0}}
    run = None
    if uar is not None:
        summary = {"uar": {"mean": uar, "std": 1.0, "n": 5}}
        run = RunResult(Path(label), "iemocap", backbone, method, ["a", "b"], [], summary)
    return SweepCell(id=cell_id(label + repr(settings) + backbone), name=label, label=label, run_dir=Path(label),
                     settings={"backbone": backbone, "tuning.method": method, **settings}, config=config,
                     sweep="s", axes=list(axes), run=run, status="finished" if run else "not run yet")


def test_columns_name_the_settings_that_tell_cells_with_one_label_apart() -> None:
    cells = [
        make_cell("lora-r16", {"tuning.lora_rank": 16, "train.lr": 0.001}),
        make_cell("lora-r16", {"tuning.lora_rank": 16, "train.lr": 1e-4}),
        make_cell("lora-r8", {"tuning.lora_rank": 8, "train.lr": 0.001}),
        # No rank in its settings: the sweep's rank axis does not act on an adapter.
        make_cell("adapter-d64", {"train.lr": 0.001}),
        make_cell("adapter-d64", {"train.lr": 0.001}, backbone="hubert"),
        make_cell("frozen", {"train.lr": 0.001, "train.seed": 1}),
        make_cell("frozen", {"train.lr": 0.001, "train.seed": 2}),
    ]
    axes = ["backbone", "tuning.method", "tuning.lora_rank", "train.lr", "train.seed"]
    assert column_labels(cells, axes) == [
        "lora-r16 lr=0.001", "lora-r16 lr=0.0001", "lora-r8", "adapter-d64", "adapter-d64",
        "frozen seed=1", "frozen seed=2",  # seeds are separate columns, not averaged with the folds
    ]
    twice = [make_cell("lora-r16", {}), make_cell("lora-r16", {})]
    twice[1].id = "b" * 12
    assert column_labels(twice, axes) == [f"lora-r16 ({twice[0].id})", f"lora-r16 ({'b' * 12})"]


def test_the_best_of_each_row_is_bold_ties_included() -> None:
    cells = [make_cell("lora-r16", {}, uar=70.0), make_cell("adapter-d64", {}, uar=72.5),
             make_cell("frozen", {}, uar=72.5), make_cell("prompt-p5", {}),
             make_cell("lora-r16", {}, backbone="hubert", uar=60.0),
             make_cell("frozen", {}, backbone="hubert", uar=None)]
    table = metric_grid(cells, [cell.label for cell in cells])
    assert table.header == ["backbone", "lora-r16", "adapter-d64", "frozen", "prompt-p5"]
    assert [[cell.bold if cell.mean is not None else None for cell in row[1:]] for row in table.rows] == [
        [False, True, True, None], [True, None, None, None],
    ]
    assert all(isinstance(cell, Stat) for row in table.rows for cell in row[1:])  # mean, std, n in the CSV
    assert "| wavlm | 70.00 ± 1.00 | **72.50 ± 1.00** | **72.50 ± 1.00** | – |" in table.to_markdown()
    assert "wavlm / prompt-p5 (cell prompt-p5, prompt-p5): not run yet" in table.notes


def test_load_sweep_names_the_cells_status(sweep_dir) -> None:
    sweep = load_sweep(sweep_dir)
    assert (sweep.name, sweep.axes, len(sweep.cells)) == ("peft-ser", AXES, 6)
    assert [cell.status for cell in sweep.cells] == ["finished"] * 4 + ["not run yet", "skipped"]
    assert sweep.cells[0].corpus == sweep.cells[4].corpus == "synthetic"  # a cell not run yet too


# The paired bootstrap (sertune.report.paired).


def predictions_with(rng: np.random.Generator, labels: np.ndarray, correct: int) -> np.ndarray:
    """Predictions right on exactly `correct` clips of every class (at random places), wrong on the others."""
    predicted = (labels + 1) % 4
    for c in range(4):
        predicted[rng.choice(np.flatnonzero(labels == c), correct, replace=False)] = c
    return predicted


def test_bootstrap_interval_covers_a_known_difference() -> None:
    rng = np.random.default_rng(7)
    labels = [rng.permutation(np.repeat(np.arange(4), 100)) for _ in range(3)]
    better = [predictions_with(rng, truth, 80) for truth in labels]  # UAR 80 on every fold
    worse = [predictions_with(rng, truth, 70) for truth in labels]  # UAR 70
    result = paired_bootstrap(labels, better, worse, 4)
    assert result.difference == pytest.approx(10.0, abs=1e-9) and result.uar_a == pytest.approx(80.0)
    assert 0 < result.low < 10.0 < result.high < 20
    assert (result.folds, result.clips, result.resamples) == (3, 1200, 1000)
    assert paired_bootstrap(labels, better, worse, 4) == result  # a fixed seed: the same report every time


def test_bootstrap_point_estimate_is_the_mean_per_fold_uar_difference() -> None:
    rng = np.random.default_rng(3)
    folds = []
    for n in (37, 120, 64):
        truth = rng.integers(0, 5, n)
        truth[:4] = [0, 1, 2, 3]  # class 4 may be absent: UAR is over the classes present
        folds.append((truth, np.where(rng.random(n) < 0.6, truth, rng.integers(0, 5, n)),
                      np.where(rng.random(n) < 0.5, truth, rng.integers(0, 5, n))))
    names = list("abcde")
    exact = np.mean([classification_metrics(t, p, names)["uar"] - classification_metrics(t, q, names)["uar"]
                     for t, p, q in folds])
    result = paired_bootstrap(*map(list, zip(*folds, strict=True)), 5, resamples=200)
    assert result.difference == pytest.approx(exact, abs=1e-9)
    assert result.low <= result.difference <= result.high


def test_identical_predictions_give_exactly_zero() -> None:
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 4, 50), rng.integers(0, 4, 80)]
    predicted = [rng.integers(0, 4, 50), rng.integers(0, 4, 80)]
    result = paired_bootstrap(labels, predicted, [p.copy() for p in predicted], 4)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero


def test_clips_are_resampled_within_their_fold() -> None:
    # Fold 1: 1000 clips that A and B predict alike (difference 0 in any resample). Fold 2: 3 clips, A right and
    # B wrong on each (difference 100 in any resample that keeps the fold's 3 clips). Resampled within folds,
    # every resample's mean difference is exactly 50; resampling the pooled 1003 clips would often leave fold 2
    # empty or change its weight.
    rng = np.random.default_rng(0)
    shared_labels, shared_predictions = rng.integers(0, 4, 1000), rng.integers(0, 4, 1000)
    small = np.array([0, 1, 2])
    result = paired_bootstrap([shared_labels, small], [shared_predictions, small],
                              [shared_predictions, (small + 1) % 4], 4)
    assert (result.difference, result.low, result.high) == (50.0, 50.0, 50.0)


def test_bootstrap_refuses_mismatched_folds() -> None:
    with pytest.raises(ValueError, match="fold 1: 3 labels but 2 and 3 predictions"):
        paired_bootstrap([np.zeros(3, int)], [np.zeros(2, int)], [np.zeros(3, int)], 2)
    with pytest.raises(ValueError, match="class indices"):
        paired_bootstrap([np.array([0, 2])], [np.array([0, 1])], [np.array([0, 1])], 2)


def test_align_leaves_out_and_counts_clips_only_one_run_predicted() -> None:
    a = {"fold1": {"x": ("sad", "sad"), "y": ("happy", "sad"), "z": ("sad", "happy")}, "fold2": {"w": ("sad", "sad")}}
    b = {"fold1": {"y": ("happy", "happy"), "x": ("sad", "happy"), "v": ("happy", "happy")}}
    aligned = align(a, b, ["sad", "happy"])
    assert aligned.folds == ["fold1"] and aligned.left_out == 2  # z (only A) and v (only B); fold2 is A's alone
    assert aligned.labels[0].tolist() == [0, 1]
    assert aligned.predicted_a[0].tolist() == [0, 0] and aligned.predicted_b[0].tolist() == [1, 1]
