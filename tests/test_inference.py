"""The Python inference API: `sertune.load`, windows for long audio, run resolution, shared encoders."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import sertune
from sertune import precision
from sertune.backbones import build_backbone
from sertune.baseline import mfcc_baseline, write_baseline_run
from sertune.checkpoint import save_classifier
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.inference import EncoderPool, WindowPlan, load, load_many, resolve_run
from sertune.model import EmotionClassifier
from sertune.precision import Capabilities
from sertune.tuning import TuningConfig

from conftest import TINY_CONFIGS

LABELS = ["neutral", "angry", "sad", "happy"]
# Short settings keep the tiny models fast: clips over 2 s are cut into 1-s windows, 0.5 s apart.
AUDIO = {"sample_rate": 16000, "max_seconds": 1.0, "eval_max_seconds": 2.0}
RATE = 16000


def make_run(
    directory: Path,
    *,
    kind: str = "whisper",
    method: str = "lora",
    labels: list[str] = LABELS,
    seed: int = 1,
    audio: dict | None = AUDIO,
    dimensions: list[Dimension] | None = None,
) -> EmotionClassifier:
    """Save a classifier on a tiny random encoder (seed 0: runs of one kind share it) with every
    trained tensor and the head's statistics moved off their initial values; returns the classifier, in eval mode."""
    backbone = build_backbone(TINY_CONFIGS[kind](), seed=0)
    classifier = EmotionClassifier(backbone, labels, TuningConfig(method=method), dimensions=dimensions or ())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if name in classifier.trained_names:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        classifier.head.input_mean.add_(0.05 * torch.randn(classifier.head.input_mean.shape, generator=generator))
        classifier.head.input_std.mul_(1 + 0.1 * torch.rand(classifier.head.input_std.shape, generator=generator))
    save_classifier(classifier.eval(), directory, audio=audio)
    return classifier


def forward_logits(classifier: EmotionClassifier, wave: np.ndarray) -> np.ndarray:
    """The classifier's own logits for one clip, alone in its batch."""
    with torch.inference_mode():
        return classifier(torch.from_numpy(wave)[None]).numpy()[0]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmotionClassifier]:
    directory = tmp_path_factory.mktemp("lora-run")
    return directory, make_run(directory)


@pytest.fixture(scope="module")
def predictor(lora_run):
    return sertune.load(lora_run[0], device="cpu", precision="no")  # compared with the float32 forward


