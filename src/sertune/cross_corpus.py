"""A trained run scored on another prepared corpus (`sertune evaluate RUN CORPUS_DIR`): cross-corpus tests.

Every finished fold of the run (or one) predicts a part of the corpus: all of it (`all`, the
cross-corpus case), or the train, dev or test part of the corpus's fold of the same name (on the
run's own corpus this reproduces the test metrics training wrote). Each clip is read from its start
up to the run's evaluation length and predicted as in training's evaluation: a speaker-normalised
head gets each speaker's own statistics (the pretrained encoder's, over that speaker's clips of the
part), and the metrics with every clip's speaker unknown are written too. Classes are matched by
name: clips of a class the run does not know are left out and counted, never mapped by position.

The evaluation directory has the run directory's files (summary.json, folds/<fold>/metrics.json and
predictions.csv), so `sertune report` reads it beside runs, plus `evaluation` in summary.json (the
run, the corpus it was trained on, the part).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sertune.audio import load_audio
from sertune.backbones import Backbone, load_backbone
from sertune.checkpoint import read_metadata
from sertune.config import RunConfig, config_from_dict
from sertune.corpora import Corpus, Utterance, load_corpus
from sertune.dimensions import corpus_dimensions, dimension_scores, normalized_targets
from sertune.errors import SertuneError
from sertune.evaluate import Predictions, score
from sertune.feature_cache import open_cache
from sertune.feature_statistics import FeatureStatistics, speaker_statistics
from sertune.fileio import write_json_atomic, write_text_atomic
from sertune.inference import Predictor, default_device, load
from sertune.runs import run_summary
from sertune.train import FOLDS, SUMMARY, saved_config
from sertune.trainer import CHECKPOINT, METRICS, PREDICTIONS, finished_fold, predictions_csv

log = logging.getLogger(__name__)
PARTS = ("all", "test", "dev", "train")


def part_clips(corpus: Corpus, part: str, fold: str) -> list[Utterance]:
    """The clips of `corpus` that `part` names for the run's fold `fold`."""
    if part == "all":
        return list(corpus.utterances)
    same = next((f for f in corpus.folds if f.name == fold), None)
    if same is None:
        names = ", ".join(f.name for f in corpus.folds)
        raise SertuneError(f"{corpus.root} has no fold {fold!r} (its folds: {names}) whose {part} part to score; "
                           "use --part all for a corpus with other folds")
    return [corpus.by_id[i] for i in same.parts()[part]]


def _logits(predictor: Predictor, clips: list[Utterance], waves: list[np.ndarray],
            statistics: dict[str, Any] | None) -> np.ndarray:
    """Logits of `waves`: each speaker's clips with that speaker's statistics, if given."""
    if statistics is None:
        return predictor.logits(waves)
    output = np.zeros((len(waves), len(predictor.labels) + len(predictor.dimensions)), dtype=np.float32)
    speakers: dict[str, list[int]] = {}
    for index, clip in enumerate(clips):
        speakers.setdefault(clip.speaker if clip.speaker in statistics else "", []).append(index)
    for speaker, indices in speakers.items():
        stats = statistics.get(speaker)
        output[indices] = predictor.logits([waves[i] for i in indices],
                                           (stats.mean, stats.std) if stats is not None else None)
    return output


class PretrainedStatistics:
    """Each speaker's statistics from the pretrained encoder, as in training: a clean copy of it, before any
    tuning method, loaded on first use and shared by every fold of an evaluation."""

    def __init__(self, config: RunConfig, device: str) -> None:
        self.config, self.device = config, device
        self.backbone: Backbone | None = None

    def of(self, clips: list[Utterance], labels: list[str]) -> dict[str, FeatureStatistics]:
        """The statistics of each speaker of `clips`, over those clips (their moments cached first)."""
        if self.backbone is None:
            self.backbone = load_backbone(self.config.backbone, device=self.device)
        cache = open_cache(self.config, self.backbone)
        missing = cache.missing(clips, "moments")
        if missing:
            cache.fill(self.backbone, missing, labels, batch_size=self.config.train.eval_batch_size, store="moments")
        return speaker_statistics(cache, clips)


