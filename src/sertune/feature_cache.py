"""On-disk cache of a frozen encoder's layer outputs, so that `frozen` runs encode each clip once.

An entry is one clip's L+1 hidden states as a float16 `.npy` array [L+1, frames, D], read back
memory-mapped. Entries live under a key of the encoder's identity and the audio settings, and are
named by a hash of the audio file's bytes: another run on the same encoder and clips (another fold,
method or seed) reuses them, while a changed file or encoder never hits a stale entry.

Runs that tune the encoder need only each clip's moments for the head's speaker normalisation
(`sertune.feature_statistics`): the sum and the sum of squares of its frames per layer and
dimension and the frame count, a `.moments.npz` entry of [L+1, D] float64 arrays, tens of times
smaller than the frames. They are computed from the encoder's float32 outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sertune.backbones import Backbone
from sertune.config import RunConfig
from sertune.corpora import Utterance
from sertune.data import ClipDataset, WaveformDataset, collate_waveforms, make_loader
from sertune.fileio import atomic_path, cache_dir, write_json_atomic
from sertune.sampler import ShardedEvalBatchSampler

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes; a file unchanged since it was last hashed is not read again."""
    stat = path.stat()
    return _digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _digest(path: str, mtime_ns: int, size: int) -> str:
    # Every fold of a run builds its own cache over the same clips; the size and time key the result.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def moments(states: np.ndarray) -> dict[str, np.ndarray]:
    """The moments of one clip's layer outputs [L+1, frames, D]: per-layer sums [L+1, D] and the frame count."""
    values = np.asarray(states, dtype=np.float64)
    return {"total": values.sum(axis=1), "squares": np.square(values).sum(axis=1),
            "frames": np.array(values.shape[1])}


def read_moments(cache: FeatureCache, utterance: Utterance) -> dict[str, np.ndarray] | None:
    """The clip's moments, from its cached frames or its moments entry; None if neither is stored."""
    frames = cache.entry(utterance)
    if frames.is_file():
        return moments(np.load(frames, mmap_mode="r"))
    entry = cache.entry(utterance, "moments")
    if entry.is_file():
        with np.load(entry) as stored:
            return {name: stored[name] for name in ("total", "squares", "frames")}
    return None


class FeatureCache:
    """The cache directory of one encoder + audio settings; `entry(utterance)` is a clip's file."""

    def __init__(self, root: str | Path, backbone: Backbone, *, sample_rate: int, max_samples: int) -> None:
        identity: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "backbone": backbone.name,
            "source": backbone.source,
            "num_layers": backbone.num_layers,
            "hidden_size": backbone.hidden_size,
            "sample_rate": sample_rate,
            "max_samples": max_samples,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.directory = Path(root) / key
        self.sample_rate = sample_rate
        self.max_samples = max_samples
        if not (self.directory / "key.json").is_file():
            write_json_atomic(self.directory / "key.json", identity)

    def entry(self, utterance: Utterance, store: str = "frames") -> Path:
        """Where the clip's features (`frames`) or their `moments` are (or will be) stored."""
        path = Path(utterance.path)
        try:
            digest = file_digest(path)
        except OSError:
            # An unreadable clip has no entry; the loaders report it as they do for waveforms.
            digest = "unreadable-" + hashlib.sha256(str(path).encode()).hexdigest()
        return self.directory / digest[:2] / (f"{digest}.npy" if store == "frames" else f"{digest}.moments.npz")

    def missing(self, utterances: Sequence[Utterance], store: str = "frames") -> list[Utterance]:
        """The clips that have no entry of `store` yet (each clip once, in the given order); a clip
        whose frames are cached has its moments too."""
        seen: set[Path] = set()
        result = []
        for utterance in utterances:
            if store == "moments" and self.entry(utterance).is_file():
                continue
            entry = self.entry(utterance, store)
            if entry not in seen and not entry.is_file():
                seen.add(entry)
                result.append(utterance)
        return result

    @torch.inference_mode()
    def fill(
        self,
        backbone: Backbone,
        utterances: Sequence[Utterance],
        labels: Sequence[str],
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        progress: Callable[[int], None] | None = None,
        store: str = "frames",
    ) -> int:
        """Encode this rank's share of `utterances` and store each clip's `frames` or `moments`;
        returns the number stored."""
        dataset = WaveformDataset(
            utterances, labels, sample_rate=self.sample_rate, max_samples=self.max_samples, random_crop=False
        )
        budget = batch_size * self.max_samples / self.sample_rate
        sampler = ShardedEvalBatchSampler(
            dataset.durations(), batch_size, max_padded_length=budget, num_replicas=num_replicas, rank=rank
        )
        stored = 0
        for batch in make_loader(dataset, sampler, collate_waveforms, workers=0):
            if batch is None:
                continue
            encoded = backbone.encode(batch["input"].to(backbone.device), batch["length"])
            states = torch.stack(encoded.hidden_states, dim=1)
            if store == "frames":
                states = states.to(torch.float16)
            states = states.cpu().numpy()
            frame_lengths = encoded.frame_lengths.tolist()
            for row, (index, frames) in enumerate(zip(batch["index"].tolist(), frame_lengths, strict=True)):
                clip = states[row, :, :frames]
                with atomic_path(self.entry(dataset.utterances[index], store)) as tmp, open(tmp, "wb") as handle:
                    if store == "frames":
                        np.save(handle, np.ascontiguousarray(clip))
                    else:
                        np.savez(handle, **moments(clip))
                stored += 1
            if progress is not None:
                progress(len(batch["index"]))
        return stored


def open_cache(config: RunConfig, backbone: Backbone) -> FeatureCache:
    """The cache a run with `config` reads and fills: `train.cache_dir` (default ~/.cache/sertune/features),
    keyed by the encoder and the evaluation length."""
    tc = config.train
    root = Path(tc.cache_dir) if tc.cache_dir else cache_dir("features")
    return FeatureCache(root, backbone, sample_rate=backbone.sample_rate,
                        max_samples=round(tc.eval_max_seconds * backbone.sample_rate))


class FeatureDataset(ClipDataset):
    """Clips as cached layer outputs [L+1, frames, D] (float16, memory-mapped), at most `max_frames` long.

    Training windows are cut from the whole clip's features, so they also see context outside the
    window (a waveform crop would not).
    """

    def __init__(
        self, utterances: Sequence[Utterance], labels: Sequence[str], cache: FeatureCache, *, max_frames: int,
        max_seconds: float, random_crop: bool, seed: int = 0,
    ) -> None:
        super().__init__(utterances, labels, max_seconds=max_seconds, random_crop=random_crop, seed=seed)
        self.entries = [cache.entry(utterance) for utterance in self.utterances]
        self.max_frames = max_frames

    def read(self, index: int, rng: np.random.Generator | None) -> np.ndarray | None:
        entry = self.entries[index]
        if not entry.is_file():
            # Only clips whose audio could not be read have no entry after `fill`.
            log.warning("skipping clip %s: no cached features (its audio could not be read)", self.utterances[index].id)
            return None
        states = np.load(entry, mmap_mode="r")
        spare = states.shape[1] - self.max_frames
        offset = int(rng.integers(0, spare + 1)) if rng is not None and spare > 0 else 0
        return np.asarray(states[:, offset : offset + self.max_frames], dtype=np.float32)
