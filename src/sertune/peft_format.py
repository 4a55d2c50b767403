"""A LoRA run as a standard Hugging Face peft adapter directory, and back (docs/export.md, "peft-native LoRA").

The adapter targets the model transformers' `AutoModel` loads from the encoder's id or path (the
base class is recorded in `auto_mapping`, as `PeftModel.save_pretrained` does): `WhisperModel` for
Whisper, whose encoder sertune trains, and the wav2vec2/HuBERT/WavLM model itself for the others.
Key names are peft's (`base_model.model.<module>.lora_A.weight`); the emotion head and `sertune.json`
lie beside them, so the directory is a sertune checkpoint as well.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import LoraConfig
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from sertune import __version__
from sertune.checkpoint import WEIGHTS, read_trained_tensors, read_weights
from sertune.errors import SertuneError
from sertune.fileio import read_json
from sertune.metadata import METADATA, base_model_id, read_metadata
from sertune.runs import resolve_run
from sertune.tuning import TuningConfig

PEFT_CONFIG = CONFIG_NAME  # adapter_config.json
PEFT_WEIGHTS = SAFETENSORS_WEIGHTS_NAME  # adapter_model.safetensors
HEAD_WEIGHTS = "sertune_head.safetensors"
README = "README.md"
# Where sertune's `backbone.model` sits inside the model `AutoModel` loads: Whisper's encoder is a
# part of WhisperModel; the self-supervised encoders are the whole model.
_BASE_PREFIX = {"whisper": "encoder."}
_SERTUNE_LORA = re.compile(r"backbone\.model\.(?P<module>.+)\.(?P<matrix>lora_A|lora_B)\.default\.weight")
_PEFT_LORA = re.compile(r"base_model\.model\.(?P<module>.+)\.(?P<matrix>lora_A|lora_B)\.weight")
_HEAD = "head."
# What adapter_config.json must say for sertune's LoRA to compute what peft's does; a key left out
# means peft's default (given here), except for those without one.
_REQUIRED = object()
_PEFT_DEFAULTS: dict[str, Any] = {
    "peft_type": _REQUIRED, "r": _REQUIRED, "lora_alpha": _REQUIRED, "bias": "none",
    "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
}  # fmt: skip


def export_peft(path: str | os.PathLike, out_dir: str | os.PathLike, *, fold: str | None = None) -> Path:
    """Write the LoRA run, fold or checkpoint at `path` to `out_dir` as a peft adapter directory; returns `out_dir`.

    The directory holds `adapter_config.json` and `adapter_model.safetensors` as peft writes them,
    `sertune_head.safetensors` and `sertune.json` (so `sertune.load(out_dir)` works) and a README.md.
    It appears whole or not at all; a previous export at `out_dir` is replaced. The encoder is not loaded.
    """
    checkpoint = resolve_run(path, fold).checkpoint
    metadata = read_metadata(checkpoint)
    tuning = TuningConfig(**metadata["tuning"])
    if tuning.parts != ("lora",):
        raise SertuneError(
            f"{checkpoint} was trained with method {tuning.method!r}, which has no peft LoRA form (only plain "
            "`lora` has); its sertune checkpoint stays usable as it is (sertune.load, predict, serve, ONNX export)"
        )
    family = metadata["backbone"]["family"]
    tensors, origin = read_trained_tensors(checkpoint, metadata)
    lora = {name: tensor for name, tensor in tensors.items() if not name.startswith(_HEAD)}
    head = {name: tensor for name, tensor in tensors.items() if name.startswith(_HEAD)}
    peft_tensors = to_peft_names(lora, family, origin)
    config = _lora_config(metadata, tuning, peft_tensors)
    out = Path(out_dir)
    _check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so that the final rename stays on one file system; mkdir (not mkdtemp) keeps the umask's mode.
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        # Nothing reads the temporary directory, so plain writes suffice: the rename below is the atomic step.
        config.save_pretrained(str(tmp), auto_mapping_dict=_auto_mapping(family))
        # `save` returns bytes: written with open(), the files get the umask's mode (save_file makes them 0600).
        # One metadata key only: safetensors writes several in no fixed order, and an export should be reproducible.
        (tmp / PEFT_WEIGHTS).write_bytes(save(peft_tensors, metadata={"format": "pt"}))
        (tmp / HEAD_WEIGHTS).write_bytes(save(head, metadata={"format": "pt"}))
        shutil.copyfile(checkpoint / METADATA, tmp / METADATA)
        (tmp / README).write_text(readme(metadata, config, out), encoding="utf-8")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_peft_directory(directory: Path) -> bool:
    """Whether a checkpoint directory holds its trained tensors in the peft layout (no `adapter.safetensors`)."""
    return (directory / PEFT_CONFIG).is_file() and not (directory / WEIGHTS).is_file()


def read_peft_tensors(directory: Path, metadata: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The trained tensors of a peft-layout checkpoint under sertune's names (LoRA and head files together),
    and how errors name their files.

    Both files get `read_weights`' checks; adapter_config.json must agree with the LoRA settings of `sertune.json`.
    """
    check_adapter_config(directory / PEFT_CONFIG, TuningConfig(**metadata["tuning"]))
    lora_path, head_path = directory / PEFT_WEIGHTS, directory / HEAD_WEIGHTS
    lora = from_peft_names(read_weights(lora_path), metadata["backbone"]["family"], str(lora_path))
    head = read_weights(head_path)
    stray = sorted(name for name in head if not name.startswith(_HEAD))
    if stray:
        raise SertuneError(f"{head_path}: tensor {stray[0]} is not a head tensor ({_HEAD}*); re-export the run")
    return {**lora, **head}, f"{lora_path} with {HEAD_WEIGHTS}"


