"""What each tuning method costs per training step, and what merged LoRA costs at inference.

For each encoder (Whisper tiny.en and base with their real offline weights, and a randomly
initialised WavLM Base+ sized model) and one batch (default 8 x 6 s), measured side by side in one
run, interleaved round by round after a warm-up:

Training step = forward + cross-entropy + backward + Adam step (the study's
lr 5e-4, betas (0.9, 0.98), weight decay 1e-4) over the trainable tensors only, in train mode.
Every step time is divided by that of the *reference* of the same round:

    reference = `frozen` with gradients flowing through the encoder: the method `frozen`
    (encoder weights frozen, only the head trains) plus a hook that makes the input of the first
    transformer layer require grad. The backward pass therefore runs through every transformer
    layer (activation gradients, as for any PEFT method), but no encoder weight gets a gradient
    and the optimiser steps only the head. The convolutional front end is outside the backward
    for the reference and for every PEFT method alike (it is frozen and its input needs no grad).

So a ratio of 1.05 means "5% more than training that backpropagates through the whole encoder
stack": the cost of the method's own tensors. The reference backpropagates down to layer 0's input,
i.e. through layer 0's attention too; a method whose lowest trainable tensor sits after that
attention (LoRA or an adapter on the FFN) does not need that part, so it may come in a little under
1.0 (on Whisper tiny.en, stopping the reference's gradient at layer 1 instead saves about 10%).
Plain `frozen` (backward through the head only) and `full` (every encoder weight trains; conv front
end frozen) are offered as rows too.

Inference = `backbone.encode` in inference mode and eval mode, divided by the bare encoder's
(a fresh backbone with nothing attached): LoRA-16 (FFN) merged with `EmotionClassifier.merge()`
(its lora_B perturbed first so the merge really changes the weights) and, for comparison, the
same LoRA unmerged. Goal: merged within 5% of the bare encoder.

    python benchmarks/peft_overhead.py                   # default subset, about 10 min on 2 cores
    python benchmarks/peft_overhead.py --all             # every method on every model (long)
    python benchmarks/peft_overhead.py --models whisper-tiny.en --methods lora prompt --repeats 5
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable

import torch

from _timing import (
    environment,
    fastest_ratio,
    interleave,
    load_average,
    log,
    median,
    paired_ratios,
    setup,
    spread,
    table,
)
from sertune.backbones import SPECS, Backbone, build_backbone, load_backbone
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

SAMPLE_RATE = 16000
LABELS = ["neutral", "angry", "sad", "happy"]
REFERENCE = "frozen+grad"
ALL_METHODS = (
    "frozen",
    "full",
    "lora",
    "adapter",
    "parallel-adapter",
    "prompt",
    "lora+prompt",
    "lora+adapter",
    "combined",
)
# The default run keeps to about 10 minutes on 2 CPU cores: WavLM Base+ steps take seconds each.
DEFAULT_METHODS = {
    "whisper": ("frozen", "lora", "adapter", "parallel-adapter", "prompt", "combined"),
    "wavlm": ("lora", "adapter", "prompt"),
}
DEFAULT_MODELS = ("whisper-tiny.en", "whisper-base", "wavlm-base-plus")
# Timed rounds per family unless --repeats / --inference-repeats say otherwise (Whisper steps are cheap).
DEFAULT_REPEATS = {"whisper": 5, "wavlm": 3}
DEFAULT_INFERENCE_REPEATS = {"whisper": 8, "wavlm": 4}
# Real weights for these; a random model of the registry's size for the rest (no download needed).
PRETRAINED = ("whisper-tiny.en", "whisper-base")


def make_backbone(name: str) -> Backbone:
    """A fresh backbone: real offline weights for Whisper, a seeded random model otherwise."""
    if name in PRETRAINED:
        return load_backbone(name)
    backbone = build_backbone(SPECS[name], seed=0)
    backbone.requires_grad_(False)
    return backbone.eval()


def make_batch(batch: int, seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equal-length noise clips (timing does not depend on the content), lengths and class targets."""
    generator = torch.Generator().manual_seed(seed)
    samples = round(seconds * SAMPLE_RATE)
    waveforms = 0.1 * torch.randn(batch, samples, generator=generator)
    targets = torch.arange(batch) % len(LABELS)
    return waveforms, torch.full((batch,), samples, dtype=torch.long), targets


def _input_requires_grad(module: torch.nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: make the first transformer layer's input a leaf that requires grad."""
    if not torch.is_grad_enabled():
        return None
    return (args[0].detach().requires_grad_(), *args[1:])


def make_classifier(model_name: str, method: str) -> EmotionClassifier:
    """A classifier in train mode; `frozen+grad` is the reference described in the module docstring."""
    backbone = make_backbone(model_name)
    classifier = EmotionClassifier(backbone, LABELS, TuningConfig(method="frozen" if method == REFERENCE else method))
    if method == REFERENCE:
        backbone.layers[0].register_forward_pre_hook(_input_requires_grad)
    return classifier.train()


def training_step(
    classifier: EmotionClassifier, waveforms: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
) -> Callable[[], object]:
    """One optimiser step of the study's recipe on the classifier's trainable tensors."""
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=5e-4, betas=(0.9, 0.98), weight_decay=1e-4)

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(classifier(waveforms, lengths), targets)
        loss.backward()
        optimizer.step()
        return loss

    return step


def trained_count(classifier: EmotionClassifier) -> int:
    return sum(p.numel() for p in classifier.parameters() if p.requires_grad)


