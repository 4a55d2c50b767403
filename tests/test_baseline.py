"""The MFCC-statistics baseline: feature shapes, and a UAR inside the intended band on synthetic speech."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sertune.baseline import mfcc, mfcc_baseline, mfcc_statistics, write_baseline_run
from sertune.corpora.synthetic import SynthSettings, synthesize
from sertune.errors import SertuneError
from sertune.report import load_run


def test_mfcc_frames_and_statistics():
    rate = 16000
    tone = np.sin(2 * np.pi * 400 * np.arange(rate) / rate).astype(np.float32)
    coefficients = mfcc(tone)
    assert coefficients.shape == (1 + (rate - 400) // 160, 20)
    assert np.allclose(coefficients[1:].std(0), 0, atol=1e-3)  # whole periods per hop: identical frames
    assert mfcc(tone[:100]).shape == (1, 20)  # shorter than one window: padded, not an error
    features = mfcc_statistics(tone)
    assert features.shape == (80,) and np.isfinite(features).all()
    assert mfcc_statistics(4 * tone)[0] > features[0]  # c0 follows the level
    higher = np.sin(2 * np.pi * 1600 * np.arange(rate) / rate).astype(np.float32)
    assert np.abs(mfcc_statistics(higher)[1:20] - features[1:20]).max() > 1.0  # the envelope moves


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthetic_task_is_learnable_but_not_trivial(tmp_path):
    # 240 clips; the default corpus (1000 clips) measured 0.70 mean UAR over 5 folds.
    synthesize(tmp_path / "s", SynthSettings(speakers=10, sentences=6, seed=0), progress=False)
    result = mfcc_baseline(tmp_path / "s")
    assert set(result["folds"]) == {f"fold{i}" for i in range(1, 6)}
    uars = [fold["test"]["uar"] for fold in result["folds"].values()]
    assert 55 <= result["test"]["uar"]["mean"] <= 85, result["test"]["uar"]
    assert result["test"]["uar"]["std"] == pytest.approx(np.std(uars, ddof=1))
    assert all(fold["test"]["n"] == 48 and "fairness" in fold["test"] for fold in result["folds"].values())
    single = mfcc_baseline(tmp_path / "s", folds=["fold2"])
    assert single["folds"]["fold2"]["test"] == result["folds"]["fold2"]["test"]
    write_baseline_run(result, tmp_path / "run")
    report = load_run(tmp_path / "run")
    assert report.backbone == "mfcc-statistics" and len(report.folds) == 5
    with pytest.raises(SertuneError, match="no fold named"):
        mfcc_baseline(tmp_path / "s", folds=["fold9"])
