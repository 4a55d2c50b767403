"""Import the models the PEFT-SER study released (the `peft-ser` package) as sertune checkpoints.

The package (Feng & Narayanan, ACII 2023; github.com/usc-sail/peft-ser, folder `package/`) ships six
emotion models, each as two torch files: the head (`NAME.pt`: layer weights, 1x1 convolutions,
output MLP) and loralib's LoRA tensors of every FFN linear (`NAME_lora.pt`). `import_peft_ser`
checks every tensor of both against the names and shapes the package's own modules hold for that
model, renames them to sertune's, and writes a checkpoint directory (adapter.safetensors +
sertune.json) that `sertune.load`, `predict`, `serve` and `export` take. See docs/import.md.

Only the standard library and torch-free sertune modules are imported at the top, so that the
command line can list the model names without loading torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sertune.config import PRESETS
from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic

if TYPE_CHECKING:
    import torch

    from sertune.backbones import Backbone
    from sertune.model import EmotionClassifier

Shape = tuple[int, ...]

# The package's label order: its README maps the outputs as {0: Neutral, 1: Angry, 2: Sad, 3: Happy}.
LABELS = ["neutral", "angry", "sad", "happy"]
# The package builds the heads with hidden_dim 256 and output_class_num 4, the LoRA with lora.Linear(r=16)
# and loralib's default lora_alpha of 1 (scale alpha/r = 1/16): what the preset already states.
RECIPE = PRESETS["peft-ser-package"]
AUDIO = {
    "sample_rate": 16000,
    "max_seconds": float(RECIPE["train"]["max_seconds"]),
    "eval_max_seconds": float(RECIPE["train"]["eval_max_seconds"]),
}
# Written beside sertune.json: which package model and which files the checkpoint came from.
PROVENANCE = "peft-ser.json"

# The package's linears that become lora.Linear in every encoder layer, by family (its WhisperEncoderLayer
# replaces fc1/fc2; its WavLM and wav2vec 2.0 layers replace feed_forward.intermediate_dense/output_dense).
_FFN_LINEARS = {
    "whisper": ("fc1", "fc2"),
    "wavlm": ("feed_forward.intermediate_dense", "feed_forward.output_dense"),
    "wav2vec2": ("feed_forward.intermediate_dense", "feed_forward.output_dense"),
}
# The package's module names -> sertune's (WhisperSER / WavLMPlusSER / ... hold `layer_weights`, the
# Sequential `model_seq` of 1x1 convs and the Sequential `out_layer`; EmotionHead is laid out the same way).
_HEAD_NAMES = {
    "layer_weights": "head.layer_weights", "model_seq.": "head.frame_layers.", "out_layer.": "head.output_layers."
}
_LORA_PREFIX = "backbone_model.encoder.layers."


@dataclass(frozen=True)
class ReleasedModel:
    """One model of the package: its name there, the sertune encoder it was trained on, and its quirks."""

    name: str
    backbone: str  # sertune's short name of the encoder the package loads
    # The package normalises each waveform to zero mean and unit variance (through facebook/mms-1b-all's
    # processor) before WavLM Large and MMS, not before WavLM Base+; Whisper takes log-mel features.
    normalizes_waveform: bool = False
    # LayerNorms (of the encoder's width) the package's model defines but its forward never calls: their
    # tensors may be in the classifier file, and are accepted but unused.
    unused_layer_norms: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, str]:
        """The names the package caches the two files under (`load_model(..., cache_folder)`)."""
        return f"{self.name}.pt", f"{self.name}_lora.pt"


RELEASED: dict[str, ReleasedModel] = {
    model.name: model
    for model in (
        ReleasedModel("whisper-tiny-lora-16-conv", "whisper-tiny"),
        ReleasedModel("whisper-base-lora-16-conv", "whisper-base"),
        ReleasedModel("whisper-small-lora-16-conv", "whisper-small"),
        ReleasedModel("wavlm-plus-lora-16-conv", "wavlm-base-plus"),
        ReleasedModel("wavlm-large-lora-16-conv", "wavlm-large", normalizes_waveform=True),
        # MMSSER holds a LayerNorm `layer_norm` that its forward never uses.
        ReleasedModel("mms-lora-16-conv", "mms-300m", normalizes_waveform=True, unused_layer_norms=("layer_norm",)),
    )
}


def released_model(name: str) -> ReleasedModel:
    """The released model called `name`; an unknown name lists the six."""
    try:
        return RELEASED[name]
    except KeyError:
        raise SertuneError(f"unknown peft-ser model {name!r}; the package released {', '.join(RELEASED)}") from None


@dataclass(frozen=True)
class Architecture:
    """What decides whether the released tensors fit an encoder, and whether they mean the same there."""

    family: str
    layers: int
    width: int
    heads: int
    ffn: int

    @classmethod
    def of(cls, config: Any) -> Architecture:
        """The architecture of a transformers config (Whisper names its fields differently)."""
        if config.model_type == "whisper":
            return cls("whisper", config.encoder_layers, config.d_model, config.encoder_attention_heads,
                       config.encoder_ffn_dim)
        return cls(config.model_type, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   config.intermediate_size)

    @classmethod
    def released(cls, model: ReleasedModel) -> Architecture:
        """The architecture of the encoder the package trained `model` on (from sertune's registry)."""
        from sertune.backbones import get_spec

        return cls.of(get_spec(model.backbone).config())

    def differences(self, other: Architecture) -> list[str]:
        """'layers 6 where 4 is needed', one per field in which `other` differs from this one."""
        return [
            f"{name} {getattr(other, name)} where {getattr(self, name)} is needed"
            for name in ("family", "layers", "width", "heads", "ffn")
            if getattr(self, name) != getattr(other, name)
        ]


def package_tensors(model: ReleasedModel) -> tuple[dict[str, Shape], dict[str, Shape]]:
    """The tensors (name -> shape) the package's modules hold for `model`: (classifier file, LoRA file)."""
    arch = Architecture.released(model)
    channels, rank = RECIPE["head"]["channels"], RECIPE["tuning"]["lora_rank"]
    # The Sequential indices: Conv1d, ReLU, Dropout, Conv1d, ReLU, Dropout, Conv1d / Linear, ReLU, Linear.
    head: dict[str, Shape] = {"layer_weights": (arch.layers + 1,)}
    for index, inputs in ((0, arch.width), (3, channels), (6, channels)):
        head[f"model_seq.{index}.weight"], head[f"model_seq.{index}.bias"] = (channels, inputs, 1), (channels,)
    for index, outputs in ((0, channels), (2, len(LABELS))):
        head[f"out_layer.{index}.weight"], head[f"out_layer.{index}.bias"] = (outputs, channels), (outputs,)
    ffn_in, ffn_out = _FFN_LINEARS[arch.family]
    lora: dict[str, Shape] = {}
    for layer in range(arch.layers):
        prefix = f"{_LORA_PREFIX}{layer}."
        # loralib stores lora_A as [r, in] and lora_B as [out, r].
        for linear, inputs, outputs in ((ffn_in, arch.width, arch.ffn), (ffn_out, arch.ffn, arch.width)):
            lora[f"{prefix}{linear}.lora_A"], lora[f"{prefix}{linear}.lora_B"] = (rank, inputs), (outputs, rank)
    return head, lora


def _unused_shapes(model: ReleasedModel) -> dict[str, Shape]:
    width = Architecture.released(model).width
    return {f"{norm}.{part}": (width,) for norm in model.unused_layer_norms for part in ("weight", "bias")}


@dataclass
class ImportReport:
    """What `import_peft_ser` wrote: where, which model on which encoder, how many tensors, and notes."""

    out: Path
    model: str
    backbone: str
    tensors: int
    parameters: dict[str, int]
    ignored: list[str]
    notes: list[str]


def import_peft_ser(
    model: str,
    classifier_file: str | os.PathLike,
    lora_file: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: str | None = None,
) -> ImportReport:
    """Convert a released model's two files into the sertune checkpoint directory `out`.

    `backbone` (a short name, hub id or local directory) replaces the encoder the model name implies;
    it must have the same architecture. Every tensor must be one the package's modules hold, with
    their shape, and none may be missing; otherwise nothing is written and the error names them.
    """
    released = released_model(model)
    out, classifier_file, lora_file = Path(out), Path(classifier_file), Path(lora_file)
    _check_out(out)
    head = read_state_dict(classifier_file)
    lora = read_state_dict(lora_file)
    ignored = check_files(released, head, lora, classifier_file, lora_file)
    # The files are checked before the encoder is loaded, which can take minutes.
    encoder, notes = _load_encoder(released, backbone)
    classifier = _classifier(encoder)
    tensors = {name: tensor for name, tensor in head.items() if name not in ignored} | lora
    classifier.load_trained_state_dict(
        _to_sertune_names(tensors, classifier), origin=f"{classifier_file} + {lora_file}"
    )
    provenance = {
        "source": "peft-ser",
        "model": released.name,
        "trained_on": released.backbone,
        "backbone": encoder.name,
        "files": {"classifier": _describe_file(classifier_file), "lora": _describe_file(lora_file)},
        "ignored_tensors": sorted(ignored),
        "notes": notes,
    }
    _write_checkpoint(classifier, out, provenance)
    return ImportReport(out, released.name, encoder.name, len(tensors), classifier.parameter_counts(),
                        sorted(ignored), notes)


# -- reading and checking the files ----------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch file holding a flat state dict, read with `weights_only=True`, as float32."""
    import pickle

    import torch

    if not path.is_file():
        raise SertuneError(f"{path}: {'is a directory, not a torch file' if path.is_dir() else 'no such file'}")
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the first class it refused; anything else is not a torch file.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise SertuneError(f"{path}: not a file torch.load can read (not a pickle of tensors)") from None
        raise SertuneError(
            f"{path}: holds Python objects (such as {found.group(1)}) besides tensors, which "
            "torch.load(weights_only=True) does not load; the package's files hold tensors only"
        ) from None
    except Exception as error:  # a damaged or foreign file fails inside torch in many ways (KeyError, RuntimeError)
        raise SertuneError(f"{path}: not a file torch.load can read ({_first_line(error)})") from None
    if not isinstance(data, Mapping) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in data.items()
    ):
        raise SertuneError(f"{path}: expected a state dict (tensor names -> tensors), as the package saves it")
    tensors = {}
    for name, tensor in data.items():
        if not tensor.is_floating_point():
            raise SertuneError(f"{path}: tensor {name} is {tensor.dtype}, not floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise SertuneError(f"{path}: tensor {name} holds NaN or infinite values")
        tensors[name] = tensor.float()
    return tensors


def check_files(
    model: ReleasedModel,
    head: Mapping[str, torch.Tensor],
    lora: Mapping[str, torch.Tensor],
    head_path: Path,
    lora_path: Path,
) -> set[str]:
    """Refuse files that are not exactly `model`'s (naming what is wrong); returns the accepted unused tensors."""
    expected_head, expected_lora = package_tensors(model)
    if set(head) & set(expected_lora) and set(lora) & set(expected_head):
        raise SertuneError(
            f"{head_path} holds LoRA tensors and {lora_path} the classifier's: give the classifier file "
            f"({model.files[0]}) first, then the LoRA file ({model.files[1]})"
        )
    unused = _unused_shapes(model)
    _check_file(model, head_path, "classifier", _shapes(head), expected_head, unused)
    _check_file(model, lora_path, "LoRA", _shapes(lora), expected_lora, {})
    return set(head) & set(unused)


def _check_file(
    model: ReleasedModel,
    path: Path,
    what: str,
    found: dict[str, Shape],
    expected: dict[str, Shape],
    optional: dict[str, Shape],
) -> None:
    allowed = expected | optional
    wrong = [
        f"{name} {_shape(found[name])} where {_shape(allowed[name])} is expected"
        for name in sorted(set(found) & set(allowed))
        if found[name] != allowed[name]
    ]
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(allowed))
    if not (wrong or missing or unexpected):
        return
    from sertune.model import _few

    problems = [
        f"{len(names)} {kind} {_few(names)}"
        for kind, names in (("of the wrong shape", wrong), ("missing", missing), ("unexpected", unexpected))
        if names
    ]
    fits = [other.name for other in RELEASED.values() if other != model and _fits(found, other, what)]
    hint = f"; they fit {fits[0]} (--model {fits[0]})" if fits else ""
    raise SertuneError(
        f"{path} is not the {what} file of {model.name}: tensors {', '.join(problems)}{hint}"
    )


