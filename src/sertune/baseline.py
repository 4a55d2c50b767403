"""A classical reference point: MFCC statistics + logistic regression under the corpus's folds.

Each clip becomes the mean and standard deviation of 20 MFCCs and their deltas (80 numbers); a
class-balanced logistic regression is trained on the train part, its regularisation picked by
dev UAR, and scored on the test part. It tells how hard a corpus is before any encoder is tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.fft import dct
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers.audio_utils import mel_filter_bank

from sertune.audio import DEFAULT_SAMPLE_RATE, load_audio
from sertune.corpora.manifest import Corpus, Fold, load_corpus
from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic
from sertune.metrics import score_predictions, summarize_folds
from sertune.runs import run_summary

N_FFT, HOP, N_MELS, N_MFCC = 400, 160, 40, 20  # 25 ms windows every 10 ms at 16 kHz
C_GRID = (0.01, 0.1, 1.0)
BASELINE_NAME = "mfcc-statistics"

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

    Returns `{"corpus", "corpus_dir", "labels", "name", "method", "parameters", "folds": {name: {"C",
    "dev", "test"}}, "test": summary}`, where dev/test are `sertune.metrics.score_predictions` (percent)
    and the summary is `summarize_folds` over the test metrics (mean, sample std, n).
    """
    index = {label: i for i, label in enumerate(corpus.labels)}

    def part(ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        ids = [uid for uid in ids if uid in features]
        if not ids:
            raise SertuneError(f"{corpus.root}: no readable clip in a fold part; check the corpus's audio")
        x = np.stack([features[uid] for uid in ids])
        return x, np.array([index[corpus.by_id[uid].label] for uid in ids]), [corpus.by_id[u].gender for u in ids]

    def evaluate(model: Any, ids: list[str]) -> dict[str, Any]:
        x, y, genders = part(ids)
        return score_predictions(y, model.predict(x), genders, corpus.labels)

    results: dict[str, dict[str, Any]] = {}
    for fold in chosen:
        x_train, y_train, _ = part(fold.train)
        best = None
        for c in C_GRID:
            model = make_model(c).fit(x_train, y_train)
            dev = evaluate(model, fold.dev)
            if best is None or dev["uar"] > best[0]["uar"]:
                best = (dev, c, model)
        dev, c, model = best
        results[fold.name] = {"C": c, "dev": dev, "test": evaluate(model, fold.test)}
    return {
        "corpus": corpus.name,
        "corpus_dir": str(corpus.root),
        "labels": corpus.labels,
        "name": name,
        "method": method,
        "parameters": trained_parameters,
        "folds": results,
        "test": summarize_folds([result["test"] for result in results.values()]),
    }


def mfcc_baseline(corpus_dir: str | Path, folds: list[str] | None = None, workers: int = 2) -> BaselineResult:
    """Dev and test metrics per fold of the MFCC-statistics logistic regression, and their summary.

    `folds` names the folds to run (default: all); the result is `fit_on_folds`'s.
    """
    corpus = load_corpus(corpus_dir)
    chosen = select_folds_by_name(corpus, folds)
    needed = sorted({uid for fold in chosen for ids in fold.parts().values() for uid in ids})
    paths = [corpus.by_id[uid].path for uid in needed]
    # Decoding and FFTs run in C with the GIL released, so threads share the work.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(lambda path: mfcc_statistics(load_audio(path)), paths))
    features = speaker_normalised(dict(zip(needed, rows, strict=True)), corpus)
    n_classes = len(corpus.labels)
    return fit_on_folds(
        corpus, chosen, features, logistic_regression, name=BASELINE_NAME, method="logistic-regression",
        # The logistic regression's weights and biases are its trained parameters.
        trained_parameters=4 * N_MFCC * n_classes + n_classes,
    )


def write_baseline_run(result: BaselineResult, out: str | Path) -> None:
    """Write a baseline result as a run directory (docs/runs.md), so `sertune report` lists it beside models."""
    out = Path(out)
    for name, fold in result["folds"].items():
        metrics = {"fold": name, "complete": True, "epochs": [], "best_epoch": None,
                   "dev": fold["dev"], "test": fold["test"], "C": fold["C"]}
        write_json_atomic(out / "folds" / name / "metrics.json", metrics)
    trained = result["parameters"]
    summary = run_summary(
        corpus=result["corpus"], corpus_dir=result["corpus_dir"], labels=result["labels"],
        backbone=result["name"], method=result["method"], folds=result["folds"],
        parameters={"tuning": 0, "head": trained, "trained": trained, "encoder": 0},
        checkpoint_bytes=None, failed_folds={},
    )
    write_json_atomic(out / "summary.json", summary)
