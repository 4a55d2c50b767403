"""Training throughput of whole `train_run` epochs: length bucketing, and the frozen-encoder feature cache.

For each encoder (Whisper tiny.en with its real offline weights, and a randomly initialised WavLM
Base+ sized model saved to a temporary directory: timing does not depend on the weights), real
`sertune.train.train_run` runs on a temporary prepared corpus are timed. The figure of a run is
clips/s = train clips / `train_seconds`, read from `folds/fold1/metrics.json` (wall time of an
epoch's training pass: data loading, forward, backward, optimiser step; evaluation excluded).

(a) bucketing: LoRA-16 (FFN), one epoch, `bucketing=True` (batches of similar length) vs
    `bucketing=False` (random batches). The figure is bucketed / random clips/s.
(b) feature cache: method `frozen`, `--epochs` epochs (default 3), `feature_cache=True` vs
    `feature_cache=False` (the encoder runs on every batch of every epoch, with waveform
    augmentation). The figure is cached / uncached clips/s over epochs 2+ (each run's median).
    The cache is filled when the fold is set up, before epoch 1 (encoding every clip whole, up to
    `eval_max_seconds`), so its fill time is not in any epoch: metrics.json records it separately
    (`cache_fill`), and a fresh cache directory is used for every
    cached run so that every repeat pays it. Both sides use length bucketing here, which makes the
    uncached side as fast as it gets.

Data: one fold whose train part holds mixed-length clips (durations at evenly spaced quantiles of a
log-normal with median 3.6 s and sigma 0.6, clipped to 1-12 s: about IEMOCAP's spread, 20% longer
than 6 s) and whose dev and test parts hold 4 clips of 2 s each, so evaluation costs little. The
audio is espeak-ng speech (two voices) concatenated into one stream and cut at random offsets to
each clip's length. Training settings: batch 8, 6-s random crops (`max_seconds`), augmentation on,
`workers=0` (loading in the timed process), fp32 (`--bf16` for bf16 autocast), torch 2 threads.

Timing follows benchmarks/_timing.py: one untimed warm-up run per model, then rounds in which every
configuration runs once, the order rotated from round to round (a: random, bucketed; b: uncached,
cached; then the other way round); ratios are taken within a round and the median over rounds is
the figure, printed beside its min-max range and the ratio of the fastest runs. Default sizes:
Whisper 96 train clips and 3 rounds, WavLM 32 clips and 2 rounds (its LoRA steps take seconds).

When another process keeps the cores busy (load average above the core count), torch's threads
wait on each other and small operations slow down many times over (here a cached Whisper epoch took
0.7 s with 1 thread and 5-11 s with 2); `--threads 1` then gives much steadier numbers than the
default 2, and the script prints a warning.

    python benchmarks/train_throughput.py             # both models: 11 min here (--threads 1, shared 2 cores)
    python benchmarks/train_throughput.py --quick     # smoke test: 24 / 16 clips, 1 round, 2 epochs
    python benchmarks/train_throughput.py --models whisper-tiny.en --repeats 5 --clips 128
    python benchmarks/train_throughput.py --skip bucketing --epochs 4 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from _timing import environment, load_average, log, median, setup, spread, table
from sertune.audio import resample
from sertune.backbones import SPECS, build_backbone
from sertune.config import RunConfig, TrainConfig
from sertune.corpora import synthetic
from sertune.corpora.manifest import Corpus, Fold, Utterance, write_corpus_files
from sertune.corpora.synthetic import require_espeak
from sertune.sampler import LengthBucketBatchSampler, padding_fraction
from sertune.train import train_run
from sertune.trainer import epoch_seed
from sertune.tuning import TuningConfig

SAMPLE_RATE = 16000
LABELS = ["neutral", "angry", "sad", "happy"]
FOLD = "fold1"
# Real weights for these; a seeded random model of the registry's size for the rest.
PRETRAINED = ("whisper-tiny.en", "whisper-base")
DEFAULT_MODELS = ("whisper-tiny.en", "wavlm-base-plus")
# WavLM Base+ LoRA steps take several seconds per batch of 8 x 6 s on 2 CPU cores: fewer clips and rounds.
DEFAULT_CLIPS = {"whisper": 96, "wavlm": 32}
DEFAULT_REPEATS = {"whisper": 3, "wavlm": 2}
QUICK_CLIPS = {"whisper": 24, "wavlm": 16}
# Clip durations: log-normal around IEMOCAP's (median about 3.6 s, a fifth of the clips over 6 s).
MEDIAN_SECONDS, SIGMA, SHORTEST, LONGEST = 3.6, 0.6, 1.0, 12.0
EVAL_CLIPS, EVAL_SECONDS = 4, 2.0
VOICES = (("en+f3", "female"), ("en+m3", "male"))
SENTENCES = synthetic.SENTENCES[:6]


# -- data ----------------------------------------------------------------------------------------
def speech_stream() -> np.ndarray:
    """A minute or so of espeak-ng speech at 16 kHz: every sentence in every voice, 0.3 s pauses."""
    espeak = require_espeak()
    pause = np.zeros(round(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts = []
    for voice, _ in VOICES:
        for sentence in SENTENCES:
            result = subprocess.run([espeak, "-v", voice, "--stdout", sentence], capture_output=True, check=True)
            wave, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
            parts += [resample(wave, rate, SAMPLE_RATE), pause]
    return np.concatenate(parts)


def train_durations(n: int, seed: int = 0) -> list[float]:
    """`n` durations at evenly spaced quantiles of the log-normal above (clipped), in random order."""
    normal = statistics.NormalDist()
    quantiles = [MEDIAN_SECONDS * np.exp(SIGMA * normal.inv_cdf((i + 0.5) / n)) for i in range(n)]
    durations = np.clip(np.round(quantiles, 2), SHORTEST, LONGEST)
    return np.random.default_rng(seed).permutation(durations).tolist()


def make_corpus(root: Path, n_train: int, stream: np.ndarray, seed: int = 0) -> Path:
    """A prepared corpus in `root`: one fold of `n_train` mixed-length train clips, tiny dev and test."""
    root = root.resolve()
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[float]] = {
        "train": train_durations(n_train, seed),
        "dev": [EVAL_SECONDS] * EVAL_CLIPS,
        "test": [EVAL_SECONDS] * EVAL_CLIPS,
    }
    utterances: list[Utterance] = []
    ids: dict[str, list[str]] = {}
    for part, durations in parts.items():
        ids[part] = []
        for i, seconds in enumerate(durations):
            uid = f"{part}-{i:04d}"
            samples = round(seconds * SAMPLE_RATE)
            offset = int(rng.integers(len(stream)))
            wave = np.take(stream, np.arange(offset, offset + samples), mode="wrap")
            path = root / "audio" / f"{uid}.wav"
            sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
            speaker, gender = f"spk{i % len(VOICES)}", VOICES[i % len(VOICES)][1]
            utterances.append(Utterance(uid, path, samples / SAMPLE_RATE, LABELS[i % len(LABELS)], speaker, gender))
            ids[part].append(uid)
    fold = Fold(FOLD, ids["train"], ids["dev"], ids["test"])
    write_corpus_files(Corpus(root, "throughput", LABELS, utterances, [fold], "one fold"), seed)
    return root


def padding_shares(durations: list[float], batch: int, max_seconds: float) -> tuple[float, float]:
    """Share of padding in epoch 1's batches (random, bucketed), as the trainer's sampler draws them."""
    lengths = np.minimum(durations, max_seconds)
    seed = epoch_seed(0, 0, 1)
    shares = []
    for bucketing in (False, True):
        sampler = LengthBucketBatchSampler(lengths, batch, bucketing=bucketing, shuffle=True, seed=seed)
        shares.append(padding_fraction(list(sampler), lengths))
    return shares[0], shares[1]


# -- models --------------------------------------------------------------------------------------
def family(model: str) -> str:
    return "whisper" if model.startswith("whisper") else "wavlm"


def backbone_source(model: str, work: Path) -> str:
    """What `RunConfig.backbone` gets: the short name for real weights, else a saved random model."""
    if model in PRETRAINED:
        return model
    directory = work / f"random-{model}"
    if not directory.is_dir():
        build_backbone(SPECS[model], seed=0).model.save_pretrained(directory)
    return str(directory)


# -- runs ----------------------------------------------------------------------------------------
@dataclass
class Run:
    """One timed `train_run`: training seconds and mean loss per epoch, and the cache fill time."""

    clips: int
    train_seconds: list[float]
    losses: list[float]
    fill_seconds: float

    def clips_per_second(self, first_epoch: int = 1) -> float:
        """Median clips/s over epochs `first_epoch`.. (1-based)."""
        return median([self.clips / seconds for seconds in self.train_seconds[first_epoch - 1 :]])


def train_once(config: RunConfig, work: Path) -> Run:
    """Run `train_run` into a fresh directory (and a fresh feature cache) and read its metrics."""
    out = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    config.train.cache_dir = str(cache)
    try:
        # train_run prints a result line per fold on stdout; keep stdout for the tables.
        with contextlib.redirect_stdout(io.StringIO()):
            train_run(config, out)
        metrics = json.loads((out / "folds" / FOLD / "metrics.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        gc.collect()
    epochs = metrics["epochs"]
    return Run(
        clips=metrics["counts"]["train"],
        train_seconds=[row["train_seconds"] for row in epochs],
        losses=[row["train_loss"] for row in epochs],
        fill_seconds=(metrics.get("cache_fill") or {}).get("seconds", 0.0),
    )


def make_config(
    corpus: Path,
    backbone: str,
    args: argparse.Namespace,
    *,
    method: str,
    epochs: int,
    bucketing: bool,
    feature_cache: bool,
) -> RunConfig:
    return RunConfig(
        corpus=str(corpus),
        backbone=backbone,
        tuning=TuningConfig(method=method),
        train=TrainConfig(
            epochs=epochs,
            batch_size=args.batch,
            eval_batch_size=args.batch,
            max_seconds=args.max_seconds,
            bucketing=bucketing,
            feature_cache=feature_cache,
            workers=args.workers,
            precision="bf16" if args.bf16 else "no",
        ),
    )


def rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


@dataclass
class ModelResult:
    model: str
    clips: int
    padding: tuple[float, float]
    runs: dict[str, list[Run]]


def measure_model(model: str, args: argparse.Namespace, work: Path, stream: np.ndarray) -> ModelResult:
    """The warm-up and the interleaved rounds of (a) and (b) for one model."""
    clips = args.clips or (QUICK_CLIPS if args.quick else DEFAULT_CLIPS)[family(model)]
    repeats = args.repeats or (1 if args.quick else DEFAULT_REPEATS[family(model)])
    backbone = backbone_source(model, work)
    corpus = make_corpus(work / f"corpus-{clips}", clips, stream)
    warmup_corpus = make_corpus(work / f"corpus-{args.batch}", args.batch, stream, seed=1)

    candidates: dict[str, RunConfig] = {}
    groups: list[list[str]] = []
    if "bucketing" not in args.skip:
        lora = {"method": "lora", "epochs": 1, "feature_cache": False}
        candidates["random"] = make_config(corpus, backbone, args, bucketing=False, **lora)
        candidates["bucketed"] = make_config(corpus, backbone, args, bucketing=True, **lora)
        groups.append(["random", "bucketed"])
    if "cache" not in args.skip:
        frozen = {"method": "frozen", "epochs": args.epochs, "bucketing": True}
        candidates["uncached"] = make_config(corpus, backbone, args, feature_cache=False, **frozen)
        candidates["cached"] = make_config(corpus, backbone, args, feature_cache=True, **frozen)
        groups.append(["uncached", "cached"])

    started = time.perf_counter()
    log(f"{model}: warm-up (LoRA, 1 epoch of {args.batch} clips)")
    train_once(
        make_config(warmup_corpus, backbone, args, method="lora", epochs=1, bucketing=True, feature_cache=False), work
    )
    runs: dict[str, list[Run]] = {name: [] for name in candidates}
    for round_index in range(repeats):
        for group in groups:
            for name in rotated(group, round_index):
                run = train_once(candidates[name], work)
                runs[name].append(run)
                epochs = ", ".join(f"{s:.1f}" for s in run.train_seconds)
                losses = ", ".join(f"{x:.3f}" for x in run.losses)
                fill = f", cache fill {run.fill_seconds:.1f} s" if run.fill_seconds else ""
                log(
                    f"{model} round {round_index + 1}/{repeats} {name}: train s per epoch [{epochs}]{fill}; "
                    f"loss [{losses}]; {load_average()}"
                )
    log(f"{model}: done in {time.perf_counter() - started:.0f} s")
    durations = train_durations(clips)
    return ModelResult(model, clips, padding_shares(durations, args.batch, args.max_seconds), runs)


# -- report --------------------------------------------------------------------------------------
def ratio_columns(numerators: list[float], denominators: list[float]) -> list[str]:
    """Median of the per-round ratios (of rates: higher is faster), their range, fastest/fastest."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return [f"{median(ratios):.2f}x", spread(ratios), f"{max(numerators) / max(denominators):.2f}x"]


