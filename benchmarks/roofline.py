"""How close the training step and inference come to this machine's matrix-multiply peak, and where the rest goes.

For each encoder (Whisper tiny.en and base with their real offline weights, a randomly initialised
WavLM Base+ sized model) and one batch (default 8 x 6 s), in one run:

1. FLOPs of one call, counted by torch's own FLOP counter (`torch.utils.flop_counter`: matrix
   products, convolutions and attention; element-wise work is not counted, it is what the profile
   is for), for the training step (LoRA-16 on the FFN + the head: forward, cross-entropy, backward,
   Adam) and for inference (the same classifier with LoRA merged, `torch.inference_mode`);
2. the machine's own matmul peak, measured in the same run: the best of a few large square fp32
   products (and bf16 where the CPU has native bf16 units: AMX or AVX-512 BF16; emulated bf16 is
   orders of magnitude slower and would say nothing), and the rate of the FFN's own product shape;
3. the achieved rate (FLOPs / median wall time) and its fraction of the peak;
4. a profile of one training step: the top operators by self time, and the step split into
   stages (log-mel, convolutional front end, transformer layers, head, backward, optimiser) by
   profiler ranges that forward hooks open and close around the library's own modules.

    python benchmarks/roofline.py                              # about 3-4 min on 2 CPU cores
    python benchmarks/roofline.py --models whisper-tiny.en --repeats 5 --top 25
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from _timing import environment, load_average, log, median, setup, table, time_once
from peft_overhead import inference_call, lora_classifier, make_batch, make_classifier, training_step
from sertune.backbones import SPECS
from sertune.model import EmotionClassifier

DEFAULT_MODELS = ("whisper-tiny.en", "whisper-base", "wavlm-base-plus")
PEAK_SIZES = (2048, 3072, 4096)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn`, as torch's FLOP counter sees them."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s of [m, k] @ [k, n] over `repeats` calls (after one warm-up)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = min(time_once(lambda: a @ b) for _ in range(repeats))
    return 2 * m * k * n / best / 1e9


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX-512 BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def measure_peak() -> dict[str, float]:
    """The machine's fp32 (and native bf16) matmul peak in GFLOP/s: the best of a few large squares."""
    peaks = {"fp32": max(matmul_rate(size, size, size, torch.float32) for size in PEAK_SIZES)}
    if native_bf16():
        peaks["bf16"] = max(matmul_rate(size, size, size, torch.bfloat16) for size in PEAK_SIZES)
    return peaks


@contextmanager
def stage_ranges(classifier: EmotionClassifier) -> Iterator[None]:
    """Open a profiler range around the log-mel, front end, each layer and the head while profiling."""
    backbone = classifier.backbone
    modules = {"head": classifier.head}
    if hasattr(backbone, "log_mel"):
        modules["log-mel"] = backbone.log_mel
        modules["front end (conv)"] = backbone.model.conv2
    elif hasattr(backbone.model, "feature_extractor"):
        modules["front end (conv)"] = backbone.model.feature_extractor
    for index, layer in enumerate(backbone.layers):
        modules[f"layer {index}"] = layer
    open_ranges: dict[str, record_function] = {}
    handles = []
    for name, module in modules.items():

        def enter(module: torch.nn.Module, args: tuple, name: str = name) -> None:
            open_ranges[name] = record_function(f"stage: {name}")
            open_ranges[name].__enter__()

        def leave(module: torch.nn.Module, args: tuple, output: object, name: str = name) -> None:
            open_ranges.pop(name).__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profiled_step(classifier: EmotionClassifier, batch: tuple, top: int) -> tuple[list[list[str]], list[list[str]]]:
    """Top operators by self time, and the stages' wall time, of one profiled training step."""
    waveforms, lengths, targets = batch
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=5e-4, betas=(0.9, 0.98), weight_decay=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(classifier(waveforms, lengths), targets)
        with record_function("stage: backward"):
            loss.backward()
        with record_function("stage: optimiser"):
            optimizer.step()

    step()
    with stage_ranges(classifier), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    operators = sorted((e for e in events if not e.key.startswith("stage: ")), key=lambda e: -e.self_cpu_time_total)
    total_self = sum(e.self_cpu_time_total for e in events if not e.key.startswith("stage: "))
    operator_rows = [
        [e.key[:60], str(e.count), f"{e.self_cpu_time_total / 1e3:.1f}", f"{e.self_cpu_time_total / total_self:.1%}"]
        for e in operators[:top]
    ]
    stages = [e for e in events if e.key.startswith("stage: ")]
    stage_rows = [
        [e.key.removeprefix("stage: "), f"{e.cpu_time_total / 1e3:.1f}", f"{e.cpu_time_total / 1e6 / wall:.1%}"]
        for e in stages
    ]
    return operator_rows, stage_rows


