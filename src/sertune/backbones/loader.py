"""Load an encoder by short name, Hugging Face id or local directory, or build one from a config."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, WhisperForAudioClassification
from transformers.utils import logging as hf_logging

from sertune.backbones.base import Backbone
from sertune.backbones.registry import SPECS, BackboneSpec, family_of, get_spec
from sertune.backbones.ssl import SSLBackbone
from sertune.backbones.whisper import WhisperBackbone
from sertune.errors import SertuneError

# Layer drop would skip layers at random and break the one-state-per-layer contract of `encode`.
_NO_LAYERDROP = {"layerdrop": 0.0, "encoder_layerdrop": 0.0}


def build_backbone(
    config: PretrainedConfig | BackboneSpec,
    *,
    name: str | None = None,
    seed: int | None = None,
) -> Backbone:
    """A randomly initialised encoder of a given architecture (tests, benchmarks, parameter counts)."""
    spec = config if isinstance(config, BackboneSpec) else None
    config = spec.config() if spec else config
    for key, value in _NO_LAYERDROP.items():
        setattr(config, key, value)
    if seed is not None:
        torch.manual_seed(seed)
    family = family_of(config.model_type)
    if family == "whisper":
        model = WhisperForAudioClassification(config).encoder
    else:
        model = AutoModel.from_config(config)
    label = name or (spec.name if spec else f"random-{family}")
    source = {"kind": "random", "config": config.to_dict(), "seed": seed}
    return _wrap(model, name=label, source=source, spec=spec)


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> Backbone:
    """Load a pretrained encoder (frozen, in eval mode) from a short name, hub id or local directory.

    Short names are listed by `sertune backbones`. `whisper-tiny.en` and `whisper-base` fall back
    to the weights shipped by the `offline` extra when the hub cannot be reached. A local
    faster-whisper (CTranslate2) directory is converted once and cached.
    """
    from sertune.backbones import ct2

    text = str(name_or_path)
    spec = SPECS.get(text)
    path = Path(text).expanduser()
    if spec is None and path.is_dir():
        if ct2.is_ct2_model_dir(path):
            source_dir = ct2.converted_whisper_dir(path)
            backbone = _load_pretrained(
                source_dir, name=text, source={"kind": "ct2", "path": str(path.resolve())}
            )
        else:
            backbone = _load_pretrained(
                path, name=text, source={"kind": "local", "path": str(path.resolve())}
            )
    else:
        if spec is None and "/" not in text:
            spec = get_spec(text)  # not a short name, a path or a hub id: raises, listing the known names
        hub_id = spec.hub_id if spec else text
        backbone = _load_from_hub(hub_id, revision=revision, spec=spec, name=text)
    backbone.requires_grad_(False)
    backbone.eval()
    return backbone.to(device) if device is not None else backbone


def _load_from_hub(hub_id: str, *, revision: str | None, spec: BackboneSpec | None, name: str) -> Backbone:
    """Load from the local hub cache or the hub; fall back to the offline Whisper packages."""
    from sertune.backbones import ct2

    source = {"kind": "hub", "id": hub_id, "revision": revision or "main"}
    try:
        return _load_pretrained(
            hub_id, name=name, source=source, spec=spec, revision=revision, local_only=True
        )
    except OSError:
        pass
    if _hub_reachable():
        try:
            return _load_pretrained(hub_id, name=name, source=source, spec=spec, revision=revision)
        except OSError as error:
            raise SertuneError(f"could not load {hub_id!r} from the Hugging Face hub: {error}") from None
    offline_dir = ct2.offline_whisper_model(name) if spec else None
    if offline_dir is not None:
        source = {"kind": "offline-package", "id": hub_id, "path": str(offline_dir)}
        return _load_pretrained(offline_dir, name=name, source=source, spec=spec)
    hint = ct2.offline_install_hint(name) if spec else ""
    raise SertuneError(
        f"{hub_id!r} is not in the local Hugging Face cache and the hub cannot be reached. "
        f"Download it on a connected machine (or set HF_HOME to a cache that has it), or pass a local "
        f"model directory.{(' ' + hint) if hint else ''}"
    )


@functools.cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers at all (avoids minutes of download retries offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # Loading only the encoder of a full Whisper checkpoint makes the library list every decoder
    # tensor as unexpected; that is the intent here, not a problem worth printing.
    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a bar per encoder load is noise in a run of many folds
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(
    where: str | Path,
    *,
    name: str,
    source: dict[str, Any],
    spec: BackboneSpec | None = None,
    revision: str | None = None,
    local_only: bool = False,
) -> Backbone:
    options = {"revision": revision, "local_files_only": local_only, **_NO_LAYERDROP}
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(where, **options)
        family = family_of(config.model_type)
        if family == "whisper":
            model = WhisperForAudioClassification.from_pretrained(where, config=config, **_options(options))
            model = model.encoder
        else:
            model = AutoModel.from_pretrained(where, config=config, **_options(options))
    commit = getattr(config, "_commit_hash", None)
    if commit:
        source = {**source, "revision": commit}
    normalize = None if family == "whisper" else _reads_normalize_flag(where, options)
    return _wrap(model, name=name, source=source, spec=spec, normalize=normalize)


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {key: options[key] for key in ("revision", "local_files_only")}


def _reads_normalize_flag(where: str | Path, options: dict[str, Any]) -> bool | None:
    """The `do_normalize` flag of the checkpoint's feature extractor, when it ships one."""
    from transformers import AutoFeatureExtractor

    try:
        extractor = AutoFeatureExtractor.from_pretrained(where, **_options(options))
    except (OSError, ValueError):
        return None
    return bool(getattr(extractor, "do_normalize", False))


def _wrap(
    model: torch.nn.Module,
    *,
    name: str,
    source: dict[str, Any],
    spec: BackboneSpec | None,
    normalize: bool | None = None,
) -> Backbone:
    if model.config.model_type == "whisper":
        return WhisperBackbone(model, name=name, source=source)
    if normalize is None:
        normalize = spec.normalize_waveform if spec else model.config.feat_extract_norm == "layer"
    return SSLBackbone(model, name=name, source=source, normalize_waveform=normalize)