def _fits(found: dict[str, Shape], model: ReleasedModel, what: str) -> bool:
    """Whether tensors of this shape would be `model`'s classifier (or LoRA) file."""
    head, lora = package_tensors(model)
    expected = head if what == "classifier" else lora
    optional = _unused_shapes(model) if what == "classifier" else {}
    return set(expected) <= set(found) <= set(expected) | set(optional) and all(
        found[name] == (expected | optional)[name] for name in found
    )


# -- building the classifier -----------------------------------------------------------------------
def _load_encoder(model: ReleasedModel, name: str | None) -> tuple[Backbone, list[str]]:
    """The encoder to put the weights on, refused unless its architecture is the released one; and notes."""
    from sertune.backbones import SPECS, load_backbone

    needed = Architecture.released(model)
    name = name or model.backbone
    if name in SPECS:
        # Refused from the registry before minutes of loading, then checked again on the loaded model.
        _check_architecture(model, name, needed, Architecture.of(SPECS[name].config()))
    encoder = load_backbone(name)
    _check_architecture(model, name, needed, Architecture.of(encoder.model.config))
    notes = []
    if name != model.backbone:
        notes.append(
            f"the package trained {model.name} on {model.backbone}; on {name}, an encoder of the same architecture "
            "but other weights, its predictions differ from the package's"
        )
    if encoder.source.get("kind") == "offline-package":
        notes.append(
            f"{name} came from the offline package (docs/offline-weights.md), whose weights are stored in float16; "
            "the package loads the hub's float32 weights, so logits differ slightly"
        )
    normalizes = getattr(encoder, "normalize_waveform", False)
    if normalizes != model.normalizes_waveform:
        notes.append(
            f"{name} {'normalises' if normalizes else 'does not normalise'} each waveform to zero mean and unit "
            f"variance, the package {'does' if model.normalizes_waveform else 'does not'} before this encoder: "
            "predictions differ from the package's"
        )
    return encoder, notes


