"""A classical reference point: MFCC statistics + logistic or ridge regression under the corpus's folds.

Each clip becomes the mean and standard deviation of 20 MFCCs and their deltas (80 numbers); a
class-balanced logistic regression is trained on the train part, its regularisation picked by
dev UAR, and scored on the test part. For a dimensional task a ridge regression per dimension
(arousal, valence, dominance) takes its place, its regularisation picked by that dimension's dev CCC.
It tells how hard a corpus is before any encoder is tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.fft import dct
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers.audio_utils import mel_filter_bank

from sertune.audio import DEFAULT_SAMPLE_RATE, load_audio
from sertune.corpora.manifest import Corpus, Fold, load_corpus
from sertune.dimension_metrics import concordance, score_dimensions
from sertune.dimensions import DIMENSIONS, Dimension, corpus_dimensions, dimension_scores, parse_dimensions
from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic
from sertune.metrics import score_predictions, summarize_folds
from sertune.runs import run_summary

N_FFT, HOP, N_MELS, N_MFCC = 400, 160, 40, 20  # 25 ms windows every 10 ms at 16 kHz
C_GRID = (0.01, 0.1, 1.0)
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)
BASELINE_NAME = "mfcc-statistics"
BASELINE_TASKS = ("categorical", "dimensional")

_MEL = mel_filter_bank(
    num_frequency_bins=N_FFT // 2 + 1,
    num_mel_filters=N_MELS,
    min_frequency=20.0,
    max_frequency=DEFAULT_SAMPLE_RATE / 2,
    sampling_rate=DEFAULT_SAMPLE_RATE,
    norm="slaney",
    mel_scale="slaney",
)


def mfcc(wave: np.ndarray) -> np.ndarray:
    """(frames, 20) MFCCs of a 16 kHz waveform: Hann-windowed power spectrum, 40 mel bands, log, DCT."""
    wave = np.pad(wave, (0, max(0, N_FFT - len(wave))))
    frames = np.lib.stride_tricks.sliding_window_view(wave, N_FFT)[::HOP] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return dct(np.log(power @ _MEL + 1e-10), type=2, norm="ortho", axis=1)[:, :N_MFCC]


def mfcc_statistics(wave: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of the MFCCs and their first differences."""
    coefficients = mfcc(wave)
    deltas = np.diff(coefficients, axis=0) if len(coefficients) > 1 else np.zeros_like(coefficients)
    return np.concatenate([coefficients.mean(0), coefficients.std(0), deltas.mean(0), deltas.std(0)])


def speaker_normalised(features: dict[str, np.ndarray], corpus: Corpus) -> dict[str, np.ndarray]:
    """Each speaker's features (arrays of any shape) standardised over that speaker's own clips.

    Removing a speaker's mean voice is the usual first step of speaker-independent SER; it uses
    no labels, so normalising test speakers with their own unlabelled clips is fair. A group of
    one clip (a speaker with one clip, or a clip of unknown speaker) is left as it is.
    """
    groups: dict[str, list[str]] = {}
    for uid in features:
        groups.setdefault(corpus.by_id[uid].speaker or f"clip:{uid}", []).append(uid)
    normalised = {}
    for ids in groups.values():
        block = np.stack([features[uid] for uid in ids])
        block = (block - block.mean(0)) / (block.std(0) + 1e-6) if len(ids) > 1 else block
        normalised.update(zip(ids, block, strict=True))
    return normalised


BaselineResult = dict[str, Any]


def select_folds_by_name(corpus: Corpus, folds: list[str] | None) -> list[Fold]:
    """The corpus's folds named in `folds` (default: all); an unknown name is an error listing the folds."""
    chosen = [fold for fold in corpus.folds if folds is None or fold.name in folds]
    if not chosen:
        raise SertuneError(f"no fold named {folds} in {corpus.root}; folds: {[f.name for f in corpus.folds]}")
    return chosen


