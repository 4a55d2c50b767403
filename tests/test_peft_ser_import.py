"""`sertune import peft-ser`: the models the PEFT-SER study released, as sertune checkpoints.

The package's files cannot be downloaded here, so `write_package_files` writes state dicts with exactly
the names and shapes the package's code gives them (random values), and `package_forward` is a plain
torch re-implementation of the package's forward for a clip given alone, written from its source
(usc-sail/peft-ser, package/peft_ser/model/whisper.py and loralib's Linear). Whisper tiny.en stands in
for Whisper tiny: the same architecture (4 layers, width 384, 6 heads), and it loads offline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from transformers import WhisperFeatureExtractor

import sertune
from sertune.backbones import build_backbone, get_spec, load_backbone, loader
from sertune.errors import SertuneError
from sertune.head import HeadConfig
from sertune.model import EmotionClassifier
from sertune.peft_ser_import import RECIPE, RELEASED, import_peft_ser, package_name, package_tensors
from sertune.tuning import TuningConfig

MODEL = "whisper-tiny-lora-16-conv"
STAND_IN = "whisper-tiny.en"
TINY = {"width": 384, "ffn": 1536, "layers": 4}  # whisper-tiny: d_model, encoder_ffn_dim, encoder_layers
BASE = {"width": 512, "ffn": 2048, "layers": 6}  # whisper-base
RANK, CHANNELS, CLASSES = 16, 256, 4
LORA_SCALE = 1 / RANK  # loralib: lora_alpha (default 1, which the package keeps) / r
RATE = 16000
TOLERANCE = 1e-6  # on the logits; measured: about 6e-8 on CPU


def write_package_files(
    directory: Path, name: str, *, width: int, ffn: int, layers: int, seed: int = 0
) -> tuple[Path, Path]:
    """The classifier and LoRA files of released Whisper model `name` of this shape, as the package holds them."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    # WhisperSER.layer_weights: num_hidden_layers + 1 entries, as use_conv_output adds the conv output
    # (example.py renamed the training script's `weights` to it when it wrote the release files).
    classifier = {"layer_weights": random(layers + 1, scale=1.0)}
    # WhisperSER.model_seq = Sequential(Conv1d(hidden, 256, 1), ReLU, Dropout, Conv1d(256, 256, 1), ReLU,
    # Dropout, Conv1d(256, 256, 1)): parameters at indices 0, 3 and 6 (hidden_dim defaults to 256).
    for index, inputs in ((0, width), (3, CHANNELS), (6, CHANNELS)):
        classifier[f"model_seq.{index}.weight"] = random(CHANNELS, inputs, 1, scale=inputs**-0.5)
        classifier[f"model_seq.{index}.bias"] = random(CHANNELS, scale=0.1)
    # WhisperSER.out_layer = Sequential(Linear(256, 256), ReLU, Linear(256, 4)): load_model's output_class_num 4.
    for index, outputs in ((0, CHANNELS), (2, CLASSES)):
        classifier[f"out_layer.{index}.weight"] = random(outputs, CHANNELS, scale=CHANNELS**-0.5)
        classifier[f"out_layer.{index}.bias"] = random(outputs, scale=0.1)
    # example.py filtered every `backbone_model.*` and `embed_positions` tensor out of the classifier file.
    # The LoRA file is loralib's lora_state_dict: WhisperEncoderLayer makes fc1 and fc2 lora.Linear(r=16) in
    # every layer of backbone_model.encoder, each with lora_A [r, in] and lora_B [out, r].
    lora = {}
    for layer in range(layers):
        prefix = f"backbone_model.encoder.layers.{layer}."
        for linear, inputs, outputs in (("fc1", width, ffn), ("fc2", ffn, width)):
            lora[f"{prefix}{linear}.lora_A"] = random(RANK, inputs, scale=inputs**-0.5)
            lora[f"{prefix}{linear}.lora_B"] = random(outputs, RANK, scale=1.0)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{name}.pt", directory / f"{name}_lora.pt"
    torch.save(classifier, paths[0])
    torch.save(lora, paths[1])
    return paths


