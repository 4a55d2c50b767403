"""Linear probing, then fine-tuning: the head of an encoder-tuning run starts trained on frozen features.

A LoRA (or adapter, prompt, full) fold first trains the head alone on the pretrained encoder's cached
layer outputs for `train.head_warmup_epochs` epochs: a `frozen` fold of its own, in
`folds/<fold>/head_warmup/`, that resumes and is selected on dev like any fold. The tuned fold then
starts from that head. LoRA's update starts at zero, so the starting model is exactly the frozen one;
the fold scores it on dev as epoch 0, and the selection keeps it when no tuned epoch beats it on dev.
A random head would instead send its large early gradients into the encoder while it learns to read it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from sertune.checkpoint import WEIGHTS
from sertune.config import RunConfig
from sertune.corpora import Corpus, Fold
from sertune.trainer import CHECKPOINT, FoldTrainer, finished_fold

log = logging.getLogger(__name__)
HEAD_WARMUP = "head_warmup"


def head_stage_config(config: RunConfig) -> RunConfig:
    """The settings of the warm-up: the run's own, with a frozen encoder for `head_warmup_epochs` epochs."""
    tc = config.train
    return dataclasses.replace(
        config,
        tuning=dataclasses.replace(config.tuning, method="frozen"),
        train=dataclasses.replace(tc, epochs=tc.head_warmup_epochs, head_warmup_epochs=0),
    )


def warm_up_head(
    accelerator: Accelerator, config: RunConfig, corpus: Corpus, fold: Fold, fold_index: int, fold_directory: Path
) -> dict[str, torch.Tensor]:
    """Train (or finish, or read back) the fold's head on frozen features; returns the selected head's tensors
    under the names `EmotionClassifier.head.state_dict()` uses."""
    directory = fold_directory / HEAD_WARMUP
    if finished_fold(directory) is None:
        stage = FoldTrainer(accelerator, head_stage_config(config), corpus, fold, fold_index, directory,
                            stage="head warm-up")
        metrics = stage.run()
        log.info("fold %s: head warm-up on frozen features selected epoch %d (dev UAR %s)", fold.name,
                 metrics["best_epoch"], metrics["dev"].get("uar"))
    tensors = load_file(str(directory / CHECKPOINT / WEIGHTS))
    return {name.removeprefix("head."): tensor for name, tensor in tensors.items()}