def logistic_regression(c: float) -> Any:
    """Standardisation + class-balanced logistic regression with inverse regularisation `c`."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))


def ridge_regression(alpha: float) -> Any:
    """Standardisation + ridge regression with L2 penalty `alpha`."""
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def best_on_dev(
    grid: tuple[float, ...], fit: Callable[[float], Any], evaluate: Callable[[Any], Any], key: Callable[[Any], float]
) -> tuple[float, Any, Any]:
    """`(value, model, evaluation)` for the grid value whose model `fit(value)` ranks highest by
    `key(evaluate(model))`; of equals the first in grid order."""
    best = None
    for value in grid:
        model = fit(value)
        evaluation = evaluate(model)
        if best is None or key(evaluation) > key(best[2]):
            best = (value, model, evaluation)
    return best


def readable_part(corpus: Corpus, features: dict[str, np.ndarray], ids: list[str]) -> tuple[list[str], np.ndarray]:
    """The clips of a fold part that have features (readable audio), and their features stacked."""
    ids = [uid for uid in ids if uid in features]
    if not ids:
        raise SertuneError(f"{corpus.root}: no readable clip in a fold part; check the corpus's audio")
    return ids, np.stack([features[uid] for uid in ids])


def baseline_result(
    corpus: Corpus, results: dict[str, dict[str, Any]], *, name: str, method: str, trained_parameters: int,
    labels: list[str], **extra: Any,
) -> BaselineResult:
    """The result dict of a baseline from its per-fold results (see `fit_on_folds`); `extra` adds keys."""
    return {
        "corpus": corpus.name,
        "corpus_dir": str(corpus.root),
        "labels": labels,
        "name": name,
        "method": method,
        "parameters": trained_parameters,
        **extra,
        "folds": results,
        "test": summarize_folds([result["test"] for result in results.values()]),
    }


def fit_on_folds(
    corpus: Corpus,
    chosen: list[Fold],
    features: dict[str, np.ndarray],
    make_model: Callable[[float], Any],
    *,
    name: str,
    method: str,
    trained_parameters: int,
) -> BaselineResult:
    """Fit `make_model(C)` on each fold's train part for every C of the grid, keep the best on dev UAR,
    score it on test; clips without features (unreadable audio) are left out.

    Returns `{"corpus", "corpus_dir", "labels", "name", "method", "parameters", "task": "categorical",
    "folds": {name: {"C", "dev", "test"}}, "test": summary}`, where dev/test are
    `sertune.metrics.score_predictions` (percent) and the summary is `summarize_folds` over the test
    metrics (mean, sample std, n).
    """
    index = {label: i for i, label in enumerate(corpus.labels)}

    def part(ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        ids, x = readable_part(corpus, features, ids)
        return x, np.array([index[corpus.by_id[uid].label] for uid in ids]), [corpus.by_id[u].gender for u in ids]

    def evaluate(model: Any, ids: list[str]) -> dict[str, Any]:
        x, y, genders = part(ids)
        return score_predictions(y, model.predict(x), genders, corpus.labels)

    def fit_fold(fold: Fold) -> dict[str, Any]:
        x_train, y_train, _ = part(fold.train)
        c, model, dev = best_on_dev(
            C_GRID, lambda c: make_model(c).fit(x_train, y_train), lambda model: evaluate(model, fold.dev),
            key=lambda dev: dev["uar"],
        )
        return {"C": c, "dev": dev, "test": evaluate(model, fold.test)}

    results = {fold.name: fit_fold(fold) for fold in chosen}
    return baseline_result(
        corpus, results, name=name, method=method, trained_parameters=trained_parameters, labels=corpus.labels,
        task="categorical",
    )


class ScoredPart(NamedTuple):
    """A fold part's clips with features and at least one requested score."""

    unscored: int  # clips of the part left out for having none of the scores
    x: np.ndarray  # features [clips, F]
    true: np.ndarray  # scores [clips, dimensions] on the corpus scale, NaN where missing
    genders: list[str | None]


