"""A training run: the run directory, its folds one after another, and the summary over folds.

The same code runs on CPU, one GPU, or many processes under `accelerate launch`; only the main
process writes files. See docs/runs.md for what the run directory holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from sertune.checkpoint import WEIGHTS, read_metadata
from sertune.config import RunConfig, config_from_dict, dump_yaml, read_yaml
from sertune.corpora import Corpus, Fold, load_corpus
from sertune.errors import SertuneError
from sertune.fileio import write_json_atomic, write_text_atomic
from sertune.runs import run_summary
from sertune.trainer import CHECKPOINT, METRICS, EpochCallback, FoldTrainer, TrainingDiverged

log = logging.getLogger(__name__)
CONFIG, SUMMARY, FOLDS = "config.yaml", "summary.json", "folds"


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


def prepare_run_directory(out: Path, config: RunConfig, *, resume: bool) -> None:
    """Check `out` against --resume and save the resolved config there."""
    saved_path = out / CONFIG
    if saved_path.is_file():
        if not resume:
            raise SertuneError(
                f"{out} already holds a run; pass --resume to continue it, or choose another --out"
            )
        wanted = _flatten(config.to_dict())
        saved = _flatten(config_from_dict(read_yaml(saved_path)).to_dict())
        differences = [key for key, value in wanted.items() if value != saved.get(key)]
        if differences:
            raise SertuneError(
                f"--resume with settings that differ from {saved_path}: {', '.join(differences)}; "
                "resume with the saved settings (omit those options), or start a new --out"
            )
    elif resume and any(out.glob(f"{FOLDS}/*/{METRICS}")):
        raise SertuneError(f"{out} has fold results but no {CONFIG}; cannot tell which settings to resume with")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved_path, dump_yaml(config))


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
    return read_yaml(path)


def finished_fold(directory: Path) -> dict[str, Any] | None:
    """The fold's metrics if it completed, else None."""
    path = directory / METRICS
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # written atomically, so this is damage from outside: retrain the fold
    return metrics if metrics.get("complete") else None


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator with `precision`, also when an earlier run in this process used another one.

    accelerate keeps one precision per process; its settings (not the process group) are reset here
    so that one Python session can train runs with different precisions one after another.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision)


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
    tc = config.train
    accelerator = accelerator or make_accelerator(tc.precision)
    corpus = load_corpus(config.corpus)
    folds = select_folds(corpus, config.folds)
    if accelerator.is_main_process:
        prepare_run_directory(out, config, resume=resume)
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
        set_seed(tc.seed)
        trainer = FoldTrainer(accelerator, config, corpus, fold, index, directory, on_epoch_end)
        try:
            results[fold.name] = trainer.run()
        except TrainingDiverged as error:
            failures[fold.name] = str(error)
            log.error("%s", error)
        if accelerator.is_main_process and fold.name in results:
            uar = results[fold.name]["test"]["uar"]
            print(f"fold {fold.name}: test UAR {uar:.1f}% at epoch {results[fold.name]['best_epoch']}", flush=True)
    summary = build_summary(out, config, corpus, results, failures)
    if accelerator.is_main_process:
        write_json_atomic(out / SUMMARY, summary)
    if failures:
        raise SertuneError(f"{len(failures)} fold(s) failed: " + " | ".join(failures.values()))
    return summary


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
    return run_summary(
        corpus=corpus.name, corpus_dir=str(corpus.root), labels=corpus.labels,
        backbone=config.backbone, method=config.tuning.method, folds=results,
        parameters=parameters, checkpoint_bytes=checkpoint_bytes, failed_folds=failures,
    )
