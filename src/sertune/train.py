"""A training run: the run directory, its folds one after another, and the summary over folds.

The same code runs on CPU, one GPU, or many processes under `accelerate launch`; only the main
process writes files. See docs/runs.md for what the run directory holds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from sertune.backbones import load_backbone
from sertune.checkpoint import WEIGHTS, read_metadata
from sertune.config import RunConfig, config_from_dict, dump_yaml, read_yaml
from sertune.corpora import Corpus, Fold, load_corpus
from sertune.corpora.folds import overlap_message, speaker_overlaps
from sertune.corpora.manifest import FOLDS as FOLDS_FILE
from sertune.dimensions import corpus_dimensions
from sertune.errors import SertuneError
from sertune.fileio import remove_stale_temporaries, write_json_atomic, write_text_atomic
from sertune.head_config import upgrade_saved_head
from sertune.head_warmup import warm_up_head
from sertune.model import EmotionClassifier
from sertune.model_card import write_run_cards
from sertune.precision import resolve_precision
from sertune.runs import run_summary
from sertune.trainer import CHECKPOINT, METRICS, STATE, EpochCallback, FoldTrainer, TrainingDiverged, finished_fold

log = logging.getLogger(__name__)
CONFIG, SUMMARY, FOLDS = "config.yaml", "summary.json", "folds"
# Below this many optimiser steps per fold a run is warned about (a rule of thumb: a run of 60 steps on a
# 384-clip corpus stayed at chance on dev for its first 18 steps and lost to the linear probe).
MIN_STEPS = 300


def select_folds(corpus: Corpus, wanted: list[str] | None) -> list[tuple[int, Fold]]:
    """The folds to run with their position in the protocol: all, or those named / numbered (1-based)."""
    indexed = list(enumerate(corpus.folds))
    if not wanted:
        return indexed
    by_name = {fold.name: (i, fold) for i, fold in indexed}
    chosen = []
    for item in wanted:
        if item in by_name:
            chosen.append(by_name[item])
        elif item.isdigit() and 1 <= int(item) <= len(indexed):
            chosen.append(indexed[int(item) - 1])
        else:
            names = ", ".join(by_name)
            raise SertuneError(f"fold {item!r} is not in {corpus.name}'s protocol ({names}, or 1..{len(indexed)})")
    unique = {index: (index, fold) for index, fold in chosen}
    return [unique[index] for index in sorted(unique)]


def check_run_directory(out: Path, config: RunConfig, *, resume: bool) -> None:
    """Refuse an `out` that cannot take this run (a file; a run, unless resumed with its own settings).

    A config.yaml without any trained fold is what a failed start left: a plain command reuses it.
    """
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise SertuneError(f"--out {out}: {path} is a file, not a directory; choose another --out")
            break
    saved_path = out / CONFIG
    trained = has_trained_fold(out)
    if saved_path.is_file() and resume:
        wanted = _flatten(config.to_dict())
        saved = _flatten(config_from_dict(saved_config(out)).to_dict())
        differences = [key for key, value in wanted.items() if value != saved.get(key)]
        if differences:
            raise SertuneError(
                f"--resume with settings that differ from {saved_path}: {', '.join(differences)}; "
                "resume with the saved settings (omit those options), or start a new --out"
            )
    elif saved_path.is_file() and trained:
        raise SertuneError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    elif resume and trained:
        raise SertuneError(f"{out} has fold results but no {CONFIG}; cannot tell which settings to resume with")


def has_trained_fold(out: Path) -> bool:
    """Whether any fold of the run in `out` has saved a checkpoint, a training state or metrics."""
    return any(any(out.glob(f"{FOLDS}/*/{name}")) for name in (CHECKPOINT, STATE, METRICS))


def check_folds(corpus: Corpus, folds: list[Fold], *, allow_speaker_overlap: bool) -> None:
    """Refuse folds with an empty part, and folds that share a speaker between parts unless allowed."""
    origin = corpus.root / FOLDS_FILE
    for fold in folds:
        for part, ids in fold.parts().items():
            if not ids:
                raise SertuneError(
                    f"{origin}: fold {fold.name} has an empty {part} part; give it utterances, or leave the fold "
                    "out with --folds"
                )
    problems = speaker_overlaps(folds, corpus.by_id)
    if not problems:
        return
    message = f"{origin}: {overlap_message(problems)}"
    if not allow_speaker_overlap:
        raise SertuneError(f"{message}; correct the folds, or pass --allow-speaker-overlap to train on them anyway")
    log.warning("%s; training anyway (allow_speaker_overlap)", message)


def optimiser_steps(config: RunConfig, train_clips: int, num_processes: int = 1) -> int:
    """How many optimiser steps the head takes on `train_clips` clips with `config`'s epochs and batches
    (the head warm-up's included)."""
    tc = config.train
    batches = math.ceil(train_clips / (tc.batch_size * num_processes))
    epochs = tc.epochs + (tc.head_warmup_epochs if config.warms_up_head else 0)
    return epochs * math.ceil(batches / tc.grad_accum)


def warn_if_few_steps(config: RunConfig, folds: list[Fold], num_processes: int = 1) -> int | None:
    """Log a warning when the smallest fold trains for fewer than MIN_STEPS optimiser steps; returns that count."""
    steps = min(optimiser_steps(config, len(fold.train), num_processes) for fold in folds)
    if steps >= MIN_STEPS:
        return None
    tc = config.train
    warmup = f" after {tc.head_warmup_epochs} of head warm-up" if config.warms_up_head else ""
    log.warning(
        "this run takes only %d optimiser steps per fold (%d epochs%s, batch %d): a small corpus needs more steps "
        "than the study's recipe gives it; heads trained for fewer than %d steps often stay near chance or lose "
        "to the linear probe. Consider more --epochs or a smaller --batch-size (docs/training.md).",
        steps, tc.epochs, warmup, tc.batch_size * tc.grad_accum, MIN_STEPS,
    )
    return steps


def check_model(config: RunConfig, corpus: Corpus) -> None:
    """Build the classifier once: a corpus without the task's scores, a backbone that does not load, or
    tuning it refuses, fails here.

    Each fold builds its own classifier later (the tuning changes the encoder in place).
    """
    dimensions = corpus_dimensions(corpus, config.task.predicted_dimensions)
    labels = corpus.labels if config.task.classifies else []
    EmotionClassifier(load_backbone(config.backbone), labels, config.tuning, config.head, dimensions=dimensions)


def write_run_config(out: Path, config: RunConfig) -> None:
    """Create `out` and save the resolved config there; clear what writes killed in a previous start left."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG, dump_yaml(config))
    stale = remove_stale_temporaries(out)
    if stale:
        log.info("removed %d temporary file(s) of writes that an earlier process did not finish", len(stale))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def saved_config(out: Path) -> dict[str, Any]:
    """The settings a run directory was started with (for `--resume` without repeating them)."""
    path = out / CONFIG
    if not path.is_file():
        raise SertuneError(f"{path} not found: {out} is not a run directory to resume")
    settings = read_yaml(path)
    if isinstance(settings.get("train"), dict):
        # Runs saved before the head warm-up existed trained from a random head: resume them that way.
        settings["train"].setdefault("head_warmup_epochs", 0)
    if isinstance(settings.get("head"), dict):
        try:
            upgrade_saved_head(settings["head"])
        except ValueError as error:
            raise SertuneError(f"{path}: {error}") from None
    return settings


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator with `precision`, also when an earlier run in this process used another one.

    accelerate keeps one precision per process; its settings (not the process group) are reset here
    so that one Python session can train runs with different precisions one after another.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision)


def with_resolved_precision(config: RunConfig, accelerator: Accelerator | None) -> RunConfig:
    """`config` with precision `auto` replaced by what this machine's device runs fast (logged)."""
    if accelerator is not None:
        device_type = accelerator.device.type
    else:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision, reason = resolve_precision(config.train.precision, device_type)
    if config.train.precision == "auto":
        log.info("precision: %s (%s)", precision, reason)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))