def bucketing_rows(results: list[ModelResult]) -> list[list[str]]:
    rows = []
    for result in results:
        if "random" not in result.runs:
            continue
        random_rates = [run.clips_per_second() for run in result.runs["random"]]
        bucketed_rates = [run.clips_per_second() for run in result.runs["bucketed"]]
        rows.append(
            [
                result.model,
                str(result.clips),
                str(len(random_rates)),
                f"{100 * result.padding[0]:.0f}% / {100 * result.padding[1]:.0f}%",
                f"{(1 - result.padding[1]) / (1 - result.padding[0]):.2f}x",
                f"{median(random_rates):.2f}",
                f"{median(bucketed_rates):.2f}",
                *ratio_columns(bucketed_rates, random_rates),
            ]
        )
    return rows


def cache_rows(results: list[ModelResult]) -> list[list[str]]:
    rows = []
    for result in results:
        if "cached" not in result.runs:
            continue
        uncached, cached = result.runs["uncached"], result.runs["cached"]
        uncached_rates = [run.clips_per_second(first_epoch=2) for run in uncached]
        cached_rates = [run.clips_per_second(first_epoch=2) for run in cached]
        rows.append(
            [
                result.model,
                str(result.clips),
                str(len(cached)),
                f"{median([run.fill_seconds for run in cached]):.1f}",
                f"{median([run.clips / run.train_seconds[0] for run in cached]):.1f}",
                f"{median(uncached_rates):.2f}",
                f"{median(cached_rates):.1f}",
                *ratio_columns(cached_rates, uncached_rates),
                f"{median([sum(run.train_seconds) for run in uncached]):.1f}",
                f"{median([run.fill_seconds + sum(run.train_seconds) for run in cached]):.1f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--skip", nargs="*", choices=("bucketing", "cache"), default=[])
    parser.add_argument("--clips", type=int, help="train clips for every model (default: Whisper 96, WavLM 32)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default: Whisper 3, WavLM 2)")
    parser.add_argument("--epochs", type=int, help="epochs of the frozen runs, epochs 2+ are compared (default 3)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=6.0, help="training crop length")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision instead of fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: Whisper 24 / WavLM 16 clips, 1 round")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 3
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epochs 2+ of the frozen runs are compared)")
    unknown = [model for model in args.models if model not in SPECS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(SPECS)}")

    setup(args.threads)
    print(environment(args.threads))
    busy = os.getloadavg()[0]
    if args.threads > 1 and busy > (os.cpu_count() or 1):
        print(
            f"# warning: load average {busy:.1f} is above the core count; torch's threads will wait on each other, "
            "consider --threads 1"
        )
    precision = "bf16" if args.bf16 else "fp32"
    print(
        f"# train_run epochs on mixed-length espeak-ng clips "
        f"({SHORTEST:g}-{LONGEST:g} s, median {MEDIAN_SECONDS:g} s), "
        f"batch {args.batch}, {args.max_seconds:g}-s crops, {precision}, workers {args.workers}; "
        f"clips/s = train clips / train_seconds; interleaved rounds after 1 warm-up run per model"
    )
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="sertune-throughput-") as tmp:
        work = Path(tmp)
        stream = speech_stream()
        for model in args.models:
            results.append(measure_model(model, args, work, stream))

    if "bucketing" not in args.skip:
        print()
        print("## (a) LoRA-16 (FFN) training epoch: length-bucketed vs random batches. Expected: > 1.3x")
        print("# padding: share of epoch 1's padded batches that is padding, as the trainer's sampler draws them")
        header = [
            "model",
            "clips",
            "rounds",
            "padding random / bucketed",
            "padded audio random/bucketed",
            "random clips/s",
            "bucketed clips/s",
            "bucketed/random",
            "ratio range",
            "fastest/fastest",
        ]
        print(table(header, bucketing_rows(results)))
    if "cache" not in args.skip:
        print()
        print(f"## (b) frozen, epochs 2-{args.epochs}: feature cache vs encoder every epoch. Expected: > 20x")
        header = [
            "model",
            "clips",
            "rounds",
            "fill s",
            "cached ep1 clips/s",
            "uncached clips/s",
            "cached clips/s",
            "cached/uncached",
            "ratio range",
            "fastest/fastest",
            f"uncached {args.epochs} ep s",
            f"fill + cached {args.epochs} ep s",
        ]
        print(table(header, cache_rows(results)))
    print(f"# wall time {time.perf_counter() - started:.0f} s; at the end: {load_average()}")


if __name__ == "__main__":
    main()