def fit_ridge_on_folds(
    corpus: Corpus,
    chosen: list[Fold],
    features: dict[str, np.ndarray],
    dimensions: list[Dimension],
    *,
    name: str,
    method: str,
    trained_parameters: int,
) -> BaselineResult:
    """Fit `ridge_regression(alpha)` per fold and dimension on the train clips scored for that dimension
    (targets normalised to [0, 1] by the corpus scale), keep the alpha of the best dev CCC of that
    dimension, and score dev and test on the corpus scale.

    Clips with none of the dimensions' scores are left out and counted per part under `unscored`;
    clips without features (unreadable audio) are left out too. Returns `fit_on_folds`'s shape with
    `labels` [], `task` "dimensional", `dimensions` (`Dimension.to_dict`s) and per fold `{"alpha": {dim:
    alpha}, "unscored": {part: clips}, "dev", "test"}`, where dev/test are `score_dimensions`'s metrics
    with its `fairness` under `dimension_fairness` (as a trained dimensional run's).
    """
    names = [dimension.name for dimension in dimensions]

    def part(fold: Fold, label: str, ids: list[str]) -> ScoredPart:
        scores = dimension_scores([corpus.by_id[uid] for uid in ids], names)
        scored = [uid for uid, row in zip(ids, scores, strict=True) if not np.isnan(row).all()]
        if not scored:
            raise SertuneError(f"fold {fold.name}: no clip of its {label} part has a {' or '.join(names)} score")
        readable, x = readable_part(corpus, features, scored)
        true = dimension_scores([corpus.by_id[uid] for uid in readable], names)
        return ScoredPart(len(ids) - len(scored), x, true, [corpus.by_id[uid].gender for uid in readable])

    def predict(model: Any, dimension: Dimension, x: np.ndarray) -> np.ndarray:
        # A rating outside the scale is never right, and clipping to it can only bring a prediction closer.
        return dimension.denormalize(np.clip(model.predict(x), 0.0, 1.0))

    def evaluate(models: list[Any], scored: ScoredPart) -> dict[str, Any]:
        pred = np.stack([predict(model, d, scored.x) for model, d in zip(models, dimensions, strict=True)], axis=1)
        metrics = score_dimensions(scored.true, pred, scored.genders, names)
        metrics["dimension_fairness"] = metrics.pop("fairness")
        return metrics

    def fit_dimension(fold: Fold, column: int, train: ScoredPart, dev: ScoredPart) -> tuple[float, Any]:
        dimension = dimensions[column]
        on_train, on_dev = ~np.isnan(train.true[:, column]), ~np.isnan(dev.true[:, column])
        if not on_train.any():
            raise SertuneError(f"fold {fold.name}: no clip of its train part has a {dimension.name} score")
        x, targets = train.x[on_train], dimension.normalize(train.true[on_train, column])
        alpha, model, _ = best_on_dev(
            ALPHA_GRID, lambda alpha: ridge_regression(alpha).fit(x, targets),
            lambda model: concordance(dev.true[on_dev, column], predict(model, dimension, dev.x[on_dev])),
            # An undefined dev CCC (fewer than 2 scored dev clips, or constant ones) cannot choose.
            key=lambda ccc: -np.inf if ccc is None else ccc,
        )
        return alpha, model

    def fit_fold(fold: Fold) -> dict[str, Any]:
        parts = {label: part(fold, label, ids) for label, ids in fold.parts().items()}
        fitted = [fit_dimension(fold, column, parts["train"], parts["dev"]) for column in range(len(dimensions))]
        models = [model for _, model in fitted]
        return {
            "alpha": dict(zip(names, (alpha for alpha, _ in fitted), strict=True)),
            "unscored": {label: scored.unscored for label, scored in parts.items()},
            "dev": evaluate(models, parts["dev"]),
            "test": evaluate(models, parts["test"]),
        }

    results = {fold.name: fit_fold(fold) for fold in chosen}
    return baseline_result(
        corpus, results, name=name, method=method, trained_parameters=trained_parameters, labels=[],
        task="dimensional", dimensions=[dimension.to_dict() for dimension in dimensions],
    )