def to_peft_names(tensors: dict[str, torch.Tensor], family: str, origin: str) -> dict[str, torch.Tensor]:
    """sertune's LoRA tensor names (`backbone.model.<module>.lora_A.default.weight`) as peft saves them."""
    prefix = _BASE_PREFIX.get(family, "")
    renamed = {}
    for name, tensor in tensors.items():
        match = _SERTUNE_LORA.fullmatch(name)
        if match is None:
            raise SertuneError(f"{origin}: tensor {name} is neither a LoRA weight nor part of the head; restore it")
        renamed[f"base_model.model.{prefix}{match['module']}.{match['matrix']}.weight"] = tensor
    return renamed


def from_peft_names(tensors: dict[str, torch.Tensor], family: str, origin: str) -> dict[str, torch.Tensor]:
    """peft's LoRA tensor names mapped back to sertune's (the inverse of `to_peft_names`)."""
    prefix = _BASE_PREFIX.get(family, "")
    renamed = {}
    for name, tensor in tensors.items():
        match = _PEFT_LORA.fullmatch(name)
        if match is None or not match["module"].startswith(prefix):
            raise SertuneError(
                f"{origin}: tensor {name} is not a LoRA weight of the {family} encoder "
                f"(base_model.model.{prefix}<module>.lora_A/lora_B.weight); re-export the run"
            )
        renamed[f"backbone.model.{match['module'][len(prefix):]}.{match['matrix']}.default.weight"] = tensor
    return renamed


def check_adapter_config(path: Path, tuning: TuningConfig) -> None:
    """Refuse an adapter_config.json whose LoRA would compute something other than the run's `sertune.json` says."""
    config = read_json(path, "re-export the run")
    if not isinstance(config, dict):
        raise SertuneError(f"{path} must hold a JSON object; re-export the run")
    expected = {
        **_PEFT_DEFAULTS, "peft_type": "LORA", "r": tuning.lora_rank, "lora_alpha": tuning.lora_alpha,
    }  # fmt: skip
    for key, value in expected.items():
        found = config.get(key, _PEFT_DEFAULTS[key])
        if found is _REQUIRED:
            raise SertuneError(f"{path}: {key} is missing; re-export the run")
        if found != value:
            raise SertuneError(
                f"{path}: {key} is {found!r}, but {METADATA} beside it implies {value!r}; the two files do not "
                "belong together: re-export the run"
            )


def _lora_config(metadata: dict[str, Any], tuning: TuningConfig, peft_tensors: dict[str, torch.Tensor]) -> LoraConfig:
    backbone = metadata["backbone"]
    source = backbone["source"]
    targets = sorted({_PEFT_LORA.fullmatch(name)["module"] for name in peft_tensors})
    alpha = tuning.lora_alpha
    config = LoraConfig(
        r=tuning.lora_rank,
        # peft types lora_alpha as an int; sertune stores a float.
        lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,
        lora_dropout=tuning.lora_dropout,
        target_modules=targets,
        bias="none",
        base_model_name_or_path=base_model_id(source, backbone["name"]),
        # Only a hub id has revisions; a local or converted copy is what its path holds.
        revision=source.get("revision") if source["kind"] == "hub" else None,
        # As PeftModel.save_pretrained writes it.
        inference_mode=True,
    )
    # peft keeps the names as a set and writes it in hash order, which changes from process to process;
    # a sorted list (peft reads either) makes the export reproducible.
    config.target_modules = targets
    return config


