"""`sertune export --quantize int8`: dynamic int8 quantization checked against the float32 graph."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml

from sertune import export
from sertune.backbones import load_backbone
from sertune.checkpoint import save_classifier
from sertune.commands import export as export_command
from sertune.corpora import load_corpus
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.model import EmotionClassifier
from sertune.runs import resolve_run
from sertune.tuning import TuningConfig
from test_export import LABELS, _perturbed, _tiny, _write_run

from conftest import TINY_CONFIGS


def _metadata(path: Path) -> dict[str, str]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder the float32 intermediate goes to, watched by the test."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def trained_run(tmp_path: Path, small_corpus: Path) -> Path:
    """A run of a tiny random Whisper + LoRA on the synthetic corpus: config.yaml and fold1's checkpoint."""
    run = tmp_path / "run"
    _write_run(run, {"fold1": _tiny("whisper", seed=3)}, {"fold1": 50.0})
    (run / "config.yaml").write_text(yaml.safe_dump({"corpus": str(small_corpus), "backbone": "tiny"}))
    return run


def test_int8_export_is_checked_on_the_runs_test_clips(trained_run: Path, small_corpus: Path, scratch: Path, cli):
    out = trained_run.parent / "out" / "model.onnx"

    code, printed, _ = cli(["export", str(trained_run), "--onnx", str(out), "--quantize", "int8"])

    assert code == 0
    assert list(out.parent.iterdir()) == [out] and list(scratch.iterdir()) == []  # the float32 file is not kept
    fold = next(fold for fold in load_corpus(small_corpus).folds if fold.name == "fold1")
    metadata = _metadata(out)
    assert metadata["int8_check_clips"] == str(len(fold.test))
    assert metadata["int8_check_source"] == "test part of fold fold1 of the corpus synthetic"
    assert float(metadata["int8_label_agreement"]) >= 98.0 and metadata["int8_min_agreement"] == "98"
    assert 0 < float(metadata["int8_max_probability_diff"]) < 0.1
    assert metadata["quantization"] == export.INT8_SCHEME and json.loads(metadata["labels"]) == LABELS
    assert "onnx.infer" not in metadata
    assert "MatMulInteger" in _op_types(out)
    assert "MB int8, 0." in printed and "label agreement" in printed and f"on {len(fold.test)} clips" in printed


def test_int8_file_is_smaller_and_follows_pytorch(speech: np.ndarray, tmp_path: Path) -> None:
    classifier = _tiny("whisper")
    save_classifier(classifier, tmp_path / "checkpoint")
    clips = [speech, speech[5000:30000], speech[:12000]]
    with torch.no_grad():
        expected = torch.softmax(classifier(*export.pad_batch(clips[:1])), dim=-1).numpy()

    report = export.export_run(tmp_path / "checkpoint", tmp_path / "model.onnx", clips=clips, quantize="int8")

    assert report.int8 is not None and report.int8.source == "the given clips" and report.int8.clips == 3
    assert report.size_bytes == (tmp_path / "model.onnx").stat().st_size < report.int8.float_size_bytes
    assert report.int8.label_agreement == 100.0 and _metadata(tmp_path / "model.onnx")["int8_check_clips"] == "3"
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    found = session.run(None, {"waveform": clips[0][None], "length": np.array([len(clips[0])])})[0]
    assert np.abs(found - expected).max() <= max(0.05, 2 * report.int8.max_probability_diff)


