"""The linear probe: a frozen encoder's mean-pooled layer outputs + logistic regression (SUPERB-style).

Every clip is encoded once into the frozen-feature cache (the same entries that `--method frozen`
training reads), each layer's output is averaged over the clip's valid frames, and a
class-balanced logistic regression is fitted on the train part with its regularisation picked by
dev UAR. `layer` selects the input: one layer (an index into the L+1 outputs, negative from the
top), `all` (every layer concatenated) or `weighted` (a learned softmax weighting of the layers,
fitted jointly with the regression, as SUPERB's weighted sum). It is the reference a trained head
or a PEFT method must beat: anything below it learned less than a linear read-out of the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sertune.baseline import (
    BaselineResult,
    fit_on_folds,
    logistic_regression,
    select_folds_by_name,
    speaker_normalised,
)
from sertune.corpora.manifest import Corpus, load_corpus
from sertune.errors import SertuneError
from sertune.feature_cache import FeatureCache
from sertune.fileio import cache_dir
from sertune.progress import progress_bar

LAYER_MODES = ("weighted", "all")
# What the pooled features are standardised over before the regression: the training clips (SUPERB's
# probe) or, first, each speaker's own clips (as the MFCC baseline and the default head do).
PROBE_NORMALIZATIONS = ("global", "speaker")
DEFAULT_EVAL_MAX_SECONDS = 30.0  # the training default, so that a frozen run and the probe share entries


def parse_layer(text: str | int) -> str | int:
    """`weighted`, `all` or a layer index (negative counts from the top)."""
    if isinstance(text, int) or text in LAYER_MODES:
        return text
    try:
        return int(text)
    except ValueError:
        raise SertuneError(f"--layer must be a layer number, 'weighted' or 'all', got {text!r}") from None


def pooled_layer_features(
    corpus: Corpus,
    ids: Sequence[str],
    backbone_name: str,
    *,
    cache_root: str | Path | None = None,
    eval_max_seconds: float = DEFAULT_EVAL_MAX_SECONDS,
    batch_size: int = 16,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each clip's layer outputs averaged over its frames, [L+1, D] float32, and the encoder's description.

    Clips missing from the cache are encoded first; unreadable clips are left out (and logged).
    """
    from sertune.backbones import load_backbone

    backbone = load_backbone(backbone_name, device="cuda" if torch.cuda.is_available() else "cpu")
    cache = FeatureCache(
        Path(cache_root) if cache_root else cache_dir("features"), backbone,
        sample_rate=backbone.sample_rate, max_samples=round(eval_max_seconds * backbone.sample_rate),
    )
    utterances = [corpus.by_id[uid] for uid in ids]
    missing = cache.missing(utterances)
    if missing:
        with progress_bar(total=len(missing), desc=f"{backbone.name} caching features", unit="clip") as bar:
            cache.fill(backbone, missing, corpus.labels, batch_size=batch_size, progress=bar.update)
    features = {}
    for utterance in utterances:
        entry = cache.entry(utterance)
        if entry.is_file():
            features[utterance.id] = np.load(entry, mmap_mode="r").astype(np.float32).mean(axis=1)
    described = {"name": backbone.name, "num_layers": backbone.num_layers, "hidden_size": backbone.hidden_size}
    return features, described


class WeightedLayerProbe:
    """Logistic regression on a learned softmax-weighted sum of standardised layer features [N, L+1, D].

    The objective is sklearn's for `LogisticRegression(C, class_weight="balanced")`: the balanced
    cross-entropy summed over clips plus the squared weights / (2 C), minimised by L-BFGS.
    """

    def __init__(self, c: float, max_iter: int = 300) -> None:
        self.c = c
        self.max_iter = max_iter

    def fit(self, x: np.ndarray, y: np.ndarray) -> WeightedLayerProbe:
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        inputs = torch.from_numpy((x - self.mean) / self.std).double()
        targets = torch.from_numpy(y).long()
        classes = int(y.max()) + 1
        counts = np.bincount(y, minlength=classes)
        sample_weight = torch.from_numpy(len(y) / (classes * np.maximum(counts, 1))[y]).double()
        self.layer_logits = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        self.weight = torch.zeros(classes, x.shape[2], dtype=torch.float64, requires_grad=True)
        self.bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [self.layer_logits, self.weight, self.bias], max_iter=self.max_iter, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = (torch.nn.functional.cross_entropy(self._logits(inputs), targets, reduction="none")
                    * sample_weight).sum() + self.weight.pow(2).sum() / (2 * self.c)
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("l,nld->nd", torch.softmax(self.layer_logits, 0), inputs)
        return mixed @ self.weight.T + self.bias

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy((x - self.mean) / self.std).double()
        return self._logits(inputs).argmax(1).numpy()

    def layer_weights(self) -> list[float]:
        """The fitted softmax weight of each layer."""
        return torch.softmax(self.layer_logits.detach(), 0).tolist()


def layer_input(features: np.ndarray, layer: str | int) -> np.ndarray:
    """The probe's input for pooled features [N, L+1, D]: one layer [N, D], all [N, (L+1) D], or weighted as is."""
    if layer == "weighted":
        return features
    if layer == "all":
        return features.reshape(len(features), -1)
    n_layers = features.shape[1]
    if not -n_layers <= int(layer) < n_layers:
        raise SertuneError(f"--layer {layer} is out of range: this encoder has outputs 0..{n_layers - 1}")
    return features[:, int(layer)]


def linear_probe_baseline(
    corpus_dir: str | Path,
    backbone: str,
    *,
    folds: list[str] | None = None,
    layer: str | int = "weighted",
    normalization: str = "global",
    cache_root: str | Path | None = None,
    eval_max_seconds: float = DEFAULT_EVAL_MAX_SECONDS,
    batch_size: int = 16,
) -> BaselineResult:
    """Dev and test metrics per fold of the linear probe on `backbone`'s frozen features, and their summary."""
    layer = parse_layer(layer)
    if normalization not in PROBE_NORMALIZATIONS:
        raise SertuneError(f"normalization must be one of {', '.join(PROBE_NORMALIZATIONS)}, got {normalization!r}")
    corpus = load_corpus(corpus_dir)
    chosen = select_folds_by_name(corpus, folds)
    needed = sorted({uid for fold in chosen for ids in fold.parts().values() for uid in ids})
    pooled, described = pooled_layer_features(
        corpus, needed, backbone, cache_root=cache_root, eval_max_seconds=eval_max_seconds, batch_size=batch_size
    )
    if normalization == "speaker":
        pooled = speaker_normalised(pooled, corpus)
    sample = layer_input(next(iter(pooled.values()))[None], layer)
    features = {uid: layer_input(value[None], layer)[0] for uid, value in pooled.items()}
    make_model = WeightedLayerProbe if layer == "weighted" else logistic_regression
    n_classes = len(corpus.labels)
    dims = sample.shape[-1]
    trained = dims * n_classes + n_classes + (sample.shape[1] if layer == "weighted" else 0)
    return fit_on_folds(
        corpus, chosen, features, make_model,
        name=f"linear-probe:{described['name']}",
        method=f"linear-probe-{layer}" + ("-speaker-normalised" if normalization == "speaker" else ""),
        trained_parameters=trained,
    )
