"""`sertune report`: tables, plots and robustness on run directories written as docs/runs.md describes."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sertune.errors import SertuneError
from sertune.metrics import classification_metrics, fairness_metrics, summarize_folds
from sertune.report import (
    RunSkipped,
    Stat,
    Table,
    fairness_table,
    folds_table,
    load_run,
    load_runs,
    parameters_table,
    plot_learning_curves,
    uar_table,
    write_report,
)

LABELS = ["neutral", "angry", "sad", "happy"]
PER_CLASS = 10
WAVLM_LORA = {"tuning": 1_474_560, "head": 395_280, "trained": 1_869_840, "encoder": 94_381_936}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSV_ROUNDING = 5e-7  # CSV numbers carry 6 decimals


def fold_metrics(wrong: int) -> dict:
    """Test metrics where `wrong` of the 10 clips of every class are misclassified.

    Every recall is (10 - wrong) / 10, so UAR = 100 - 10 * wrong. Even clips are female, odd male; only
    male clips are wrong, so each male recall is (5 - wrong) / 5 and equality of opportunity is
    20 * wrong points. The mistakes are "happy" (for true happy: "neutral"), so men are predicted happy
    (5 + 2 * wrong) / 20 of the time, women 5 / 20: statistical parity is 10 * wrong points.
    """
    y_true = np.repeat(np.arange(len(LABELS)), PER_CLASS)
    position = np.tile(np.arange(PER_CLASS), len(LABELS))
    gender = np.where(position % 2 == 0, "female", "male")
    # the first `wrong` male clips of each class, so at most 5
    mistaken = (gender == "male") & (position < 2 * wrong)
    happy = LABELS.index("happy")
    y_pred = np.where(mistaken, np.where(y_true == happy, 0, happy), y_true)
    metrics = classification_metrics(y_true, y_pred, LABELS)
    metrics["fairness"] = fairness_metrics(y_true, y_pred, gender, LABELS)
    return metrics


def write_fold(run_dir: Path, name: str, wrong: int | None, *, parameters: dict | None = None) -> dict | None:
    """Write folds/<name>/metrics.json (and a checkpoint); `wrong=None` leaves the fold still training."""
    fold_dir = run_dir / "folds" / name
    fold_dir.mkdir(parents=True)
    shift = int(name[-1])  # tells the folds' curves apart in the plot
    epochs = [
        {"epoch": e, "train_loss": 1.4 / e, "dev_loss": 1.0 + (e - 4) ** 2 / 20 + shift / 20,
         "dev_uar": 70.0 - (e - 4) ** 2 - shift, "lr": 5e-4, "seconds": 3.5}
        for e in range(1, 7)
    ]
    if wrong is None:
        data = {"fold": name, "complete": False, "epochs": epochs[:2]}
        (fold_dir / "metrics.json").write_text(json.dumps(data))
        return None
    test = fold_metrics(wrong)
    data = {
        "fold": name,
        "complete": True,
        "epochs": epochs,
        "best_epoch": 4,
        "dev": fold_metrics(max(wrong - 1, 0)),
        "test": test,
        "counts": {"train": 120, "dev": 40, "test": 40, "skipped": []},
    }
    (fold_dir / "metrics.json").write_text(json.dumps(data))
    checkpoint = fold_dir / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "adapter.safetensors").write_bytes(b"\0" * 7_480_000)
    metadata = {"backbone": {"name": "wavlm-base-plus"}, "tuning": {"method": "lora"}, "labels": LABELS,
                "parameters": parameters or WAVLM_LORA}
    (checkpoint / "sertune.json").write_text(json.dumps(metadata))
    return data


def make_run(
    root: Path,
    name: str,
    wrongs: list[int | None],
    *,
    corpus: str = "iemocap",
    backbone: str = "wavlm-base-plus",
    method: str = "lora",
    parameters: dict | None = None,
    finished: bool = True,
) -> Path:
    """A run directory with one fold per entry of `wrongs`; summary.json only when `finished`."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"corpus": f"/data/corpora/{corpus}", "backbone": backbone, "folds": None, "tuning": {"method": method}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    folds = {f"fold{i}": write_fold(run_dir, f"fold{i}", wrong) for i, wrong in enumerate(wrongs, start=1)}
    if finished:
        summary = {
            "corpus": corpus,
            "corpus_dir": f"/data/corpora/{corpus}",
            "backbone": backbone,
            "method": method,
            "labels": LABELS,
            "parameters": parameters or WAVLM_LORA,
            "checkpoint_bytes": 7_480_000,
            "folds": {name: {k: d[k] for k in ("best_epoch", "dev", "test")} for name, d in folds.items()},
            "test": summarize_folds([d["test"] for d in folds.values()]),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def make_baseline_run(root: Path, name: str, wrongs: list[int]) -> Path:
    """A run directory as `sertune baseline --out` writes it (sertune.baseline.write_baseline_run): no
    epochs, `best_epoch` null, the chosen regularisation `C`, no checkpoint."""
    run_dir = root / name
    folds = {}
    for index, wrong in enumerate(wrongs, start=1):
        folds[f"fold{index}"] = {"fold": f"fold{index}", "complete": True, "epochs": [], "best_epoch": None,
                                 "dev": fold_metrics(max(wrong - 1, 0)), "test": fold_metrics(wrong), "C": 0.1}
        (run_dir / "folds" / f"fold{index}").mkdir(parents=True)
        (run_dir / "folds" / f"fold{index}" / "metrics.json").write_text(json.dumps(folds[f"fold{index}"]))
    summary = {
        "corpus": "iemocap", "corpus_dir": "/data/corpora/iemocap", "backbone": "mfcc-statistics",
        "method": "logistic-regression", "labels": LABELS,
        "parameters": {"tuning": 0, "head": 324, "trained": 324, "encoder": 0}, "checkpoint_bytes": None,
        "folds": {name: {k: d[k] for k in ("best_epoch", "dev", "test")} for name, d in folds.items()},
        "failed_folds": {}, "test": summarize_folds([d["test"] for d in folds.values()]),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def markdown_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}



def test_fixture_metrics_are_what_the_docstring_says() -> None:
    assert [fold_metrics(w)["uar"] for w in (1, 2, 3)] == pytest.approx([90.0, 80.0, 70.0])
    fairness = fold_metrics(2)["fairness"]
    assert fairness["uar_per_group"] == pytest.approx({"female": 100.0, "male": 60.0})
    assert (fairness["statistical_parity"], fairness["equality_of_opportunity"]) == pytest.approx((20.0, 40.0))


def test_load_finished_run(tmp_path) -> None:
    run = load_run(make_run(tmp_path, "iemo-lora", [1, 2, 3]))
    assert run.complete and run.pending == []
    assert (run.corpus, run.backbone, run.method, run.labels) == ("iemocap", "wavlm-base-plus", "lora", LABELS)
    assert [fold.name for fold in run.folds] == ["fold1", "fold2", "fold3"]
    assert run.folds[1].best_epoch == 4 and len(run.folds[1].epochs) == 6
    summary = json.loads((tmp_path / "iemo-lora" / "summary.json").read_text())
    assert run.test_summary == summary["test"]
    assert run.parameters == WAVLM_LORA and run.checkpoint_bytes == 7_480_000


def test_uar_table_is_method_by_corpus_with_mean_and_std(tmp_path) -> None:
    runs = [
        load_run(make_run(tmp_path, "iemo-lora", [1, 2, 3])),  # 90, 80, 70 -> 80 ± 10
        load_run(make_run(tmp_path, "iemo-adapter", [2, 2, 4], method="adapter")),  # 80, 80, 60
        load_run(make_run(tmp_path, "crema-lora", [0, 1], corpus="crema-d")),  # 100, 90
    ]
    table = uar_table(runs)
    assert table.header == ["method", "iemocap", "crema-d"]
    rows = markdown_rows(table.to_markdown())
    adapter_std = np.std([80.0, 80.0, 60.0], ddof=1)
    assert rows["lora"] == ["80.00 ± 10.00", f"95.00 ± {np.std([100.0, 90.0], ddof=1):.2f}"]
    assert rows["adapter"] == [f"{np.mean([80, 80, 60]):.2f} ± {adapter_std:.2f}", "–"]

    parsed = {row["method"]: row for row in parse_csv(table.to_csv())}
    assert list(parsed) == ["lora", "adapter"]
    assert float(parsed["lora"]["iemocap mean"]) == pytest.approx(runs[0].test_summary["uar"]["mean"], abs=CSV_ROUNDING)
    assert float(parsed["adapter"]["iemocap std"]) == pytest.approx(adapter_std, abs=CSV_ROUNDING)
    assert parsed["lora"]["crema-d n"] == "2"
    assert parsed["adapter"]["crema-d mean"] == parsed["adapter"]["crema-d std"] == ""


def test_rows_name_the_backbone_when_runs_differ_in_it_and_repeats_name_the_run(tmp_path) -> None:
    runs = [
        load_run(make_run(tmp_path, "wavlm-lora", [1, 2])),
        load_run(make_run(tmp_path, "tiny-lora", [2, 3], backbone="whisper-tiny.en")),
        load_run(make_run(tmp_path, "tiny-lora-again", [3, 4], backbone="whisper-tiny.en")),
    ]
    table = uar_table(runs)
    assert table.header == ["backbone / method", "iemocap"]
    assert [row[0] for row in table.rows] == [
        "wavlm-base-plus / lora",
        "whisper-tiny.en / lora (tiny-lora)",
        "whisper-tiny.en / lora (tiny-lora-again)",
    ]


def test_fairness_table_gaps_and_uar_per_gender(tmp_path) -> None:
    run = load_run(make_run(tmp_path, "iemo-lora", [1, 3]))
    table = fairness_table([run])
    assert table.header == [
        "corpus", "method", "statistical parity", "equality of opportunity", "UAR female", "UAR male"
    ]
    # wrong = 1 and 3: parity 10 and 30 points, opportunity 20 and 60, male UAR 80 and 40
    spread = np.std([10.0, 30.0], ddof=1)
    double = 2 * spread
    expected = ["lora", f"20.00 ± {spread:.2f}", f"40.00 ± {double:.2f}", "100.00 ± 0.00", f"60.00 ± {double:.2f}"]
    assert markdown_rows(table.to_markdown())["iemocap"] == expected
    parsed = parse_csv(table.to_csv())[0]
    assert float(parsed["statistical parity mean"]) == pytest.approx(20.0)
    assert float(parsed["equality of opportunity mean"]) == pytest.approx(40.0)
    assert parsed["UAR female n"] == "2"
    assert float(parsed["UAR male std"]) == pytest.approx(np.std([80.0, 40.0], ddof=1))


def test_parameters_table(tmp_path) -> None:
    tiny = {"tuning": 245_760, "head": 296_968, "trained": 542_728, "encoder": 8_208_384}
    runs = [
        load_run(make_run(tmp_path, "iemo-lora", [1, 2])),
        load_run(make_run(tmp_path, "iemo-tiny", [1, 2], backbone="whisper-tiny.en", parameters=tiny)),
    ]
    table = parameters_table(runs)
    first_row = table.to_markdown().splitlines()[2]
    assert first_row == "| iemocap | wavlm-base-plus / lora | 1,474,560 | 395,280 | 1,869,840 | 1.98 | 7.48 |"
    parsed = parse_csv(table.to_csv())
    assert parsed[1]["total"] == "542728"
    assert float(parsed[1]["% of encoder"]) == pytest.approx(100 * 542_728 / 8_208_384)


def test_folds_table_has_a_row_per_fold_then_mean_and_std(tmp_path) -> None:
    run = load_run(make_run(tmp_path, "iemo-lora", [1, 2, 3]))
    table = folds_table(run)
    rows = markdown_rows(table.to_markdown())
    assert list(rows) == ["fold", "fold1", "fold2", "fold3", "mean", "std"]
    # fold2: dev has 1 wrong per class (90), test 2 (80); accuracy equals UAR with balanced classes
    assert rows["fold2"][:5] == ["4", "90.00", "80.00", "80.00", f"{fold_metrics(2)['macro_f1']:.2f}"]
    assert rows["mean"][:3] == ["–", "90.00", "80.00"]
    assert rows["std"][2] == "10.00"
    parsed = {row["fold"]: row for row in parse_csv(table.to_csv())}
    opportunity = fold_metrics(3)["fairness"]["equality_of_opportunity"]
    assert float(parsed["fold3"]["equality of opportunity"]) == pytest.approx(opportunity, abs=CSV_ROUNDING)
    assert float(parsed["mean"]["test UAR"]) == pytest.approx(run.test_summary["uar"]["mean"], abs=CSV_ROUNDING)
    assert float(parsed["std"]["UAR male"]) == pytest.approx(np.std([80.0, 60.0, 40.0], ddof=1))


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5_000


def test_write_report_writes_tables_plots_and_markdown(tmp_path) -> None:
    runs = [
        load_run(make_run(tmp_path, "iemo-lora", [1, 2, 3])),
        load_run(make_run(tmp_path, "iemo-adapter", [2, 3, 4], method="adapter")),
    ]
    out = tmp_path / "out"
    written = write_report(runs, out)
    names = {path.name for path in written}
    assert names == {
        "uar.csv", "fairness.csv", "parameters.csv", "uar_vs_params.png", "report.md",
        "iemo-lora-folds.csv", "iemo-lora-confusion.png", "iemo-lora-curves.png",
        "iemo-adapter-folds.csv", "iemo-adapter-confusion.png", "iemo-adapter-curves.png",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary files left behind
    for path in written:
        if path.suffix == ".png":
            assert is_png(path), path
    report = (out / "report.md").read_text()
    assert "![iemo-lora confusion](iemo-lora-confusion.png)" in report
    assert "| lora | 80.00 ± 10.00 |" in report
    assert (out / "uar.csv").read_text() == uar_table(runs).to_csv()


def test_baseline_run_has_no_curves_plot_and_no_epoch_wording(tmp_path) -> None:
    runs = [load_run(make_run(tmp_path, "iemo-lora", [1, 2])), load_run(make_baseline_run(tmp_path, "mfcc", [2, 3]))]
    assert runs[0].has_epochs and not runs[1].has_epochs
    out = tmp_path / "out"
    names = {path.name for path in write_report(runs, out)}
    assert "iemo-lora-curves.png" in names and "mfcc-confusion.png" in names
    assert "mfcc-curves.png" not in names and not (out / "mfcc-curves.png").exists()
    report = (out / "report.md").read_text()
    assert "![mfcc confusion](mfcc-confusion.png)" in report and "mfcc-curves" not in report
    baseline_section = report[report.index("## mfcc:") :]
    assert baseline_section.startswith("## mfcc: iemocap, mfcc-statistics, logistic-regression (test scores of the "
                                       "model selected by dev UAR; no epochs)")
    assert "epoch" not in baseline_section.split("no epochs)", 1)[1]
    assert list(parse_csv((out / "mfcc-folds.csv").read_text())[0])[:3] == ["fold", "dev UAR", "test UAR"]
    assert "test scores at the best dev UAR epoch" in folds_table(runs[0]).title
    with pytest.raises(SertuneError, match="no per-epoch history to plot"):
        plot_learning_curves(runs[1], tmp_path / "curves.png")


def test_csv_numbers_are_rounded_and_parse_back(tmp_path) -> None:
    table = Table("t", ["method", "uar", "share"], [["lora", Stat(28.000000000000004, 0.1 + 0.2, 3), -1e-12]])
    assert table.to_csv() == "method,uar mean,uar std,uar n,share\nlora,28.0,0.3,3,0.0\n"
    runs = [load_run(make_run(tmp_path, "iemo-lora", [1, 2, 3])), load_run(make_baseline_run(tmp_path, "mfcc", [3]))]
    csv_files = [path for path in write_report(runs, tmp_path / "out") if path.suffix == ".csv"]
    assert len(csv_files) == 5
    for path in csv_files:
        assert not re.search(r"\.\d{7}", path.read_text()), path  # at most 6 decimals


def test_unfinished_run_reports_its_finished_folds_and_is_marked(tmp_path) -> None:
    run_dir = make_run(tmp_path, "iemo-lora", [1, 3, None], finished=False)
    (run_dir / "folds" / "fold4").mkdir()  # started, no epoch finished yet
    run = load_run(run_dir)
    assert not run.complete
    assert [fold.name for fold in run.folds] == ["fold1", "fold2"] and run.pending == ["fold3", "fold4"]
    # settings from config.yaml and the first fold's checkpoint
    assert (run.corpus, run.method, run.labels) == ("iemocap", "lora", LABELS)
    assert run.parameters == WAVLM_LORA and run.checkpoint_bytes == 7_480_000
    assert run.test_summary["uar"] == pytest.approx({"mean": 80.0, "std": np.std([90, 70], ddof=1), "n": 2})

    table = uar_table([run])
    text = table.to_markdown()
    assert f"| lora | 80.00 ± {np.std([90, 70], ddof=1):.2f}† |" in text
    assert "unfinished run (no summary.json); 2 finished fold(s) reported (fold1, fold2)" in text
    assert "still training: fold3, fold4" in text
    written = write_report([run], tmp_path / "out")
    assert all(path.exists() for path in written)


def test_failed_folds_of_a_finished_run_are_marked(tmp_path) -> None:
    run_dir = make_run(tmp_path, "iemo-lora", [1, 3])
    write_fold(run_dir, "fold3", None)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["failed_folds"] = {"fold3": "fold fold3, epoch 2: the training loss is nan"}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    run = load_run(run_dir)
    assert run.complete and run.partial and [fold.name for fold in run.folds] == ["fold1", "fold2"]
    text = uar_table([run]).to_markdown()
    assert "| lora | 80.00 ± " in text and "† |" in text
    assert "with failed folds; 2 finished fold(s) reported (fold1, fold2); fold3 failed: fold fold3, epoch 2" in text


def test_unfinished_run_reads_the_corpus_name_from_the_prepared_corpus(tmp_path) -> None:
    corpus_dir = tmp_path / "corpora" / "synth"
    corpus_dir.mkdir(parents=True)
    (corpus_dir / "folds.json").write_text(json.dumps({"corpus": "synthetic", "labels": LABELS, "folds": []}))
    run_dir = make_run(tmp_path, "synth-lora", [1], finished=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"corpus": str(corpus_dir), "tuning": {"method": "lora"}}))
    assert load_run(run_dir).corpus == "synthetic"


