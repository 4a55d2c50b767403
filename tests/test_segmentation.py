"""Long recordings segmented at pauses: Silero VAD, segment lengths, the emotion timeline, its plot, and
`sertune predict --segment vad` (with the predict command's checks of device, batch size and window)."""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf

import sertune
from sertune import segmentation
from sertune.backbones import build_backbone
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.inference import Predictor
from sertune.model import EmotionClassifier
from sertune.prediction import AudioSettings
from sertune.segmentation import fit_segments, plot_timeline, speech_segments, timeline
from sertune.tuning import TuningConfig
from test_inference import LABELS, RATE, make_run

from conftest import TINY_CONFIGS, speak

# Segments up to 4 s: the five sentences below (1.6-2.4 s of speech each) stay whole.
AUDIO = {"sample_rate": RATE, "max_seconds": 4.0, "eval_max_seconds": 8.0}
SENTENCES = [
    ("I cannot believe you did this to me again", "en-us"),
    ("Well, that is the most wonderful news I have heard", "en-gb"),
    ("Please just leave me alone for a while", "en-us+f3"),
    ("The train leaves at seven in the morning", "en-gb+m3"),
    ("We should talk about it tomorrow", "en-us+m2"),
]
PAUSE = 1.0
NOISE_FLOOR = 10 ** (-60 / 20)  # RMS of the background: -60 dBFS
FLOAT32 = ["--precision", "no"]


def noise(samples: int, seed: int) -> np.ndarray:
    return (NOISE_FLOOR * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[tuple[float, float]]]:
    """Five espeak-ng sentences, 1 s of silence before, between and after them, over a -60 dBFS noise floor:
    (the WAV, its samples, where each sentence's speech starts and ends in seconds)."""
    folder = tmp_path_factory.mktemp("recording")
    pause = np.zeros(round(PAUSE * RATE), dtype=np.float32)
    parts, truth, at = [pause], [], len(pause)
    for i, (text, voice) in enumerate(SENTENCES):
        clip = speak(text, folder / f"{i}.wav", voice)
        loud = np.flatnonzero(np.abs(clip) > 0.01)  # espeak-ng pads its output with silence: the speech proper
        clip = clip[loud[0] : loud[-1] + 1]
        truth.append((at / RATE, (at + len(clip)) / RATE))
        parts += [clip, pause]
        at += len(clip) + len(pause)
    wave = np.concatenate(parts)
    wave = wave + noise(len(wave), 0)
    path = folder / "talk.wav"
    sf.write(path, wave, RATE, subtype="FLOAT")
    return path, wave, truth


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("segment-run")
    make_run(directory, audio=AUDIO)
    return directory


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return sertune.load(run_dir, device="cpu", precision="no")


# -- voice activity and segment lengths -------------------------------------------------------------
def test_speech_segments_find_each_sentence(recording) -> None:
    _, wave, truth = recording
    found = speech_segments(wave, RATE)
    assert len(found) == len(truth)
    np.testing.assert_allclose(np.array(found), np.array(truth), atol=0.2)
    # The same recording at 48 kHz is resampled for the VAD: the same seconds.
    import soxr

    np.testing.assert_allclose(speech_segments(soxr.resample(wave, RATE, 48000), 48000), found, atol=0.02)


def test_the_streaming_model_finds_the_same_segments(recording, monkeypatch) -> None:
    """Without onnxruntime the TorchScript model (behind a lock) is used: the same timestamps."""
    import silero_vad
    import torch

    _, wave, truth = recording
    wave = wave[: round((truth[1][1] + 0.5) * RATE)]  # two sentences: TorchScript takes a frame at a time
    # Its small per-frame ops only slow down with more threads (5x with 2 threads on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    load = silero_vad.load_silero_vad

    def without_onnxruntime(**settings):
        if settings.get("sequence"):
            raise ModuleNotFoundError("No module named 'onnxruntime'")
        return load(**settings)

    monkeypatch.setattr(silero_vad, "load_silero_vad", without_onnxruntime)
    try:
        streaming = segmentation.SileroVad()
        assert streaming.backend == "torchscript"
        assert streaming.speech(wave) == segmentation.vad_model().speech(wave)
    finally:
        torch.set_num_threads(threads)