def test_predictions_agree_with_the_classifiers_own_logits(lora_run, predictor, speech) -> None:
    _, classifier = lora_run
    clips = [speech[: RATE // 2], speech[: RATE * 3 // 2], speech[RATE : RATE * 3], speech[:300]]
    expected = np.stack([forward_logits(classifier, clip) for clip in clips])
    assert predictor.classifier.merged  # LoRA folded in: a hair off the unmerged forward
    np.testing.assert_allclose(predictor.logits(clips), expected, atol=1e-4)
    predictions = predictor.predict_many(clips)  # batched, padded: the same answers
    np.testing.assert_allclose([p.logits for p in predictions], expected, atol=1e-4)
    for prediction, logits in zip(predictions, expected, strict=True):
        assert prediction.label == LABELS[int(np.argmax(logits))] and prediction.windows is None
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        np.testing.assert_allclose(list(prediction.probabilities.values()), probabilities, atol=1e-5)
    unmerged = load(lora_run[0], device="cpu", merge=False, precision="no")
    np.testing.assert_allclose(unmerged.logits(clips[:1]), expected[:1], atol=1e-6)


def test_long_audio_is_windowed_and_averaged(lora_run, predictor, speech) -> None:
    _, classifier = lora_run
    clip = speech[: RATE * 2 + RATE // 2]  # 2.5 s > eval_max_seconds 2 -> 1-s windows, 0.5 s apart
    prediction = predictor.predict(clip)
    spans = [(w.start, w.end) for w in prediction.windows]
    assert spans == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]
    for window in prediction.windows:
        piece = clip[round(window.start * RATE) : round(window.end * RATE)]
        np.testing.assert_allclose(window.logits, forward_logits(classifier, piece), atol=1e-4)
    mean = np.mean([list(w.probabilities.values()) for w in prediction.windows], axis=0)
    np.testing.assert_allclose(list(prediction.probabilities.values()), mean, atol=1e-6)
    assert prediction.label == LABELS[int(np.argmax(mean))] and prediction.logits is None
    assert prediction.duration == pytest.approx(2.5)
    # An explicit window applies to anything longer than it; the last window ends at the clip's end.
    custom = predictor.predict(clip[: RATE * 2], window=0.8, hop=0.5)
    assert [(w.start, w.end) for w in custom.windows] == [(0.0, 0.8), (0.5, 1.3), (1.0, 1.8), (1.2, 2.0)]


def test_window_plan_covers_the_clip_with_full_windows() -> None:
    plan = WindowPlan(whole_limit=10, window=4, hop=3)
    assert plan.spans(10) == [(0, 10)]
    assert plan.spans(11) == [(0, 4), (3, 7), (6, 10), (7, 11)]
    assert plan.spans(13) == [(0, 4), (3, 7), (6, 10), (9, 13)]


def test_files_integer_pcm_channels_and_other_rates_are_accepted(predictor, speech, tmp_path) -> None:
    clip = speech[:RATE]
    reference = predictor.predict(clip).logits
    path = tmp_path / "clip.flac"
    sf.write(path, clip, RATE)
    from_file = predictor.predict(path)
    assert from_file.source == str(path)
    np.testing.assert_allclose(from_file.logits, reference, atol=1e-3)  # FLAC is 16-bit
    pcm = np.round(clip * 32767).astype(np.int16)
    np.testing.assert_allclose(predictor.predict(pcm).logits, reference, atol=1e-3)
    stereo = np.stack([clip, clip], axis=1)
    np.testing.assert_allclose(predictor.predict(stereo).logits, reference, atol=1e-5)
    np.testing.assert_allclose(predictor.predict(torch.from_numpy(stereo.T)).logits, reference, atol=1e-5)
    at_8k = soxr.resample(clip, RATE, 8000)
    low = predictor.predict(at_8k, sample_rate=8000)
    assert low.duration == pytest.approx(1.0)
    np.testing.assert_allclose(low.logits, predictor.predict(soxr.resample(at_8k, 8000, RATE)).logits, atol=1e-6)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(100, dtype=np.float32), r"too short: 6.2 ms, but random-whisper needs at least 12.6 ms"),
        (np.full(RATE, np.nan, dtype=np.float32), "the audio: input out of range: it holds NaN or infinite"),
        (np.full(RATE, 1e18, dtype=np.float32), r"the audio: input out of range: peak sample 1e\+18"),
        (np.zeros(0, dtype=np.float32), "holds no samples"),
        (np.zeros((2, 2, RATE), dtype=np.float32), "expected a waveform of shape"),
        ("/no/such/clip.wav", "/no/such/clip.wav: no such file"),
    ],
)
def test_unusable_audio_is_a_clear_error(predictor, audio, message) -> None:
    with pytest.raises(SertuneError, match=message):
        predictor.predict(audio)


@pytest.mark.parametrize(
    ("subtype", "peak", "shown"),
    [("FLOAT", 1e18, "peak sample 1e+18"), ("DOUBLE", 1e300, "NaN or infinite"), ("FLOAT", 2e4, "peak sample 2e+04")],
)
def test_out_of_range_files_blame_the_input_not_the_checkpoint(predictor, speech, tmp_path, subtype, peak, shown):
    # A finite 1e18 used to come out as NaN logits, reported as "the checkpoint may be corrupt".
    path = tmp_path / "huge.wav"
    wave = speech[:RATE].astype(np.float64)
    sf.write(path, wave / np.abs(wave).max() * peak, RATE, subtype=subtype)
    with pytest.raises(SertuneError) as error:
        predictor.predict(path)
    message = str(error.value)
    assert message.startswith(f"{path}: input out of range") and shown in message and "checkpoint" not in message


def test_float_audio_a_little_over_full_scale_is_predicted(predictor, speech, tmp_path) -> None:
    path = tmp_path / "hot.wav"
    sf.write(path, speech[:RATE] / np.abs(speech[:RATE]).max() * 1.5, RATE, subtype="FLOAT")
    assert sum(predictor.predict(path).probabilities.values()) == pytest.approx(1.0)


def test_bad_window_settings_are_refused(predictor) -> None:
    with pytest.raises(SertuneError, match="need 0 < hop <= window"):
        predictor.predict(np.zeros(RATE, dtype=np.float32), window=1.0, hop=2.0)
    with pytest.raises(SertuneError, match="longer than random-whisper encodes at once"):
        predictor.plan(window=31.0)


