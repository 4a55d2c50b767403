"""Candidate speed-ups of the training step, each timed against the form it would replace, in one run.

What `roofline.py`'s profile of a Whisper tiny.en LoRA-16 step (8 x 6 s, fp32) pointed at, and what
was kept (see benchmarks/README.md, "step_candidates.py"):

* `head frames`: the head's three 1x1 Conv1d applied as linear maps on time-major frames
  (`EmotionHead._frame_layers`, kept) against the Conv1d modules on transposed frames, forward +
  backward (train) and forward alone (eval), on 5 hidden states of [8, 300, 384];
* `reflect pad`: the log-mel's reflect padding of a batch of equal-length clips in one call
  (kept) against one call per clip;
* `attention`: the whole training step with Whisper's attention as transformers' `eager` path,
  and as SDPA restricted to its math kernel, against SDPA as the library picks it (sertune's
  default, kept);
* `fused LoRA`: the whole training step with every LoRA linear computed as two `addmm` (base
  product with bias, then the low-rank product added into it, scaled: `FusedLoraLinear`, kept)
  against peft's own forward (base output + separate low-rank output * scaling);
* `compile` (with `--compile`): the step with every transformer layer and the head under
  `torch.compile`; its compile time is printed beside the ratio.

Every figure is the new or alternative form / the form it would replace (for kept changes: today's
form / the one it replaced): the median of per-round ratios over interleaved rounds
(see `_timing.py`), with the range and the fastest/fastest ratio beside it.

    python benchmarks/step_candidates.py                  # about 3 min on 2 CPU cores
    python benchmarks/step_candidates.py --compile        # + torch.compile (about 1 min more)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from peft.tuners.lora import Linear as PeftLoraLinear
from torch.nn.attention import SDPBackend, sdpa_kernel

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
from peft_overhead import make_batch, make_classifier, training_step
from sertune.backbones.whisper import N_FFT, reflect_pad_clips
from sertune.head import EmotionHead, HeadConfig
from sertune.model import EmotionClassifier
from sertune.tuning.lora import lora_layers

MODEL = "whisper-tiny.en"


def compare(name: str, current: Callable[[], object], candidate: Callable[[], object], repeats: int) -> list[str]:
    """One table row: candidate / current over interleaved rounds."""
    candidates = {"current": current, "candidate": candidate}
    times = interleave(candidates, repeats=repeats, progress=lambda text: log(f"{name}: {text}"))
    ratios = paired_ratios(times, "candidate", "current")
    return [
        name,
        f"{1000 * median(times['current']):.1f}",
        f"{1000 * median(times['candidate']):.1f}",
        f"{median(ratios):.3f}",
        spread(ratios),
        f"{fastest_ratio(times, 'candidate', 'current'):.3f}",
    ]


def head_rows(batch: int, repeats: int) -> list[list[str]]:
    """The head's frame layers as linear maps vs as Conv1d on transposed frames."""
    torch.manual_seed(0)
    head = EmotionHead(384, 4, 4, HeadConfig())
    frames = torch.randn(batch, 300, 384, requires_grad=True)

    def as_linear() -> None:
        head._frame_layers(frames).sum().backward()

    def as_conv() -> None:
        head.frame_layers(frames.transpose(1, 2)).sum().backward()

    def inference(fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return fn()

        return call

    head.train()
    rows = [compare("head frames, train: linear / conv", as_conv, as_linear, repeats)]
    head.eval()
    rows.append(
        compare(
            "head frames, eval: linear / conv",
            inference(lambda: head.frame_layers(frames.transpose(1, 2))),
            inference(lambda: head._frame_layers(frames)),
            repeats,
        )
    )
    return rows


def pad_row(batch: int, seconds: float, repeats: int) -> list[str]:
    """Reflect padding of equal-length clips: one call for the batch vs one per clip."""
    waveforms, lengths, _ = make_batch(batch, seconds)
    half = N_FFT // 2

    def per_clip() -> object:
        return torch.cat([reflect_pad_clips(waveforms[i : i + 1], lengths[i : i + 1], half) for i in range(batch)])

    def batched() -> object:
        return reflect_pad_clips(waveforms, lengths, half)

    return compare("reflect pad: batch / per clip", per_clip, batched, repeats)


def twin(classifier: EmotionClassifier) -> EmotionClassifier:
    """A second classifier with the same trained tensors, for a candidate to change."""
    other = make_classifier(MODEL, "lora")
    other.load_state_dict(classifier.state_dict())
    return other


def step_rows(batch: int, seconds: float, repeats: int, compile_step: bool) -> list[list[str]]:
    """Whole-step candidates against today's step."""
    data = make_batch(batch, seconds)
    current = make_classifier(MODEL, "lora")
    current_step = training_step(current, *data)
    rows = []

    eager = twin(current)
    eager.backbone.model.config._attn_implementation = "eager"
    rows.append(compare("attention: eager / sdpa", current_step, training_step(eager, *data), repeats))
    del eager

    math_step = training_step(twin(current), *data)

    def math_only() -> object:
        with sdpa_kernel(SDPBackend.MATH):
            return math_step()

    rows.append(compare("attention: sdpa math kernel / sdpa", current_step, math_only, repeats))

    peft_forward = twin(current)
    for layer in lora_layers(peft_forward.backbone.model):
        layer.__class__ = PeftLoraLinear  # back to peft's own forward
    with torch.no_grad():
        peft_forward.eval(), current.eval()
        difference = (peft_forward(*data[:2]) - current(*data[:2])).abs().max().item()
        peft_forward.train(), current.train()
    log(f"fused LoRA: largest logit difference to peft's forward {difference:.1e}")
    peft_step = training_step(peft_forward, *data)
    rows.append(compare("fused LoRA: FusedLoraLinear / peft", peft_step, current_step, repeats))
    del peft_forward

    if compile_step:
        compiled = twin(current)
        for layer in compiled.backbone.layers:
            layer.forward = torch.compile(layer.forward, dynamic=False)
        compiled.head.forward = torch.compile(compiled.head.forward, dynamic=False)
        step = training_step(compiled, *data)
        began = time.perf_counter()
        step()
        first = time.perf_counter() - began
        rows.append(compare(f"torch.compile (first step {first:.0f} s) / eager", current_step, step, repeats))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds of the small candidates")
    parser.add_argument("--step-repeats", type=int, default=6, help="timed rounds of the whole-step candidates")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for about a minute)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    setup(args.threads)
    print(environment(args.threads))
    print(f"# {MODEL} LoRA-16, batch {args.batch} x {args.seconds:g} s, fp32; candidate / current form")
    rows = head_rows(args.batch, args.repeats)
    rows.append(pad_row(args.batch, args.seconds, args.repeats))
    rows += step_rows(args.batch, args.seconds, args.step_repeats, args.compile)
    header = ["candidate", "current ms", "candidate ms", "candidate/current", "ratio range", "fastest/fastest"]
    print(table(header, rows))
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