def package_forward(
    encoder: torch.nn.Module,
    classifier_path: Path,
    lora_path: Path,
    wave: np.ndarray,
    *,
    with_lora: bool = True,
    padded_to: int | None = None,
) -> np.ndarray:
    """The package's WhisperSER forward (eval mode) of one clip, in plain torch: given alone ([1, samples],
    no `length`), or zero-padded to `padded_to` samples as in a batch with a longer clip (`length` given)."""
    head = torch.load(classifier_path, weights_only=True)
    lora = torch.load(lora_path, weights_only=True)
    samples = padded_to or len(wave)
    # 1. The package's feature extractor (openai/whisper-tiny's, which has WhisperFeatureExtractor's defaults)
    # with max_length = the clip's (or the batch's) length: no padding to 30 s.
    audio = np.pad(wave, (0, samples - len(wave)))
    x = WhisperFeatureExtractor()(audio, sampling_rate=RATE, max_length=samples, return_tensors="pt").input_features
    # 2.-3. The library's encoder with its positional table cut to the clip's frames.
    x = F.gelu(F.conv1d(x, encoder.conv1.weight, encoder.conv1.bias, padding=1))
    x = F.gelu(F.conv1d(x, encoder.conv2.weight, encoder.conv2.bias, stride=2, padding=1)).transpose(1, 2)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    states = [x]
    width, heads = x.shape[-1], encoder.config.encoder_attention_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, heads, width // heads).transpose(1, 2)

    for index, layer in enumerate(encoder.layers):
        attention = layer.self_attn
        h = F.layer_norm(x, (width,), layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias)
        q = F.linear(h, attention.q_proj.weight, attention.q_proj.bias) * (width // heads) ** -0.5
        k = F.linear(h, attention.k_proj.weight)  # Whisper's key projection has no bias
        v = F.linear(h, attention.v_proj.weight, attention.v_proj.bias)
        mixed = (torch.softmax(split(q) @ split(k).transpose(-1, -2), dim=-1) @ split(v)).transpose(1, 2)
        x = x + F.linear(mixed.reshape(1, -1, width), attention.out_proj.weight, attention.out_proj.bias)

        fc1, fc2 = ((getattr(layer, name), *_lora_pair(lora, index, name, with_lora)) for name in ("fc1", "fc2"))
        h = F.layer_norm(x, (width,), layer.final_layer_norm.weight, layer.final_layer_norm.bias)
        x = x + _lora_linear(F.gelu(_lora_linear(h, *fc1)), *fc2)
        states.append(x)
    # The library's hidden_states end with the final layer norm's output.
    states[-1] = F.layer_norm(x, (width,), encoder.layer_norm.weight, encoder.layer_norm.bias)
    # 4.-5. Softmax-weighted sum over the conv output and every layer.
    weights = torch.softmax(head["layer_weights"], dim=-1)
    frames = sum(weight * state for weight, state in zip(weights, states, strict=True)).transpose(1, 2)
    # 6. The 1x1 convolutions; 7. the mean over the clip's frames (get_feat_extract_output_lengths); 8. the MLP.
    frames = F.relu(F.conv1d(frames, head["model_seq.0.weight"], head["model_seq.0.bias"]))
    frames = F.relu(F.conv1d(frames, head["model_seq.3.weight"], head["model_seq.3.bias"]))
    frames = F.conv1d(frames, head["model_seq.6.weight"], head["model_seq.6.bias"])
    pooled = frames[..., : (len(wave) // 160 - 1) // 2 + 1].mean(dim=-1)
    hidden = F.relu(F.linear(pooled, head["out_layer.0.weight"], head["out_layer.0.bias"]))
    return F.linear(hidden, head["out_layer.2.weight"], head["out_layer.2.bias"])[0].numpy()


def _lora_pair(lora: dict, layer: int, name: str, with_lora: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """loralib's (lora_A, lora_B) of linear `name` in encoder layer `layer`, or (None, None) without LoRA."""
    if not with_lora:
        return None, None
    return tuple(lora[f"backbone_model.encoder.layers.{layer}.{name}.lora_{part}"] for part in "AB")


def _lora_linear(h: torch.Tensor, linear: torch.nn.Linear, a: torch.Tensor | None, b: torch.Tensor | None
                 ) -> torch.Tensor:
    """loralib's Linear (not merged): x W^T + b + (x A^T B^T) * alpha / r."""
    out = F.linear(h, linear.weight, linear.bias)
    return out if a is None else out + (h @ a.T @ b.T) * LORA_SCALE


@pytest.fixture(scope="module", autouse=True)
def _offline():
    """Whisper tiny.en comes from the offline package without waiting for the hub to time out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "_hub_reachable", lambda: False)
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Whisper-tiny-shaped release files."""
    return write_package_files(tmp_path_factory.mktemp("package"), MODEL, **TINY)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, files: tuple[Path, Path]) -> Path:
    """The files imported onto Whisper tiny.en."""
    out = tmp_path_factory.mktemp("imported") / "run"
    import_peft_ser(MODEL, *files, out, backbone=STAND_IN)
    return out


@pytest.fixture(scope="module")
def clips(speech: np.ndarray) -> list[np.ndarray]:
    """Real speech of 3.7 s, an odd-length 1.3 s cut of it, and 10 s (the longest the package takes)."""
    return [speech, speech[3000 : 3000 + 20817], np.resize(speech, 10 * RATE)]


def test_imported_run_computes_the_packages_logits(imported, files, clips) -> None:
    encoder = load_backbone(STAND_IN).model
    with torch.no_grad():
        expected = np.stack([package_forward(encoder, *files, clip) for clip in clips])
        without_lora = package_forward(encoder, *files, clips[0], with_lora=False)
    assert np.abs(without_lora - expected[0]).max() > 1000 * TOLERANCE  # the LoRA weights (and alpha) matter
    for merge in (True, False):
        predictor = sertune.load(imported, device="cpu", merge=merge, precision="no")
        alone = np.stack([predictor.logits([clip])[0] for clip in clips])
        np.testing.assert_allclose(alone, expected, rtol=0, atol=TOLERANCE)
    # In one padded batch each clip still gets its clip-alone logits; in the package's batches the padding leaks in.
    np.testing.assert_allclose(predictor.logits(clips), alone, rtol=0, atol=1e-5)
    with torch.no_grad():
        in_batch = package_forward(encoder, *files, clips[1], padded_to=len(clips[2]))
    assert np.abs(in_batch - expected[1]).max() > 1e-3
    assert predictor.labels == ["neutral", "angry", "sad", "happy"]


def test_checkpoint_records_the_packages_recipe(imported, files) -> None:
    metadata = json.loads((imported / "sertune.json").read_text())
    assert metadata["backbone"]["name"] == STAND_IN and metadata["labels"] == ["neutral", "angry", "sad", "happy"]
    tuning, head = metadata["tuning"], metadata["head"]
    assert (tuning["method"], tuning["lora_rank"], tuning["lora_alpha"], tuning["lora_targets"]) == ("lora", 16, 1.0,
                                                                                                       "ffn")
    assert head["include_embedding"] and head["normalization"] == "none" and head["channels"] == CHANNELS
    assert metadata["audio"] == {"sample_rate": RATE, "max_seconds": 10.0, "eval_max_seconds": 10.0}
    provenance = json.loads((imported / "peft-ser.json").read_text())
    assert provenance["model"] == MODEL and provenance["trained_on"] == "whisper-tiny"
    assert provenance["files"]["lora"]["name"] == files[1].name and len(provenance["files"]["lora"]["sha256"]) == 64
    assert sorted(path.name for path in imported.iterdir()) == ["adapter.safetensors", "peft-ser.json", "sertune.json"]


@pytest.mark.slow
def test_cli_import_then_predict_and_export(tmp_path, files, cli, speech, imported) -> None:
    out = tmp_path / "runs" / "tiny"
    code, stdout, stderr = cli(["import", "peft-ser", "--model", MODEL, *map(str, files), "--out", str(out),
                                "--backbone", STAND_IN])
    assert code == 0, stderr
    assert f"imported {MODEL} onto {STAND_IN}" in stdout and "neutral, angry, sad, happy" in stdout
    assert "trained whisper-tiny-lora-16-conv on whisper-tiny" in stderr  # the stand-in is said to be one
    wav = tmp_path / "clip.wav"
    sf.write(wav, speech, RATE, subtype="FLOAT")
    code, stdout, stderr = cli(["predict", str(out), str(wav), "--json", "--precision", "no"])
    assert code == 0, stderr
    [result] = json.loads(stdout)
    expected = sertune.load(imported, device="cpu", precision="no").logits([speech])[0]
    np.testing.assert_allclose(result["logits"], expected, atol=1e-5)
    assert list(result["probabilities"]) == ["neutral", "angry", "sad", "happy"]
    code, stdout, stderr = cli(["export", str(out), "--onnx", str(tmp_path / "model.onnx"), "--audio", str(wav)])
    assert code == 0 and (tmp_path / "model.onnx").is_file(), stderr


def _edit(files: tuple[Path, Path], tmp_path: Path, which: int, change) -> list[Path]:
    """Copies of the two files with `change(state dict)` applied to file `which` (0 classifier, 1 LoRA)."""
    paths = []
    for index, path in enumerate(files):
        tensors = torch.load(path, weights_only=True)
        if index == which:
            change(tensors)
        paths.append(tmp_path / path.name)
        torch.save(tensors, paths[-1])
    return paths


def _lora_on_attention(tensors: dict) -> None:
    tensors["backbone_model.encoder.layers.0.self_attn.q_proj.lora_A"] = torch.zeros(RANK, TINY["width"])


@pytest.mark.parametrize(
    "which, change, message",
    [
        (0, lambda t: t.pop("out_layer.2.bias"), "classifier file of whisper-tiny-lora-16-conv: tensors 1 missing "
                                                 "[out_layer.2.bias]"),
        (1, _lora_on_attention, "LoRA file of whisper-tiny-lora-16-conv: tensors 1 unexpected "
                                "[backbone_model.encoder.layers.0.self_attn.q_proj.lora_A]"),
        (0, lambda t: t.update(layer_weights=torch.zeros(4)), "1 of the wrong shape [layer_weights (4) where (5) is "
                                                              "expected]"),
        (1, lambda t: t.update({"backbone_model.encoder.layers.1.fc2.lora_B": torch.tensor([float("nan")])}),
         "tensor backbone_model.encoder.layers.1.fc2.lora_B holds NaN"),
    ],
    ids=["missing", "extra", "shape", "nan"],
)
def test_files_that_do_not_fit_are_refused_naming_the_tensors(tmp_path, files, cli, which, change, message) -> None:
    paths = _edit(files, tmp_path, which, change)
    out = tmp_path / "out"
    code, stdout, stderr = cli(["import", "peft-ser", "--model", MODEL, *map(str, paths), "--out", str(out)])
    assert code == 2 and stdout == "" and message in stderr and len(stderr.splitlines()) == 1, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in paths)


def test_files_torch_cannot_read_safely_are_refused(tmp_path, files) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SertuneError, match=r"junk\.pt: not a file torch\.load can read"):
        import_peft_ser(MODEL, junk, files[1], tmp_path / "out")
    pickled = tmp_path / "pickled.pt"
    torch.save({**torch.load(files[0], weights_only=True), "args": argparse.Namespace(lr=1e-3)}, pickled)
    with pytest.raises(SertuneError, match=r"holds Python objects \(such as argparse.Namespace\) besides tensors"):
        import_peft_ser(MODEL, pickled, files[1], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_whisper_base_files_given_as_whisper_tiny_are_refused(tmp_path, cli) -> None:
    paths = write_package_files(tmp_path / "base", "whisper-base-lora-16-conv", **BASE)
    code, _, stderr = cli(["import", "peft-ser", "--model", MODEL, *map(str, paths), "--out", str(tmp_path / "out")])
    assert code == 2 and len(stderr.splitlines()) == 1
    assert "2 of the wrong shape [layer_weights (7) where (5) is expected, model_seq.0.weight (256, 512, 1) where " \
           "(256, 384, 1) is expected]" in stderr
    assert "they fit whisper-base-lora-16-conv (--model whisper-base-lora-16-conv)" in stderr
    assert not (tmp_path / "out").exists()


def test_swapped_files_and_a_used_out_directory_are_refused(tmp_path, files, cli) -> None:
    out = tmp_path / "out"
    code, _, stderr = cli(["import", "peft-ser", "--model", MODEL, str(files[1]), str(files[0]), "--out", str(out)])
    assert code == 2 and "give the classifier file (whisper-tiny-lora-16-conv.pt) first" in stderr
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, stderr = cli(["import", "peft-ser", "--model", MODEL, *map(str, files), "--out", str(out)])
    assert code == 2 and "already exists and is not empty" in stderr
    assert [path.name for path in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "backbone, message",
    [
        ("whisper-base", "--backbone whisper-base cannot take whisper-tiny-lora-16-conv, trained on whisper-tiny: "
                         "layers 6 where 4 is needed, width 512 where 384 is needed, heads 8 where 6 is needed"),
        ("wavlm-base-plus", "family wavlm where whisper is needed"),
    ],
)
def test_a_backbone_of_another_architecture_is_refused(tmp_path, files, cli, backbone, message) -> None:
    out = tmp_path / "out"
    argv = ["import", "peft-ser", "--model", MODEL, *map(str, files), "--out", str(out), "--backbone", backbone]
    code, _, stderr = cli(argv)
    assert code == 2 and message in stderr and not out.exists(), stderr


def test_a_failed_write_leaves_nothing_and_an_empty_out_is_filled(tmp_path, files, monkeypatch) -> None:
    from sertune import checkpoint

    def broken(classifier, directory, **kwargs):
        (Path(directory) / "adapter.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_classifier", broken)
    with pytest.raises(SertuneError, match=r"cannot write .*out: No space left on device"):
        import_peft_ser(MODEL, *files, tmp_path / "out", backbone=STAND_IN)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()  # an empty --out is filled
    import_peft_ser(MODEL, *files, tmp_path / "empty", backbone=STAND_IN)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty"]
    assert (tmp_path / "empty" / "sertune.json").is_file()


@pytest.mark.parametrize("name", list(RELEASED))
def test_every_released_model_maps_onto_sertunes_tensors(name: str) -> None:
    """The package's names and shapes of each model are exactly the trained tensors of its sertune classifier."""
    model = RELEASED[name]
    with torch.device("meta"):
        backbone = build_backbone(get_spec(model.backbone))
        tuning, head = TuningConfig(**RECIPE["tuning"]), HeadConfig(**RECIPE["head"])
        classifier = EmotionClassifier(backbone, ["neutral", "angry", "sad", "happy"], tuning, head)
    ours = {package_name(key): tuple(tensor.shape) for key, tensor in classifier.trained_state_dict().items()}
    head, lora = package_tensors(model)
    assert ours == head | lora
    assert len(lora) == 4 * backbone.num_layers and head["layer_weights"] == (backbone.num_layers + 1,)


def test_unknown_model_names_list_the_released_ones() -> None:
    with pytest.raises(SertuneError, match=r"the package released whisper-tiny-lora-16-conv, .*, mms-lora-16-conv"):
        import_peft_ser("whisper-tiny", "a.pt", "b.pt", "out")
