"""`sertune predict`: files, folders and globs; table, JSON and CSV; windows; failures reported and skipped."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from test_inference import LABELS, RATE, forward_logits, make_run


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
    code, out, err = cli(["predict", str(run), str(clips), "--json"])
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
    code, out, _ = cli(["predict", str(run), str(long), "--csv", "--window", "1", "--hop", "0.5"])
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
