"""Mean and spread of the pretrained encoder's layer outputs, per speaker and over a set of clips.

The head can standardise every layer output before its weighted sum (`HeadConfig.normalization`):
with the statistics of the training clips (`global`), or with each speaker's own (`speaker`). A
speaker's statistics come from that speaker's clips only and use no labels, so normalising a test
speaker with its own unlabelled clips leaks nothing; removing a speaker's mean voice is the
classic first step of speaker-independent SER (the MFCC baseline does it too).

The statistics are computed over every frame of every clip from the frozen-feature cache, that is
from the encoder as pretrained. They are fixed for a run: methods that adapt the encoder (LoRA,
adapters, prompts) are trained with them from the first step, so they learn on top of a fixed
per-speaker affine map rather than on statistics that move with their own weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sertune.corpora import Utterance
from sertune.feature_cache import FeatureCache

# Added to each variance: a dimension that is constant over a speaker's frames must not divide by zero.
VARIANCE_FLOOR = 1e-5


@dataclass
class FeatureStatistics:
    """Per-layer mean and standard deviation over frames, each [L+1, D] float32."""

    mean: np.ndarray
    std: np.ndarray
    frames: int


class _Accumulator:
    """Running sums of frames, in float64 (float16 features summed over hours of audio lose digits)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.frames = 0

    def add(self, states: np.ndarray) -> None:
        """Add one clip's layer outputs [L+1, frames, D]."""
        values = np.asarray(states, dtype=np.float64)
        total, squares = values.sum(axis=1), np.square(values).sum(axis=1)
        if self.total is None:
            self.total, self.squares = total, squares
        else:
            self.total += total
            self.squares += squares
        self.frames += values.shape[1]

    def result(self) -> FeatureStatistics:
        mean = self.total / self.frames
        variance = np.maximum(self.squares / self.frames - np.square(mean), 0.0)
        return FeatureStatistics(
            mean.astype(np.float32), np.sqrt(variance + VARIANCE_FLOOR).astype(np.float32), self.frames
        )


def _readable(cache: FeatureCache, utterances: Iterable[Utterance]) -> Iterable[tuple[Utterance, np.ndarray]]:
    # Clips whose audio could not be read have no entry; the datasets report them.
    for utterance in utterances:
        entry = cache.entry(utterance)
        if entry.is_file():
            yield utterance, np.load(entry, mmap_mode="r")


def pooled_statistics(cache: FeatureCache, utterances: Sequence[Utterance]) -> FeatureStatistics:
    """The statistics over all frames of `utterances` (those with cached features)."""
    accumulator = _Accumulator()
    for _, states in _readable(cache, utterances):
        accumulator.add(states)
    if not accumulator.frames:
        raise ValueError("no clip has cached features to compute statistics from")
    return accumulator.result()


def speaker_statistics(cache: FeatureCache, utterances: Sequence[Utterance]) -> dict[str, FeatureStatistics]:
    """Each speaker's statistics (`Utterance.speaker_group`), from that speaker's own clips among `utterances`."""
    accumulators: dict[str, _Accumulator] = {}
    for utterance, states in _readable(cache, utterances):
        accumulators.setdefault(utterance.speaker_group, _Accumulator()).add(states)
    return {key: accumulator.result() for key, accumulator in accumulators.items()}


class SpeakerNormalizer:
    """The statistics each clip of a fold is normalised with, looked up by (part, dataset index).

    `global`: every clip gets the training clips' statistics (the head's stored ones, so `batch`
    returns None). `speaker`: every clip gets its own speaker's, train, dev and test alike.
    """

    def __init__(self, cache: FeatureCache, parts: dict[str, list[Utterance]], normalization: str) -> None:
        self.training = pooled_statistics(cache, parts["train"])
        self.per_speaker = normalization == "speaker"
        if not self.per_speaker:
            return
        by_speaker = speaker_statistics(cache, [u for clips in parts.values() for u in clips])
        # A clip without cached features is skipped by its dataset; its row is never read.
        keys = sorted(by_speaker)
        row = {key: i for i, key in enumerate(keys)}
        self.mean = torch.from_numpy(np.stack([by_speaker[key].mean for key in keys]))
        self.std = torch.from_numpy(np.stack([by_speaker[key].std for key in keys]))
        self.rows = {
            name: torch.tensor([row.get(u.speaker_group, 0) for u in clips], dtype=torch.long)
            for name, clips in parts.items()
        }
        self.speakers = keys

    def training_statistics(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training clips' (mean, std), each [L+1, D], for the head to keep."""
        return torch.from_numpy(self.training.mean).to(device), torch.from_numpy(self.training.std).to(device)

    def batch(
        self, part: str, indices: torch.Tensor, *, unknown_rate: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) [B, L+1, D] of the clips `indices` of `part`, or None to use the head's own.

        `unknown_rate`: the share of clips, drawn with `generator`, given the training clips' statistics
        instead of their speaker's, as a clip of an unknown speaker gets them at inference.
        """
        if not self.per_speaker:
            return None
        rows = self.rows[part][indices.cpu()]
        mean, std = self.mean[rows], self.std[rows]
        if unknown_rate > 0:
            unknown = torch.rand(len(rows), generator=generator) < unknown_rate
            mean[unknown] = torch.from_numpy(self.training.mean)
            std[unknown] = torch.from_numpy(self.training.std)
        device = indices.device
        return mean.to(device), std.to(device)