def test_importing_silero_keeps_torchs_thread_count(monkeypatch) -> None:
    """silero_vad sets torch's threads to 1 on import: loading the VAD must not slow down the encoders."""
    import torch

    for name in [name for name in sys.modules if name.split(".")[0] == "silero_vad"]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh below; the originals come back afterwards
    monkeypatch.setattr(segmentation, "_VAD", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        segmentation.vad_model()
        assert torch.get_num_threads() == threads + 1 and sys.modules["silero_vad"] is not None
    finally:
        torch.set_num_threads(threads)


def test_fit_segments_merges_short_ones_and_splits_long_ones() -> None:
    fit = lambda segments, **kw: fit_segments(segments, min_segment=1.0, max_segment=4.0, total=100.0, **kw)  # noqa: E731
    # 0.4 s joins its nearer neighbour (0.2 s away, not 0.5 s); an isolated one (2 s from anything) stays.
    assert fit([(0.0, 2.0), (2.5, 2.9), (3.1, 5.0), (7.0, 7.5), (9.5, 11.0)]) == [
        (0.0, 2.0), (2.5, 5.0), (7.0, 7.5), (9.5, 11.0)
    ]
    # Short ones in a row join until long enough; with max_gap 0 nothing joins.
    assert fit([(0.0, 0.3), (0.4, 0.7), (0.8, 1.1), (5.0, 6.5)]) == [(0.0, 1.1), (5.0, 6.5)]
    assert fit([(0.0, 0.3), (0.4, 0.7)], max_gap=0.0) == [(0.0, 0.3), (0.4, 0.7)]
    # 10 s of 4 s at most: 3 parts of 3.33 s; exactly 8 s: 2 parts, not 3.
    parts = fit([(10.0, 20.0), (30.0, 38.0)])
    np.testing.assert_allclose(parts, [(10, 10 + 10 / 3), (10 + 10 / 3, 10 + 20 / 3), (10 + 20 / 3, 20), (30, 34),
                                       (34, 38)])
    # Clipped to the recording; out of order and empty input are fine.
    assert fit_segments([(5.0, 7.0), (-0.5, 1.5)], min_segment=1, max_segment=4, total=6.0) == [(0.0, 1.5), (5.0, 6.0)]
    assert fit([]) == []
    for bad in ({"min_segment": 5.0, "max_segment": 4.0}, {"min_segment": float("nan"), "max_segment": 4.0},
                {"min_segment": 0.0, "max_segment": 4.0}):
        with pytest.raises(SertuneError, match="segment"):
            fit_segments([(0, 1)], total=1.0, **bad)


# -- the timeline ------------------------------------------------------------------------------------
def test_timeline_scores_each_segment_as_a_clip_alone(recording, predictor, tmp_path) -> None:
    _, wave, truth = recording
    result = timeline(predictor, wave, source="talk.wav")
    assert len(result.segments) == len(SENTENCES) and not result.no_speech and result.message is None
    assert result.duration == pytest.approx(len(wave) / RATE)
    assert (result.min_segment, result.max_segment) == (1.0, 4.0)  # the run's defaults
    for segment, (start, end) in zip(result.segments, truth, strict=True):
        assert abs(segment.start - start) < 0.2 and abs(segment.end - end) < 0.2
        alone = predictor.predict(wave[round(segment.start * RATE) : round(segment.end * RATE)])
        assert segment.label == alone.label and alone.windows is None
        np.testing.assert_allclose(list(segment.probabilities.values()), list(alone.probabilities.values()),
                                   atol=1e-5)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["labels"] == LABELS and data["no_speech"] is False and len(data["segments"]) == len(SENTENCES)
    # The run's 4-s crop is the longest segment unless asked otherwise: 1.5 s splits every sentence.
    split = timeline(predictor, wave, max_segment=1.5)
    assert len(split.segments) == 2 * len(SENTENCES)
    assert max(s.end - s.start for s in split.segments) <= 1.5 + 1e-9


def test_silence_is_no_speech_not_an_error(predictor, tmp_path) -> None:
    for wave in (np.zeros(3 * RATE, dtype=np.float32), noise(3 * RATE, 1)):
        result = timeline(predictor, wave)
        assert result.segments == [] and result.no_speech and result.message == "no speech"
        assert result.to_dict()["no_speech"] is True
    plot_timeline(result, tmp_path / "silence.png")
    assert matplotlib.image.imread(tmp_path / "silence.png").ndim == 3


def test_timelines_from_several_threads_agree(recording, predictor) -> None:
    _, wave, _ = recording
    expected = timeline(predictor, wave).to_dict()
    answers: list[dict] = []

    def work() -> None:
        answers.append(timeline(predictor, wave).to_dict())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4
    for answer in answers:
        assert [(s["start"], s["end"], s["label"]) for s in answer["segments"]] == [
            (s["start"], s["end"], s["label"]) for s in expected["segments"]
        ]
        np.testing.assert_allclose([list(s["probabilities"].values()) for s in answer["segments"]],
                                   [list(s["probabilities"].values()) for s in expected["segments"]], atol=1e-5)


def test_dimensions_are_reported_and_drawn(recording, tmp_path) -> None:
    _, wave, _ = recording
    dimensions = [Dimension("arousal", 1.0, 5.0), Dimension("valence", 1.0, 5.0)]
    classifier = EmotionClassifier(build_backbone(TINY_CONFIGS["whisper"](), seed=0), LABELS, TuningConfig(),
                                   dimensions=dimensions)
    multitask = Predictor(classifier, AudioSettings(**AUDIO), precision="no")
    result = timeline(multitask, wave)
    assert result.dimensions == ["arousal", "valence"] and len(result.segments) == len(SENTENCES)
    for segment in result.segments:
        assert set(segment.dimensions) == {"arousal", "valence"}
        assert all(0 <= value <= 1 for value in segment.dimensions_normalized.values())
    path = tmp_path / "plots" / "multitask.png"
    plot_timeline(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(path.parent.iterdir()) == [path]


# -- the command line --------------------------------------------------------------------------------
def test_predict_segment_vad_table_json_csv_and_plots(recording, run_dir, predictor, cli, tmp_path) -> None:
    path, wave, _ = recording
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, noise(2 * RATE, 2), RATE, subtype="FLOAT")
    expected = timeline(predictor, wave)

    code, out, err = cli(["predict", str(run_dir), str(path), "--segment", "vad", "--json", *FLOAT32])
    assert code == 0, err
    [answer] = json.loads(out)
    assert answer["input"] == str(path) and len(answer["segments"]) == len(SENTENCES)
    assert [s["label"] for s in answer["segments"]] == [s.label for s in expected.segments]

    code, out, err = cli(["predict", str(run_dir), str(path), str(quiet), "--segment", "vad", "--csv", *FLOAT32])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["input"], r["segment"]) for r in rows] == [(str(path), "speech")] * len(SENTENCES)
    np.testing.assert_allclose([float(r["start"]) for r in rows], [s.start for s in expected.segments], atol=1e-3)
    assert f"{quiet}: no speech" in err

    plot = tmp_path / "out.png"
    code, out, err = cli(["predict", str(run_dir), str(path), str(quiet), "--segment", "vad", "--plot", str(plot),
                          *FLOAT32])
    assert code == 0, err
    assert f"{path} ({len(wave) / RATE:.1f} s): 5 speech segments" in out and f"{quiet} (2.0 s): no speech" in out
    for stem in ("talk", "quiet"):
        image = matplotlib.image.imread(tmp_path / f"out-{stem}.png")
        assert image.ndim == 3 and image.shape[1] >= 600
    assert not plot.exists()
    code, _, err = cli(["predict", str(run_dir), str(path), "--segment", "vad", "--plot", str(plot), *FLOAT32])
    assert code == 0 and plot.exists(), err


