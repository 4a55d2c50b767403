"""`sertune predict`: files, folders and globs; table, JSON and CSV; windows; failures reported and skipped.
Also `sertune serve`'s start-up, which shares predict's --precision."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sertune import precision
from sertune.commands.predict import predict_files
from sertune.inference import load
from sertune.precision import Capabilities
from test_inference import LABELS, RATE, forward_logits, make_baseline_run, make_run

# The numbers are compared with the classifier's float32 forward, whatever `auto` would pick here.
FLOAT32 = ["--precision", "no"]


@pytest.fixture(scope="module")
def run_and_clips(tmp_path_factory: pytest.TempPathFactory, speech: np.ndarray):
    """A tiny LoRA run, and a folder of clips: two WAVs (one nested), a FLAC, a text file."""
    root = tmp_path_factory.mktemp("predict")
    classifier = make_run(root / "run")
    clips = root / "clips"
    (clips / "nested").mkdir(parents=True)
    waves = {
        clips / "a.wav": speech[:RATE],
        clips / "nested" / "b.wav": speech[RATE // 2 : RATE * 2],
        clips / "c.flac": speech[: RATE * 3 // 4],
    }
    for path, wave in waves.items():
        sf.write(path, wave, RATE, subtype="FLOAT" if path.suffix == ".wav" else "PCM_16")
    (clips / "notes.txt").write_text("not audio")
    return root / "run", clips, classifier


def test_json_probabilities_agree_with_the_classifiers_logits(run_and_clips, cli) -> None:
    run, clips, classifier = run_and_clips
    code, out, err = cli(["predict", str(run), str(clips), "--json", *FLOAT32])
    assert code == 0, err
    results = json.loads(out)
    assert [r["input"] for r in results] == [str(clips / "a.wav"), str(clips / "c.flac"), str(clips / "nested/b.wav")]
    for result in results:
        wave = sf.read(result["input"], dtype="float32")[0]  # the FLAC's own 16-bit samples
        logits = forward_logits(classifier, wave)
        np.testing.assert_allclose(result["logits"], logits, atol=1e-4)
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        np.testing.assert_allclose([result["probabilities"][label] for label in LABELS], probabilities, atol=1e-5)
        assert result["label"] == LABELS[int(np.argmax(logits))] and result["windows"] is None


def test_globs_table_and_unreadable_files(run_and_clips, cli, tmp_path) -> None:
    run, clips, _ = run_and_clips
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(100, dtype=np.float32), RATE)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((clips / "a.wav").read_bytes()[:1000])
    pattern = str(clips / "**" / "*.wav")
    argv = ["predict", str(run), pattern, str(broken), str(short), str(cut), str(tmp_path / "absent.wav")]
    code, out, err = cli(argv)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["input", "label", "neutral", "angry", "sad", "happy"]
    assert [line.split()[0] for line in lines[1:]] == [str(clips / "a.wav"), str(clips / "nested/b.wav")]
    assert f"{broken}: not a readable audio file" in err
    assert f"{short} is too short" in err
    assert f"{tmp_path / 'absent.wav'}: no such file" in err
    assert f"{cut}: the audio file is truncated" in err
    assert "4 input(s) failed, 2 predicted" in err and "Traceback" not in err


def test_windows_in_csv_and_table(run_and_clips, cli, tmp_path, speech) -> None:
    run, _, classifier = run_and_clips
    long = tmp_path / "long.wav"
    sf.write(long, speech[: RATE * 2], RATE, subtype="FLOAT")
    code, out, _ = cli(["predict", str(run), str(long), "--csv", "--window", "1", "--hop", "0.5", *FLOAT32])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["segment"], r["start"], r["end"]) for r in rows] == [
        ("clip", "0.0", "2.0"),
        ("window", "0.0", "1.0"),
        ("window", "0.5", "1.5"),
        ("window", "1.0", "2.0"),
    ]
    last = rows[-1]
    logits = forward_logits(classifier, speech[RATE : RATE * 2])
    probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
    np.testing.assert_allclose([float(last[label]) for label in LABELS], probabilities, atol=1e-5)
    code, out, _ = cli(["predict", str(run), str(long), "--window", "1"])
    assert code == 0 and "3 windows, 2.0 s" in out and "  1.0-2.0 s" in out


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such run directory"),
        ("empty", "is not a trained sertune run"),
        ("corrupt", "sertune.json is corrupt"),
    ],
)
def test_unusable_run_directory_is_one_clear_line(tmp_path, cli, layout, message, speech) -> None:
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech[:RATE], RATE)
    run = tmp_path / "run"
    if layout != "missing":
        run.mkdir()
    if layout == "corrupt":
        (run / "sertune.json").write_text("{broken")
    code, _, err = cli(["predict", str(run), str(clip)])
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` precision resolves as on an AVX2-only CPU, whatever this machine has."""
    monkeypatch.setattr(precision, "detect_capabilities", lambda device_type=None: Capabilities("cpu"))