def evaluate_fold(run: Path, fold: str, corpus: Corpus, part: str, *, config: RunConfig, best_epoch: int | None,
                  statistics: PretrainedStatistics | None, device: str) -> tuple[dict[str, Any], str]:
    """The metrics (as metrics.json holds them) and predictions.csv text of one fold of `run` on `part`;
    `statistics` is given for a speaker-normalised run.

    A run with dimensions is scored on the test corpus's own scores: its normalised predictions are put on
    that corpus's scale (the corpus must score the run's dimensions)."""
    predictor = load(run, fold=fold, device=device, merge=False, precision="no")
    labels = predictor.labels
    dimensions = corpus_dimensions(corpus, [d.name for d in predictor.dimensions])
    chosen = part_clips(corpus, part, fold)
    if labels:
        clips = [clip for clip in chosen if clip.label in labels]
        left_out = Counter(clip.label for clip in chosen if clip.label not in labels)
    else:  # classes do not matter, scores do
        scored = ~np.isnan(dimension_scores(chosen, [d.name for d in dimensions])).all(axis=1)
        clips = [clip for clip, keep in zip(chosen, scored, strict=True) if keep]
        left_out = Counter({"unscored": len(chosen) - len(clips)} if len(clips) < len(chosen) else {})
    limit = round(config.train.eval_max_seconds * predictor.sample_rate)
    readable, waves, skipped = [], [], []
    for clip in clips:
        try:
            waves.append(load_audio(clip.path, predictor.sample_rate)[:limit])
            readable.append(clip)
        except SertuneError as error:
            log.warning("skipping clip %s: %s", clip.id, error)
            skipped.append(clip.id)
    if not readable:
        wanted = f"a class of the run ({', '.join(labels)})" if labels else "a score of the run's dimensions"
        raise SertuneError(f"no readable clip of {corpus.root} ({part}) has {wanted}; its classes: "
                           f"{', '.join(corpus.labels)}")
    by_speaker = statistics.of(readable, corpus.labels) if statistics is not None else None
    truth = np.array([labels.index(clip.label) if labels else 0 for clip in readable])
    targets = normalized_targets(readable, dimensions) if dimensions else None
    outputs = _logits(predictor, readable, waves, by_speaker)
    predictions = Predictions(np.arange(len(readable)), outputs, truth, targets)
    metrics: dict[str, Any] = {"fold": fold, "complete": True, "best_epoch": best_epoch, "part": part, "dev": {},
                               "test": score(predictions, readable, labels, dimensions)}
    if by_speaker is not None:
        alone = Predictions(predictions.indices, predictor.logits(waves), truth, targets)
        metrics["test_unknown_speaker"] = score(alone, readable, labels, dimensions)
    metrics["counts"] = {"test": len(readable), "test_skipped": skipped, "left_out": dict(sorted(left_out.items())),
                         "absent_classes": [label for label in labels if label not in {c.label for c in readable}]}
    return metrics, predictions_csv(predictions, readable, labels, dimensions)


def evaluate_run(run: str | Path, corpus_dir: str | Path, out: str | Path | None = None, *, part: str = "all",
                 fold: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Score every finished fold of `run` (or `fold`) on `part` of the corpus; writes and returns the summary."""
    run = Path(run)
    if part not in PARTS:
        raise SertuneError(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
    corpus = load_corpus(corpus_dir)
    trained_folds = {p.name: finished_fold(p) for p in (run / FOLDS).glob("*")}
    folds = [fold] if fold else sorted(name for name, metrics in trained_folds.items() if metrics)
    if not folds or not all((run / FOLDS / name / CHECKPOINT).is_dir() for name in folds):
        raise SertuneError(f"{run} has no finished fold with a checkpoint to evaluate"
                           + (f" named {fold!r}" if fold else ""))
    out = Path(out) if out else run / "evaluations" / f"{corpus.name}-{part}"
    config = config_from_dict(saved_config(run))
    device = device or default_device()
    statistics = PretrainedStatistics(config, device) if config.head.normalization == "speaker" else None
    results = {}
    for name in folds:
        metrics, predictions = evaluate_fold(run, name, corpus, part, config=config, statistics=statistics,
                                             best_epoch=(trained_folds.get(name) or {}).get("best_epoch"),
                                             device=device)
        write_text_atomic(out / FOLDS / name / PREDICTIONS, predictions)
        write_json_atomic(out / FOLDS / name / METRICS, metrics)
        results[name] = metrics
    trained = json.loads((run / SUMMARY).read_text(encoding="utf-8")) if (run / SUMMARY).is_file() else {}
    metadata = read_metadata(run / FOLDS / folds[0] / CHECKPOINT)
    dimensions = corpus_dimensions(corpus, [d["name"] for d in metadata.get("dimensions", [])])
    summary = run_summary(
        corpus=corpus.name, corpus_dir=str(corpus.root), labels=list(metadata["labels"]),
        task=config.task.kind, dimensions=[d.to_dict() for d in dimensions],
        backbone=config.backbone, method=config.tuning.method,
        folds=results, parameters=trained.get("parameters"), checkpoint_bytes=trained.get("checkpoint_bytes"),
        failed_folds={},
    )
    summary["evaluation"] = {"run": str(run.resolve()), "trained_on": trained.get("corpus") or
                             Path(config.corpus).name, "part": part,
                             "left_out": {name: metrics["counts"]["left_out"] for name, metrics in results.items()}}
    write_json_atomic(out / SUMMARY, summary)
    return summary
