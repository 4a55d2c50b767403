"""The model-side commands: `sertune backbones`, `sertune params`, and the summary line of `sertune train`."""

from __future__ import annotations

import json

import pytest

import sertune.train
from sertune.backbones import build_backbone
from sertune.checkpoint import save_classifier
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

from conftest import TINY_CONFIGS


def test_backbones_lists_sizes_and_offline_availability(cli) -> None:
    code, out, _ = cli(["backbones"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert len(rows) == 13
    assert "315.4M" in rows["mms-300m"] and "facebook/mms-300m" in rows["mms-300m"]
    assert "94.4M" in rows["wavlm-base-plus"] and " 768 " in rows["wavlm-base-plus"]
    assert "offline package" in rows["whisper-tiny.en"] and "offline package" in rows["whisper-base"]
    assert "8.2M" in rows["whisper-tiny.en"] and "637.0M" in rows["whisper-large-v3"]


def test_params_for_a_method_matches_the_study(cli) -> None:
    code, out, _ = cli(["params", "--backbone", "wavlm-base-plus", "--method", "lora", "--rank", "16"])
    assert code == 0
    assert "1,474,560" in out and "395,280" in out and "1.98% of the encoder's 94,381,936" in out
    assert "7.48 MB (estimated, float32)" in out


def test_params_for_a_trained_run_reads_the_checkpoint(tmp_path, cli) -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0)
    classifier = EmotionClassifier(backbone, ["a", "b"], TuningConfig(method="adapter", adapter_dim=8))
    weights = save_classifier(classifier, tmp_path)
    code, out, _ = cli(["params", str(tmp_path)])
    assert code == 0
    expected = classifier.parameter_counts()
    assert f"{expected['tuning']:,}" in out and f"{expected['head']:,}" in out
    assert f"{weights.stat().st_size / 1e6:.2f} MB" in out


def test_params_errors_are_one_clear_line(tmp_path, cli) -> None:
    code, _, err = cli(["params", "--backbone", "wavlm-base-plus", "--lora-targets", "attn"])
    assert code == 2 and "WavLM's attention projections" in err and "Traceback" not in err
    code, _, err = cli(["params", str(tmp_path)])
    assert code == 2 and "is not a trained sertune run: it has no sertune.json, checkpoint/ or folds/" in err
    code, _, err = cli(["params", "--backbone", "wavlm-xl"])
    assert code == 2 and "unknown backbone 'wavlm-xl'" in err


def test_params_reads_a_run_a_fold_and_a_checkpoint_directory(tmp_path, cli) -> None:
    # A run directory used to fail with "sertune.json is missing", although the README documents it.
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0)
    classifier = EmotionClassifier(backbone, ["a", "b"], TuningConfig(method="lora", lora_rank=4))
    fold = tmp_path / "run" / "folds" / "fold1"
    weights = save_classifier(classifier, fold / "checkpoint")
    metrics = {"fold": "fold1", "complete": True, "epochs": [{"epoch": 1}], "best_epoch": 1, "dev": {"uar": 55.0}}
    (fold / "metrics.json").write_text(json.dumps(metrics))
    expected = classifier.parameter_counts()
    for path in (tmp_path / "run", fold, fold / "checkpoint"):
        code, out, err = cli(["params", str(path)])
        assert code == 0, err
        assert out.splitlines()[0] == f"{path} (fold fold1, random-whisper, lora)"
        assert f"{expected['tuning']:,}" in out and f"{weights.stat().st_size / 1e6:.2f} MB" in out


@pytest.mark.parametrize(("std", "shown"), [(None, "62.0% over 1 fold(s)"), (3.25, "62.0 ± 3.2% over 2 fold(s)")])
def test_train_prints_no_spread_for_one_fold(tmp_path, cli, monkeypatch, std, shown) -> None:
    # One fold used to print "62.0 ± 0.0%" while summary.json's std is null.
    summary = {"corpus": "synthetic", "backbone": "whisper-tiny", "method": "lora",
               "test": {"uar": {"mean": 62.0, "std": std, "n": 1 if std is None else 2}}}
    monkeypatch.setattr(sertune.train, "train_run", lambda config, out, resume: summary)
    code, out, _ = cli(["train", str(tmp_path), "--out", str(tmp_path / "run")])
    assert code == 0
    assert out.strip() == f"synthetic whisper-tiny lora: test UAR {shown}; run saved in {tmp_path / 'run'}"
