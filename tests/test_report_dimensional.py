"""`sertune report` on dimensional and multitask runs (arousal, valence, dominance scored by CCC), alone and beside
categorical runs, and in a sweep that varies the task. The run directories are written by hand as `sertune train
--task dimensional|multitask` lays them out (docs/runs.md plus the dimensional keys)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sertune.dimension_metrics import concordance, regression_fairness, regression_metrics
from sertune.metrics import summarize_folds
from sertune.report import (
    ccc_table,
    fairness_table,
    folds_table,
    load_run,
    load_sweep,
    plot_learning_curves,
    uar_table,
    write_report,
    write_sweep_report,
)
from sertune.report.results import pooled_test_scores
from test_report import CSV_ROUNDING, LABELS, WAVLM_LORA, fold_metrics, is_png, make_run, parse_csv

DIMENSIONS = ["arousal", "valence", "dominance"]
SCALE = (1.0, 5.0)
CLIPS = 24  # per test fold; even clips female, odd male
# The slope of the predictions against the truth per dimension: arousal tracked best, as usual.
SLOPES = {"arousal": 0.8, "valence": 0.3, "dominance": 0.5}


def fold_scores(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[CLIPS, 3] true and predicted scores on the 1-5 scale; the first clip has no valence score (NaN)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(*SCALE, size=(CLIPS, len(DIMENSIONS)))
    slopes = np.array([SLOPES[name] for name in DIMENSIONS])
    predicted = 3.0 + slopes * (true - 3.0) + rng.normal(0, 0.3, size=true.shape)
    true[0, DIMENSIONS.index("valence")] = np.nan
    return true, predicted


def dimensional_metrics(true: np.ndarray, predicted: np.ndarray) -> dict:
    """A part's dimensional metrics as metrics.json holds them (the fairness under `dimension_fairness`)."""
    genders = np.where(np.arange(len(true)) % 2 == 0, "female", "male")
    metrics = regression_metrics(true, predicted, DIMENSIONS)
    metrics["dimension_fairness"] = regression_fairness(true, predicted, genders, DIMENSIONS)
    return metrics


def predictions_csv(true: np.ndarray, predicted: np.ndarray, classes: bool) -> str:
    """predictions.csv as the trainer writes it: id, label[, predicted, logits], true_/predicted_ per dimension."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["id", "label", *(["predicted", *(f"logit_{name}" for name in LABELS)] if classes else [])]
    writer.writerow(header + [f"{which}_{name}" for name in DIMENSIONS for which in ("true", "predicted")])
    for index, (t, p) in enumerate(zip(true, predicted, strict=True)):
        label = LABELS[index % len(LABELS)]
        row = [f"clip{index}", label, *([label, *("0.0" for _ in LABELS)] if classes else [])]
        for value, guess in zip(t, p, strict=True):
            row += ["" if np.isnan(value) else repr(float(value)), repr(float(guess))]
        writer.writerow(row)
    return out.getvalue()


def make_dimensional_run(root: Path, name: str, folds: int = 2, *, multitask: bool = False,
                         finished: bool = True) -> Path:
    """A dimensional (or multitask) run with `folds` folds: metrics.json, predictions.csv and a checkpoint per
    fold, config.yaml, and summary.json when `finished`."""
    task = "multitask" if multitask else "dimensional"
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"corpus": "/data/corpora/iemocap", "backbone": "wavlm-base-plus", "tuning": {"method": "lora"},
              "task": {"kind": task, "dimensions": DIMENSIONS}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    scales = [{"name": dim, "low": SCALE[0], "high": SCALE[1]} for dim in DIMENSIONS]
    results = {}
    for index in range(1, folds + 1):
        fold_dir = run_dir / "folds" / f"fold{index}"
        (fold_dir / "checkpoint").mkdir(parents=True)
        true, predicted = fold_scores(seed=10 * index + multitask)
        dev, test = dimensional_metrics(*fold_scores(seed=100 + index)), dimensional_metrics(true, predicted)
        epochs = [{"epoch": e, "train_loss": 1.0 / e, "dev_loss": 0.9 / e, "dev_ccc": 0.1 * e, "lr": 5e-4}
                  for e in range(1, 4)]
        if multitask:
            # A multitask fold holds the categorical metrics beside the dimensional ones.
            dev, test = {**fold_metrics(1), **dev}, {**fold_metrics(index), **test}
            epochs = [{**epoch, "dev_uar": 60.0 + epoch["epoch"]} for epoch in epochs]
        results[f"fold{index}"] = {"best_epoch": 3, "dev": dev, "test": test}
        data = {"fold": f"fold{index}", "complete": True, "epochs": epochs, **results[f"fold{index}"]}
        (fold_dir / "metrics.json").write_text(json.dumps(data))
        (fold_dir / "predictions.csv").write_text(predictions_csv(true, predicted, multitask))
        (fold_dir / "checkpoint" / "adapter.safetensors").write_bytes(b"\0" * 1000)
        metadata = {"backbone": {"name": "wavlm-base-plus"}, "tuning": {"method": "lora"},
                    "labels": LABELS if multitask else [], "parameters": WAVLM_LORA, "dimensions": scales}
        (fold_dir / "checkpoint" / "sertune.json").write_text(json.dumps(metadata))
    if finished:
        summary = {
            "corpus": "iemocap", "corpus_dir": "/data/corpora/iemocap", "backbone": "wavlm-base-plus",
            "method": "lora", "task": task, "labels": LABELS if multitask else [], "dimensions": scales,
            "parameters": WAVLM_LORA, "checkpoint_bytes": 1000, "folds": results, "failed_folds": {},
            "test": summarize_folds([result["test"] for result in results.values()]),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def summary_test(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["test"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A categorical, a dimensional and a multitask run, all LoRA on one backbone and corpus."""
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "cat", [1, 2])
    make_dimensional_run(root, "dim")
    make_dimensional_run(root, "multi", multitask=True)
    return root