def _base_class(family: str) -> type:
    """The class `AutoModel` builds for a family (WhisperModel, WavLMModel, ...): what the adapter targets."""
    return getattr(transformers, MODEL_MAPPING_NAMES[family])


def _auto_mapping(family: str) -> dict[str, str]:
    # What PeftModel.save_pretrained records for a model without a task type; AutoPeftModel builds the base from it.
    base = _base_class(family)
    return {"base_model_class": base.__name__, "parent_library": base.__module__}


def _check_destination(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SertuneError(f"{out} exists and is not a directory; choose another output directory")
    if out.is_dir() and any(out.iterdir()) and not ((out / METADATA).is_file() and is_peft_directory(out)):
        raise SertuneError(
            f"{out} exists and is not an earlier peft export of sertune; choose a new directory or empty this one"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`, replacing an earlier export (or empty directory) there."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def readme(metadata: dict[str, Any], config: LoraConfig, out: Path) -> str:
    """The README.md of an export: what the files are and how to load them with peft and with sertune."""
    backbone = metadata["backbone"]
    family, source = backbone["family"], backbone["source"]
    base_class = _base_class(family).__name__
    base = config.base_model_name_or_path
    revision = f", revision={json.dumps(config.revision)}" if config.revision else ""
    outputs = [*metadata["labels"], *(d["name"] for d in metadata.get("dimensions", []))]
    if family == "whisper":
        imports = f"from transformers import {base_class}, WhisperFeatureExtractor"
        features = (
            'inputs = WhisperFeatureExtractor.from_pretrained(BASE)(audio, sampling_rate=16000, return_tensors="pt")\n'
            "# The adapter sits on the encoder (encoder.layers.*); the decoder is left as it is.\n"
            "states = model.get_base_model().encoder(inputs.input_features, output_hidden_states=True).hidden_states"
        )
    else:
        imports = f"from transformers import {base_class}, AutoFeatureExtractor"
        features = (
            'inputs = AutoFeatureExtractor.from_pretrained(BASE)(audio, sampling_rate=16000, return_tensors="pt")\n'
            "states = model(**inputs, output_hidden_states=True).hidden_states"
        )
    notes = {
        "random": f"\n`{base}` is a randomly initialised encoder (sertune's tests): it has no weights to load.\n",
        "offline-package": f"\nThe run was trained on sertune's offline copy of `{base}` ({source.get('path')}).\n",
        "ct2": (
            f"\n`{base}` is a CTranslate2 (faster-whisper) directory, which transformers cannot load; "
            "sertune converts it to a transformers checkpoint when it loads it.\n"
        ),
    }
    directory = json.dumps(str(out))
    return f"""# LoRA adapter for `{base}` (sertune, emotion recognition)

A LoRA adapter (rank {config.r}, alpha {config.lora_alpha}) in Hugging Face peft's format for the
{family} encoder `{base}`, fine-tuned by sertune {__version__} for speech emotion recognition.
Outputs: {", ".join(outputs)}.
{notes.get(source["kind"], "")}
| file | content |
| --- | --- |
| `{PEFT_CONFIG}`, `{PEFT_WEIGHTS}` | the LoRA adapter, as peft writes it |
| `{HEAD_WEIGHTS}` | sertune's emotion head: layer weights, head layers, normalisation statistics |
| `{METADATA}` | the run's settings (labels, head, audio); with it the directory is a sertune checkpoint |

## The fine-tuned encoder, with peft

The adapter targets `{base_class}`, the model `AutoModel` loads for `{base}`:

```python
from peft import PeftModel
{imports}

BASE = {json.dumps(base)}
base = {base_class}.from_pretrained(BASE{revision})
model = PeftModel.from_pretrained(base, {directory})  # peft.AutoPeftModel.from_pretrained({directory}) does both
audio = ...  # 16-kHz mono float32
{features}
```

`model.merge_and_unload()` folds the adapter into the weights. peft gives the fine-tuned encoder, not
the emotions: the head is sertune's.

## Emotions, with sertune

```python
import sertune

print(sertune.load({directory}).predict("clip.wav"))
```
"""
