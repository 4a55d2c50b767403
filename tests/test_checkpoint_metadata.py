"""sertune.json is checked against one schema; NaN adapters, wrong encoders and file modes at load and save.

`MALFORMED` and the helpers that break a copy of a run are shared with test_serve.py and test_export.py,
which feed the same files to `sertune serve` and `sertune export`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

import sertune
from sertune import checkpoint, metadata
from sertune.backbones import build_backbone
from sertune.checkpoint import METADATA, WEIGHTS, load_classifier
from sertune.errors import SertuneError
from sertune.head_config import HeadConfig
from sertune.tuning import TuningConfig
from test_inference import RATE, make_run

from conftest import TINY_CONFIGS

Edit = Callable[[dict[str, Any]], Any]


def set_key(dotted: str, value: Any) -> Edit:
    """An edit that sets one (dotted) key of sertune.json."""

    def edit(data: dict[str, Any]) -> dict[str, Any]:
        *parents, last = dotted.split(".")
        section = data
        for key in parents:
            section = section[key]
        section[last] = value
        return data

    return edit


def drop_key(key: str) -> Edit:
    """An edit that removes one top-level key of sertune.json."""
    return lambda data: {name: value for name, value in data.items() if name != key}


_KNOWN = (
    "known: method, lora_rank, lora_alpha, lora_dropout, lora_targets, adapter_dim, adapter_scale, adapter_dropout, "
    "prompt_length, layers, train_feature_encoder"
)
_METHODS = "'lorra'; known: frozen, full, lora, adapter, parallel-adapter, prompt, combined"
_TWO_LAYERS = "the encoder has 2 layers (backbone.num_layers)"
_LABELS = "a list of distinct, non-empty strings: at least two, or none for a dimensional run"
_CASES: list[tuple[str, Edit, str]] = [
    # The inputs of the original report, each of which gave a traceback somewhere.
    ("empty-object", lambda data: {}, "backbone, tuning, head, labels, parameters are missing"),
    ("list", lambda data: [], "the file must hold a JSON object, got []"),
    ("no-labels", drop_key("labels"), "labels is missing"),
    ("no-backbone", drop_key("backbone"), "backbone is missing"),
    ("no-tuning", drop_key("tuning"), "tuning is missing"),
    ("unknown-tuning-key", set_key("tuning.lora_size", 8), f"tuning.lora_size is not a known setting ({_KNOWN})"),
    (
        "eval-seconds-text",
        set_key("audio.eval_max_seconds", "abc"),
        'audio.eval_max_seconds must be a positive number, got "abc"',
    ),
    ("channels-text", set_key("head.channels", "many"), 'head.channels must be a positive integer, got "many"'),
    ("rate-0", set_key("audio.sample_rate", 0), "audio.sample_rate must be a positive integer, got 0"),
    # TuningConfig's own checks, named by the key that failed them.
    ("unknown-method", set_key("tuning.method", "lorra"), f"tuning.method: unknown method part 'lorra' in {_METHODS}"),
    ("rank-0", set_key("tuning.lora_rank", 0), "tuning.lora_rank: lora_rank must be at least 1, got 0"),
    ("layer-7", set_key("tuning.layers", [7]), f"tuning.layers: layer 7 does not exist: {_TWO_LAYERS}"),
    # Types and ranges elsewhere.
    ("layers-text", set_key("tuning.layers", "all"), 'tuning.layers must be a list of integers or null, got "all"'),
    ("dropout", set_key("head.dropout", 1.5), "head.dropout must be a number from 0 to 1, got 1.5"),
    ("bool-as-int", set_key("head.include_embedding", 1), "head.include_embedding must be true or false, got 1"),
    ("one-label", set_key("labels", ["happy"]), f'labels must be {_LABELS}, got ["happy"]'),
    ("no-output", set_key("labels", []), "labels is empty and there are no dimensions: the run predicts nothing"),
    ("dimension-name", set_key("dimensions", [{"name": "pleasure", "low": 1, "high": 5}]),
     'dimensions[0].name must be one of arousal, valence, dominance, got "pleasure"'),
    ("dimension-scale", set_key("dimensions", [{"name": "arousal", "low": 5, "high": 1}]),
     "dimensions[0]: low must be below high, got 5, 1"),
    ("family", set_key("backbone.family", ""), 'backbone.family must be a non-empty string, got ""'),
    ("num-layers", set_key("backbone.num_layers", -2), "backbone.num_layers must be a positive integer, got -2"),
    ("source-path", set_key("backbone.source", {"kind": "local"}), "backbone.source.path is missing"),
    ("encoder-count", set_key("parameters.encoder", 0), "parameters.encoder must be a positive integer, got 0"),
    ("audio-null", set_key("audio", None), "audio must be an object, got null"),
]
# (edit of a good sertune.json, the error after "<file>: ")
MALFORMED = [pytest.param(edit, message, id=name) for name, edit, message in _CASES]


@pytest.fixture(scope="session")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained LoRA run (checkpoint directory) that the tests copy and break."""
    directory = tmp_path_factory.mktemp("good-run") / "checkpoint"
    make_run(directory)
    return directory


