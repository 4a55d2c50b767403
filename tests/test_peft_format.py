"""peft-native LoRA: a run exported as a Hugging Face peft adapter directory, loaded by peft and by sertune."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import AutoPeftModel, LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel

import sertune
from sertune import peft_format
from sertune.backbones import load_backbone
from sertune.checkpoint import METADATA, WEIGHTS, load_classifier, save_classifier
from sertune.errors import SertuneError
from sertune.model import EmotionClassifier
from sertune.peft_format import HEAD_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, README, export_peft
from sertune.runs import resolve_run
from sertune.tuning.lora import lora_module_names
from test_inference import AUDIO, RATE, make_run

from conftest import save_tiny_encoder

PEFT_FILES = [README, PEFT_CONFIG, PEFT_WEIGHTS, METADATA, HEAD_WEIGHTS]
# Where sertune's encoder module sits in the model AutoModel loads (what the export documents).
BASE_PREFIX = {"whisper": "encoder.", "wavlm": ""}


@dataclass
class Exported:
    kind: str
    base_dir: Path  # the encoder as a transformers directory: what peft's base model is loaded from
    run: Path
    out: Path
    classifier: EmotionClassifier  # the run's classifier, unmerged


@pytest.fixture(scope="module", params=["whisper", "wavlm"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A LoRA run on a tiny encoder saved as a local directory (so its base loads by path), exported."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"peft-{kind}")
    base_dir = save_tiny_encoder(kind, root / "base")
    make_run(root / "random-run", kind=kind)
    # make_run's trained tensors on the encoder loaded from base_dir: a run whose sertune.json records that path.
    classifier = load_classifier(root / "random-run", backbone=load_backbone(base_dir))
    save_classifier(classifier, root / "run", audio=AUDIO)
    return Exported(kind, base_dir, root / "run", export_peft(root / "run", root / "peft"), classifier)


def noise(seconds: float) -> torch.Tensor:
    """A clip [1, samples] of quiet noise, the same on every call."""
    return 0.1 * torch.randn(1, int(seconds * RATE), generator=torch.Generator().manual_seed(3))


def peft_last_hidden_state(model: torch.nn.Module, exported: Exported, wave: torch.Tensor) -> torch.Tensor:
    """The last hidden state of an `AutoModel` (peft-wrapped or bare) for one clip, fed as sertune feeds its encoder."""
    # peft injects LoRA into the base model's own modules, so its forward runs the adapter.
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    base.eval()
    with torch.inference_mode():
        if exported.kind == "whisper":
            features = exported.classifier.backbone.log_mel(wave, torch.tensor([wave.shape[1]]))
            return base.encoder(features).last_hidden_state
        return base(wave, attention_mask=torch.ones_like(wave, dtype=torch.long)).last_hidden_state


def test_export_writes_the_peft_layout_and_no_native_weights(exported: Exported) -> None:
    assert sorted(path.name for path in exported.out.iterdir()) == sorted(PEFT_FILES)
    assert not (exported.out / WEIGHTS).exists()
    assert (exported.out / METADATA).read_bytes() == (exported.run / METADATA).read_bytes()
    head = load_file(exported.out / HEAD_WEIGHTS)
    assert head and all(name.startswith("head.") for name in head)
    assert {"head.layer_weights", "head.input_mean", "head.input_std"} <= set(head)
    readme = (exported.out / README).read_text(encoding="utf-8")
    base_class = "WhisperModel" if exported.kind == "whisper" else "WavLMModel"
    assert f"{base_class}.from_pretrained" in readme and "PeftModel.from_pretrained" in readme
    assert "sertune.load(" in readme
    assert resolve_run(exported.out).checkpoint == exported.out


def test_peft_loads_it_on_automodel_and_computes_sertunes_hidden_states(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # AutoPeftModel would otherwise ask the hub for a tokenizer
    # transformers' Whisper encoder takes 30 s of features only; sertune runs it at any length.
    wave = noise(30 if exported.kind == "whisper" else 0.5)
    with torch.inference_mode():
        expected = exported.classifier.backbone.encode(wave).hidden_states[-1]
    bare = peft_last_hidden_state(AutoModel.from_pretrained(exported.base_dir), exported, wave)
    assert (bare - expected).abs().max() > 1e-2  # the adapter does change the encoder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(exported.base_dir), exported.out)
        auto = AutoPeftModel.from_pretrained(str(exported.out))  # the base from base_model_name_or_path
    assert not [w for w in caught if "keys" in str(w.message)], [str(w.message) for w in caught]
    assert type(auto.get_base_model()) is type(model.get_base_model())
    for loaded in (model, auto):
        torch.testing.assert_close(peft_last_hidden_state(loaded, exported, wave), expected, atol=1e-5, rtol=0)


def test_files_match_what_peft_writes_for_the_same_lora(exported: Exported, tmp_path: Path) -> None:
    tuning = exported.classifier.tuning_config
    prefix = BASE_PREFIX[exported.kind]
    targets = [prefix + name for name in lora_module_names(exported.classifier.backbone, tuning)]
    config = LoraConfig(
        r=tuning.lora_rank, lora_alpha=tuning.lora_alpha, lora_dropout=tuning.lora_dropout,
        target_modules=targets, bias="none",
    )  # fmt: skip
    get_peft_model(AutoModel.from_pretrained(exported.base_dir), config).save_pretrained(tmp_path)
    ours = json.loads((exported.out / PEFT_CONFIG).read_text())
    theirs = json.loads((tmp_path / PEFT_CONFIG).read_text())
    assert sorted(ours.pop("target_modules")) == sorted(theirs.pop("target_modules"))  # peft writes a set
    assert Path(ours.pop("base_model_name_or_path")).resolve() == Path(theirs.pop("base_model_name_or_path")).resolve()
    assert ours == theirs
    with safe_open(exported.out / PEFT_WEIGHTS, "pt") as mine, safe_open(tmp_path / PEFT_WEIGHTS, "pt") as peft:
        assert mine.metadata() == peft.metadata()
        assert sorted(mine.keys()) == sorted(peft.keys())
        for name in peft.keys():  # noqa: SIM118 (a safetensors handle is no dict)
            assert mine.get_slice(name).get_shape() == peft.get_slice(name).get_shape()
    assert all(name.startswith("base_model.model.encoder.layers.") for name in load_file(exported.out / PEFT_WEIGHTS))


@pytest.mark.parametrize("merge", [True, False])
def test_sertune_loads_the_export_as_it_loads_the_run(exported: Exported, merge: bool) -> None:
    clips = [noise(0.3)[0].numpy(), noise(0.7)[0, RATE // 4 :].numpy()]  # two lengths: one padded batch
    original = sertune.load(exported.run, device="cpu", merge=merge, precision="no")
    loaded = sertune.load(exported.out, device="cpu", merge=merge, precision="no")
    assert loaded.classifier.merged == merge
    np.testing.assert_allclose(loaded.logits(clips), original.logits(clips), atol=1e-5, rtol=0)
    tensors = load_classifier(exported.out).trained_state_dict()
    reference = exported.classifier.trained_state_dict()
    assert tensors.keys() == reference.keys()
    assert all(torch.equal(tensors[name], reference[name]) for name in reference)


def test_an_export_exports_again_to_the_same_files_and_replaces_an_earlier_one(
    exported: Exported, tmp_path: Path
) -> None:
    again = export_peft(exported.out, tmp_path / "again")
    for name in (PEFT_CONFIG, PEFT_WEIGHTS, HEAD_WEIGHTS, METADATA):
        assert (again / name).read_bytes() == (exported.out / name).read_bytes(), name
    (again / "stale.txt").write_text("from the earlier export")
    export_peft(exported.run, again)
    assert sorted(path.name for path in again.iterdir()) == sorted(PEFT_FILES)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["again"]  # no temporaries left


NO_PEFT_FORM = ["adapter", "parallel-adapter", "prompt", "lora+adapter", "combined", "full", "frozen"]


@pytest.mark.parametrize("method", NO_PEFT_FORM)
def test_methods_without_a_peft_lora_form_are_refused(method: str, tmp_path: Path) -> None:
    make_run(tmp_path / "run", method=method)
    with pytest.raises(SertuneError) as error:
        export_peft(tmp_path / "run", tmp_path / "peft")
    message = str(error.value)
    assert "\n" not in message and repr(method) in message and "no peft LoRA form" in message
    assert "stays usable" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_a_failed_export_leaves_no_directory(exported: Exported, tmp_path: Path, monkeypatch) -> None:
    def fail(*args: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(peft_format, "readme", fail)
    with pytest.raises(OSError, match="disk full"):
        export_peft(exported.run, tmp_path / "peft")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_is_no_export_is_not_overwritten(exported: Exported, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SertuneError, match="is not an earlier peft export"):
        export_peft(exported.run, tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def _truncate(directory: Path) -> None:
    path = directory / PEFT_WEIGHTS
    path.write_bytes(path.read_bytes()[:100])


def _poison(directory: Path) -> None:
    tensors = load_file(directory / PEFT_WEIGHTS)
    name = sorted(tensors)[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, directory / PEFT_WEIGHTS, metadata={"format": "pt"})


def _drop_head(directory: Path) -> None:
    (directory / HEAD_WEIGHTS).unlink()


def _other_rank(directory: Path) -> None:
    config = json.loads((directory / PEFT_CONFIG).read_text())
    (directory / PEFT_CONFIG).write_text(json.dumps({**config, "r": 8}))


def _foreign_key(directory: Path) -> None:
    tensors = load_file(directory / PEFT_WEIGHTS)
    tensors["base_model.model.projector.weight"] = torch.zeros(1)
    save_file(tensors, directory / PEFT_WEIGHTS, metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, rf"{PEFT_WEIGHTS} is corrupt or truncated"),
        (_poison, rf"{PEFT_WEIGHTS}: tensor base_model\.model\..+ holds 1 NaN"),
        (_drop_head, rf"{HEAD_WEIGHTS} is missing"),
        (_other_rank, rf"{PEFT_CONFIG}: r is 8, but {METADATA} beside it implies 16"),
        (_foreign_key, rf"{PEFT_WEIGHTS}: tensor base_model\.model\.projector\.weight is not a LoRA weight"),
    ],
    ids=["truncated", "nan", "no-head", "rank", "foreign-key"],
)
def test_a_damaged_export_is_a_one_line_error_naming_the_file(
    exported: Exported, tmp_path: Path, damage, expected: str
) -> None:
    directory = tmp_path / "peft"
    shutil.copytree(exported.out, directory)
    damage(directory)
    with pytest.raises(SertuneError, match=expected) as error:
        sertune.load(directory, device="cpu")
    assert "\n" not in str(error.value) and str(directory) in str(error.value)


def test_params_counts_an_export_and_its_two_weight_files(exported: Exported, cli) -> None:
    code, out, _ = cli(["params", str(exported.out)])
    size = sum((exported.out / name).stat().st_size for name in (PEFT_WEIGHTS, HEAD_WEIGHTS)) / 1e6
    assert code == 0 and f"checkpoint size     {size:>14.2f} MB" in out


def test_the_cli_exports_a_run_with_peft(exported: Exported, tmp_path: Path, cli) -> None:
    code, out, err = cli(["export", str(exported.run), "--peft", str(tmp_path / "adapter")])
    assert code == 0, err
    assert f"wrote the peft adapter of {exported.run} to {tmp_path / 'adapter'}" in out
    assert sorted(path.name for path in (tmp_path / "adapter").iterdir()) == sorted(PEFT_FILES)
    assert (tmp_path / "adapter" / PEFT_WEIGHTS).read_bytes() == (exported.out / PEFT_WEIGHTS).read_bytes()