def mfcc_features(corpus: Corpus, chosen: list[Fold], workers: int = 2) -> dict[str, np.ndarray]:
    """The speaker-normalised MFCC statistics of every clip in the `chosen` folds."""
    needed = sorted({uid for fold in chosen for ids in fold.parts().values() for uid in ids})
    paths = [corpus.by_id[uid].path for uid in needed]
    # Decoding and FFTs run in C with the GIL released, so threads share the work.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(lambda path: mfcc_statistics(load_audio(path)), paths))
    return speaker_normalised(dict(zip(needed, rows, strict=True)), corpus)


def mfcc_baseline(
    corpus_dir: str | Path,
    folds: list[str] | None = None,
    workers: int = 2,
    task: str = "categorical",
    dimensions: list[str] | None = None,
) -> BaselineResult:
    """Dev and test metrics per fold of the MFCC-statistics baseline, and their summary.

    `task` "categorical": logistic regression on the classes (`fit_on_folds`'s result); "dimensional":
    ridge regression per dimension of `dimensions` (default: arousal, valence, dominance;
    `fit_ridge_on_folds`'s result), an error naming the corpus when it has no such scores. `folds`
    names the folds to run (default: all).
    """
    if task not in BASELINE_TASKS:
        raise SertuneError(f"the MFCC baseline's task must be one of {', '.join(BASELINE_TASKS)}, got {task!r}")
    corpus = load_corpus(corpus_dir)
    chosen = select_folds_by_name(corpus, folds)
    if task == "dimensional":
        # Checked before any audio is read, so that a corpus without scores fails at once.
        attributes = corpus_dimensions(corpus, parse_dimensions(dimensions or DIMENSIONS))
        return fit_ridge_on_folds(
            corpus, chosen, mfcc_features(corpus, chosen, workers), attributes, name=BASELINE_NAME,
            method="ridge-regression",
            # Each dimension's ridge has a weight per MFCC statistic and a bias.
            trained_parameters=(4 * N_MFCC + 1) * len(attributes),
        )
    n_classes = len(corpus.labels)
    return fit_on_folds(
        corpus, chosen, mfcc_features(corpus, chosen, workers), logistic_regression, name=BASELINE_NAME,
        method="logistic-regression",
        # The logistic regression's weights and biases are its trained parameters.
        trained_parameters=4 * N_MFCC * n_classes + n_classes,
    )


def write_baseline_run(result: BaselineResult, out: str | Path) -> None:
    """Write a baseline result as a run directory (docs/runs.md), so `sertune report` lists it beside models."""
    out = Path(out)
    for name, fold in result["folds"].items():
        # What the fold chose (C, or alpha per dimension) and left out, beside its scores.
        chosen = {key: fold[key] for key in ("C", "alpha", "unscored") if key in fold}
        metrics = {"fold": name, "complete": True, "epochs": [], "best_epoch": None,
                   "dev": fold["dev"], "test": fold["test"], **chosen}
        write_json_atomic(out / "folds" / name / "metrics.json", metrics)
    trained = result["parameters"]
    summary = run_summary(
        corpus=result["corpus"], corpus_dir=result["corpus_dir"], labels=result["labels"],
        backbone=result["name"], method=result["method"], folds=result["folds"],
        parameters={"tuning": 0, "head": trained, "trained": trained, "encoder": 0},
        checkpoint_bytes=None, failed_folds={},
        task=result.get("task", "categorical"), dimensions=result.get("dimensions"),
    )
    write_json_atomic(out / "summary.json", summary)
