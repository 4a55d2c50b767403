"""Speaker statistics: each speaker's own clips, no labels, nothing from other speakers."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sertune.baseline import speaker_normalised
from sertune.corpora.manifest import load_corpus
from sertune.feature_cache import FeatureCache
from sertune.feature_statistics import SpeakerNormalizer, pooled_statistics, speaker_statistics

ENCODER = SimpleNamespace(name="fixture", source={"kind": "fixture"}, num_layers=2, hidden_size=4)


def _write(cache: FeatureCache, utterance, states: np.ndarray) -> None:
    entry = cache.entry(utterance)
    entry.parent.mkdir(parents=True, exist_ok=True)
    np.save(entry, states.astype(np.float16))


@pytest.fixture
def cached(small_corpus, tmp_path):
    """The corpus's clips with made-up cached layer outputs [3, frames, 4], offset per speaker."""
    corpus = load_corpus(small_corpus)
    cache = FeatureCache(tmp_path, ENCODER, sample_rate=16000, max_samples=16000)
    rng = np.random.default_rng(0)
    speakers = sorted({u.speaker for u in corpus.utterances})
    features = {}
    for utterance in corpus.utterances:
        offset = speakers.index(utterance.speaker)
        features[utterance.id] = rng.normal(offset, 1 + offset, size=(3, int(rng.integers(5, 20)), 4))
        _write(cache, utterance, features[utterance.id])
    return corpus, cache, features, speakers


