"""Training one fold: epochs on accelerate, selection by dev UAR, atomic checkpoints, resume.

After every finished epoch the fold directory holds the training state (`last/state.pt`), the
history (`metrics.json`) and, when dev UAR improved, the new best checkpoint. A killed fold resumes
from its last finished epoch and ends with the same numbers: every random draw of an epoch (crops,
augmentation, dropout, batch order) is seeded from (seed, fold, epoch), not carried over from
earlier epochs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from sertune.augment import WaveformAugment
from sertune.backbones import load_backbone
from sertune.checkpoint import WEIGHTS, save_classifier
from sertune.config import RunConfig
from sertune.corpora import Corpus, Fold, Utterance
from sertune.data import WaveformDataset, collate_features, collate_waveforms, make_loader
from sertune.dimensions import Dimension, corpus_dimensions, dimension_scores, normalized_targets, score_text
from sertune.errors import SertuneError
from sertune.evaluate import Predictions, predict_dataset, score
from sertune.feature_cache import FeatureCache, FeatureDataset, open_cache
from sertune.feature_statistics import SpeakerNormalizer
from sertune.fileio import atomic_path, write_json_atomic, write_text_atomic
from sertune.model import EmotionClassifier
from sertune.objective import Objective
from sertune.progress import progress_bar
from sertune.sampler import LengthBucketBatchSampler, balance_weights
from sertune.task_config import selection_score

log = logging.getLogger(__name__)
CHECKPOINT, STATE_DIR, METRICS, PREDICTIONS = "checkpoint", "last", "metrics.json", "predictions.csv"
STATE = f"{STATE_DIR}/state.pt"

# Called after each finished epoch with (fold name, epoch); tests use it to interrupt a run.
EpochCallback = Callable[[str, int], None]


class TrainingDiverged(SertuneError):
    """The training loss became NaN or infinite."""


def epoch_seed(seed: int, fold_index: int, epoch: int) -> int:
    """The seed of every random draw in one epoch of one fold."""
    return int(np.random.default_rng((seed, fold_index, epoch)).integers(2**62))


def class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    """Weights proportional to 1 / class count, scaled so a balanced set gets 1 each (absent class: 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class Split:
    """The clips of one fold part and how they are batched."""

    utterances: list[Utterance]
    dataset: Any
    collate: Callable


class FoldTrainer:
    """Trains, selects and tests one fold of a run; `run()` returns the fold's metrics.json content."""

    def __init__(
        self,
        accelerator: Accelerator,
        config: RunConfig,
        corpus: Corpus,
        fold: Fold,
        fold_index: int,
        directory: Path,
        on_epoch_end: EpochCallback | None = None,
        start_head: dict[str, torch.Tensor] | None = None,
        stage: str = "",
    ) -> None:
        """`start_head`: the head's tensors to start from (the head warm-up's); the fold then scores its
        starting model on dev as epoch 0. `stage` names a preliminary stage in progress bars."""
        self.accelerator = accelerator
        self.config = config
        self.train_config = config.train
        self.corpus = corpus
        self.fold = fold
        self.fold_index = fold_index
        self.directory = directory
        self.on_epoch_end = on_epoch_end
        self.label = f"{fold.name} {stage}".strip()
        task = config.task
        # The classes the model predicts (none in a dimensional run), and its dimensions with their scales.
        self.labels = corpus.labels if task.classifies else []
        self.dimensions = corpus_dimensions(corpus, task.predicted_dimensions)

        torch.manual_seed(self.train_config.seed)  # weights a checkpoint lacks are drawn alike in every fold
        backbone = load_backbone(config.backbone, device=accelerator.device)
        self.sample_rate = backbone.sample_rate
        store = config.cache_store
        # Training reads cached frames only when the encoder stays frozen (a warm-up's frames serve its own stage).
        self.uses_cache = store == "frames" and config.tuning.method == "frozen"
        # Cached features are memory-mapped arrays with nothing to decode: worker processes only cost
        # their start-up and compete for the cores (30 cached epochs: 142 s in-process vs 190 s with 2).
        self.loader_workers = 0 if self.uses_cache else self.train_config.workers
        # Clips encoded into the feature cache for this fold, and the seconds it took (not in any epoch).
        self.cache_fill: dict[str, Any] | None = None
        parts = {name: [corpus.by_id[i] for i in ids] for name, ids in fold.parts().items()}
        # A dimensional run leaves out clips without a score (multitask keeps them for the classes).
        self.unscored = {}
        if not task.classifies:
            names = task.predicted_dimensions
            for name, clips in parts.items():
                scored = ~np.isnan(dimension_scores(clips, names)).all(axis=1)
                kept = [u for u, keep in zip(clips, scored, strict=True) if keep]
                self.unscored[name] = len(clips) - len(kept)
                parts[name] = kept
            if any(self.unscored.values()):
                log.info("fold %s: %s clip(s) without %s scores left out", fold.name,
                         "/".join(f"{n} {part}" for part, n in self.unscored.items()), " or ".join(names))
            empty = [name for name, clips in parts.items() if not clips]
            if empty:
                raise SertuneError(f"fold {fold.name}: no clip of its {', '.join(empty)} part has a "
                                   f"{' or '.join(names)} score")
        normalization = config.head.normalization
        cache = None
        if store is not None:
            # Filled before any tuning method is attached: the pretrained encoder's features; a run that
            # tunes the encoder keeps only their moments, for the statistics.
            cache = open_cache(config, backbone)
            clips = [u for part in parts.values() for u in part]
            self._fill_cache(cache, backbone, clips, store)
        # Seeded here, after any encoding: the same initial weights in every fold, cache filled or not.
        torch.manual_seed(self.train_config.seed)
        self.classifier = EmotionClassifier(
            backbone, self.labels, config.tuning, config.head, dimensions=self.dimensions
        )
        self.classifier.to(accelerator.device)
        self.normalizer = SpeakerNormalizer(cache, parts, normalization) if normalization != "none" else None
        if self.normalizer is not None:
            self.classifier.head.set_statistics(*self.normalizer.training_statistics(accelerator.device))
        self.starts_trained = start_head is not None
        if start_head is not None:
            self.classifier.head.load_state_dict(start_head)
        self.splits = self._build_splits(parts, cache)
        self.sample_weights = training_weights(parts["train"], self.train_config.balance)
        train_labels = [corpus.labels.index(u.label) for u in parts["train"]]
        weighted = task.classifies and self.train_config.class_weights
        weights = class_weights(train_labels, len(self.labels)) if weighted else None
        self.objective = Objective(task, len(self.labels), weights)

        trainable = self.classifier.head if self.uses_cache else self.classifier
        parameters = [p for p in trainable.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            parameters, lr=self.train_config.lr, betas=self.train_config.betas,
            weight_decay=self.train_config.weight_decay,
        )
        self.model, self.optimizer = accelerator.prepare(trainable, optimizer)
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=self.train_config.plateau_factor,
                patience=self.train_config.plateau_patience, min_lr=self.train_config.min_lr,
            )
            if self.train_config.plateau_patience > 0 else None
        )
        self.augment = WaveformAugment(sample_rate=self.sample_rate) if self.train_config.augment else None
        self.history: list[dict[str, Any]] = []
        # `score`: `selection_score` of the dev metrics (None until an epoch has a defined one).
        self.best: dict[str, Any] = {"epoch": 0, "score": None, "dev": None}

    # -- data --------------------------------------------------------------------------------
    def _build_splits(self, parts: dict[str, list[Utterance]], cache: FeatureCache | None) -> dict[str, Split]:
        splits = self._datasets(parts, cache)
        if self.dimensions:
            for split in splits.values():
                split.dataset.targets = normalized_targets(split.utterances, self.dimensions)
        return splits

    def _datasets(self, parts: dict[str, list[Utterance]], cache: FeatureCache | None) -> dict[str, Split]:
        tc, backbone, labels = self.train_config, self.classifier.backbone, self.corpus.labels
        eval_samples = round(tc.eval_max_seconds * self.sample_rate)
        train_samples = round(tc.max_seconds * self.sample_rate)
        if not self.uses_cache:
            return {
                name: Split(clips, WaveformDataset(
                    clips, labels, sample_rate=self.sample_rate,
                    max_samples=train_samples if name == "train" else eval_samples,
                    random_crop=name == "train", seed=tc.seed,
                ), collate_waveforms)
                for name, clips in parts.items()
            }
        train_frames = int(backbone.frame_lengths(torch.tensor([train_samples]))[0])
        eval_frames = int(backbone.frame_lengths(torch.tensor([eval_samples]))[0])
        return {
            name: Split(clips, FeatureDataset(
                clips, labels, cache,
                max_frames=train_frames if name == "train" else eval_frames,
                max_seconds=tc.max_seconds if name == "train" else tc.eval_max_seconds,
                random_crop=name == "train", seed=tc.seed,
            ), collate_features)
            for name, clips in parts.items()
        }

    def _fill_cache(
        self, cache: FeatureCache, backbone: torch.nn.Module, utterances: list[Utterance], store: str
    ) -> None:
        accelerator = self.accelerator
        began = time.perf_counter()
        # Every process must see the same missing clips, or the shards would differ and leave some out.
        accelerator.wait_for_everyone()
        missing = cache.missing(utterances, store)
        if missing:
            what = "features" if store == "frames" else "feature statistics"
            with progress_bar(len(missing), f"{self.label} caching {what}", "clip",
                              disable=not accelerator.is_main_process) as bar:
                backbone.eval()
                cache.fill(
                    backbone, missing, self.corpus.labels, batch_size=self.train_config.eval_batch_size,
                    num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                    progress=lambda n: bar.update(n * accelerator.num_processes), store=store,
                )
        accelerator.wait_for_everyone()
        self.cache_fill = {"clips": len(missing), "seconds": time.perf_counter() - began}

    def _forward(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], split: str,
        generator: torch.Generator | None = None, *, unknown_speakers: bool = False,
    ) -> torch.Tensor:
        """Logits of a batch of `split`; with `unknown_speakers` every clip gets the training statistics."""
        inputs = batch["input"].to(self.accelerator.device, non_blocking=True)
        lengths = batch["length"].to(self.accelerator.device)
        statistics = None
        if self.normalizer is not None and not unknown_speakers:
            unknown_rate = self.train_config.unknown_speaker_rate if split == "train" else 0.0
            statistics = self.normalizer.batch(
                split, batch["index"], self.accelerator.device, unknown_rate=unknown_rate, generator=generator
            )
        if self.uses_cache:
            return model(inputs.unbind(1), lengths, statistics)
        return model(inputs, lengths, statistics)

    # -- training ----------------------------------------------------------------------------
    def _set_train_mode(self) -> None:
        self.model.train()
        backbone = self.classifier.backbone
        if self.config.tuning.method == "frozen":
            backbone.eval()  # a frozen encoder gives the same features as its cache would
        for module in backbone.fixed_modules():
            module.eval()

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the train part; returns (mean training loss, seconds spent)."""
        tc, accelerator = self.train_config, self.accelerator
        seed = epoch_seed(tc.seed, self.fold_index, epoch)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        split = self.splits["train"]
        split.dataset.set_epoch(epoch)
        sampler = LengthBucketBatchSampler(
            split.dataset.durations(), tc.batch_size, bucketing=tc.bucketing, shuffle=True, seed=seed,
            num_replicas=accelerator.num_processes, rank=accelerator.process_index, weights=self.sample_weights,
        )
        self._set_train_mode()
        began = time.perf_counter()
        total, count = 0.0, 0
        steps = len(sampler)
        bar = progress_bar(steps, f"{self.label} epoch {epoch}/{tc.epochs}", "step",
                           disable=not accelerator.is_main_process, leave=False)
        for step, batch in enumerate(make_loader(split.dataset, sampler, split.collate, self.loader_workers)):
            if batch is None:
                continue
            if self.augment is not None and not self.uses_cache:
                batch["input"] = self.augment(batch["input"], batch["length"], generator)
            sync = (step + 1) % tc.grad_accum == 0 or step + 1 == steps
            with accelerator.no_sync(self.model) if not sync else contextlib.nullcontext():
                outputs = self._forward(self.model, batch, "train", generator)
                loss = self.objective.loss(outputs, batch["label"], batch.get("target"))
                self._check_finite(loss, epoch, step)
                accelerator.backward(loss / tc.grad_accum)
            if sync:
                if tc.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(self.model.parameters(), tc.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            value = loss.item()
            total += value * len(batch["label"])
            count += len(batch["label"])
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", left=self._time_left(epoch))
        bar.close()
        sums = accelerator.reduce(torch.tensor([total, count], device=accelerator.device, dtype=torch.float64), "sum")
        return float(sums[0] / max(float(sums[1]), 1.0)), time.perf_counter() - began

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.accelerator.device)
        if float(self.accelerator.reduce(bad, "sum")) > 0:
            kept = f"the checkpoint of epoch {self.best['epoch']} is kept" if self.best["dev"] else "nothing was saved"
            raise TrainingDiverged(
                f"fold {self.fold.name}, epoch {epoch}, step {step + 1}: the training loss is {loss.item()}; "
                f"the fold stopped ({kept}). Lower --lr, try --precision no, or check the clips of this fold."
            )

    def _time_left(self, epoch: int) -> str:
        done = [row["seconds"] for row in self.history]
        if not done:
            return "?"
        seconds = float(np.mean(done)) * (self.train_config.epochs - epoch + 1)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    # -- evaluation --------------------------------------------------------------------------
    def _predict(self, name: str, *, unknown_speakers: bool = False) -> Predictions:
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        split = self.splits[name]
        return predict_dataset(
            self.accelerator, lambda batch: self._forward(model, batch, name, unknown_speakers=unknown_speakers),
            split.dataset, split.collate,
            batch_size=self.train_config.eval_batch_size, max_seconds=self.train_config.eval_max_seconds,
            workers=self.loader_workers,
        )

    def _audio_settings(self) -> dict[str, Any]:
        tc = self.train_config
        return {"sample_rate": self.sample_rate, "max_seconds": tc.max_seconds, "eval_max_seconds": tc.eval_max_seconds}

    # -- state on disk -----------------------------------------------------------------------
    def _save_epoch(self, epoch: int, improved: bool) -> None:
        if not self.accelerator.is_main_process:
            return
        if improved:
            save_classifier(self.classifier, self.directory / CHECKPOINT, audio=self._audio_settings())
        state = {
            "epoch": epoch,
            "model": {k: v.cpu() for k, v in self.classifier.trained_state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "history": self.history,
            "best": self.best,
            "cache_fill": self.cache_fill,
        }
        with atomic_path(self.directory / STATE) as tmp:
            torch.save(state, tmp)
        write_json_atomic(self.directory / METRICS, self._metrics(complete=False))

    def _resume(self) -> int:
        path = self.directory / STATE
        if not path.is_file():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # any unreadable state means the same to the user
            raise SertuneError(f"{path} is unreadable ({error}); delete it to restart fold {self.fold.name}") from None
        self.classifier.load_trained_state_dict(state["model"], origin=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history, self.best = state["history"], state["best"]
        if "uar" in self.best:  # a state saved before selection scores: dev UAR in percent
            self.best["score"] = self.best.pop("uar") / 100
        self.cache_fill = state.get("cache_fill") or self.cache_fill
        log.info("fold %s: resuming after epoch %d", self.fold.name, state["epoch"])
        return int(state["epoch"])

    def _metrics(self, complete: bool, **results: Any) -> dict[str, Any]:
        return {
            "fold": self.fold.name,
            "complete": complete,
            "epochs": self.history,
            "best_epoch": self.best["epoch"],
            **({"cache_fill": self.cache_fill} if self.cache_fill is not None else {}),
            **results,
        }

    # -- the fold ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train all epochs (continuing a killed fold), then test the best-dev-UAR epoch (0: the starting model
        of a warmed-up head)."""
        from torch.utils.tensorboard import SummaryWriter

        start = self._resume()
        writer = (
            SummaryWriter(str(self.directory / "tensorboard"), purge_step=start + 1)
            if self.accelerator.is_main_process else None
        )
        try:
            if self.starts_trained and not self.history:
                self._end_epoch(0, None, 0.0, time.perf_counter(), writer)  # the starting model, untuned
            for epoch in range(start + 1, self.train_config.epochs + 1):
                began = time.perf_counter()
                train_loss, train_seconds = self._train_epoch(epoch)
                self._end_epoch(epoch, train_loss, train_seconds, began, writer)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.fold.name, epoch)
        finally:
            if writer is not None:
                writer.close()
        return self._finish()

    def _end_epoch(
        self, epoch: int, train_loss: float | None, train_seconds: float, began: float, writer: Any
    ) -> None:
        """Score the model on dev, step the schedule, record the epoch and keep its checkpoint if it is the best."""
        dev = self._predict("dev")
        dev_loss = dev.loss(self.objective)
        dev_metrics = self._score(dev, "dev")
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and train_loss is not None:
            self.scheduler.step(dev_loss)
        row = {"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss,
               **({"dev_uar": dev_metrics["uar"]} if self.labels else {}),
               **({"dev_ccc": dev_metrics["ccc_mean"]} if self.dimensions else {}),
               "lr": lr, "train_seconds": train_seconds, "seconds": time.perf_counter() - began}
        self.history.append(row)
        self._select(epoch, dev_metrics)
        if writer is not None:
            for key in ("train_loss", "dev_loss", "dev_uar", "dev_ccc", "lr"):
                if row.get(key) is not None:
                    writer.add_scalar(key, row[key], epoch)
            writer.flush()
        self.accelerator.wait_for_everyone()

    def _select(self, epoch: int, dev_metrics: dict[str, Any]) -> None:
        """Keep this epoch's checkpoint if its dev score is the best so far (the first epoch's in any case:
        a dev part with an undefined score, e.g. constant attribute scores, must still leave a model)."""
        value = selection_score(dev_metrics)
        best = self.best["score"]
        improved = self.best["dev"] is None or (value is not None and (best is None or value > best))
        if improved:
            self.best = {"epoch": epoch, "score": value, "dev": dev_metrics}
        self._save_epoch(epoch, improved)

    def _score(self, predictions: Predictions, part: str) -> dict[str, Any]:
        return score(predictions, self.splits[part].utterances, self.labels, self.dimensions)

    def _finish(self) -> dict[str, Any]:
        tensors = load_file(str(self.directory / CHECKPOINT / WEIGHTS))
        self.classifier.load_trained_state_dict(tensors)
        test = self._predict("test")
        skipped = sorted(
            set(range(len(self.splits["test"].utterances))) - set(test.indices.tolist())
        )
        unknown = {}
        if self.normalizer is not None and self.normalizer.per_speaker:
            # What `predict` and `serve` give a clip of a speaker they know nothing about.
            alone = self._predict("test", unknown_speakers=True)
            unknown["test_unknown_speaker"] = self._score(alone, "test")
        result = self._metrics(
            complete=True,
            dev=self.best["dev"],
            test=self._score(test, "test"),
            **unknown,
            counts={
                **{name: len(split.utterances) for name, split in self.splits.items()},
                "test_skipped": [self.splits["test"].utterances[i].id for i in skipped],
                **({"unscored": self.unscored} if self.unscored else {}),
            },
        )
        if self.accelerator.is_main_process:
            text = predictions_csv(test, self.splits["test"].utterances, self.labels, self.dimensions)
            write_text_atomic(self.directory / PREDICTIONS, text)
            write_json_atomic(self.directory / METRICS, result)
            # The whole folder: a write killed in an earlier start may have left a temporary beside the state.
            shutil.rmtree(self.directory / STATE_DIR, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return result


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


def training_weights(utterances: list[Utterance], balance: str) -> np.ndarray | None:
    """Per-clip sampling weights for `train.balance` (None: a plain permutation each epoch)."""
    if balance == "none":
        return None
    keys = {"corpus": lambda u: u.extras.get("corpus", ""), "class": lambda u: u.label,
            "corpus+class": lambda u: (u.extras.get("corpus", ""), u.label)}[balance]
    return balance_weights([keys(u) for u in utterances])


def predictions_csv(
    predictions: Predictions, utterances: list[Utterance], labels: list[str], dimensions: Sequence[Dimension] = ()
) -> str:
    """One row per test clip: id, true label, and for classes the predicted label and the logits, for
    dimensions the true and predicted scores on the corpus scale (repr-exact floats; true '' if unscored)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["id", "label"]
    if labels:
        header += ["predicted", *(f"logit_{name}" for name in labels)]
    for dimension in dimensions:
        header += [f"true_{dimension.name}", f"predicted_{dimension.name}"]
    writer.writerow(header)
    for index, outputs in zip(predictions.indices, predictions.logits, strict=True):
        utterance = utterances[index]
        line = [utterance.id, utterance.label]
        if labels:
            logits = outputs[: len(labels)]
            line += [labels[int(np.argmax(logits))], *(repr(float(x)) for x in logits)]
        for column, dimension in enumerate(dimensions):
            predicted = float(dimension.denormalize(float(outputs[len(labels) + column])))
            line += [score_text(utterance.extras, dimension.name), repr(predicted)]
        writer.writerow(line)
    return out.getvalue()