def test_run_without_a_finished_fold_is_skipped(tmp_path) -> None:
    waiting = make_run(tmp_path, "waiting", [None, None], finished=False)
    with pytest.raises(RunSkipped, match="has no finished fold yet \\(2 in progress\\)"):
        load_run(waiting)
    good = make_run(tmp_path, "good", [1, 2])
    runs, skipped = load_runs([waiting, good, tmp_path / "notes.txt"])
    assert [run.name for run in runs] == ["good"]
    assert len(skipped) == 2 and "is not a run directory" in skipped[1]
    with pytest.raises(SertuneError, match="no run to report"):
        load_runs([waiting])


@pytest.mark.parametrize("damaged", ["summary.json", "folds/fold2/metrics.json"])
def test_corrupt_json_names_the_file_and_what_to_do(tmp_path, damaged) -> None:
    run_dir = make_run(tmp_path, "iemo-lora", [1, 2])
    (run_dir / damaged).write_text('{"complete": tru')
    with pytest.raises(SertuneError) as error:
        load_run(run_dir)
    message = str(error.value)
    assert str(run_dir / damaged) in message and "is corrupt" in message
    assert ("delete it to report" if damaged == "summary.json" else "retrain the fold") in message


def test_missing_metrics_of_a_finished_run_is_an_error(tmp_path) -> None:
    run_dir = make_run(tmp_path, "iemo-lora", [1, 2])
    (run_dir / "folds" / "fold1" / "metrics.json").unlink()
    with pytest.raises(SertuneError, match=r"fold1/metrics.json is missing; restore it"):
        load_run(run_dir)