@pytest.fixture(scope="module")
def report(runs_dir: Path) -> tuple[Path, list[Path]]:
    """write_report of the three runs: the output directory and the files written."""
    runs = [load_run(runs_dir / name) for name in ("cat", "dim", "multi")]
    out = runs_dir / "report"
    return out, write_report(runs, out)


def test_runs_know_their_task_and_dimensions(runs_dir) -> None:
    cat, dim, multi = (load_run(runs_dir / name) for name in ("cat", "dim", "multi"))
    assert (cat.task, cat.dimensions, cat.classifies) == ("categorical", [], True)
    assert (dim.task, dim.dimensions, dim.classifies, dim.labels) == ("dimensional", DIMENSIONS, False, [])
    assert (multi.task, multi.dimensions, multi.classifies, multi.labels) == ("multitask", DIMENSIONS, True, LABELS)
    assert dim.scales == dict.fromkeys(DIMENSIONS, SCALE)


def test_report_writes_ccc_tables_and_scatter_plots_beside_the_categorical_ones(report) -> None:
    out, written = report
    assert {path.name for path in written} == {
        "report.md", "uar.csv", "fairness.csv", "ccc.csv", "ccc_details.csv", "ccc_fairness.csv", "parameters.csv",
        "uar_vs_params.png",
        "cat-folds.csv", "cat-confusion.png", "cat-curves.png",
        "dim-folds.csv", "dim-scatter.png", "dim-curves.png",
        "multi-folds.csv", "multi-confusion.png", "multi-scatter.png", "multi-curves.png",
    }
    assert sorted(path.name for path in out.iterdir()) == sorted(path.name for path in written)
    for path in written:
        if path.suffix == ".png":
            assert is_png(path), path
    text = (out / "report.md").read_text()
    assert "## Test CCC by dimension, mean ± std over folds" in text and "CSV: [ccc.csv](ccc.csv)" in text
    assert "![dim scatter](dim-scatter.png)" in text and "dim-confusion" not in text
    assert "- `" + str(out.parent / "dim") + "` (dimensional)" in text


def test_ccc_csv_equals_the_summaries(runs_dir, report) -> None:
    out, _ = report
    rows = {row["method [task]"]: row for row in parse_csv((out / "ccc.csv").read_text())}
    assert list(rows) == ["lora [dimensional]", "lora [multitask]"]  # no categorical run
    for name, label in (("dim", "lora [dimensional]"), ("multi", "lora [multitask]")):
        test, row = summary_test(runs_dir / name), rows[label]
        assert row["corpus"] == "iemocap"
        for column, key in [*((dim, f"dimensions.{dim}.ccc") for dim in DIMENSIONS), ("average", "ccc_mean")]:
            assert float(row[f"{column} mean"]) == pytest.approx(test[key]["mean"], abs=CSV_ROUNDING)
            assert float(row[f"{column} std"]) == pytest.approx(test[key]["std"], abs=CSV_ROUNDING)
            assert row[f"{column} n"] == "2"
    details = {row["method [task]"]: row for row in parse_csv((out / "ccc_details.csv").read_text())}
    test = summary_test(runs_dir / "dim")
    assert float(details["lora [dimensional]"]["r valence mean"]) == pytest.approx(
        test["dimensions.valence.pearson"]["mean"], abs=CSV_ROUNDING)
    assert float(details["lora [dimensional]"]["MAE arousal std"]) == pytest.approx(
        test["dimensions.arousal.mae"]["std"], abs=CSV_ROUNDING)
    text = (out / "report.md").read_text()
    arousal = test["dimensions.arousal.ccc"]
    assert f"| iemocap | lora [dimensional] | {arousal['mean']:.3f} ± {arousal['std']:.3f} |" in text
    assert "MAE is on each corpus's rating scale (iemocap: arousal 1–5, valence 1–5, dominance 1–5)." in text


