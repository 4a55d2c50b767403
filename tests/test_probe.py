"""The linear probe: pooled cached layer outputs + logistic regression, against an independent sklearn fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sertune.baseline import C_GRID, write_baseline_run
from sertune.corpora.manifest import load_corpus
from sertune.errors import SertuneError
from sertune.probe import WeightedLayerProbe, layer_input, linear_probe_baseline, parse_layer, pooled_layer_features
from sertune.report import load_run


def _independent_probe(features: dict[str, np.ndarray], corpus, fold, layer: int) -> tuple[float, np.ndarray]:
    """What the probe should do, written out with plain scikit-learn: C by dev UAR, then test predictions."""
    index = {label: i for i, label in enumerate(corpus.labels)}

    def part(ids):
        return np.stack([features[i][layer] for i in ids]), np.array([index[corpus.by_id[i].label] for i in ids])

    x_train, y_train = part(fold.train)
    best = None
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
        model.fit(x_train, y_train)
        x_dev, y_dev = part(fold.dev)
        uar = balanced_accuracy_score(y_dev, model.predict(x_dev))
        if best is None or uar > best[0]:
            best = (uar, c, model)
    x_test, _ = part(fold.test)
    return best[1], best[2].predict(x_test)


def test_probe_equals_scikit_learn_on_the_same_cached_features(small_corpus, tiny_whisper_dir, tmp_path):
    corpus = load_corpus(small_corpus)
    ids = [u.id for u in corpus.utterances]
    features, described = pooled_layer_features(corpus, ids, str(tiny_whisper_dir), cache_root=tmp_path / "cache")
    assert described["num_layers"] == 2
    assert {value.shape for value in features.values()} == {(3, 32)}  # L+1 outputs of 32 dims per clip
    # The pooled features are the mean over each clip's cached frames.
    cached = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == len(ids)

    result = linear_probe_baseline(small_corpus, str(tiny_whisper_dir), layer=-1, cache_root=tmp_path / "cache")
    assert result["method"] == "linear-probe--1" and result["name"].startswith("linear-probe:")
    for fold in corpus.folds:
        c, predicted = _independent_probe(features, corpus, fold, layer=-1)
        ours = result["folds"][fold.name]
        assert ours["C"] == c
        truth = np.array([corpus.labels.index(corpus.by_id[i].label) for i in fold.test])
        assert ours["test"]["uar"] == pytest.approx(100 * balanced_accuracy_score(truth, predicted))

    # With speaker normalisation: each speaker's pooled features standardised over its own clips first.
    normalised = {}
    for speaker in {u.speaker for u in corpus.utterances}:
        ids_of = [u.id for u in corpus.utterances if u.speaker == speaker]
        block = np.stack([features[i] for i in ids_of])
        normalised.update(zip(ids_of, (block - block.mean(0)) / (block.std(0) + 1e-6), strict=True))
    by_speaker = linear_probe_baseline(
        small_corpus, str(tiny_whisper_dir), layer=-1, normalization="speaker", cache_root=tmp_path / "cache"
    )
    assert by_speaker["method"] == "linear-probe--1-speaker-normalised"
    for fold in corpus.folds:
        c, predicted = _independent_probe(normalised, corpus, fold, layer=-1)
        truth = np.array([corpus.labels.index(corpus.by_id[i].label) for i in fold.test])
        assert by_speaker["folds"][fold.name]["C"] == c
        expected = 100 * balanced_accuracy_score(truth, predicted)
        assert by_speaker["folds"][fold.name]["test"]["uar"] == pytest.approx(expected)

    write_baseline_run(result, tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.backbone.startswith("linear-probe:") and len(run.folds) == len(corpus.folds)
    assert run.parameters["trained"] == 32 * 4 + 4


def test_weighted_probe_learns_which_layer_carries_the_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 4, 8))
    x[:, 2, 0] += 6.0 * labels  # only layer 2 knows the class
    probe = WeightedLayerProbe(c=1.0).fit(x, labels)
    weights = probe.layer_weights()
    assert np.argmax(weights) == 2 and weights[2] > 0.5
    assert (probe.predict(x) == labels).mean() > 0.97


def test_layer_choice():
    pooled = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert layer_input(pooled, 0).shape == (2, 4)
    assert np.array_equal(layer_input(pooled, -1), pooled[:, 2])
    assert layer_input(pooled, "all").shape == (2, 12)
    assert layer_input(pooled, "weighted") is pooled
    with pytest.raises(SertuneError, match=r"out of range: this encoder has outputs 0\.\.2"):
        layer_input(pooled, 3)
    assert parse_layer("5") == 5 and parse_layer("all") == "all"
    with pytest.raises(SertuneError, match="--layer must be a layer number, 'weighted' or 'all'"):
        parse_layer("top")
