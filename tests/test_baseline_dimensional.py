"""The MFCC-statistics ridge baseline of dimensional runs: CCCs on synthetic speech, unscored clips, the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sertune.baseline import ALPHA_GRID, mfcc_baseline, mfcc_features, ridge_regression
from sertune.corpora.manifest import load_corpus
from sertune.corpora.synthetic import SynthSettings, synthesize
from sertune.dimension_metrics import concordance
from sertune.dimensions import DIMENSIONS
from sertune.errors import SertuneError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]
FOLDS = ["fold1", "fold2"]


@pytest.fixture(scope="module")
def scored_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh synthetic corpus (4 voices x 4 emotions x 6 sentences, 96 clips) with its 1-5 attribute scores."""
    out = tmp_path_factory.mktemp("scored-corpus")
    synthesize(out, SynthSettings(speakers=4, sentences=6), progress=False)
    return out


@pytest.fixture(scope="module")
def ridge(scored_corpus: Path) -> dict:
    return mfcc_baseline(scored_corpus, folds=FOLDS, task="dimensional")


def rewritten_copy(corpus: Path, out: Path, blank: dict[str, tuple[str, ...]], drop_scales: bool = False) -> Path:
    """`corpus` with the scores named in `blank` ({clip id: columns}) emptied, sharing its audio; with
    `drop_scales` also without the score columns and folds.json's `scales`, as a categorical corpus."""
    out.mkdir()
    (out / "audio").symlink_to(corpus / "audio")
    with open(corpus / "manifest.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    columns = [column for column in rows[0] if not (drop_scales and column in DIMENSIONS)]
    for row in rows:
        row.update(dict.fromkeys(blank.get(row["id"], ()), ""))
    with open(out / "manifest.csv", "w", newline="") as target:
        writer = csv.DictWriter(target, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    folds = json.loads((corpus / "folds.json").read_text())
    if drop_scales:
        folds.pop("scales")
    (out / "folds.json").write_text(json.dumps(folds))
    return out


def test_ridge_tracks_arousal_on_synthetic_speech(ridge, scored_corpus):
    assert ridge["task"] == "dimensional" and ridge["method"] == "ridge-regression" and ridge["labels"] == []
    assert ridge["dimensions"] == [{"name": name, "low": 1.0, "high": 5.0} for name in DIMENSIONS]
    assert ridge["parameters"] == 3 * (80 + 1)
    assert list(ridge["folds"]) == FOLDS
    for fold in ridge["folds"].values():
        assert set(fold["alpha"]) == set(DIMENSIONS) and set(fold["alpha"].values()) <= set(ALPHA_GRID)
        assert fold["unscored"] == {"train": 0, "dev": 0, "test": 0}
        for part in ("dev", "test"):
            metrics = fold[part]
            assert set(metrics) == {"dimensions", "ccc_mean", "undefined", "dimension_fairness"}
            assert metrics["undefined"] == [] and set(metrics["dimensions"]) == set(DIMENSIONS)
            assert all(math.isfinite(m["ccc"]) and m["n"] == 24 for m in metrics["dimensions"].values())
        # Arousal comes from loudness, rate and pitch range, which MFCCs see: measured 0.61 and 0.93.
        assert fold["test"]["dimensions"]["arousal"]["ccc"] > 0.4
    assert ridge["test"]["dimensions.arousal.ccc"]["mean"] > 0.6 and ridge["test"]["dimensions.arousal.ccc"]["n"] == 2

    # The same numbers from an independent fit: targets normalised to [0, 1], predictions back on 1-5.
    corpus = load_corpus(scored_corpus)
    fold = corpus.folds[0]
    features = mfcc_features(corpus, [fold])

    def arousal(ids: list[str]) -> np.ndarray:
        return np.array([float(corpus.by_id[uid].extras["arousal"]) for uid in ids])

    x = {part: np.stack([features[uid] for uid in ids]) for part, ids in fold.parts().items()}
    model = ridge_regression(ridge["folds"]["fold1"]["alpha"]["arousal"]).fit(x["train"], (arousal(fold.train) - 1) / 4)
    predicted = 1 + 4 * np.clip(model.predict(x["test"]), 0, 1)
    expected = concordance(arousal(fold.test), predicted)
    assert ridge["folds"]["fold1"]["test"]["dimensions"]["arousal"]["ccc"] == pytest.approx(expected)


def test_clips_without_scores_are_left_out_and_counted(scored_corpus, tmp_path):
    test_ids = load_corpus(scored_corpus).folds[0].test
    blank = {uid: DIMENSIONS for uid in test_ids[:3]} | {uid: ("valence",) for uid in test_ids[3:5]}
    copy = rewritten_copy(scored_corpus, tmp_path / "partly", blank)
    result = mfcc_baseline(copy, folds=["fold1"], task="dimensional", dimensions=["arousal", "valence"])
    fold = result["folds"]["fold1"]
    assert fold["unscored"] == {"train": 0, "dev": 0, "test": 3}
    assert fold["test"]["dimensions"]["arousal"]["n"] == 21 and fold["test"]["dimensions"]["valence"]["n"] == 19
    assert result["parameters"] == 2 * 81 and set(fold["alpha"]) == {"arousal", "valence"}


def test_cli_writes_a_dimensional_run(cli, scored_corpus, tmp_path):
    code, out, _ = cli(["baseline", str(scored_corpus), "--task", "dimensional", "--dimensions", "arousal,valence",
                        "--folds", "fold1", "--out", str(tmp_path / "run")])
    assert code == 0
    lines = out.splitlines()
    assert "test CCC" in lines[0] and lines[1].split() == ["arousal", "valence"]
    assert lines[2].split()[0] == "fold1" and all(len(value.split(".")[1]) == 3 for value in lines[2].split()[1:])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "dimensional" and summary["method"] == "ridge-regression"
    assert [d["name"] for d in summary["dimensions"]] == ["arousal", "valence"]
    assert "dimensions.arousal.ccc" in summary["test"] and "dimensions.dominance.ccc" not in summary["test"]
    assert summary["parameters"]["trained"] == 2 * 81
    metrics = json.loads((tmp_path / "run" / "folds" / "fold1" / "metrics.json").read_text())
    assert "C" not in metrics and set(metrics["alpha"]) == {"arousal", "valence"} and metrics["best_epoch"] is None
    assert metrics["test"]["dimensions"]["arousal"]["ccc"] == summary["test"]["dimensions.arousal.ccc"]["mean"]


def test_cli_errors(cli, scored_corpus, tmp_path):
    categorical = rewritten_copy(scored_corpus, tmp_path / "categorical", {}, drop_scales=True)
    code, out, err = cli(["baseline", str(categorical), "--task", "dimensional"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert str(categorical) in err and "no arousal, valence, dominance scores" in err
    code, _, err = cli(["baseline", str(scored_corpus), "--task", "dimensional", "--features", "wavlm"])
    assert code == 2 and "linear probe (--features) is categorical only" in err
    code, _, err = cli(["baseline", str(scored_corpus), "--dimensions", "arousal"])
    assert code == 2 and "--task dimensional" in err
    code, _, err = cli(["baseline", str(scored_corpus), "--task", "dimensional", "--dimensions", "joy"])
    assert code == 2 and "dimensions must be a non-empty subset" in err
    with pytest.raises(SertuneError, match="task must be one of categorical, dimensional"):
        mfcc_baseline(scored_corpus, task="multitask")
