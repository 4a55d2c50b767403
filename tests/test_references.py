"""A weak run is said so: the step-count warning, and the comparison with baselines on the same folds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sertune.config import resolve_config
from sertune.corpora.manifest import Fold
from sertune.references import compare_with_references, find_references
from sertune.train import MIN_STEPS, optimiser_steps, warn_if_few_steps


def _fold(name: str, n_train: int) -> Fold:
    return Fold(name=name, train=[f"c{i}" for i in range(n_train)], dev=["d"], test=["t"])


def test_step_warning_fires_for_a_tiny_corpus_and_not_for_a_large_one(caplog: pytest.LogCaptureFixture) -> None:
    config = resolve_config(flags={"train": {"epochs": 10, "batch_size": 32, "head_warmup_epochs": 0}})
    # 384 clips, 4 folds of 8 speakers: 192 train clips -> 6 steps per epoch, 60 in all (the run)
    assert optimiser_steps(config, 192) == 60
    with caplog.at_level(logging.WARNING, logger="sertune.train"):
        assert warn_if_few_steps(config, [_fold("fold1", 192), _fold("fold2", 200)]) == 60
    assert "only 60 optimiser steps per fold (10 epochs, batch 32)" in caplog.text
    caplog.clear()
    large = [_fold("fold1", 3300)]  # an IEMOCAP fold: 104 steps per epoch
    with caplog.at_level(logging.WARNING, logger="sertune.train"):
        assert warn_if_few_steps(config, large) is None
    assert caplog.text == ""
    assert optimiser_steps(config, 3300) >= MIN_STEPS
    # gradient accumulation and several processes divide the steps
    accumulated = resolve_config(flags={"train": {"epochs": 10, "batch_size": 32, "grad_accum": 2,
                                                  "head_warmup_epochs": 0}})
    assert optimiser_steps(accumulated, 3300, num_processes=2) == 10 * 26


def test_the_head_warm_up_counts_towards_the_heads_steps(caplog: pytest.LogCaptureFixture) -> None:
    lora = resolve_config(flags={"tuning": {"method": "lora"}, "train": {"epochs": 10, "batch_size": 32}})
    assert lora.train.head_warmup_epochs == 20 and optimiser_steps(lora, 192) == (10 + 20) * 6
    with caplog.at_level(logging.WARNING, logger="sertune.train"):
        assert warn_if_few_steps(lora, [_fold("fold1", 192)]) == 180
    assert "only 180 optimiser steps per fold (10 epochs after 20 of head warm-up, batch 32)" in caplog.text
    frozen = resolve_config(flags={"tuning": {"method": "frozen"}, "train": {"epochs": 10, "batch_size": 32}})
    assert optimiser_steps(frozen, 192) == 60  # a frozen run is its own head training: no warm-up


def _summary(corpus_dir: str, folds: dict[str, float], *, backbone: str, baseline: bool) -> dict:
    return {
        "corpus_dir": corpus_dir, "backbone": backbone,
        "parameters": {"encoder": 0 if baseline else 8_000_000},
        "checkpoint_bytes": None if baseline else 1000,
        "folds": {name: {"test": {"uar": uar}} for name, uar in folds.items()},
        "test": {"uar": {"mean": sum(folds.values()) / len(folds), "std": None, "n": len(folds)}},
    }


def _write(path: Path, summary: dict) -> None:
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))


def test_references_beside_the_run_on_the_same_corpus_and_folds(tmp_path: Path) -> None:
    trained = _summary("/c/synth", {"fold1": 60.0, "fold2": 64.0}, backbone="whisper-tiny.en", baseline=False)
    _write(tmp_path / "runs" / "lora", trained)
    _write(tmp_path / "runs" / "probe",
           _summary("/c/synth", {"fold1": 70.0, "fold2": 66.0, "fold3": 1.0}, backbone="linear-probe:w", baseline=True))
    _write(tmp_path / "runs" / "mfcc",
           _summary("/c/synth", {"fold1": 50.0, "fold2": 58.0}, backbone="mfcc-statistics", baseline=True))
    _write(tmp_path / "runs" / "other-corpus",
           _summary("/c/iemocap", {"fold1": 99.0, "fold2": 99.0}, backbone="mfcc-statistics", baseline=True))
    _write(tmp_path / "runs" / "one-fold",
           _summary("/c/synth", {"fold1": 99.0}, backbone="linear-probe:w", baseline=True))
    _write(tmp_path / "runs" / "another-model", trained)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "summary.json").write_text("{not json")

    references = find_references(tmp_path / "runs" / "lora", trained)
    assert [(r.path.name, r.value) for r in references] == [("mfcc", 54.0), ("probe", 68.0)]
    lines, weak = compare_with_references(trained, references)
    assert weak
    assert lines[0] == "test UAR over the same fold(s): this run 62.0%"
    assert any("mfcc-statistics" in line and "54.0%" in line for line in lines)
    assert "6.0 points below the linear probe" in lines[-1]


def test_no_warning_when_the_run_beats_the_probe(tmp_path: Path) -> None:
    trained = _summary("/c/synth", {"fold1": 75.0}, backbone="whisper-tiny.en", baseline=False)
    _write(tmp_path / "lora", trained)
    _write(tmp_path / "probe", _summary("/c/synth", {"fold1": 70.0}, backbone="linear-probe:w", baseline=True))
    lines, weak = compare_with_references(trained, find_references(tmp_path / "lora", trained))
    assert not weak and len(lines) == 2 and not any(line.startswith("warning:") for line in lines)
    assert compare_with_references(trained, []) == ([], False)


def test_a_dimensional_run_is_compared_by_ccc_with_dimensional_baselines_only(tmp_path: Path) -> None:
    def dimensional(folds: dict[str, float], *, backbone: str, baseline: bool) -> dict:
        summary = _summary("/c/synth", dict.fromkeys(folds, 0.0), backbone=backbone, baseline=baseline)
        summary["folds"] = {name: {"test": {"ccc_mean": ccc}} for name, ccc in folds.items()}
        summary["test"] = {"ccc_mean": {"mean": sum(folds.values()) / len(folds), "std": None, "n": len(folds)}}
        return summary

    trained = dimensional({"fold1": 0.5, "fold2": 0.7}, backbone="whisper-tiny.en", baseline=False)
    _write(tmp_path / "runs" / "avd", trained)
    _write(tmp_path / "runs" / "ridge", dimensional({"fold1": 0.4, "fold2": 0.5}, backbone="mfcc-statistics",
                                                     baseline=True))
    _write(tmp_path / "runs" / "mfcc",  # a categorical baseline has no CCC: no reference for this run
           _summary("/c/synth", {"fold1": 50.0, "fold2": 58.0}, backbone="mfcc-statistics", baseline=True))
    references = find_references(tmp_path / "runs" / "avd", trained)
    assert [(r.path.name, r.value) for r in references] == [("ridge", 0.45)]
    lines, weak = compare_with_references(trained, references)
    assert not weak and lines[0] == "test mean CCC over the same fold(s): this run 0.600"
    assert "0.450" in lines[1]
    # and a categorical run never takes the ridge regression as its reference
    categorical = _summary("/c/synth", {"fold1": 60.0, "fold2": 64.0}, backbone="whisper-tiny.en", baseline=False)
    _write(tmp_path / "runs" / "lora", categorical)
    assert [r.path.name for r in find_references(tmp_path / "runs" / "lora", categorical)] == ["mfcc"]
