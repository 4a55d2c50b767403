"""Mean and spread of the pretrained encoder's layer outputs, per speaker and over a set of clips.

The head can standardise every layer output before its weighted sum (`HeadConfig.normalization`):
with the statistics of the training clips (`global`), or with each speaker's own (`speaker`). A
speaker's statistics come from that speaker's clips in the same fold part only and use no labels,
so normalising a test speaker with its own unlabelled clips leaks nothing; removing a speaker's
mean voice is the classic first step of speaker-independent SER (the MFCC baseline does it too).
A clip whose speaker is unknown gets the training clips' statistics, as at inference.

The statistics are computed over every frame of every clip from the moments in the frozen-feature
cache, that is from the encoder as pretrained. They are fixed for a run: methods that adapt the
encoder (LoRA, adapters, prompts) are trained with them from the first step, so they learn on top
of a fixed per-speaker affine map rather than on statistics that move with their own weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sertune.corpora import Utterance
from sertune.feature_cache import FeatureCache, read_moments

# Added to each variance: a dimension that is constant over a speaker's frames must not divide by zero.
VARIANCE_FLOOR = 1e-5


@dataclass
class FeatureStatistics:
    """Per-layer mean and standard deviation over frames, each [L+1, D] float32."""

    mean: np.ndarray
    std: np.ndarray
    frames: int


def _pool(clips: Iterable[dict[str, np.ndarray] | None]) -> FeatureStatistics | None:
    """The statistics over all frames of clips given by their moments (None for a clip without any)."""
    total, squares, frames = None, None, 0
    for clip in clips:
        if clip is None:  # its audio could not be read; the datasets report it
            continue
        total = clip["total"] if total is None else total + clip["total"]
        squares = clip["squares"] if squares is None else squares + clip["squares"]
        frames += int(clip["frames"])
    if not frames:
        return None
    mean = total / frames
    variance = np.maximum(squares / frames - np.square(mean), 0.0)
    return FeatureStatistics(mean.astype(np.float32), np.sqrt(variance + VARIANCE_FLOOR).astype(np.float32), frames)


def _by_speaker(
    utterances: Sequence[Utterance], moments_of: Callable[[Utterance], dict[str, np.ndarray] | None]
) -> dict[str, FeatureStatistics]:
    groups: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        if utterance.speaker:
            groups.setdefault(utterance.speaker, []).append(utterance)
    found = {speaker: _pool(moments_of(u) for u in clips) for speaker, clips in groups.items()}
    return {speaker: stats for speaker, stats in found.items() if stats is not None}


def pooled_statistics(cache: FeatureCache, utterances: Sequence[Utterance]) -> FeatureStatistics | None:
    """The statistics over all frames of those `utterances` that have cached moments (None if none has)."""
    return _pool(read_moments(cache, u) for u in utterances)


def speaker_statistics(cache: FeatureCache, utterances: Sequence[Utterance]) -> dict[str, FeatureStatistics]:
    """Each known speaker's statistics, from that speaker's own clips among `utterances`."""
    return _by_speaker(utterances, lambda u: read_moments(cache, u))


class SpeakerNormalizer:
    """The statistics each clip of a fold is normalised with, looked up by (part, dataset index).

    `global`: every clip gets the training clips' statistics (the head's stored ones, so `batch`
    returns None). `speaker`: every clip gets its speaker's, computed within its own part (train,
    dev or test), or the training clips' when its speaker is unknown.
    """

    def __init__(self, cache: FeatureCache, parts: dict[str, list[Utterance]], normalization: str) -> None:
        # Each clip's moments read once (from its frames, for a frozen run's cache: the costly part).
        loaded = {u.id: read_moments(cache, u) for clips in parts.values() for u in clips}
        training = _pool(loaded[u.id] for u in parts["train"])
        if training is None:
            raise ValueError("no training clip has cached features to compute statistics from")
        self.training = training
        self.per_speaker = normalization == "speaker"
        if not self.per_speaker:
            return
        # Row 0 is the training clips' statistics; then one row per (part, speaker).
        means, stds, self.rows = [training.mean], [training.std], {}
        for name, clips in parts.items():
            row_of = {}
            for speaker, stats in sorted(_by_speaker(clips, lambda u: loaded[u.id]).items()):
                row_of[speaker] = len(means)
                means.append(stats.mean)
                stds.append(stats.std)
            self.rows[name] = torch.tensor([row_of.get(u.speaker, 0) for u in clips], dtype=torch.long)
        self.mean, self.std = torch.from_numpy(np.stack(means)), torch.from_numpy(np.stack(stds))

    def training_statistics(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The training clips' (mean, std), each [L+1, D], for the head to keep."""
        return torch.from_numpy(self.training.mean).to(device), torch.from_numpy(self.training.std).to(device)

    def batch(
        self, part: str, indices: torch.Tensor, device: torch.device | str, *, unknown_rate: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) [B, L+1, D] on `device` of the clips `indices` of `part`, or None to use the head's own.

        `unknown_rate`: the share of clips, drawn with `generator`, given the training clips' statistics
        instead of their speaker's, as a clip of an unknown speaker gets them at inference.
        """
        if not self.per_speaker:
            return None
        rows = self.rows[part][indices.cpu()]
        if unknown_rate > 0:
            rows = torch.where(torch.rand(len(rows), generator=generator) < unknown_rate, 0, rows)
        return self.mean[rows].to(device), self.std[rows].to(device)