def test_each_speakers_statistics_come_from_its_own_clips(cached):
    corpus, cache, features, speakers = cached
    stats = speaker_statistics(cache, corpus.utterances)
    assert sorted(stats) == speakers
    for speaker in speakers:
        frames = np.concatenate(
            [features[u.id].astype(np.float16).astype(np.float64) for u in corpus.utterances if u.speaker == speaker],
            axis=1,
        )
        assert stats[speaker].frames == frames.shape[1]
        np.testing.assert_allclose(stats[speaker].mean, frames.mean(axis=1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats[speaker].std, frames.std(axis=1), rtol=1e-3)


def test_shifting_one_speaker_moves_only_its_statistics_and_labels_play_no_part(cached):
    corpus, cache, features, speakers = cached
    before = speaker_statistics(cache, corpus.utterances)
    moved = speakers[0]
    for utterance in corpus.utterances:
        if utterance.speaker == moved:
            _write(cache, utterance, features[utterance.id] + 8.0)
    # Every clip relabelled: statistics that used labels would change.
    relabelled = [dataclasses.replace(u, label=corpus.labels[0]) for u in corpus.utterances]
    after = speaker_statistics(cache, relabelled)
    np.testing.assert_allclose(after[moved].mean, before[moved].mean + 8.0, atol=0.02)
    np.testing.assert_allclose(after[moved].std, before[moved].std, rtol=0.01)
    for speaker in speakers[1:]:
        np.testing.assert_array_equal(after[speaker].mean, before[speaker].mean)
        np.testing.assert_array_equal(after[speaker].std, before[speaker].std)


def test_a_fold_normalises_test_speakers_with_their_own_statistics(cached):
    corpus, cache, _, _ = cached
    fold = corpus.folds[0]
    parts = {name: [corpus.by_id[i] for i in ids] for name, ids in fold.parts().items()}
    normalizer = SpeakerNormalizer(cache, parts, "speaker")
    own = speaker_statistics(cache, parts["test"])
    indices = torch.arange(len(parts["test"]))
    mean, std = normalizer.batch("test", indices, "cpu")
    for row, utterance in enumerate(parts["test"]):
        np.testing.assert_array_equal(mean[row].numpy(), own[utterance.speaker].mean)
        np.testing.assert_array_equal(std[row].numpy(), own[utterance.speaker].std)
    # What a clip of an unseen speaker gets at inference: the training clips' statistics only.
    stored, _ = normalizer.training_statistics("cpu")
    np.testing.assert_array_equal(stored.numpy(), pooled_statistics(cache, parts["train"]).mean)
    assert not np.allclose(stored.numpy(), pooled_statistics(cache, corpus.utterances).mean)
    assert SpeakerNormalizer(cache, parts, "global").batch("test", indices, "cpu") is None


def test_unknown_speaker_rate_gives_a_share_of_training_clips_the_training_statistics(cached):
    corpus, cache, _, _ = cached
    fold = corpus.folds[0]
    parts = {name: [corpus.by_id[i] for i in ids] for name, ids in fold.parts().items()}
    normalizer = SpeakerNormalizer(cache, parts, "speaker")
    training, _ = normalizer.training_statistics("cpu")
    indices = torch.arange(len(parts["train"]))
    own, _ = normalizer.batch("train", indices, "cpu")
    everyone, _ = normalizer.batch("train", indices, "cpu", unknown_rate=1.0)
    assert all(torch.equal(row, training) for row in everyone)
    mixed, _ = normalizer.batch("train", indices, "cpu", unknown_rate=0.5, generator=torch.Generator().manual_seed(0))
    unknown = [torch.equal(row, training) for row in mixed]
    assert 0 < sum(unknown) < len(unknown)
    assert all(torch.equal(mixed[i], own[i]) for i, is_unknown in enumerate(unknown) if not is_unknown)
    again, _ = normalizer.batch("train", indices, "cpu", unknown_rate=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed)  # the same draw for the same seed: a resumed epoch repeats it


def test_a_speaker_is_normalised_within_each_part_and_an_unknown_speaker_like_at_inference(cached):
    corpus, cache, _, _ = cached
    fold = corpus.folds[0]
    parts = {name: [corpus.by_id[i] for i in ids] for name, ids in fold.parts().items()}
    # One training speaker also speaks in test (a fold with overlap), and one test clip has no speaker.
    shared = parts["train"][0].speaker
    parts["test"] = [*parts["test"], *[u for u in parts["train"] if u.speaker == shared][:2]]
    parts["test"][0] = dataclasses.replace(parts["test"][0], speaker="")
    normalizer = SpeakerNormalizer(cache, parts, "speaker")
    mean, _ = normalizer.batch("test", torch.arange(len(parts["test"])), "cpu")
    training, _ = normalizer.training_statistics("cpu")
    assert torch.equal(mean[0], training)
    in_test = speaker_statistics(cache, parts["test"])[shared]
    np.testing.assert_array_equal(mean[-1].numpy(), in_test.mean)  # its test clips only, not its training clips
    train_mean, _ = normalizer.batch("train", torch.arange(len(parts["train"])), "cpu")
    np.testing.assert_array_equal(train_mean[0].numpy(), speaker_statistics(cache, parts["train"])[shared].mean)
    assert not np.allclose(in_test.mean, speaker_statistics(cache, parts["train"])[shared].mean)


def test_moments_entries_give_the_statistics_of_the_frames(small_corpus, tiny_whisper_dir, tmp_path):
    from sertune.backbones import load_backbone

    corpus = load_corpus(small_corpus)
    clips = corpus.utterances[:6]
    backbone = load_backbone(tiny_whisper_dir)
    frames = FeatureCache(tmp_path / "frames", backbone, sample_rate=16000, max_samples=16000 * 30)
    only_moments = FeatureCache(tmp_path / "moments", backbone, sample_rate=16000, max_samples=16000 * 30)
    frames.fill(backbone, clips, corpus.labels, batch_size=4)
    only_moments.fill(backbone, clips, corpus.labels, batch_size=4, store="moments")
    assert not list((tmp_path / "moments").rglob("*.npy")) and only_moments.missing(clips, "moments") == []
    assert frames.missing(clips, "moments") == []  # cached frames hold the moments too
    from_frames, from_moments = pooled_statistics(frames, clips), pooled_statistics(only_moments, clips)
    assert from_frames.frames == from_moments.frames
    # float16 frames against float32 moments: the same statistics to float16's precision
    np.testing.assert_allclose(from_frames.mean, from_moments.mean, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(from_frames.std, from_moments.std, rtol=2e-3, atol=2e-3)


def test_the_baselines_speaker_normalisation_groups_by_speaker(cached):
    corpus, _, features, speakers = cached
    pooled = {uid: value.mean(axis=1) for uid, value in features.items()}
    shifted = {uid: value + (5.0 if corpus.by_id[uid].speaker == speakers[1] else 0.0) for uid, value in pooled.items()}
    normalised, normalised_shifted = speaker_normalised(pooled, corpus), speaker_normalised(shifted, corpus)
    for uid in pooled:
        np.testing.assert_allclose(normalised[uid], normalised_shifted[uid], atol=1e-9)
    block = np.stack([normalised[u.id] for u in corpus.utterances if u.speaker == speakers[2]])
    np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-9)