def lora_classifier(model_name: str, *, merged: bool) -> EmotionClassifier:
    """A classifier with LoRA-16 on the FFN linears (lora_B perturbed), merged or not, in eval mode."""
    classifier = EmotionClassifier(make_backbone(model_name), LABELS, TuningConfig(method="lora"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.01 * torch.randn(parameter.shape, generator=generator))
    if merged:
        classifier.merge()
        leftover = [name for name, _ in classifier.backbone.named_parameters() if "lora_" in name]
        if leftover:
            raise RuntimeError(f"merge left LoRA tensors behind: {leftover[:3]}")
    return classifier.eval()


def lora_backbone(model_name: str, *, merged: bool) -> Backbone:
    """The backbone of `lora_classifier`: LoRA-16 on the FFN, merged or not, in eval mode."""
    return lora_classifier(model_name, merged=merged).backbone


def inference_call(module: torch.nn.Module, waveforms: torch.Tensor, lengths: torch.Tensor) -> Callable[[], object]:
    """One forward of `module` (a backbone encodes, a classifier classifies) on the batch, in inference mode."""

    def call() -> object:
        with torch.inference_mode():
            return module(waveforms, lengths)

    return call


def measure_training(
    model_name: str, methods: list[str], batch: tuple[torch.Tensor, ...], repeats: int, warmup: int
) -> list[list[str]]:
    names = [REFERENCE, *[m for m in methods if m != REFERENCE]]
    classifiers = {name: make_classifier(model_name, name) for name in names}
    steps = {name: training_step(classifier, *batch) for name, classifier in classifiers.items()}
    times = interleave(
        steps, repeats=repeats, warmup=warmup, progress=lambda text: log(f"{model_name} training: {text}")
    )
    rows = []
    for name in names:
        ratios = paired_ratios(times, name, REFERENCE)
        label = f"{name} (reference)" if name == REFERENCE else name
        rows.append(
            [
                model_name,
                label,
                f"{trained_count(classifiers[name]):,}",
                str(repeats),
                f"{median(times[name]):.3f}",
                f"{median(ratios):.3f}",
                spread(ratios),
                f"{fastest_ratio(times, name, REFERENCE):.3f}",
            ]
        )
    return rows


def measure_inference(model_name: str, batch: tuple[torch.Tensor, ...], repeats: int, warmup: int) -> list[list[str]]:
    waveforms, lengths, _ = batch
    backbones = {
        "bare encoder (reference)": make_backbone(model_name),
        "LoRA-16 merged": lora_backbone(model_name, merged=True),
        "LoRA-16 unmerged": lora_backbone(model_name, merged=False),
    }
    calls = {name: inference_call(backbone, waveforms, lengths) for name, backbone in backbones.items()}
    times = interleave(
        calls, repeats=repeats, warmup=warmup, progress=lambda text: log(f"{model_name} inference: {text}")
    )
    reference = next(iter(backbones))
    rows = []
    for name in backbones:
        ratios = paired_ratios(times, name, reference)
        fastest = fastest_ratio(times, name, reference)
        rows.append(
            [
                model_name,
                name,
                str(repeats),
                f"{median(times[name]):.3f}",
                f"{median(ratios):.3f}",
                spread(ratios),
                f"{fastest:.3f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(SPECS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        help="methods to time on every model (default: a per-family subset, see DEFAULT_METHODS)",
    )
    parser.add_argument("--all", action="store_true", help="every method on every model (WavLM: long)")
    parser.add_argument("--skip", nargs="+", choices=("training", "inference"), default=[])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--repeats", type=int, help="timed training rounds, each runs every method once (default: 5 Whisper, 3 WavLM)"
    )
    parser.add_argument("--inference-repeats", type=int, help="timed inference rounds (default: 8 Whisper, 4 WavLM)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.all and args.methods:
        parser.error("--all and --methods exclude each other")

    setup(args.threads)
    print(environment(args.threads))
    print(
        f"# batch {args.batch} x {args.seconds:g}-s clips, fp32; median over interleaved rounds (count in the tables) "
        f"after {args.warmup} warm-up; ratios are paired within each round (range = min-max over rounds)"
    )
    batch = make_batch(args.batch, args.seconds)
    training_rows: list[list[str]] = []
    inference_rows: list[list[str]] = []
    for model_name in args.models:
        family = SPECS[model_name].family
        methods = list(ALL_METHODS if args.all else args.methods or DEFAULT_METHODS.get(family, ALL_METHODS))
        if "training" not in args.skip:
            repeats = args.repeats or DEFAULT_REPEATS.get(family, 3)
            training_rows += measure_training(model_name, methods, batch, repeats, args.warmup)
            gc.collect()
        if "inference" not in args.skip:
            repeats = args.inference_repeats or DEFAULT_INFERENCE_REPEATS.get(family, 4)
            inference_rows += measure_inference(model_name, batch, repeats, args.warmup)
            gc.collect()
    if training_rows:
        print(
            f"\n## Training step (forward + backward + Adam) / reference step.\n"
            f"# reference = {REFERENCE}: encoder weights frozen, the first transformer layer's input requires "
            "grad,\n# so backward runs through every transformer layer; only the head is stepped. A method whose\n"
            "# lowest trainable tensor sits after layer 0's attention (LoRA or adapter on the FFN) skips part of\n"
            "# layer 0's backward and may come in slightly under 1.0; 'frozen' backpropagates through the head only."
        )
        header = ["model", "method", "trained params", "rounds", "step s", "/ reference", "ratio range"]
        header.append("fastest/fastest")
        print(table(header, training_rows, text_columns=2))
    if inference_rows:
        print("\n## Inference (encoder forward, inference mode) / bare encoder. Goal: merged LoRA <= 1.05.")
        header = ["model", "encoder", "rounds", "forward s", "/ bare", "ratio range", "fastest/fastest"]
        print(table(header, inference_rows, text_columns=2))
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
