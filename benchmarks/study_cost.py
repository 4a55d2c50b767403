"""What a full IEMOCAP 5-fold LoRA run of the study's recipe costs, projected from one measured step.

One training step of the study's setting is measured on this machine: a randomly initialised
encoder of the chosen architecture (default WavLM Base+; timing does not depend on the weights),
LoRA-16 on both FFN linears of every layer + the study's head, a batch of `--batch` noise clips of
6 s, forward + backward + Adam step, fp32. torch's FLOP counter counts the step's floating-point
operations. The projection multiplies by the study's step count on IEMOCAP (5,531 clips in the
4-class set; a leave-one-session-out fold trains on 3 sessions, about 3,300 clips; 30 epochs of
batch 32; dev evaluation not counted): CPU hours from the measured time, and GPU hours from the
counted FLOPs at an assumed sustained rate (`--gpu-tflops`, default 100 TFLOP/s: about a third of
an A100's bf16 peak). The GPU figure is a projection, not a measurement.

    python benchmarks/study_cost.py                    # WavLM Base+, batch 8, 3 timed steps
    python benchmarks/study_cost.py --backbone whisper-base --gpu-tflops 200
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _timing import environment, setup
from sertune.backbones import build_backbone, get_spec
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

IEMOCAP_TRAIN_CLIPS = 3300  # per leave-one-session-out fold (3 of 5 sessions of 5,531 clips)
FOLDS, EPOCHS, STUDY_BATCH, SECONDS = 5, 30, 32, 6.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="wavlm-base-plus", help="architecture (short name)")
    parser.add_argument("--batch", type=int, default=8, help="clips per measured step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-tflops", type=float, default=100.0, help="assumed sustained GPU throughput")
    args = parser.parse_args()
    setup(args.threads)
    print(environment(args.threads))

    torch.manual_seed(0)
    backbone = build_backbone(get_spec(args.backbone))
    classifier = EmotionClassifier(backbone, ["neutral", "angry", "sad", "happy"], TuningConfig(method="lora"))
    optimizer = torch.optim.Adam([p for p in classifier.parameters() if p.requires_grad], lr=5e-4)
    samples = round(SECONDS * backbone.sample_rate)
    waves = 0.1 * torch.randn(args.batch, samples)
    lengths = torch.full((args.batch,), samples)
    labels = torch.arange(args.batch) % 4
    classifier.train()
    for module in backbone.fixed_modules():
        module.eval()

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(classifier(waves, lengths), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    flops = counter.get_total_flops()
    times = []
    for _ in range(args.steps):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    seconds = statistics.median(times)

    study_steps = FOLDS * EPOCHS * math.ceil(IEMOCAP_TRAIN_CLIPS / STUDY_BATCH)
    measured_per_study_step = STUDY_BATCH / args.batch  # a study step is this many measured steps
    cpu_hours = study_steps * measured_per_study_step * seconds / 3600
    gpu_hours = study_steps * measured_per_study_step * flops / (args.gpu_tflops * 1e12) / 3600
    print(f"{args.backbone} LoRA-16 + head, {args.batch} x {SECONDS:.0f} s, fp32: "
          f"{seconds:.2f} s per step (median of {args.steps}: {', '.join(f'{t:.2f}' for t in times)}), "
          f"{flops / 1e12:.2f} TFLOP per step")
    print(f"IEMOCAP 5 folds x {EPOCHS} epochs x batch {STUDY_BATCH}: {study_steps:,} optimiser steps")
    print(f"  this CPU ({args.threads} threads): {cpu_hours:,.0f} h of training (measured step time)")
    print(f"  one GPU at {args.gpu_tflops:.0f} TFLOP/s sustained: {gpu_hours * 60:,.0f} min of training "
          "(projected from the FLOP count; data loading and dev evaluation not included)")


if __name__ == "__main__":
    main()