def test_disagreeing_int8_model_is_refused_with_its_figures(
    trained_run: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    real_run = export._run_onnx

    def int8_flips_every_other_label(path: Path, batches: list) -> list:
        found = real_run(path, batches)
        if Path(path).name == export.FLOAT_INTERMEDIATE or len(batches) == 2:  # float32 graph, PyTorch check
            return found
        # Reversed class order in every other clip: its most probable class changes.
        return [[parts[0][:, ::-1].copy(), *parts[1:]] if i % 2 else parts for i, parts in enumerate(found)]

    monkeypatch.setattr(export, "_run_onnx", int8_flips_every_other_label)
    out = trained_run.parent / "out" / "model.onnx"

    code, _, err = cli(["export", str(trained_run), "--onnx", str(out), "--quantize", "int8", "--min-agreement", "60"])

    assert code == 2 and err.count("\n") == 1
    assert err.startswith("sertune export: error: the int8 model strays too far from float32: label agreement 50.0% ")
    assert "(at least 60% required), max probability difference " in err
    assert f"on 12 clips, each alone (test part of fold fold1 of the corpus synthetic); {out} was not written" in err
    assert list(out.parent.iterdir()) == [] and list(scratch.iterdir()) == []


def test_int8_check_falls_back_to_speech_outside_a_run(tmp_path: Path, cli) -> None:
    checkpoint = tmp_path / "checkpoint"  # no run around it: no corpus to take test clips from
    save_classifier(_tiny("whisper"), checkpoint)

    assert cli(["export", str(checkpoint), "--onnx", str(tmp_path / "model.onnx"), "--quantize", "int8"])[0] == 0

    metadata = _metadata(tmp_path / "model.onnx")
    assert metadata["int8_check_clips"] == str(len(export.CHECK_SPEECH))
    assert metadata["int8_check_source"] == (
        f"espeak-ng speech; the run's test clips are not at hand: {checkpoint} is not the checkpoint of a fold of a run"
    )


def test_run_test_clips_say_why_they_are_not_at_hand(trained_run: Path, small_corpus: Path, tmp_path: Path) -> None:
    resolved = resolve_run(trained_run)
    clips, source = export.run_test_clips(resolved, 201)
    assert len(clips) == 12 and source == "test part of fold fold1 of the corpus synthetic"
    with pytest.raises(SertuneError, match=r"fold fold1 of .* has no test clip"):
        export.run_test_clips(resolved, 10**9)  # every clip is shorter than the encoder's minimum

    config = trained_run / "config.yaml"
    config.write_text(yaml.safe_dump({"corpus": str(tmp_path / "moved")}))
    with pytest.raises(SertuneError, match=r"moved/manifest.csv not found"):
        export.run_test_clips(resolved, 201)
    config.write_text(yaml.safe_dump({"backbone": "tiny"}))
    with pytest.raises(SertuneError, match=r"config.yaml names no corpus"):
        export.run_test_clips(resolved, 201)
    config.unlink()
    with pytest.raises(SertuneError, match=r"config file .*config.yaml not found"):
        export.run_test_clips(resolved, 201)

    config.write_text(yaml.safe_dump({"corpus": str(small_corpus)}))
    (trained_run / "folds" / "fold1").rename(trained_run / "folds" / "fold9")
    with pytest.raises(SertuneError, match=r"has no fold 'fold9'"):
        export.run_test_clips(resolve_run(trained_run), 201)


def test_dimensional_wavlm_int8_model_keeps_its_conv_front_end_float(speech: np.ndarray, tmp_path: Path) -> None:
    from sertune.backbones import build_backbone

    backbone = build_backbone(TINY_CONFIGS["wavlm"](), seed=0).eval()
    dimensions = [Dimension("arousal", 1.0, 5.0), Dimension("valence", 1.0, 5.0)]
    classifier = EmotionClassifier(backbone, [], TuningConfig(method="lora"), dimensions=dimensions).eval()
    clips = [speech[:16000], speech[8000:20000]]  # short: the tiny encoders keep 1600 frames a second

    report = export.export_classifier(classifier, tmp_path / "model.onnx", clips, int8=export.Int8Check(clips, "x"))

    assert report.int8 is not None and report.int8.label_agreement is None
    metadata = _metadata(tmp_path / "model.onnx")
    assert "int8_label_agreement" not in metadata and "int8_min_agreement" not in metadata
    assert 0 <= float(metadata["int8_max_dimension_diff"]) <= export.INT8_DIMENSION_TOLERANCE
    ops = _op_types(tmp_path / "model.onnx")
    assert "MatMulInteger" in ops and "Conv" in ops and "ConvInteger" not in ops


@pytest.mark.parametrize("value", ["-1", "100.1", "nan", "inf", "most"])
def test_cli_refuses_a_minimum_agreement_that_is_not_a_percentage(tmp_path: Path, cli, value: str) -> None:
    out = tmp_path / "model.onnx"
    code, _, err = cli(["export", str(tmp_path), "--onnx", str(out), "--quantize", "int8", "--min-agreement", value])
    assert code == 2
    assert err.splitlines()[-1] == (
        f"sertune export: error: argument --min-agreement: '{value}': need a finite number in [0, 100]"
    )
    assert not out.exists()


def test_minimum_agreement_needs_quantize_and_a_percentage(tmp_path: Path, cli) -> None:
    out = tmp_path / "model.onnx"
    code, _, err = cli(["export", str(tmp_path), "--onnx", str(out), "--min-agreement", "90"])
    assert (code, err) == (2, "sertune export: error: --min-agreement applies only with --quantize int8\n")
    # The library refuses before it loads anything (the path is not even a run).
    with pytest.raises(SertuneError, match="percentage from 0 to 100, got nan"):
        export.export_run(tmp_path, out, quantize="int8", min_agreement=float("nan"))
    with pytest.raises(SertuneError, match="unknown quantization 'int4'; known: int8"):
        export.export_run(tmp_path, out, quantize="int4")
    assert export_command.DEFAULT_MIN_AGREEMENT == export.MIN_AGREEMENT  # what --help says


@pytest.mark.slow
def test_whisper_tiny_en_lora_int8_export(speech: np.ndarray, tmp_path: Path) -> None:
    classifier = _perturbed(load_backbone("whisper-tiny.en"), scale=0.15)
    clips = [speech, speech[8000:40000], speech[:20000], speech[3000:]]

    report = export.export_classifier(classifier, tmp_path / "model.onnx", clips, int8=export.Int8Check(clips, "x"))

    assert report.int8 is not None and report.int8.label_agreement == 100.0
    assert report.size_bytes < 0.45 * report.int8.float_size_bytes  # float32 35 MB: the encoder's linears are int8
    metadata = _metadata(tmp_path / "model.onnx")
    assert float(metadata["int8_label_agreement"]) == 100.0 and metadata["int8_check_clips"] == "4"
    assert float(metadata["int8_max_probability_diff"]) < 0.05
    assert metadata["backbone"] == "whisper-tiny.en" and metadata["max_samples"] == "480000"


def test_export_needs_something_to_write_and_onnx_options_need_onnx(tmp_path: Path, cli) -> None:
    code, _, err = cli(["export", str(tmp_path)])
    assert (code, err) == (2, "sertune export: error: name what to write: --onnx OUT.onnx, --peft DIR, or both\n")
    code, _, err = cli(["export", str(tmp_path), "--peft", str(tmp_path / "p"), "--quantize", "int8"])
    assert (code, err) == (2, "sertune export: error: --quantize, --min-agreement and --audio apply to --onnx\n")
