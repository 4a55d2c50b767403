"""`sertune evaluate`: a trained run scored on its own and on another corpus; classes matched by name."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from sertune.config import RunConfig, TrainConfig
from sertune.corpora.synthetic import SynthSettings, synthesize
from sertune.cross_corpus import evaluate_run
from sertune.errors import SertuneError
from sertune.head_config import HeadConfig
from sertune.train import train_run
from sertune.tuning import TuningConfig

METRICS = ("uar", "accuracy", "macro_f1", "n")


def config(corpus: Path, backbone: Path, normalization: str) -> RunConfig:
    return RunConfig(corpus=str(corpus), backbone=str(backbone), folds=["1", "2"],
                     tuning=TuningConfig(method="lora", lora_rank=4), head=HeadConfig(normalization=normalization),
                     train=TrainConfig(epochs=2, batch_size=8, eval_batch_size=8, workers=0, max_seconds=2.0,
                                       lr=2e-3, seed=3))


@pytest.fixture(scope="module", params=["global", "speaker"])
def trained(request, tmp_path_factory, small_corpus: Path, tiny_whisper_dir: Path) -> Path:
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    train_run(config(small_corpus, tiny_whisper_dir, request.param), out)
    return out


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voices-b") / "corpus"
    synthesize(out, SynthSettings(speakers=4, sentences=3, seed=1), progress=False)
    return out


def test_on_its_own_test_part_it_reproduces_the_training_metrics(
    trained: Path, small_corpus: Path, tmp_path: Path
) -> None:
    summary = evaluate_run(trained, small_corpus, tmp_path / "own", part="test")
    for fold in ("fold1", "fold2"):
        wrote = json.loads((trained / "folds" / fold / "metrics.json").read_text())
        again = json.loads((tmp_path / "own/folds" / fold / "metrics.json").read_text())
        for key in ("test", "test_unknown_speaker"):
            if key not in wrote:
                assert key not in again
                continue
            for metric in METRICS:
                assert again[key][metric] == pytest.approx(wrote[key][metric], abs=1e-6), (fold, key, metric)
            assert again[key]["confusion"] == wrote[key]["confusion"]
            assert again[key]["per_class_recall"] == pytest.approx(wrote[key]["per_class_recall"], abs=1e-6)
        assert (tmp_path / "own/folds" / fold / "predictions.csv").read_text().splitlines()[0].startswith("id,")
    assert summary["evaluation"]["trained_on"] == "synthetic" and summary["test"]["uar"]["n"] == 2


def test_on_another_corpus_every_clip_is_scored_and_unknown_classes_are_counted(
    trained: Path, other_corpus: Path, tmp_path: Path, cli
) -> None:
    renamed = tmp_path / "renamed"
    shutil.copytree(other_corpus, renamed)
    # The corpus calls `sad` `bored`: its clips are left out by name, not mapped by position.
    folds = json.loads((renamed / "folds.json").read_text())
    folds["labels"] = ["neutral", "angry", "bored", "happy"]
    (renamed / "folds.json").write_text(json.dumps(folds))
    manifest = (renamed / "manifest.csv").read_text().replace(",sad,", ",bored,")
    (renamed / "manifest.csv").write_text(manifest)
    status, printed, _ = cli(["evaluate", str(trained), str(renamed), "--out", str(tmp_path / "x"), "--fold", "fold1"])
    assert status == 0, printed
    metrics = json.loads((tmp_path / "x/folds/fold1/metrics.json").read_text())
    assert metrics["counts"]["left_out"] == {"bored": 12} and metrics["test"]["n"] == 36
    assert metrics["counts"]["absent_classes"] == ["sad"] and "sad" in metrics["test"]["absent_classes"]
    assert "left out (class unknown to the run): {'bored': 12}" in printed
    summary = json.loads((tmp_path / "x/summary.json").read_text())
    assert summary["corpus"] == "synthetic" and list(summary["folds"]) == ["fold1"]


def test_a_part_of_a_fold_the_corpus_lacks_is_refused(trained: Path, other_corpus: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed"
    shutil.copytree(other_corpus, renamed)
    folds = json.loads((renamed / "folds.json").read_text())
    folds["folds"] = [{**fold, "name": f"split{i}"} for i, fold in enumerate(folds["folds"], 1)]
    (renamed / "folds.json").write_text(json.dumps(folds))
    with pytest.raises(SertuneError, match=r"has no fold 'fold1' \(its folds: split1, split2, split3, split4\)"):
        evaluate_run(trained, renamed, tmp_path / "x", part="test")
    with pytest.raises(SertuneError, match="no finished fold with a checkpoint to evaluate named 'fold9'"):
        evaluate_run(trained, other_corpus, tmp_path / "x", fold="fold9")
    assert not (tmp_path / "x").exists()


def test_the_report_draws_the_cross_corpus_matrix(trained: Path, other_corpus: Path, tmp_path: Path, cli) -> None:
    renamed = tmp_path / "voices-b"
    shutil.copytree(other_corpus, renamed)
    folds = json.loads((renamed / "folds.json").read_text())
    (renamed / "folds.json").write_text(json.dumps({**folds, "corpus": "voices-b"}))
    evaluation = evaluate_run(trained, renamed, tmp_path / "eval")
    status, printed, _ = cli(["report", str(trained), str(tmp_path / "eval"), "--out", str(tmp_path / "report")])
    assert status == 0, printed
    with open(tmp_path / "report/cross_corpus.csv", newline="") as handle:
        rows = {row["trained on"]: row for row in csv.DictReader(handle)}
    own = json.loads((trained / "summary.json").read_text())["test"]["uar"]
    assert float(rows["synthetic"]["tested on synthetic mean"]) == pytest.approx(own["mean"], abs=1e-6)
    assert float(rows["synthetic"]["tested on voices-b mean"]) == pytest.approx(evaluation["test"]["uar"]["mean"],
                                                                               abs=1e-6)
    assert int(rows["synthetic"]["tested on voices-b n"]) == 2
    assert (tmp_path / "report/cross_corpus.png").stat().st_size > 0
    assert "Cross-corpus test UAR" in (tmp_path / "report/report.md").read_text()