def achieved(name: str, mode: str, flops: int, seconds: list[float], peak: float, shape_rate: float) -> list[str]:
    """A table row: FLOPs, median time, achieved rate, its share of the peak, the FFN shape's own rate."""
    rate = flops / median(seconds) / 1e9
    return [
        name,
        mode,
        f"{flops / 1e9:.1f}",
        f"{median(seconds):.3f}",
        f"{rate:.1f}",
        f"{rate / peak:.1%}",
        f"{shape_rate:.1f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(SPECS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per model and mode (after one warm-up)")
    parser.add_argument("--top", type=int, default=15, help="operators in the profile table")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    setup(args.threads)
    print(environment(args.threads))
    batch = make_batch(args.batch, args.seconds)
    log("measuring the matmul peak")
    peaks = measure_peak()
    sizes = ", ".join(map(str, PEAK_SIZES))
    bf16 = f"bf16 {peaks['bf16']:.1f} GFLOP/s" if "bf16" in peaks else "bf16: no native units on this CPU, not measured"
    print(f"# matmul peak (best of {sizes} squares): fp32 {peaks['fp32']:.1f} GFLOP/s; {bf16}")
    rows = []
    profiles = {}
    for model_name in args.models:
        log(f"{model_name}: training step")
        classifier = make_classifier(model_name, "lora")
        hidden = classifier.backbone.hidden_size
        ffn = classifier.backbone.layers[0].get_submodule(classifier.backbone.layout.ffn_linears[0]).out_features
        frames = int(classifier.backbone.frame_lengths(batch[1]).sum())
        shape_rate = matmul_rate(frames, hidden, ffn, torch.float32)
        step = training_step(classifier, *batch)
        flops = count_flops(step)
        step()
        seconds = [time_once(step) for _ in range(args.repeats)]
        rows.append(achieved(model_name, "training step", flops, seconds, peaks["fp32"], shape_rate))
        profiles[model_name] = profiled_step(classifier, batch, args.top)
        del classifier, step
        log(f"{model_name}: inference (merged LoRA)")
        classifier = lora_classifier(model_name, merged=True)
        call = inference_call(classifier, *batch[:2])
        flops = count_flops(call)
        call()
        seconds = [time_once(call) for _ in range(args.repeats)]
        rows.append(achieved(model_name, "inference, merged", flops, seconds, peaks["fp32"], shape_rate))
        del classifier, call
    print(
        f"\n## Achieved rate, batch {args.batch} x {args.seconds:g} s, fp32, median of {args.repeats} calls.\n"
        "# FFN shape = the rate of one [frames, hidden] @ [hidden, ffn] product alone (what the GEMMs can reach here)"
    )
    header = ["model", "mode", "GFLOP", "seconds", "GFLOP/s", "of fp32 peak", "FFN shape GFLOP/s"]
    print(table(header, rows, text_columns=2))
    for model_name, (operator_rows, stage_rows) in profiles.items():
        print(f"\n## {model_name}: one training step, top operators by self time")
        print(table(["operator", "calls", "self ms", "of self"], operator_rows))
        print(f"\n## {model_name}: the same step by stage (forward stages nest: layers include their LoRA)")
        print(table(["stage", "ms", "of step"], stage_rows))
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
