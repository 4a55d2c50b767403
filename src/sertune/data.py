"""From corpus clips to padded batches: waveform datasets, collate functions and loaders.

Every random choice of an item (its training crop) comes from a generator seeded by (seed, epoch,
item), so batches do not depend on the number of worker processes or on where a resumed run started.
A clip that cannot be read is reported once and left out of its batch instead of stopping the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sertune.audio import crop, load_audio
from sertune.corpora import Utterance
from sertune.errors import SertuneError

log = logging.getLogger(__name__)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item's random choices in one epoch."""
    return np.random.default_rng((seed, epoch, index))


class ClipDataset(Dataset):
    """Clips with their class index, cut to at most `max_seconds`; subclasses say how a clip is read.

    Training items (`random_crop`) are random windows, a new one every epoch (see `set_epoch`);
    evaluation items are the clip from its start. Items that cannot be read are None.
    """

    def __init__(
        self, utterances: Sequence[Utterance], labels: Sequence[str], *, max_seconds: float, random_crop: bool,
        seed: int = 0,
    ) -> None:
        self.utterances = list(utterances)
        self.label_index = {name: i for i, name in enumerate(labels)}
        self.max_seconds = max_seconds
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0
        # Attribute scores [clips, dimensions] normalised to [0, 1], NaN where missing; None: a categorical run.
        self.targets: np.ndarray | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops the next iteration draws (workers copy this at iteration start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rng = item_rng(self.seed, self.epoch, index) if self.random_crop else None
        clip = self.read(index, rng)
        if clip is None:
            return None
        item = {"index": index, "input": clip, "label": self.label_index[self.utterances[index].label]}
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item

    def read(self, index: int, rng: np.random.Generator | None) -> np.ndarray | None:
        """The (cropped) clip `index`, or None after reporting why it cannot be read."""
        raise NotImplementedError

    def durations(self) -> np.ndarray:
        """Each item's length in seconds as the model will see it (for length bucketing)."""
        return np.array([min(u.duration, self.max_seconds) for u in self.utterances])


class WaveformDataset(ClipDataset):
    """Clips as mono float32 waveforms at `sample_rate`, at most `max_samples` long."""

    def __init__(
        self, utterances: Sequence[Utterance], labels: Sequence[str], *, sample_rate: int, max_samples: int,
        random_crop: bool, seed: int = 0,
    ) -> None:
        super().__init__(
            utterances, labels, max_seconds=max_samples / sample_rate, random_crop=random_crop, seed=seed
        )
        self.sample_rate = sample_rate
        self.max_samples = max_samples

    def read(self, index: int, rng: np.random.Generator | None) -> np.ndarray | None:
        utterance = self.utterances[index]
        try:
            wave = load_audio(utterance.path, self.sample_rate)
        except SertuneError as error:
            log.warning("skipping clip %s: %s", utterance.id, error)
            return None
        return crop(wave, self.max_samples, rng)


def _pad_batch(items: list[dict[str, Any]], axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length arrays zero-padded along `axis`; returns (batch, lengths)."""
    lengths = [item["input"].shape[axis] for item in items]
    longest = max(lengths)
    padded = []
    for item in items:
        array = np.asarray(item["input"], dtype=np.float32)
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, longest - array.shape[axis])
        padded.append(np.pad(array, widths))
    return torch.from_numpy(np.stack(padded)), torch.tensor(lengths, dtype=torch.long)


def collate(items: list[dict[str, Any] | None], *, axis: int = 0) -> dict[str, torch.Tensor] | None:
    """Pad a batch along its time axis; unreadable items (None) are dropped; None if nothing is left."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    inputs, lengths = _pad_batch(kept, axis)
    batch = {
        "index": torch.tensor([item["index"] for item in kept], dtype=torch.long),
        "input": inputs,
        "length": lengths,
        "label": torch.tensor([item["label"] for item in kept], dtype=torch.long),
    }
    if "target" in kept[0]:
        batch["target"] = torch.from_numpy(np.stack([item["target"] for item in kept]).astype(np.float32))
    return batch


def collate_waveforms(items: list[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
    """Waveform batch: input [B, samples], length in samples."""
    return collate(items, axis=0)


def collate_features(items: list[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
    """Cached-feature batch: input [B, L+1, frames, D], length in frames."""
    return collate(items, axis=1)


def make_loader(dataset: Dataset, batch_sampler: Sampler, collate_fn: Any, workers: int) -> DataLoader:
    """A DataLoader over `batch_sampler`, loading in `workers` processes (0 = in this process)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_fn,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
