"""The head warm-up: an encoder-tuning fold starts from a head trained on the frozen encoder's features."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from sertune.config import TuningConfig, config_from_dict, resolve_config
from sertune.train import saved_config, train_run
from sertune.trainer import FoldTrainer
from test_train import fold_metrics, small_config

from conftest import without_times

pytestmark = pytest.mark.slow
WARMUP = "folds/fold1/head_warmup"


def warm_config(corpus: Path, backbone: Path, cache: Path, **train: object):
    return small_config(corpus, backbone, cache_dir=str(cache), **{"epochs": 2, "head_warmup_epochs": 3, **train})


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory, small_corpus, tiny_whisper_dir) -> Path:
    out = tmp_path_factory.mktemp("warm") / "run"
    train_run(warm_config(small_corpus, tiny_whisper_dir, out.parent / "cache"), out)
    return out


def test_the_tuned_fold_starts_from_the_warm_up_head_and_scores_it_as_epoch_0(warm_run: Path) -> None:
    warmup = json.loads((warm_run / WARMUP / "metrics.json").read_text())
    assert warmup["complete"] and [row["epoch"] for row in warmup["epochs"]] == [1, 2, 3]
    assert (warm_run / WARMUP / "checkpoint/adapter.safetensors").is_file()
    tuned = fold_metrics(warm_run)
    assert [row["epoch"] for row in tuned["epochs"]] == [0, 1, 2]
    start = tuned["epochs"][0]
    assert start["train_loss"] is None
    # LoRA's update starts at zero: the starting model is the selected frozen one (its dev part scored from
    # float16 cached features there, from the encoder here).
    selected = warmup["epochs"][warmup["best_epoch"] - 1]
    assert start["dev_uar"] == selected["dev_uar"] == warmup["dev"]["uar"]
    assert start["dev_loss"] == pytest.approx(selected["dev_loss"], abs=2e-3)
    dev_uars = [row["dev_uar"] for row in tuned["epochs"]]
    assert tuned["best_epoch"] == dev_uars.index(max(dev_uars))


def test_selection_keeps_the_starting_model_when_no_tuned_epoch_beats_it() -> None:
    saved: list[tuple[int, bool]] = []
    trainer = types.SimpleNamespace(best={"epoch": 0, "score": None, "dev": None},
                                    _save_epoch=lambda epoch, improved: saved.append((epoch, improved)))
    for epoch, uar in [(0, 70.0), (1, 60.0), (2, 70.0), (3, 72.5)]:
        FoldTrainer._select(trainer, epoch, {"uar": uar})
        if epoch == 2:
            assert trainer.best["epoch"] == 0  # a tie is not an improvement
    assert saved == [(0, True), (1, False), (2, False), (3, True)]
    assert trainer.best == {"epoch": 3, "score": 0.725, "dev": {"uar": 72.5}}


def test_resume_after_the_first_tuned_epoch_keeps_the_warm_up_and_gives_the_same_numbers(
    tmp_path: Path, warm_run: Path, small_corpus: Path, tiny_whisper_dir: Path
) -> None:
    class Interrupted(Exception):
        pass

    def stop(fold: str, epoch: int) -> None:
        if epoch == 1:
            raise Interrupted

    config = warm_config(small_corpus, tiny_whisper_dir, tmp_path / "cache")
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_run(config, out, on_epoch_end=stop)
    warmup_metrics = out / WARMUP / "metrics.json"
    before = warmup_metrics.stat().st_mtime_ns
    train_run(config, out, resume=True)
    assert warmup_metrics.stat().st_mtime_ns == before  # read back, not trained again
    assert without_times(fold_metrics(out)) == without_times(fold_metrics(warm_run))


def test_frozen_runs_and_the_study_recipe_have_no_warm_up(tmp_path: Path, small_corpus: Path,
                                                          tiny_whisper_dir: Path) -> None:
    assert resolve_config(preset="paper").train.head_warmup_epochs == 0
    assert resolve_config().train.head_warmup_epochs == 20
    config = warm_config(small_corpus, tiny_whisper_dir, tmp_path / "cache", epochs=1)
    config.tuning = TuningConfig(method="frozen")
    train_run(config, tmp_path / "frozen")
    assert not (tmp_path / "frozen" / WARMUP).exists()
    assert [row["epoch"] for row in fold_metrics(tmp_path / "frozen")["epochs"]] == [1]


def test_a_run_saved_before_the_warm_up_existed_resumes_without_one(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("corpus: c\ntuning: {method: lora}\ntrain: {epochs: 3}\n")
    settings = saved_config(tmp_path)
    assert settings["train"] == {"epochs": 3, "head_warmup_epochs": 0}
    assert not config_from_dict(settings).warms_up_head