def test_ccc_fairness_table_has_the_gap_and_ccc_per_gender(runs_dir, report) -> None:
    out, _ = report
    row = parse_csv((out / "ccc_fairness.csv").read_text())[0]
    test = summary_test(runs_dir / "dim")
    for dim in DIMENSIONS:
        gap = test[f"dimension_fairness.ccc_gap.{dim}"]
        assert float(row[f"CCC gap {dim} mean"]) == pytest.approx(gap["mean"], abs=CSV_ROUNDING)
        for group in ("female", "male"):
            entry = test[f"dimension_fairness.ccc_per_group.{dim}.{group}"]
            assert float(row[f"CCC {dim} {group} mean"]) == pytest.approx(entry["mean"], abs=CSV_ROUNDING)


def test_categorical_tables_leave_out_the_dimensional_run(runs_dir, report) -> None:
    out, _ = report
    runs = [load_run(runs_dir / name) for name in ("cat", "dim", "multi")]
    for table in (uar_table(runs), fairness_table(runs)):
        assert [row[1 if table.header[0] == "corpus" else 0] for row in table.rows] == [
            "lora [categorical]", "lora [multitask]"]
    uar = {row["method [task]"]: row for row in parse_csv((out / "uar.csv").read_text())}
    assert list(uar) == ["lora [categorical]", "lora [multitask]"]
    multitask_uar = summary_test(runs_dir / "multi")["uar"]
    assert float(uar["lora [multitask]"]["iemocap mean"]) == pytest.approx(multitask_uar["mean"], abs=CSV_ROUNDING)
    fairness = parse_csv((out / "fairness.csv").read_text())
    assert [row["method [task]"] for row in fairness] == ["lora [categorical]", "lora [multitask]"]
    assert len(parse_csv((out / "parameters.csv").read_text())) == 3  # every run has parameters
    assert ccc_table([runs[0]]) is None


def test_folds_table_shows_the_ccc_of_each_fold(runs_dir) -> None:
    run = load_run(runs_dir / "dim")
    table = folds_table(run)
    assert table.header == ["fold", "best epoch", "dev CCC", "test CCC", "CCC arousal", "CCC valence",
                            "CCC dominance"]
    assert "test scores at the best dev CCC epoch" in table.title
    rows = {row["fold"]: row for row in parse_csv(table.to_csv())}
    for fold in ("fold1", "fold2"):
        metrics = json.loads((runs_dir / "dim" / "folds" / fold / "metrics.json").read_text())
        assert float(rows[fold]["test CCC"]) == pytest.approx(metrics["test"]["ccc_mean"], abs=CSV_ROUNDING)
        assert float(rows[fold]["CCC valence"]) == pytest.approx(
            metrics["test"]["dimensions"]["valence"]["ccc"], abs=CSV_ROUNDING)
        assert float(rows[fold]["dev CCC"]) == pytest.approx(metrics["dev"]["ccc_mean"], abs=CSV_ROUNDING)
    assert float(rows["std"]["CCC arousal"]) == pytest.approx(
        summary_test(runs_dir / "dim")["dimensions.arousal.ccc"]["std"], abs=CSV_ROUNDING)
    multitask = folds_table(load_run(runs_dir / "multi"))
    assert multitask.header[2:4] == ["dev UAR", "test UAR"] and "test CCC" in multitask.header
    assert "best dev UAR and CCC epoch" in multitask.title