def edited_run(good_run: Path, directory: Path, edit: Edit) -> Path:
    """A copy of `good_run` at `directory` whose sertune.json went through `edit`."""
    shutil.copytree(good_run, directory)
    data = json.loads((directory / METADATA).read_text())
    (directory / METADATA).write_text(json.dumps(edit(data)))
    return directory


def poisoned_run(good_run: Path, directory: Path, value: float) -> tuple[Path, str]:
    """A copy of `good_run` with one adapter tensor element set to `value` (NaN or inf); returns the
    run and the name of that tensor."""
    shutil.copytree(good_run, directory)
    tensors = load_file(directory / WEIGHTS)
    name = sorted(name for name in tensors if "lora_B" in name)[0]
    tensors[name].view(-1)[3] = value
    save_file(tensors, directory / WEIGHTS)
    return directory, name


def clip_file(directory: Path) -> Path:
    path = directory / "clip.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), RATE)
    return path


# -- malformed sertune.json ---------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_malformed_metadata_is_one_error_naming_file_and_field_in_sertune_load(tmp_path, good_run, edit, message):
    run = edited_run(good_run, tmp_path / "run", edit)
    with pytest.raises(SertuneError) as error:
        sertune.load(run, device="cpu")
    assert str(error.value) == f"{run / METADATA}: {message}"


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_malformed_metadata_is_one_line_and_status_2_in_predict_and_params(tmp_path, cli, good_run, edit, message):
    run = edited_run(good_run, tmp_path / "run", edit)
    error = f"{run / METADATA}: {message}\n"
    assert cli(["predict", str(run), str(clip_file(tmp_path))]) == (2, "", f"sertune predict: error: {error}")
    assert cli(["params", str(run)]) == (2, "", f"sertune params: error: {error}")


def test_metadata_without_audio_loads_with_the_studys_defaults(tmp_path, good_run) -> None:
    run = edited_run(good_run, tmp_path / "run", drop_key("audio"))
    info = sertune.load(run, device="cpu").info()
    assert (info.sample_rate, info.window_seconds, info.eval_max_seconds) == (16000, 6.0, 30.0)


def test_the_heads_statistics_are_saved_and_runs_from_before_them_load_as_the_studys_head(tmp_path, good_run):
    classifier = sertune.load(good_run, device="cpu", merge=False).classifier
    saved = load_file(good_run / WEIGHTS)
    assert torch.equal(classifier.head.input_std, saved["head.input_std"])
    assert not torch.all(saved["head.input_std"] == 1)  # make_run moved them off their initial values
    # A run saved before the head could normalise: no statistics, no `normalization` key.
    old = tmp_path / "old"
    make_run(old)
    (old / METADATA).write_text(json.dumps({**json.loads((old / METADATA).read_text()),
                                            "head": {"channels": 256, "dropout": 0.1, "include_embedding": False}}))
    tensors = load_file(old / WEIGHTS)
    save_file({name: value for name, value in tensors.items() if not name.startswith("head.input_")}, old / WEIGHTS)
    assert sertune.load(old, device="cpu").classifier.head.normalization == "none"
    # A normalising head without its statistics is refused with the names of what is missing.
    save_file({name: value for name, value in saved.items() if name != "head.input_mean"}, tmp_path / "w")
    broken = edited_run(good_run, tmp_path / "broken", lambda data: data)
    shutil.copy(tmp_path / "w", broken / WEIGHTS)
    with pytest.raises(SertuneError, match=r"missing 1 tensors \[head\.input_mean\]"):
        sertune.load(broken, device="cpu")


def test_what_save_classifier_writes_passes_the_schema(good_run) -> None:
    data = json.loads((good_run / METADATA).read_text())
    assert metadata.validate_metadata(data, good_run / METADATA) is data