def _check_architecture(model: ReleasedModel, name: str, needed: Architecture, found: Architecture) -> None:
    wrong = needed.differences(found)
    if wrong:
        raise SertuneError(
            f"--backbone {name} cannot take {model.name}, trained on {model.backbone}: {', '.join(wrong)}"
        )


def _classifier(encoder: Backbone) -> EmotionClassifier:
    from sertune.head import HeadConfig
    from sertune.model import EmotionClassifier
    from sertune.tuning import TuningConfig

    classifier = EmotionClassifier(encoder, LABELS, TuningConfig(**RECIPE["tuning"]), HeadConfig(**RECIPE["head"]))
    return classifier.eval()


def _to_sertune_names(tensors: Mapping[str, torch.Tensor], classifier: EmotionClassifier) -> dict[str, torch.Tensor]:
    """The package's tensors under the names `classifier.trained_state_dict()` uses."""
    names = {package_name(name): name for name in classifier.trained_state_dict()}
    return {names[name]: tensor for name, tensor in tensors.items()}


def package_name(name: str) -> str:
    """The package's name of a sertune trained tensor, e.g. `head.frame_layers.0.weight` -> `model_seq.0.weight`
    and `backbone.model.layers.3.fc1.lora_A.default.weight` -> `backbone_model.encoder.layers.3.fc1.lora_A`."""
    from sertune.model import CANONICAL_ADAPTER

    for theirs, ours in _HEAD_NAMES.items():
        if name.startswith(ours):
            return theirs + name[len(ours):]
    # peft keeps lora_A / lora_B as Linear modules per adapter name; loralib as bare parameters.
    layers, _, inner = name.partition("layers.")
    suffix = f".{CANONICAL_ADAPTER}.weight"
    if layers.startswith("backbone.model.") and inner.endswith(suffix) and ".lora_" in inner:
        return _LORA_PREFIX + inner[: -len(suffix)]
    raise ValueError(f"no peft-ser counterpart for the tensor {name}")


# -- writing ---------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        raise SertuneError(f"{out} already exists and is not empty; choose a new --out or remove it")
    if out.exists() and not out.is_dir():
        raise SertuneError(f"{out} exists and is not a directory; choose a new --out")


def _write_checkpoint(classifier: EmotionClassifier, out: Path, provenance: dict[str, Any]) -> None:
    """Write the checkpoint into a hidden directory beside `out`, then rename it into place: a failure
    leaves nothing where the checkpoint is expected."""
    from sertune.checkpoint import save_classifier

    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.importing"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # os.mkdir honours the umask, as every other written file does
        save_classifier(classifier, staging, audio=AUDIO)
        write_json_atomic(staging / PROVENANCE, provenance)
        os.replace(staging, out)  # an empty `out` is replaced
    except OSError as error:
        raise SertuneError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _describe_file(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# -- small helpers ---------------------------------------------------------------------------------
def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, Shape]:
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


def _shape(shape: Shape) -> str:
    return f"({', '.join(map(str, shape))})"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