def test_one_bad_file_does_not_stop_the_batch(run_and_clips, cli, tmp_path, speech, cpu_without_bf16) -> None:
    # A finite but huge float WAV used to abort the whole batch, blamed on the checkpoint.
    run, _, _ = run_and_clips
    good, huge, zero, clip = tmp_path / "good.wav", tmp_path / "huge.wav", tmp_path / "zero.wav", tmp_path / "clip.flac"
    sf.write(good, speech[:RATE], RATE, subtype="FLOAT")
    sf.write(huge, speech[:RATE].astype(np.float64) * 1e18, RATE, subtype="DOUBLE")
    sf.write(zero, np.zeros(0, dtype=np.float32), RATE)
    sf.write(clip, speech[RATE : RATE * 2], RATE)
    code, out, err = cli(["predict", str(run), str(good), str(huge), str(zero), str(clip)])
    assert code == 1
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(good), str(clip)]
    assert f"sertune predict: {huge}: input out of range: peak sample" in err and "checkpoint" not in err
    assert f"sertune predict: {zero}: the audio stream holds no samples" in err
    assert "2 input(s) failed, 2 predicted" in err and "Traceback" not in err
    assert "sertune predict: precision no (auto: CPU without native bf16 matrix instructions)" in err


def test_a_clip_that_breaks_its_batch_costs_only_itself(run_and_clips, tmp_path, speech, monkeypatch) -> None:
    # A clip that passes every check can still give non-finite logits; its batch neighbours must not fail with it.
    run, _, classifier = run_and_clips
    predictor = load(run, device="cpu", precision="no")
    paths = [tmp_path / f"{name}.wav" for name in ("first", "poison", "last")]
    lengths = [RATE, RATE * 3 // 4, RATE // 2]
    for path, length in zip(paths, lengths, strict=True):
        sf.write(path, speech[:length], RATE, subtype="FLOAT")
    forward = predictor._forward

    def poisoned(waves: list[np.ndarray], *statistics: object) -> np.ndarray:
        logits = forward(waves, *statistics)
        logits[[len(wave) == lengths[1] for wave in waves]] = np.nan
        return logits

    monkeypatch.setattr(predictor, "_forward", poisoned)
    answers = list(predict_files(predictor, paths, window=None, hop=None))
    assert [(path, prediction is None) for path, prediction, _ in answers] == [
        (paths[0], False), (paths[1], True), (paths[2], False)
    ]
    assert answers[1][2] == f"{paths[1]}: the model produced non-finite logits; the checkpoint may be corrupt"
    np.testing.assert_allclose(answers[2][1].logits, forward_logits(classifier, speech[: lengths[2]]), atol=1e-4)


@pytest.mark.parametrize("style", [[], ["--json"], ["--csv"]])
def test_nothing_predicted_prints_nothing_on_stdout(run_and_clips, cli, style) -> None:
    # A non-audio file used to leave an empty table header on stdout before the error.
    run, clips, _ = run_and_clips
    code, out, err = cli(["predict", str(run), str(clips / "notes.txt"), *style])
    assert code == 1 and out == ""
    assert f"{clips / 'notes.txt'}: not a readable audio file" in err and "0 predicted" in err


def test_a_baseline_run_is_refused_as_having_no_model(tmp_path, small_corpus, cli, speech) -> None:
    # It used to say "wait for training to finish a fold", which never happens for a baseline run.
    run = make_baseline_run(tmp_path / "baseline", small_corpus)
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech[:RATE], RATE)
    for argv in (["predict", str(run), str(clip)], ["params", str(run)]):
        code, _, err = cli(argv)
        assert code == 2 and "is a baseline run" in err and "have no neural model to predict with" in err, err
        assert "wait for training" not in err and len(err.strip().splitlines()) == 1


def test_serve_logs_the_precision_at_start_up(run_and_clips, cli, monkeypatch, cpu_without_bf16) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: served.update(settings))
    run, _, _ = run_and_clips
    code, _, err = cli(["serve", "--model", f"tiny={run}", "--port", "8123"])
    assert code == 0 and served["port"] == 8123
    assert "precision no (auto: CPU without native bf16 matrix instructions): tiny (lora)" in err
    code, _, err = cli(["serve", "--model", f"tiny={run}", "--precision", "bf16"])
    assert code == 0 and "precision bf16 (asked for): tiny (lora)" in err