def test_schema_sections_follow_the_config_dataclasses() -> None:
    for cls, section in ((TuningConfig, metadata.TUNING), (HeadConfig, metadata.HEAD)):
        arguments = [field.name for field in dataclasses.fields(cls) if field.init]
        assert [field.name for field in section.fields] == arguments
        # A range kept for a field that was renamed would silently check nothing.
        assert set(metadata.CONFIG_RULES[cls]) <= set(arguments)


# -- NaN and inf in the adapter ----------------------------------------------------------------------
@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "1 NaN"), (float("inf"), "1 inf")])
def test_nan_or_inf_in_the_adapter_is_refused_at_load(tmp_path, cli, good_run, value, shown) -> None:
    run, name = poisoned_run(good_run, tmp_path / "run", value)
    size = load_file(run / WEIGHTS)[name].numel()
    expected = (
        f"{run / WEIGHTS}: tensor {name} holds {shown} of {size} values; the training diverged or the file "
        "is damaged: retrain or restore it"
    )
    with pytest.raises(SertuneError) as error:
        sertune.load(run, device="cpu")
    assert str(error.value) == expected
    assert cli(["predict", str(run), str(clip_file(tmp_path))]) == (2, "", f"sertune predict: error: {expected}\n")


# -- the wrong encoder -----------------------------------------------------------------------------
def test_same_name_other_shape_says_which_fields_and_sources_differ(tmp_path, good_run, monkeypatch) -> None:
    # A run on a hub encoder whose recorded name alone was edited: loading by that name brings
    # another model (the hub download is faked), of another shape.
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        data["backbone"]["name"] = "whisper-base"
        data["backbone"]["source"] = {"kind": "hub", "id": "openai/whisper-tiny", "revision": "main"}
        return data

    run = edited_run(good_run, tmp_path / "run", rename)
    config = TINY_CONFIGS["whisper"]()
    config.d_model, config.encoder_layers = 48, 3
    bigger = build_backbone(config, name="whisper-base", seed=0)
    bigger.source = {"kind": "hub", "id": "openai/whisper-base", "revision": "abc123"}
    monkeypatch.setattr(checkpoint, "load_backbone", lambda name, **_: bigger)
    with pytest.raises(SertuneError) as error:
        load_classifier(run)
    assert str(error.value) == (
        f"{run / METADATA}: the encoder loaded as whisper-base does not have the shape sertune.json records for "
        "whisper-base: hidden_size 32 expected but 48 found, num_layers 2 expected but 3 found; sertune.json "
        "records the source openai/whisper-tiny, the encoder came from openai/whisper-base "
        "(sertune.json was edited, or the name now loads another model)"
    )


def test_edited_shape_with_the_same_source_names_the_field(tmp_path, good_run) -> None:
    run = edited_run(good_run, tmp_path / "run", set_key("backbone.hidden_size", 64))
    with pytest.raises(SertuneError) as error:
        load_classifier(run)
    assert str(error.value) == (
        f"{run / METADATA}: the encoder loaded as random-whisper does not have the shape sertune.json records for "
        "random-whisper: hidden_size 64 expected but 32 found (sertune.json was edited, or the name now loads "
        "another model)"
    )


def test_another_encoder_names_both_and_every_differing_field(good_run) -> None:
    other = build_backbone(TINY_CONFIGS["wavlm-ln"](), seed=0)
    with pytest.raises(SertuneError) as error:
        load_classifier(good_run, backbone=other)
    assert str(error.value) == (
        f"{good_run} was trained on random-whisper, not on random-wavlm: family whisper expected but wavlm found"
    )


# -- file modes ------------------------------------------------------------------------------------------
_SAVE = textwrap.dedent(
    """
    import sys
    from transformers import WhisperConfig
    from sertune.backbones import build_backbone
    from sertune.checkpoint import save_classifier
    from sertune.model import EmotionClassifier
    from sertune.tuning import TuningConfig

    config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)
    classifier = EmotionClassifier(build_backbone(config, seed=0), ["a", "b"], TuningConfig(method="lora"))
    save_classifier(classifier, sys.argv[1])
    """
)


def test_checkpoint_files_get_the_mode_the_umask_gives(tmp_path) -> None:
    # A child process: the umask is read once, when sertune.fileio is imported.
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _SAVE, str(out)], umask=0o027, env=env, check=True, timeout=300)
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in out.iterdir()}
    assert modes == {WEIGHTS: "0o640", METADATA: "0o640"}
