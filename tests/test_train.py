"""Training runs end to end on a tiny random Whisper encoder and a small synthetic corpus."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import sertune
from sertune.audio import load_audio
from sertune.backbones.base import Backbone
from sertune.config import RunConfig, TrainConfig, resolve_config
from sertune.corpora import load_corpus
from sertune.errors import SertuneError
from sertune.feature_cache import FeatureCache
from sertune.feature_statistics import pooled_statistics, speaker_statistics
from sertune.head_config import HeadConfig
from sertune.train import train_run
from sertune.tuning import TuningConfig

from conftest import without_times

pytestmark = pytest.mark.slow


def small_config(corpus: Path, backbone: Path, normalization: str = "global", **train: object) -> RunConfig:
    """A short LoRA run from a random head (tests/test_head_warmup.py has the warm-up); `global`
    normalisation by default, so that a test clip's logits do not depend on which other clips of its
    speaker were seen (training's evaluation and `predict` agree)."""
    settings = dict(epochs=3, batch_size=8, eval_batch_size=8, workers=0, max_seconds=2.0, lr=2e-3, seed=3,
                    head_warmup_epochs=0)
    settings.update(train)
    return RunConfig(
        corpus=str(corpus), backbone=str(backbone), folds=["1"],
        tuning=TuningConfig(method="lora", lora_rank=4), head=HeadConfig(normalization=normalization),
        train=TrainConfig(**settings),
    )


def fold_metrics(run: Path, fold: str = "fold1") -> dict:
    return json.loads((run / "folds" / fold / "metrics.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_corpus, tiny_whisper_dir) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    train_run(small_config(small_corpus, tiny_whisper_dir), out)
    return out


def test_run_writes_consistent_files(finished_run: Path, small_corpus: Path) -> None:
    metrics = fold_metrics(finished_run)
    assert metrics["complete"] and [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    dev_uars = [row["dev_uar"] for row in metrics["epochs"]]
    # the selected epoch is the first with the best dev UAR, and its dev metrics are stored
    assert metrics["best_epoch"] == 1 + int(np.argmax(dev_uars))
    assert metrics["dev"]["uar"] == max(dev_uars)
    corpus = load_corpus(small_corpus)
    fold = corpus.folds[0]
    assert metrics["test"]["n"] == len(fold.test) and metrics["counts"]["test"] == len(fold.test)
    genders = {corpus.by_id[i].gender for i in fold.test}
    assert set(metrics["test"]["fairness"]["count_per_group"]) == genders
    assert all(math.isfinite(row["train_loss"]) and row["lr"] > 0 for row in metrics["epochs"])

    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["test"]["uar"] == {"mean": metrics["test"]["uar"], "std": None, "n": 1}
    weights = finished_run / "folds/fold1/checkpoint/adapter.safetensors"
    assert summary["checkpoint_bytes"] == weights.stat().st_size
    assert not (finished_run / "folds/fold1/last").exists()
    assert list((finished_run / "folds/fold1/tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["tuning"]["lora_rank"] == 4


def test_a_speaker_normalised_run_tests_each_speaker_with_its_own_statistics(
    tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path
) -> None:
    config = small_config(small_corpus, tiny_whisper_dir, "speaker", epochs=1, cache_dir=str(tmp_path / "cache"))
    train_run(config, tmp_path / "run")
    corpus = load_corpus(small_corpus)
    fold = corpus.folds[0]
    classifier = sertune.load(tmp_path / "run", merge=False, precision="no").classifier
    backbone = sertune.load_backbone(tiny_whisper_dir)
    cache = FeatureCache(tmp_path / "cache", backbone, sample_rate=16000, max_samples=16000 * 30)
    # The checkpoint keeps the training clips' statistics, for clips of unknown speakers.
    training = pooled_statistics(cache, [corpus.by_id[i] for i in fold.train])
    np.testing.assert_allclose(classifier.head.input_mean.numpy(), training.mean[1:], rtol=1e-6)
    # Each test clip was scored with its own speaker's statistics, from that speaker's test clips.
    speakers = speaker_statistics(cache, [corpus.by_id[i] for i in fold.test])
    with open(tmp_path / "run/folds/fold1/predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        utterance = corpus.by_id[row["id"]]
        stats = speakers[utterance.speaker]
        wave = torch.from_numpy(load_audio(utterance.path))[None]
        with torch.inference_mode():
            logits = classifier(wave, None, (torch.from_numpy(stats.mean)[None], torch.from_numpy(stats.std)[None]))
        np.testing.assert_allclose(logits[0].numpy(), [float(row[f"logit_{n}"]) for n in corpus.labels], atol=1e-4)
    # The test part is also scored as `predict` sees each clip, speaker unknown: the same UAR as predict's.
    metrics, summary = fold_metrics(tmp_path / "run"), json.loads((tmp_path / "run/summary.json").read_text())
    predictor = sertune.load(tmp_path / "run", precision="no")
    predicted = [p.label for p in predictor.predict_many([corpus.by_id[i].path for i in fold.test])]
    truth = [corpus.by_id[i].label for i in fold.test]
    recalls = [np.mean([p == t for p, t in zip(predicted, truth, strict=True) if t == c]) for c in set(truth)]
    assert metrics["test_unknown_speaker"]["uar"] == pytest.approx(100 * np.mean(recalls))
    assert summary["test_unknown_speaker"]["uar"]["mean"] == metrics["test_unknown_speaker"]["uar"]
    assert summary["folds"]["fold1"]["test_unknown_speaker"] == metrics["test_unknown_speaker"]


def test_api_and_cli_predictions_equal_the_training_time_logits(finished_run: Path, small_corpus: Path, cli) -> None:
    corpus = load_corpus(small_corpus)
    with open(finished_run / "folds/fold1/predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == corpus.folds[0].test
    expected = np.array([[float(row[f"logit_{name}"]) for name in corpus.labels] for row in rows])
    assert [row["predicted"] for row in rows] == [corpus.labels[i] for i in expected.argmax(axis=1)]
    paths = [str(corpus.by_id[row["id"]].path) for row in rows]

    predictor = sertune.load(finished_run)  # a one-fold run serves that fold, LoRA merged
    assert predictor.info().fold == "fold1" and predictor.info().merged
    np.testing.assert_allclose(predictor.logits([load_audio(path) for path in paths]), expected, atol=1e-4)
    status, printed, _ = cli(["predict", str(finished_run), *paths[:6], "--json"])
    assert status == 0
    for result, path, logits in zip(json.loads(printed), paths, expected, strict=False):
        assert result["source"] == path
        np.testing.assert_allclose(result["logits"], logits, atol=1e-4)


def test_resume_after_a_kill_mid_write_gives_the_same_numbers_and_leaves_no_temporaries(
    tmp_path: Path, finished_run: Path, small_corpus: Path, tiny_whisper_dir: Path
) -> None:
    class Interrupted(Exception):
        pass

    def stop_after_first(fold: str, epoch: int) -> None:
        if epoch == 1:
            raise Interrupted

    config = small_config(small_corpus, tiny_whisper_dir)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train_run(config, out, on_epoch_end=stop_after_first)
    partial = fold_metrics(out)
    assert not partial["complete"] and len(partial["epochs"]) == 1
    assert (out / "folds/fold1/last/state.pt").is_file()
    # What `kill -9` during the next epoch's writes leaves: the temporaries of atomic_path.
    for directory, prefix, content in [("folds/fold1/last", ".state.pt.", b"half a state"),
                                       ("folds/fold1", ".metrics.json.", b"")]:
        fd, _ = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=out / directory)
        os.write(fd, content)
        os.close(fd)
    with pytest.raises(SertuneError, match="--resume"):
        train_run(config, out)
    train_run(config, out, resume=True)
    assert without_times(fold_metrics(out)) == without_times(fold_metrics(finished_run))
    assert (out / "summary.json").is_file() and not list(out.rglob("*.tmp"))
    assert not (out / "folds/fold1/last").exists()


def test_resume_refuses_changed_settings(tmp_path: Path, finished_run: Path, small_corpus: Path,
                                         tiny_whisper_dir: Path) -> None:
    config = small_config(small_corpus, tiny_whisper_dir, lr=1e-2)
    with pytest.raises(SertuneError, match=r"train\.lr"):
        train_run(config, finished_run, resume=True)


def test_frozen_epochs_use_the_feature_cache(
    tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"count": 0}
    encode = Backbone.encode

    def counting_encode(self, *args, **kwargs):
        calls["count"] += 1
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(Backbone, "encode", counting_encode)
    per_epoch: list[int] = []

    def record(fold: str, epoch: int) -> None:
        per_epoch.append(calls["count"])

    config = small_config(small_corpus, tiny_whisper_dir, epochs=2, cache_dir=str(tmp_path / "cache"))
    config.tuning = TuningConfig(method="frozen")
    train_run(config, tmp_path / "first", on_epoch_end=record)
    assert per_epoch[0] > 0 and per_epoch[1] == per_epoch[0]  # epoch 2 never ran the encoder
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 48 and np.load(entries[0]).dtype == np.float16
    assert fold_metrics(tmp_path / "first")["cache_fill"]["clips"] == 48
    calls["count"] = 0
    train_run(config, tmp_path / "second")  # a later run on the same clips reuses the cache
    assert calls["count"] == 0 and fold_metrics(tmp_path / "second")["cache_fill"]["clips"] == 0


def test_nan_loss_stops_the_fold_with_a_clear_message(tmp_path: Path, small_corpus: Path,
                                                      tiny_whisper_dir: Path) -> None:
    config = small_config(small_corpus, tiny_whisper_dir, lr=1e30, epochs=2, plateau_patience=0)
    with pytest.raises(SertuneError, match=r"fold fold1, epoch \d, step \d+: the training loss is nan"):
        train_run(config, tmp_path / "run")
    metrics_path = tmp_path / "run/folds/fold1/metrics.json"
    assert not metrics_path.exists() or not json.loads(metrics_path.read_text())["complete"]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert list(summary["failed_folds"]) == ["fold1"]


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    paper = resolve_config(preset="paper")
    assert paper.tuning.lora_alpha == 1.0 and paper.train.betas == (0.9, 0.98) and paper.train.epochs == 30
    package = resolve_config(preset="peft-ser-package")
    assert (package.tuning.method, package.tuning.lora_rank, package.tuning.lora_alpha) == ("lora", 16, 1.0)
    assert (package.train.lr, package.train.epochs, package.train.seed) == (2.5e-4, 30, 8)
    assert (package.train.max_seconds, package.train.eval_max_seconds) == (10.0, 10.0)
    assert package.head.include_embedding and package.head.normalization == "none"
    assert resolve_config(preset="peft-ser-package", flags={"tuning": {"method": "adapter"}}).tuning.method == "adapter"
    settings = tmp_path / "run.yaml"
    settings.write_text("preset: paper\ntrain:\n  epochs: 4\n  lr: 0.001\n")
    from sertune.config import read_yaml

    config = resolve_config(yaml_settings=read_yaml(settings), flags={"train": {"epochs": 2}})
    assert (config.train.epochs, config.train.lr, config.tuning.lora_alpha) == (2, 0.001, 1.0)
    settings.write_text("train:\n  epoch: 4\n")
    with pytest.raises(SertuneError, match=r"run.yaml: unknown train setting\(s\) \['epoch'\]"):
        resolve_config(yaml_settings=read_yaml(settings), yaml_origin=str(settings))
    settings.write_text("train: [1, 2\n")
    with pytest.raises(SertuneError, match=r"run.yaml line \d+: not valid YAML"):
        read_yaml(settings)


def test_cli_flags_reach_the_config(tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path, cli) -> None:
    out = tmp_path / "run"
    status, printed, _ = cli([
        "train", str(small_corpus), "--backbone", str(tiny_whisper_dir), "--method", "adapter", "--adapter-dim", "8",
        "--epochs", "1", "--batch-size", "8", "--no-augment", "--workers", "0", "--folds", "fold2",
        "--max-seconds", "2", "--grad-accum", "2", "--precision", "bf16", "--head-warmup-epochs", "2",
        "--out", str(out),
    ])
    assert status == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["tuning"]["method"] == "adapter" and saved["tuning"]["adapter_dim"] == 8
    assert saved["train"]["augment"] is False and saved["folds"] == ["fold2"]
    assert saved["train"]["grad_accum"] == 2 and saved["train"]["precision"] == "bf16"
    assert saved["train"]["head_warmup_epochs"] == 2
    assert len(json.loads((out / "folds/fold2/head_warmup/metrics.json").read_text())["epochs"]) == 2
    assert math.isfinite(fold_metrics(out, "fold2")["epochs"][-1]["train_loss"])
    assert "test UAR" in printed
    status, _, error = cli(["train", str(small_corpus), "--out", str(out), "--folds", "9"])
    assert status == 2 and "fold '9' is not in synthetic's protocol (fold1, fold2, fold3, fold4, or 1..4)" in error
    status, _, error = cli(["train", str(small_corpus), "--out", str(out)])
    assert status == 2 and "already holds a run; pass --resume" in error


def test_distributed_run_evaluates_every_test_clip_once(tmp_path: Path, small_corpus: Path,
                                                        tiny_whisper_dir: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sertune", "train", str(small_corpus),
        "--backbone", str(tiny_whisper_dir), "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "5",
        "--workers", "1", "--folds", "1", "--max-seconds", "2", "--out", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    corpus = load_corpus(small_corpus)
    metrics = fold_metrics(out)
    assert metrics["test"]["n"] == len(corpus.folds[0].test)
    assert metrics["dev"]["n"] == len(corpus.folds[0].dev)
    with open(out / "folds/fold1/predictions.csv", newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    assert sorted(ids) == sorted(corpus.folds[0].test)
