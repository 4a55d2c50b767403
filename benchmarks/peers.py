"""sertune beside the Hugging Face way of writing the same classifier, measured side by side in one run.

For two architectures and one batch (default 8 x 6 s, fp32, 2 torch threads), two sides:

* `sertune`: `EmotionClassifier(backbone, LABELS, TuningConfig(method="lora"))` (LoRA rank 16 on both
  FFN linears of every layer, plus the project's head), waveforms in; the features (Whisper's torch
  log-mel, or WavLM's raw waveform) are computed inside the forward at the batch's real length.
* `hf`: what a user writes with transformers and peft: `WhisperForAudioClassification` or
  `WavLMForSequenceClassification` of the same config, wrapped by `peft.get_peft_model` with LoRA
  rank 16 on the same FFN linears and `modules_to_save=["projector", "classifier"]`, fed by its
  feature extractor called on numpy clips inside the timed call, as a training loop does per batch:
  `WhisperFeatureExtractor` with its default 30-s padding, `Wav2Vec2FeatureExtractor` normalising
  each clip, padding to the longest clip.

Whisper is `whisper-tiny.en` with its real offline weights on both sides (the HF model's encoder
gets sertune's loaded weights); WavLM is a randomly initialised WavLM Base+ sized model on both
sides (timing does not depend on the weights). Layer drop is off on both sides, as sertune's loader
sets it, so that no step skips layers at random.

Measured per architecture:

* training step = features + forward + cross-entropy + backward + Adam step (lr 5e-4, betas
  (0.9, 0.98), weight decay 1e-4) over the trainable tensors, train mode;
* inference = features + forward of the classifier, eval mode, `torch.inference_mode()`, with LoRA
  merged (sertune: `classifier.merge()`, HF: `merge_and_unload()`) and unmerged. For Whisper, sertune
  is also timed on the clips zero-padded to 30 s: the row at HF's padding regime.

Every candidate (side and mode) runs in its own worker process, so that each one's peak resident
memory (`ru_maxrss`, after setup and after the timed calls) is its own. The parent drives the
workers with a line protocol: "step" makes a worker run one call and answer the seconds it took,
timed inside the worker as `_timing.time_once` does; "rss" answers its peak RSS; "quit" ends it.
Rounds go through `_timing.interleave` as in the in-process scripts (every candidate once per round,
the order rotated each round, `--warmup` untimed rounds first), and only one worker computes at a
time. The figures are the workers' own seconds (the pipe round trip is left out; its largest cost
is logged). A ratio is hf / sertune within each round; the median over rounds is the figure, with
its min-max range and the ratio of the fastest runs beside it (see `_timing.py`).

    python benchmarks/peers.py                               # both models (several minutes on 2 cores)
    python benchmarks/peers.py --models whisper-tiny --skip training --repeats 8
    python benchmarks/peers.py --quick                       # smoke test: batch 2 x 2 s, 1 round
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import resource
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

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
    time_once,
)
from peft_overhead import (
    LABELS,
    SAMPLE_RATE,
    inference_call,
    make_backbone,
    make_batch,
    make_classifier,
    training_step,
)
from sertune.backbones import SPECS
from sertune.backbones.loader import _NO_LAYERDROP
from whisper_length import PADDED_SAMPLES

# The --models names, and the sertune backbone each one stands for.
BACKBONES = {"whisper-tiny": "whisper-tiny.en", "wavlm-base-plus": "wavlm-base-plus"}
# Timed rounds unless --repeats says otherwise (Whisper calls are cheap, WavLM Base+ ones take seconds).
DEFAULT_REPEATS = {"whisper-tiny": 5, "wavlm-base-plus": 3}
# peft's names for the FFN linears that sertune's "ffn" LoRA targets (matched as name suffixes).
HF_LORA_TARGETS = {"whisper-tiny": ["fc1", "fc2"], "wavlm-base-plus": ["intermediate_dense", "output_dense"]}
# "before": sertune from another source tree (--before), e.g. a git worktree of an earlier commit.
SIDES = ("sertune", "hf", "before")
MODES = ("train", "merged", "unmerged", "merged-30s")
# Rows per measurement: (label, sertune candidate, compared candidate); a candidate is "side mode".
ROWS = {
    "training": [("training step: hf", "sertune train", "hf train")],
    "inference": [
        ("inference, LoRA merged: hf", "sertune merged", "hf merged"),
        ("inference, LoRA unmerged: hf", "sertune unmerged", "hf unmerged"),
    ],
}
# Only Whisper has a padding regime to match: HF's extractor pads every clip to 30 s.
PADDED_ROW = ("inference, merged: hf; sertune at 30 s", "sertune merged-30s", "hf merged")
# With --before: the same candidates of the earlier sertune against today's.
BEFORE_ROWS = {
    "training": [("training step: sertune --before", "sertune train", "before train")],
    "inference": [
        ("inference, LoRA merged: sertune --before", "sertune merged", "before merged"),
        ("inference, LoRA unmerged: sertune --before", "sertune unmerged", "before unmerged"),
    ],
}


class HFClassifier(nn.Module):
    """A transformers classifier with its feature extractor in front: `forward(waveforms, lengths)`
    returns the logits, as `EmotionClassifier` does, so both sides share the step and call code."""

    def __init__(self, model: nn.Module, extract: Callable[[list[np.ndarray]], Any]) -> None:
        super().__init__()
        self.model = model
        self.extract = extract

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # A user's dataset hands the extractor one numpy array per clip; `.numpy()` is a view, not a copy.
        clips = [clip[:length].numpy() for clip, length in zip(waveforms, lengths.tolist(), strict=True)]
        return self.model(**self.extract(clips)).logits

    def merge(self) -> None:
        """Fold peft's LoRA into the base weights and drop the peft wrappers."""
        self.model = self.model.merge_and_unload()