def train_run(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train and test every selected fold of `config` into `out`; returns (and writes) the summary."""
    out = Path(out)
    config = with_resolved_precision(config, accelerator)
    tc = config.train
    accelerator = accelerator or make_accelerator(tc.precision)
    # Everything is checked before the first file is written, so that a failed start leaves nothing.
    corpus = load_corpus(config.corpus)
    folds = select_folds(corpus, config.folds)
    check_folds(corpus, [fold for _, fold in folds], allow_speaker_overlap=tc.allow_speaker_overlap)
    check_run_directory(out, config, resume=resume)
    check_model(config, corpus)
    if accelerator.is_main_process:
        warn_if_few_steps(config, [fold for _, fold in folds], accelerator.num_processes)
        write_run_config(out, config)
    accelerator.wait_for_everyone()

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for index, fold in folds:
        directory = out / FOLDS / fold.name
        done = finished_fold(directory)
        if done is not None:
            log.info("fold %s already finished; skipping", fold.name)
            results[fold.name] = done
            continue
        start_head = None
        if config.warms_up_head and not (directory / STATE).is_file():
            set_seed(tc.seed)
            start_head = warm_up_head(accelerator, config, corpus, fold, index, directory)
        set_seed(tc.seed)
        trainer = FoldTrainer(accelerator, config, corpus, fold, index, directory, on_epoch_end, start_head)
        try:
            results[fold.name] = trainer.run()
        except TrainingDiverged as error:
            failures[fold.name] = str(error)
            log.error("%s", error)
        if accelerator.is_main_process and fold.name in results:
            print(fold_line(fold.name, results[fold.name]), flush=True)
    summary = build_summary(out, config, corpus, results, failures)
    if accelerator.is_main_process:
        write_json_atomic(out / SUMMARY, summary)
        checkpoints = [out / FOLDS / name / CHECKPOINT for name in results]
        sources = [read_metadata(path)["backbone"]["source"] for path in checkpoints if (path / WEIGHTS).is_file()]
        if sources:
            write_run_cards(out, summary, corpus.protocol, sources[0])
    if failures:
        raise SertuneError(f"{len(failures)} fold(s) failed: " + " | ".join(failures.values()))
    return summary


def fold_line(name: str, metrics: dict[str, Any]) -> str:
    """What is printed when a fold finishes: its test UAR and/or CCC, and as `predict` sees a clip if that
    differs."""
    line = f"fold {name}: test {headline(metrics['test'])} at epoch {metrics['best_epoch']}"
    if "test_unknown_speaker" in metrics:
        line += f" ({headline(metrics['test_unknown_speaker'])} with each clip's speaker unknown)"
    return line


def headline(metrics: dict[str, Any]) -> str:
    """A part's main figures in a few words: `UAR 61.2%`, `CCC arousal 0.712, valence 0.301`, or both."""
    parts = []
    if "uar" in metrics:
        parts.append(f"UAR {metrics['uar']:.1f}%")
    if "dimensions" in metrics:
        values = ", ".join(
            f"{name} {'undefined' if scores['ccc'] is None else format(scores['ccc'], '.3f')}"
            for name, scores in metrics["dimensions"].items()
        )
        parts.append(f"CCC {values}")
    return "; ".join(parts)


def build_summary(
    out: Path, config: RunConfig, corpus: Corpus, results: dict[str, dict[str, Any]], failures: dict[str, str]
) -> dict[str, Any]:
    """summary.json: per-fold results and their mean and std (see docs/runs.md)."""
    parameters, checkpoint_bytes = None, None
    for name in results:
        checkpoint = out / FOLDS / name / CHECKPOINT
        if (checkpoint / WEIGHTS).is_file():
            parameters = read_metadata(checkpoint)["parameters"]
            checkpoint_bytes = (checkpoint / WEIGHTS).stat().st_size
            break
    dimensions = corpus_dimensions(corpus, config.task.predicted_dimensions)
    return run_summary(
        corpus=corpus.name, corpus_dir=str(corpus.root), labels=corpus.labels if config.task.classifies else [],
        task=config.task.kind, dimensions=[d.to_dict() for d in dimensions],
        backbone=config.backbone, method=config.tuning.method, folds=results,
        parameters=parameters, checkpoint_bytes=checkpoint_bytes, failed_folds=failures,
    )
