"""ONNX export: parity with PyTorch on real speech, dynamic batch and length, failure paths, run resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import soundfile
import torch

from sertune import export
from sertune.backbones import Backbone, build_backbone, load_backbone
from sertune.checkpoint import METADATA, WEIGHTS, save_classifier
from sertune.errors import SertuneError
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig
from sertune.tuning.lora import lora_layers
from test_checkpoint_metadata import MALFORMED, edited_run, poisoned_run
from test_inference import make_run

from conftest import TINY_CONFIGS

LABELS = ["neutral", "angry", "sad", "happy"]


def _perturbed(backbone: Backbone, method: str = "lora", scale: float = 0.05, seed: int = 0) -> EmotionClassifier:
    """A classifier whose tuning weights are far from their identity init, so that they change the output."""
    classifier = EmotionClassifier(backbone, LABELS, TuningConfig(method=method)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if any(part in name for part in ("lora_B", ".up.", "prompts")):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
            elif name.startswith("head.output_layers.2"):
                parameter.mul_(30.0)  # spread the probabilities, so that differences in them show
    return classifier


def _tiny(kind: str, method: str = "lora", seed: int = 0) -> EmotionClassifier:
    return _perturbed(build_backbone(TINY_CONFIGS[kind](), seed=0).eval(), method, scale=0.3, seed=seed)


def _probabilities(classifier: EmotionClassifier, clips: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(classifier(*export.pad_batch(clips)), dim=-1).numpy()


def _onnx_probabilities(path: Path, clips: list[np.ndarray], pad: int = 0) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    waveforms, lengths = export.pad_batch(clips)
    waveforms = torch.nn.functional.pad(waveforms, (0, pad))
    return session.run(None, {"waveform": waveforms.numpy(), "length": lengths.numpy()})[0]


def _other_batches(speech: np.ndarray) -> list[list[np.ndarray]]:
    """Batch sizes and lengths that the export did not see."""
    return [[speech[3000:9000]], [speech[:12000], speech[500:16000], speech[:4000], speech[1000:14000]]]


@pytest.mark.slow
def test_whisper_tiny_en_lora_checkpoint_exports_with_parity(speech: np.ndarray, tmp_path: Path) -> None:
    classifier = _perturbed(load_backbone("whisper-tiny.en"), scale=0.15)
    clips = [speech, speech[8000:40000], speech[:20000]]
    trained = _probabilities(classifier, clips)
    for layer in lora_layers(classifier.backbone.model):
        layer.enable_adapters(False)
    assert np.abs(_probabilities(classifier, clips) - trained).max() > 20 * export.TOLERANCE, "LoRA must matter"
    for layer in lora_layers(classifier.backbone.model):
        layer.enable_adapters(True)
    save_classifier(classifier, tmp_path / "checkpoint")

    report = export.export_run(tmp_path / "checkpoint", tmp_path / "model.onnx", clips=clips)

    assert report.max_abs_diff <= 1e-3
    assert report.labels == LABELS and report.backbone == "whisper-tiny.en"
    metadata = {prop.key: prop.value for prop in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert json.loads(metadata["labels"]) == LABELS
    assert metadata["sample_rate"] == "16000" and metadata["max_samples"] == "480000"
    # Padding past the longest clip only adds masked frames: the probabilities stay those of PyTorch.
    for batch in _other_batches(speech):
        found = _onnx_probabilities(tmp_path / "model.onnx", batch, pad=1234)
        assert np.abs(found - _probabilities(classifier, batch)).max() <= 1e-3


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_whisper_graph_gives_the_backbone_hidden_states(speech: np.ndarray, attention: str) -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0).eval()
    backbone.model.config._attn_implementation = attention
    waveforms, lengths = export.pad_batch([speech, speech[:9000], speech[4000:20000]])
    with torch.no_grad():
        expected = backbone.encode(waveforms, lengths)
        states, frames = export.WhisperGraph(backbone)(torch.nn.functional.pad(waveforms, (0, 800)), lengths)
    assert torch.equal(frames, expected.frame_lengths)
    for ours, reference in zip(states, expected.hidden_states, strict=True):
        for clip, count in enumerate(frames.tolist()):
            assert (ours[clip, :count] - reference[clip, :count]).abs().max() < 1e-4


def test_tuning_hooks_are_part_of_the_exported_whisper_graph(speech: np.ndarray, tmp_path: Path) -> None:
    classifier = _tiny("whisper", "combined")  # deep prompts + LoRA + adapters
    clips = [speech, speech[:10000]]
    trained = _probabilities(classifier, clips)

    report = export.export_classifier(classifier, tmp_path / "model.onnx", clips)

    assert report.max_abs_diff <= 1e-3
    assert np.abs(_onnx_probabilities(tmp_path / "model.onnx", clips) - trained).max() <= 1e-3


def _write_run(run: Path, folds: dict[str, EmotionClassifier | None], uars: dict[str, float | None]) -> None:
    for name, classifier in folds.items():
        fold = run / "folds" / name
        if classifier is not None:
            save_classifier(classifier, fold / "checkpoint")
        else:
            (fold / "checkpoint").mkdir(parents=True)
        metrics = {"fold": name, "complete": uars[name] is not None}
        if uars[name] is not None:
            metrics["dev"] = {"uar": uars[name]}
        (fold / "metrics.json").write_text(json.dumps(metrics))


def test_wavlm_run_exports_its_best_fold_through_the_cli(speech: np.ndarray, tmp_path: Path, cli) -> None:
    best = _tiny("wavlm", seed=1)
    _write_run(tmp_path / "run", {"fold1": _tiny("wavlm", seed=2), "fold2": best}, {"fold1": 55.0, "fold2": 61.5})
    # Short clips: the tiny encoders keep 1600 frames a second, and WavLM's attention is quadratic in them.
    audio = [tmp_path / "a.wav", tmp_path / "b.wav"]
    soundfile.write(audio[0], speech[:16000], 16000)
    soundfile.write(audio[1], speech[8000:20000], 16000)

    code, printed, _ = cli(
        ["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "out" / "model.onnx"), "--audio", *map(str, audio)]
    )
    assert code == 0
    assert "folds/fold2/checkpoint" in printed and "neutral, angry, sad, happy" in printed
    assert "MB" in printed and "max abs diff" in printed
    for batch in _other_batches(speech):
        found = _onnx_probabilities(tmp_path / "out" / "model.onnx", batch)
        assert np.abs(found - _probabilities(best, batch)).max() <= 1e-3


def test_failed_parity_check_leaves_no_file(
    speech: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = export._run_onnx
    monkeypatch.setattr(
        export, "_run_onnx", lambda path, batches: [[p + 0.01 for p in parts] for parts in real_run(path, batches)]
    )

    with pytest.raises(SertuneError, match="disagrees with PyTorch") as error:
        export.export_classifier(_tiny("wav2vec2"), tmp_path / "model.onnx", [speech[:16000], speech[:10000]])

    # Only the injected 0.01 shows: the wav2vec2 (group norm, no attention mask) graph itself agrees.
    assert "max abs difference 0.01 " in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_missing_and_corrupt_runs(tmp_path: Path, cli) -> None:
    def _cli_error(argv: list[str]) -> str:
        code, _, message = cli(argv)
        assert code == 2 and message.startswith("sertune export: error:") and message.count("\n") == 1
        return message

    out = tmp_path / "model.onnx"
    assert "no such run directory" in _cli_error(["export", str(tmp_path / "nope"), "--onnx", str(out)])
    assert "not a trained sertune run" in _cli_error(["export", str(tmp_path), "--onnx", str(out)])

    checkpoint = tmp_path / "run" / "folds" / "fold1" / "checkpoint"
    save_classifier(_tiny("wav2vec2"), checkpoint)
    (checkpoint / WEIGHTS).write_bytes(b"not safetensors")
    assert "corrupt" in _cli_error(["export", str(tmp_path / "run"), "--onnx", str(out), "--fold", "fold1"])
    (checkpoint / METADATA).write_text("{truncated")
    assert "corrupt" in _cli_error(["export", str(checkpoint), "--onnx", str(out)])
    assert not out.exists()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export-run") / "checkpoint"
    make_run(directory)
    return directory


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_cli_refuses_malformed_metadata_in_one_line(tmp_path: Path, cli, lora_run: Path, edit, message) -> None:
    run = edited_run(lora_run, tmp_path / "run", edit)
    out = tmp_path / "model.onnx"
    expected = f"sertune export: error: {run / METADATA}: {message}\n"
    assert cli(["export", str(run), "--onnx", str(out)]) == (2, "", expected)
    assert not out.exists()


def test_nan_adapter_is_refused_before_export(tmp_path: Path, cli, lora_run: Path) -> None:
    run, tensor = poisoned_run(lora_run, tmp_path / "run", float("nan"))
    out = tmp_path / "model.onnx"
    code, _, err = cli(["export", str(run), "--onnx", str(out)])
    assert code == 2 and err.startswith(f"sertune export: error: {run / WEIGHTS}: tensor {tensor} holds 1 NaN of ")
    assert err.count("\n") == 1 and not out.exists()


def test_check_batches_differ_in_size_and_length(speech: np.ndarray) -> None:
    (first, first_lengths), (second, _) = export.check_batches([speech], min_samples=400)
    assert first.shape[0] == 2 and second.shape[0] == 1  # a traced batch of one would fix the batch size
    assert second.shape[1] < first.shape[1] and first_lengths.tolist()[0] == len(speech)
    with pytest.raises(SertuneError, match=r"at least 0\.50 s"):
        export.check_batches([speech[:4000]], min_samples=400)