def test_silence_is_predicted_and_flagged(predictor, speech) -> None:
    silence = predictor.predict(np.zeros(RATE, dtype=np.float32))
    assert silence.silent and sum(silence.probabilities.values()) == pytest.approx(1.0)
    assert not predictor.predict(speech[:RATE]).silent
    padded = np.concatenate([speech[: RATE * 3 // 2], np.zeros(RATE * 3 // 2, dtype=np.float32)])
    windows = predictor.predict(padded).windows
    assert not windows[0].silent and windows[-1].silent


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm"])
def test_group_norm_encoders_never_batch_clips_of_different_lengths(tmp_path, speech, kind: str) -> None:
    # A group-norm front end normalises over padding too; answers must not depend on batching.
    make_run(tmp_path, kind=kind, method="adapter")
    predictor = load(tmp_path, device="cpu", precision="no")
    clips = [speech[:RATE], speech[: RATE // 2], speech[RATE : RATE * 2], speech[: RATE * 3 // 4]]
    together = predictor.logits(clips)
    alone = np.stack([predictor.logits([clip])[0] for clip in clips])
    np.testing.assert_allclose(together, alone, atol=1e-6)  # equal-length clips still share a batch
    padded = torch.zeros(2, RATE)
    padded[0], padded[1, : RATE // 2] = torch.from_numpy(clips[0]), torch.from_numpy(clips[1])
    with torch.inference_mode():
        in_padded_batch = predictor.classifier(padded, torch.tensor([RATE, RATE // 2]))[1].numpy()
    assert np.abs(in_padded_batch - alone[1]).max() > 1e-3  # what mixing lengths would have done


# -- precision -----------------------------------------------------------------------------------
def test_bf16_autocast_on_cpu_stays_close_to_float32(lora_run, predictor, speech) -> None:
    bf16 = load(lora_run[0], device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.info().precision == "bf16" and predictor.info().precision == "no"
    clips = [speech[:RATE], speech[RATE // 2 : RATE * 2]]
    reduced, full = bf16.logits(clips), predictor.logits(clips)
    assert reduced.dtype == np.float32 and not np.array_equal(reduced, full)  # autocast did run in bf16
    for clip in clips:
        low, high = bf16.predict(clip).probabilities, predictor.predict(clip).probabilities
        np.testing.assert_allclose(list(low.values()), list(high.values()), atol=0.03)


@pytest.mark.parametrize(("cpu_bf16", "expected"), [(False, "no"), (True, "bf16")])
def test_auto_precision_follows_the_cpu(lora_run, monkeypatch, cpu_bf16, expected) -> None:
    capabilities = Capabilities("cpu", cpu_bf16=cpu_bf16)
    monkeypatch.setattr(precision, "detect_capabilities", lambda device_type=None: capabilities)
    predictor = load(lora_run[0], device="cpu")
    assert predictor.precision == expected and predictor.info().precision == expected
    assert predictor.precision_reason.startswith("auto: CPU ")
    with pytest.raises(SertuneError, match="precision must be one of auto, no, bf16, fp16, got 'fp8'"):
        load(lora_run[0], device="cpu", precision="fp8")


# -- run directories -----------------------------------------------------------------------------
def _fold(run: Path, name: str, uar: float | None, *, complete: bool = True, checkpoint: bool = True) -> None:
    fold = run / "folds" / name
    fold.mkdir(parents=True)
    if checkpoint:
        (fold / "checkpoint").mkdir()
        (fold / "checkpoint" / "sertune.json").write_text("{}")
    metrics = {"fold": name, "complete": complete, "epochs": []}
    if uar is not None:
        metrics["dev"] = {"uar": uar}
        metrics["test"] = {"uar": 100.0 - uar}  # test scores must never choose
    (fold / "metrics.json").write_text(json.dumps(metrics))


def test_run_directory_serves_the_fold_with_the_best_dev_uar(tmp_path) -> None:
    _fold(tmp_path, "fold1", 60.0)
    _fold(tmp_path, "fold2", 71.5)
    _fold(tmp_path, "fold3", 71.5)  # a tie: the first by name wins
    _fold(tmp_path, "fold4", 90.0, complete=False)  # still training
    _fold(tmp_path, "fold5", 95.0, checkpoint=False)
    best = resolve_run(tmp_path)
    assert best.checkpoint == tmp_path / "folds/fold2/checkpoint" and best.fold == "fold2"
    assert resolve_run(tmp_path, fold="fold1").fold == "fold1"
    assert resolve_run(tmp_path / "folds/fold3").checkpoint == tmp_path / "folds/fold3/checkpoint"
    assert resolve_run(tmp_path / "folds/fold1/checkpoint").fold == "fold1"


@pytest.mark.parametrize(
    ("layout", "path", "fold", "message"),
    [
        ("none", "missing", None, "no such run directory"),
        ("none", ".", None, "is not a trained sertune run"),
        ("checkpoint", ".", "fold1", "is not a run directory"),
        ("unfinished", ".", None, "no finished fold"),
        ("unfinished", ".", "fold9", r"has no fold 'fold9'; its folds are \['fold1'\]"),
        ("corrupt", ".", None, "metrics.json is unreadable"),
        ("no-checkpoint", "folds/fold1", None, "has not saved a checkpoint yet"),
    ],
)
def test_unusable_run_directories_are_clear_errors(tmp_path, layout, path, fold, message) -> None:
    if layout == "checkpoint":
        (tmp_path / "sertune.json").write_text("{}")
    elif layout == "unfinished":
        _fold(tmp_path, "fold1", None, complete=False)
    elif layout == "corrupt":
        _fold(tmp_path, "fold1", 50.0)
        (tmp_path / "folds/fold1/metrics.json").write_text("{not json")
    elif layout == "no-checkpoint":
        _fold(tmp_path, "fold1", 50.0, checkpoint=False)
    with pytest.raises(SertuneError, match=message):
        resolve_run(tmp_path / path, fold)


def make_baseline_run(directory: Path, corpus: Path) -> Path:
    """A run directory as `sertune baseline CORPUS --out DIRECTORY` writes it."""
    write_baseline_run(mfcc_baseline(corpus), directory)
    return directory


def test_a_baseline_run_has_no_model_to_predict_with(tmp_path, small_corpus) -> None:
    run = make_baseline_run(tmp_path / "baseline", small_corpus)
    for path in (run, run / "folds" / "fold1"):
        with pytest.raises(SertuneError, match=r"is a baseline run .* have no neural model to predict with"):
            load(path, device="cpu")
    with pytest.raises(SertuneError, match="is a baseline run"):
        resolve_run(run, fold="fold1")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "sertune.json").write_text("{truncated")
    with pytest.raises(SertuneError, match=r"sertune\.json is corrupt"):
        load(tmp_path, device="cpu")


# -- several runs, one encoder -------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, EmotionClassifier]]:
    root = tmp_path_factory.mktemp("runs")
    specs = {
        "first": dict(method="lora", seed=1),
        "second": dict(method="lora+adapter", labels=["calm", "tense"], seed=2),
        "other": dict(kind="wavlm", method="prompt", seed=3),
    }
    return {name: (root / name, make_run(root / name, **spec)) for name, spec in specs.items()}


def test_runs_on_one_encoder_share_it_and_keep_their_own_answers(three_runs, speech) -> None:
    predictors = load_many({name: path for name, (path, _) in three_runs.items()}, device="cpu", precision="no")
    first, second, other = predictors["first"], predictors["second"], predictors["other"]
    assert first.backbone is second.backbone and other.backbone is not first.backbone
    assert not first.classifier.merged and other.classifier.merged is False  # prompt: nothing to merge
    clips = [speech[:RATE], speech[RATE // 2 : RATE * 2]]
    for name, predictor in predictors.items():
        expected = np.stack([forward_logits(three_runs[name][1], clip) for clip in clips])
        np.testing.assert_allclose(predictor.logits(clips), expected, atol=1e-5)
    assert first.info().name == "first" and first.info().labels == LABELS
    assert second.predict(clips[0]).model == "second"


def test_a_lone_lora_run_in_a_pool_is_merged_and_names_are_checked(three_runs) -> None:
    predictors = load_many({"solo": three_runs["first"][0]}, device="cpu")
    assert predictors["solo"].classifier.merged
    pool = EncoderPool(device="cpu")
    with pytest.raises(SertuneError, match=r"model name 'bad\.name'"):
        pool.add("bad.name", three_runs["first"][0])
    pool.add("one", three_runs["first"][0])
    with pytest.raises(SertuneError, match="already loaded"):
        pool.add("one", three_runs["first"][0])


def test_threads_never_see_each_others_adapter(three_runs, speech) -> None:
    predictors = load_many({name: three_runs[name][0] for name in ("first", "second")}, device="cpu")
    clip = speech[:RATE]
    expected = {name: p.predict(clip).logits for name, p in predictors.items()}
    results: list[tuple[str, list[float]]] = []

    def worker(name: str) -> None:
        for _ in range(5):
            results.append((name, predictors[name].predict(clip).logits))

    threads = [threading.Thread(target=worker, args=(name,)) for name in ["first", "second"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 30
    assert all(logits == expected[name] for name, logits in results)


def test_import_sertune_stays_cheap() -> None:
    code = "import sys, sertune; assert callable(sertune.load); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
