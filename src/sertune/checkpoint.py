"""A trained run on disk: `adapter.safetensors` (only what was trained) and `sertune.json`.

The encoder itself is never stored: `sertune.json` says where it came from, and loading rebuilds
it from there (or reuses a backbone the caller already holds, e.g. one shared by a server).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sertune import __version__
from sertune.backbones import Backbone, build_backbone, load_backbone
from sertune.dimensions import Dimension
from sertune.errors import SertuneError
from sertune.fileio import atomic_path, write_json_atomic
from sertune.head import HeadConfig
from sertune.metadata import METADATA, read_metadata
from sertune.model import CANONICAL_ADAPTER, EmotionClassifier
from sertune.tuning import TuningConfig

WEIGHTS = "adapter.safetensors"
# The shape of an encoder as sertune.json records it; a checkpoint fits only an encoder of that shape.
SHAPE_FIELDS = ("family", "hidden_size", "num_layers")
DEFAULT_AUDIO = {"sample_rate": 16000}


def save_classifier(classifier: EmotionClassifier, directory: str | Path, *, audio: dict | None = None) -> Path:
    """Write the classifier's trained tensors and settings to `directory` (atomically); returns the weights path."""
    directory = Path(directory)
    tensors = {name: tensor.cpu().contiguous() for name, tensor in classifier.trained_state_dict().items()}
    backbone = classifier.backbone
    metadata = {
        "sertune_version": __version__,
        "backbone": {
            "name": backbone.name,
            "family": backbone.family,
            "hidden_size": backbone.hidden_size,
            "num_layers": backbone.num_layers,
            "source": backbone.source,
        },
        "tuning": classifier.tuning_config.to_dict(),
        "head": classifier.head_config.to_dict(),
        "labels": classifier.labels,
        "parameters": classifier.parameter_counts(),
        "audio": audio or DEFAULT_AUDIO,
        **({"dimensions": [d.to_dict() for d in classifier.dimensions]} if classifier.dimensions else {}),
    }
    with atomic_path(directory / WEIGHTS) as tmp:
        mode = stat.S_IMODE(tmp.stat().st_mode)
        save_file(tensors, str(tmp), metadata={"format": "pt", "sertune": __version__})
        # save_file writes a private (0600) temporary file of its own and renames it over `tmp`:
        # give the result back the umask-respecting mode atomic_path chose, as every other file has.
        tmp.chmod(mode)
    write_json_atomic(directory / METADATA, metadata)
    return directory / WEIGHTS


def load_classifier(
    directory: str | Path,
    *,
    backbone: Backbone | None = None,
    adapter_name: str = CANONICAL_ADAPTER,
    device: str | torch.device | None = None,
) -> EmotionClassifier:
    """Rebuild a trained classifier from its checkpoint directory (native or peft layout), on its base encoder
    (or on `backbone`)."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    # The weights are checked before the encoder is loaded, which can take minutes.
    tensors, origin = read_trained_tensors(directory, metadata)
    expected = metadata["backbone"]
    if backbone is None:
        backbone = backbone_from_source(expected["name"], expected["source"], device=device)
    check_backbone(backbone, expected, directory)
    classifier = EmotionClassifier(
        backbone,
        metadata["labels"],
        TuningConfig(**metadata["tuning"]),
        HeadConfig(**metadata["head"]),
        dimensions=saved_dimensions(metadata),
        adapter_name=adapter_name,
    )
    classifier.load_trained_state_dict(tensors, origin=origin)
    classifier.eval()
    return classifier.to(device) if device is not None else classifier


def read_trained_tensors(directory: Path, metadata: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """A checkpoint's trained tensors under sertune's names, and the file(s) they came from.

    They are in `adapter.safetensors`, or in the files of a peft adapter directory written by
    `sertune.peft_format.export_peft` (docs/export.md); `read_weights` checks either.
    """
    from sertune import peft_format  # peft_format builds on this module

    if peft_format.is_peft_directory(directory):
        return peft_format.read_peft_tensors(directory, metadata)
    weights = directory / WEIGHTS
    return read_weights(weights), str(weights)


def saved_dimensions(metadata: dict[str, Any]) -> list[Dimension]:
    """The attribute dimensions a run's `sertune.json` says it predicts (none for a categorical run)."""
    return [Dimension(d["name"], float(d["low"]), float(d["high"])) for d in metadata.get("dimensions", [])]


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an `adapter.safetensors`; a clear error if it is missing, unreadable, or holds NaN or inf."""
    if not path.is_file():
        raise SertuneError(f"{path} is missing: the run did not finish saving, or the file was removed")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise SertuneError(f"{path} is corrupt or truncated ({error}); retrain or restore it") from None
    broken = [(name, problem) for name, tensor in sorted(tensors.items()) if (problem := _non_finite(tensor))]
    if broken:
        name, problem = broken[0]
        others = f" ({len(broken) - 1} more tensors too)" if len(broken) > 1 else ""
        raise SertuneError(
            f"{path}: tensor {name} holds {problem}{others}; the training diverged or the file is damaged: "
            "retrain or restore it"
        )
    return tensors


def _non_finite(tensor: torch.Tensor) -> str:
    """'3 NaN and 1 inf of 1024 values' for a tensor that has any, else ''."""
    if not tensor.is_floating_point():
        return ""
    counts = {"NaN": int(torch.isnan(tensor).sum()), "inf": int(torch.isinf(tensor).sum())}
    found = " and ".join(f"{count} {kind}" for kind, count in counts.items() if count)
    return f"{found} of {tensor.numel()} values" if found else ""


def backbone_from_source(name: str, source: dict[str, Any], *, device: str | torch.device | None = None) -> Backbone:
    """Load the encoder a run was trained on, from what its `sertune.json` recorded."""
    kind = source.get("kind")
    if kind == "random":
        from transformers import AutoConfig

        if source.get("seed") is None:
            raise SertuneError(f"{name} is a randomly initialised encoder built without a seed; pass it as backbone=")
        config = dict(source["config"])
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        backbone = build_backbone(config, name=name, seed=source["seed"]).eval().requires_grad_(False)
        return backbone.to(device) if device is not None else backbone
    if kind in ("local", "ct2"):
        return load_backbone(source["path"], device=device)
    return load_backbone(name, revision=source.get("revision"), device=device)


def check_backbone(backbone: Backbone, expected: dict[str, Any], origin: Path) -> None:
    """Refuse a backbone whose shape (family, hidden size, layers) differs from the one the run was trained on.

    The message says which fields differ, and whether the names differ too: the same name with
    another shape means `sertune.json` was edited, or that name now loads another model.
    """
    wrong = [
        f"{field} {expected[field]} expected but {getattr(backbone, field)} found"
        for field in SHAPE_FIELDS
        if expected[field] != getattr(backbone, field)
    ]
    if not wrong:
        return
    details = ", ".join(wrong)
    if backbone.name != expected["name"]:
        raise SertuneError(f"{origin} was trained on {expected['name']}, not on {backbone.name}: {details}")
    recorded, loaded = _source_label(expected["source"]), _source_label(backbone.source)
    source = f"; {METADATA} records the source {recorded}, the encoder came from {loaded}" if recorded != loaded else ""
    raise SertuneError(
        f"{origin / METADATA}: the encoder loaded as {backbone.name} does not have the shape {METADATA} records for "
        f"{expected['name']}: {details}{source} ({METADATA} was edited, or the name now loads another model)"
    )


def _source_label(source: dict[str, Any]) -> str:
    """Where an encoder came from, in a few words: a hub id, a path, or a random initialisation."""
    return str(source.get("id") or source.get("path") or source.get("kind"))