def one_error_line(err: str) -> str:
    """The error line of a command that failed cleanly (argparse prints its usage above it)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--segment", "vad", "--window", "3"], "does not take --window or --hop"),
        (["--plot", "out.png"], "--plot belongs to a timeline: add --segment vad"),
        (["--segment", "vad", "--plot", "out.jpg"], "name it *.png"),
        (["--segment", "vad", "--min-segment", "5", "--max-segment", "2"], "is longer than --max-segment"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--batch-size", "0"], "argument --batch-size: '0': need a whole number"),
        (["--batch-size", "-3"], "argument --batch-size"),
        (["--window", "inf"], "argument --window: 'inf': need a finite number in (0, 3600]"),
        (["--window", "nan"], "argument --window: 'nan'"),
        (["--window", "-2"], "argument --window: '-2'"),
        (["--window", "7200"], "argument --window: '7200'"),
        (["--hop", "0"], "argument --hop: '0'"),
        (["--segment", "vad", "--max-segment", "inf"], "argument --max-segment: 'inf'"),
    ],
)
def test_bad_options_are_one_line(recording, run_dir, cli, options, message) -> None:
    code, out, err = cli(["predict", str(run_dir), str(recording[0]), *options])
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_cuda_without_cuda_is_one_line(recording, run_dir, cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli(["predict", str(run_dir), str(recording[0]), "--device", "cuda"])
    assert code == 2
    assert "CUDA is not available on this machine; use --device cpu" in one_error_line(err)