def test_cli_single_run_writes_into_the_run_and_prints_the_table(tmp_path, cli) -> None:
    run_dir = make_run(tmp_path, "iemo-lora", [1, 2, 3])
    code, out, err = cli(["report", str(run_dir)])
    assert code == 0 and err == ""
    assert "| method | iemocap |" in out and "| lora | 80.00 ± 10.00 |" in out
    assert is_png(run_dir / "report" / "iemo-lora-confusion.png")
    assert (run_dir / "report" / "report.md").is_file()


def test_cli_several_runs_with_non_runs_among_them(tmp_path, cli, monkeypatch) -> None:
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "iemo-lora", [1, 2])
    make_run(runs_dir, "crema-lora", [2, 3], corpus="crema-d")
    (runs_dir / "README.txt").write_text("notes")
    (runs_dir / "scratch").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["report", *map(str, sorted(runs_dir.iterdir()))])
    assert code == 0
    assert err.count("warning: skipped") == 2 and "runs/scratch is not a run directory" in err
    assert "| method | crema-d | iemocap |" in out
    assert (tmp_path / "report" / "uar_vs_params.png").is_file()  # ./report by default

    code, _, _ = cli(["report", str(runs_dir / "iemo-lora"), "--out", str(tmp_path / "elsewhere")])
    assert code == 0 and (tmp_path / "elsewhere" / "report.md").is_file()
    assert not (runs_dir / "iemo-lora" / "report").exists()


def test_cli_errors_are_one_line(tmp_path, cli) -> None:
    code, _, err = cli(["report", str(tmp_path / "missing"), str(tmp_path)])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no run to report" in err
    run_dir = make_run(tmp_path, "iemo-lora", [1])
    (run_dir / "summary.json").write_text("[]")
    code, _, err = cli(["report", str(run_dir)])
    assert code == 2 and f"{run_dir / 'summary.json'} is corrupt (not a JSON object)" in err