def test_scatter_pools_the_test_folds_and_leaves_unscored_clips_out(runs_dir) -> None:
    scores = pooled_test_scores(load_run(runs_dir / "dim"))
    assert list(scores) == DIMENSIONS
    assert len(scores["arousal"][0]) == 2 * CLIPS and len(scores["valence"][0]) == 2 * CLIPS - 2
    true = np.concatenate([fold_scores(seed)[0][:, 0] for seed in (10, 20)])
    predicted = np.concatenate([fold_scores(seed)[1][:, 0] for seed in (10, 20)])
    assert scores["arousal"][0] == pytest.approx(true) and scores["arousal"][1] == pytest.approx(predicted)
    assert concordance(*scores["arousal"]) > concordance(*scores["valence"])  # the slopes' order


def test_unfinished_dimensional_run_reads_its_task_from_config_and_checkpoint(tmp_path) -> None:
    run = load_run(make_dimensional_run(tmp_path, "dim", folds=1, finished=False))
    assert not run.complete and run.task == "dimensional" and run.labels == []
    assert run.dimensions == DIMENSIONS and run.scales["valence"] == SCALE
    assert run.test_summary["dimensions.arousal.ccc"]["n"] == 1 and "uar" not in run.test_summary
    assert plot_learning_curves(run, tmp_path / "curves.png").is_file()


def test_cli_prints_the_ccc_table_of_a_dimensional_run(tmp_path, cli) -> None:
    run_dir = make_dimensional_run(tmp_path, "dim", folds=1)
    code, out, err = cli(["report", str(run_dir)])
    assert code == 0 and err == ""
    assert "Test CCC by dimension" in out and "Test UAR" not in out
    assert "| iemocap | lora |" in out
    assert is_png(run_dir / "report" / "dim-scatter.png")


def test_sweep_over_the_task_has_ccc_grids_and_uar_grids_of_the_cells_with_classes(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    cells = []
    for task in ("categorical", "dimensional", "multitask"):
        run = f"runs/{task}"
        if task == "categorical":
            make_run(sweep_dir / "runs", task, [1, 2])
        else:
            make_dimensional_run(sweep_dir / "runs", task, multitask=task == "multitask")
        settings = {"corpus": "/data/corpora/iemocap", "backbone": "wavlm-base-plus", "tuning.method": "lora",
                    "task.kind": task}
        config = {"corpus": "/data/corpora/iemocap", "backbone": "wavlm-base-plus", "tuning": {"method": "lora"},
                  "task": {"kind": task}}
        cells.append({"id": task[:12], "name": f"iemocap/wavlm/lora/{task}", "label": "lora", "run": run,
                      "settings": settings, "config": config})
    axes = ["corpus", "backbone", "tuning.method", "task.kind"]
    (sweep_dir / "sweep.json").write_text(json.dumps({"format": 1, "name": "tasks", "axes": axes, "cells": cells}))
    out = tmp_path / "report"
    names = {path.name for path in write_sweep_report([load_sweep(sweep_dir)], out, resamples=20)}
    assert {"iemocap-uar.csv", "iemocap-ccc_mean.csv", "iemocap-ccc_arousal.csv", "iemocap-ccc_dominance.csv",
            "iemocap-ccc_fairness.csv", "iemocap-fairness.csv", "iemocap-paired.csv"} <= names

    uar = parse_csv((out / "iemocap-uar.csv").read_text())[0]
    assert [key.removesuffix(" mean") for key in uar if key.endswith(" mean")] == [
        "lora task=categorical", "lora task=multitask"]
    ccc = parse_csv((out / "iemocap-ccc_arousal.csv").read_text())[0]
    assert [key.removesuffix(" mean") for key in ccc if key.endswith(" mean")] == [
        "lora task=dimensional", "lora task=multitask"]
    for task in ("dimensional", "multitask"):
        test = summary_test(sweep_dir / "runs" / task)
        assert float(ccc[f"lora task={task} mean"]) == pytest.approx(
            test["dimensions.arousal.ccc"]["mean"], abs=CSV_ROUNDING)
        average = parse_csv((out / "iemocap-ccc_mean.csv").read_text())[0]
        assert float(average[f"lora task={task} std"]) == pytest.approx(test["ccc_mean"]["std"], abs=CSV_ROUNDING)
    fairness = parse_csv((out / "iemocap-ccc_fairness.csv").read_text())
    assert [row["method"] for row in fairness] == ["lora task=dimensional", "lora task=multitask"]
    assert [row["task"] for row in parse_csv((out / "cells.csv").read_text())] == [
        "categorical", "dimensional", "multitask"]
    text = (out / "report.md").read_text()
    assert "### Test CCC arousal, mean ± std over folds (best per backbone in bold)" in text
    assert "The paired bootstrap compares test UAR only" in text