def hf_classifier(model_name: str) -> HFClassifier:
    """The HF side: the transformers classifier of `model_name` with peft LoRA-16 on the FFN, in train mode."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        Wav2Vec2FeatureExtractor,
        WavLMForSequenceClassification,
        WhisperFeatureExtractor,
        WhisperForAudioClassification,
    )

    torch.manual_seed(0)  # the projector and classifier are initialised at random on this side
    if model_name == "whisper-tiny":
        # Real weights: sertune's offline tiny.en encoder, copied in; its config already has layer drop off.
        backbone = make_backbone(BACKBONES[model_name])
        config = copy.deepcopy(backbone.model.config)
        config.num_labels = len(LABELS)
        model = WhisperForAudioClassification(config)
        model.encoder.load_state_dict(backbone.model.state_dict())
        del backbone  # its weights count in this worker's setup peak only (about 33 MB for tiny)
        extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE)
        extract = functools.partial(extractor, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    else:
        config = SPECS[model_name].config()
        for key, value in _NO_LAYERDROP.items():
            setattr(config, key, value)
        config.num_labels = len(LABELS)
        model = WavLMForSequenceClassification(config)
        # As HF's audio-classification example does by default: otherwise the library marks the raw
        # input as requiring grad in train mode and the backward runs through the whole conv front end.
        model.freeze_feature_encoder()
        # sertune's wavlm-base-plus does not normalise the waveform; this side pays for it, as the brief's
        # "normalised the way Wav2Vec2FeatureExtractor does" asks (a per-clip numpy pass, small beside the model).
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True, return_attention_mask=True)
        extract = functools.partial(
            extractor, sampling_rate=SAMPLE_RATE, padding="longest", return_attention_mask=True, return_tensors="pt"
        )
    lora = LoraConfig(
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=HF_LORA_TARGETS[model_name],
        modules_to_save=["projector", "classifier"],
    )
    return HFClassifier(get_peft_model(model, lora), extract).train()


def trainable_split(classifier: nn.Module) -> tuple[int, int]:
    """(tuning, head) trainable parameters: LoRA tensors, and everything else that trains."""
    tuning = head = 0
    for name, parameter in classifier.named_parameters():
        if parameter.requires_grad:
            if "lora_" in name:
                tuning += parameter.numel()
            else:
                head += parameter.numel()
    return tuning, head


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def build_call(
    model_name: str, side: str, mode: str, batch: int, seconds: float
) -> tuple[Callable[[], object], nn.Module]:
    """The call a worker times, and the classifier it runs."""
    if side == "hf":
        classifier = hf_classifier(model_name)
    else:
        classifier = make_classifier(BACKBONES[model_name], "lora")
    waveforms, lengths, targets = make_batch(batch, seconds)
    if mode == "train":
        return training_step(classifier, waveforms, lengths, targets), classifier
    classifier.eval()
    if mode.startswith("merged"):
        classifier.merge()
    if mode == "merged-30s":
        waveforms = torch.nn.functional.pad(waveforms, (0, PADDED_SAMPLES - waveforms.shape[1]))
        lengths = torch.full_like(lengths, PADDED_SAMPLES)
    return inference_call(classifier, waveforms, lengths), classifier


def _protocol_stream() -> TextIO:
    # Libraries may print to stdout; the protocol gets a private copy of it and the rest goes to stderr.
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def serve(model_name: str, side: str, mode: str, args: argparse.Namespace) -> None:
    """Worker process: build one candidate, answer "ready TUNING HEAD RSS", then one line per command."""
    protocol = _protocol_stream()
    setup(args.threads)
    # peft still asks transformers 5 for `is_gradient_checkpointing`: one FutureWarning per HF worker.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    call, classifier = build_call(model_name, side, mode, args.batch, args.seconds)
    tuning, head = trainable_split(classifier)
    protocol.write(f"ready {tuning} {head} {peak_rss_gb()!r}\n")
    while command := sys.stdin.readline().strip():
        if command == "step":
            protocol.write(f"{time_once(call)!r}\n")
        elif command == "rss":
            protocol.write(f"{peak_rss_gb()!r}\n")
        elif command == "quit":
            return
        else:
            raise ValueError(f"unknown worker command {command!r}")


class Worker:
    """One candidate in its own process (see `serve`), started and waited for at construction."""

    def __init__(self, model_name: str, candidate: str, args: argparse.Namespace) -> None:
        self.name = f"{model_name} {candidate}"
        side, mode = candidate.split()
        command = [sys.executable, __file__, "--worker", model_name, side, mode]
        command += ["--batch", str(args.batch), "--seconds", str(args.seconds), "--threads", str(args.threads)]
        environment = dict(os.environ)
        if side == "before":
            # Ahead of the installed (editable) sertune on the path: this worker imports the earlier code.
            environment["PYTHONPATH"] = os.pathsep.join(filter(None, [args.before, environment.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=environment
        )
        _, tuning, head, rss = self._answer().split()
        self.trainable = (int(tuning), int(head))
        self.setup_rss = float(rss)

    def ask(self, command: str) -> float:
        """Send one command; its answer (seconds of a step, or peak RSS in GB)."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return float(self._answer())

    def _answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"worker {self.name} exited with status {code} (its traceback is above, on stderr)")
        return line.strip()

    def close(self) -> None:
        """Ask the worker to quit; kill it if it does not (it failed, or hangs)."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def measure(
    model_name: str, measurement: str, args: argparse.Namespace, repeats: int
) -> tuple[list[list[str]], dict[str, tuple[int, int]]]:
    """Table rows of one measurement of one model, and each side's (tuning, head) trainable counts."""
    rows_spec = list(ROWS[measurement])
    if measurement == "inference" and model_name == "whisper-tiny":
        rows_spec.append(PADDED_ROW)
    if args.before:
        rows_spec += BEFORE_ROWS[measurement]
    candidates = list(dict.fromkeys(name for _, *pair in rows_spec for name in pair))
    with contextlib.ExitStack() as stack:
        workers: dict[str, Worker] = {}
        # One after the other: setting up overlapping workers would only add load and peak memory.
        for candidate in candidates:
            log(f"{model_name} {measurement}: starting worker {candidate}")
            workers[candidate] = Worker(model_name, candidate, args)
            stack.callback(workers[candidate].close)
        reported: dict[str, list[float]] = {name: [] for name in candidates}

        def sender(name: str) -> Callable[[], object]:
            return lambda: reported[name].append(workers[name].ask("step"))

        wall = interleave(
            {name: sender(name) for name in candidates},
            repeats=repeats,
            warmup=args.warmup,
            progress=lambda text: log(f"{model_name} {measurement}: {text}"),
        )
        # interleave keeps the timed rounds of its own (round-trip) clock; the workers answered every
        # round, warm-ups first, in the same order, so dropping those aligns the two.
        times = {name: values[args.warmup :] for name, values in reported.items()}
        extra = max(w - t for name in candidates for w, t in zip(wall[name], times[name], strict=True))
        log(
            f"{model_name} {measurement}: the parent's clock saw at most {1000 * extra:.0f} ms more than a "
            "worker's (the pipe, and the worker's gc.collect before its timer starts)"
        )
        end_rss = {name: worker.ask("rss") for name, worker in workers.items()}
    rows = []
    for label, ours, theirs in rows_spec:
        ratios = paired_ratios(times, theirs, ours)
        rows.append(
            [
                BACKBONES[model_name],
                label,
                str(repeats),
                f"{median(times[ours]):.3f}",
                f"{median(times[theirs]):.3f}",
                f"{median(ratios):.2f}",
                spread(ratios),
                f"{fastest_ratio(times, theirs, ours):.2f}",
                f"{workers[ours].setup_rss:.2f} / {end_rss[ours]:.2f}",
                f"{workers[theirs].setup_rss:.2f} / {end_rss[theirs]:.2f}",
            ]
        )
    # Merging removes the LoRA tensors, so the counts come from a candidate that still has them.
    kept = "train" if measurement == "training" else "unmerged"
    trainable = {side: workers[f"{side} {kept}"].trainable for side in SIDES if f"{side} {kept}" in workers}
    return rows, trainable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--skip", nargs="+", choices=("training", "inference"), default=[])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, help="timed rounds (default: 5 Whisper, 3 WavLM)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 2 x 2 s, 1 round, no warm-up")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also time the sertune package found in SRC (e.g. the src/ of a git worktree of an earlier commit)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "SIDE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.repeats, args.warmup = 2, 2.0, 1, 0
    if args.worker:
        model_name, side, mode = args.worker
        if model_name not in BACKBONES or side not in SIDES or mode not in MODES:
            parser.error(f"unknown worker {args.worker}")
        serve(model_name, side, mode, args)
        return
    if args.before:
        args.before = os.path.abspath(args.before)
        if not os.path.isfile(os.path.join(args.before, "sertune", "__init__.py")):
            parser.error(f"--before {args.before}: no sertune package there (give the directory that holds sertune/)")
    if "whisper-tiny" in args.models and round(args.seconds * SAMPLE_RATE) > PADDED_SAMPLES:
        parser.error("Whisper takes at most 30 s (HF's extractor would cut the clips)")

    setup(args.threads)
    print(environment(args.threads))
    print(
        f"# batch {args.batch} x {args.seconds:g}-s clips, fp32, each candidate in its own process; median over "
        f"interleaved rounds (count in the table) after {args.warmup} warm-up; hf/sertune is paired within each "
        "round (range = min-max over rounds); RSS = peak GB after setup / after the timed calls"
    )
    rows: list[list[str]] = []
    counts: list[list[str]] = []
    for model_name in args.models:
        repeats = args.repeats or DEFAULT_REPEATS[model_name]
        trainable: dict[str, tuple[int, int]] = {}
        for measurement in ("training", "inference"):
            if measurement not in args.skip:
                measured, trainable = measure(model_name, measurement, args, repeats)
                rows += measured
        for side, (tuning, head) in trainable.items():
            counts.append([BACKBONES[model_name], side, f"{tuning:,}", f"{head:,}", f"{tuning + head:,}"])
    if rows:
        print(
            "\n## sertune vs HF (transformers + peft, features inside the call), and vs --before if given.\n"
            "# other/sertune > 1: the other side is slower.\n"
            "# Whisper: HF computes 1500 encoder frames (30-s features) whatever the clip length; sertune the\n"
            "# clips' real length, and the 'sertune at 30 s' row pads them to HF's length."
        )
        header = ["model", "mode: other side", "rounds", "sertune s", "other s", "other/sertune", "ratio range"]
        header += ["fastest/fastest", "sertune RSS GB", "other RSS GB"]
        print(table(header, rows, text_columns=2))
        print("\n## Trainable parameters (LoRA-16 on the FFN linears + head)")
        print(table(["model", "side", "LoRA", "head", "total"], counts, text_columns=2))
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
