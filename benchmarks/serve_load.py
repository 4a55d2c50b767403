"""Load test of `sertune serve` on loopback, against the Python predictor in a loop, in one run.

Starts `python -m sertune serve` in a subprocess (by default on a Whisper tiny.en LoRA-16 run with
random LoRA weights, made on the fly: timing does not depend on the weights) and loads the same run
in this process with `sertune.load`. Then, for `--rounds` rounds (the order alternating from round
to round), it measures for `--duration / (3 * rounds)` seconds each:

* server: `--clients` concurrent HTTP clients (httpx, asyncio) POST the same WAV clip to /predict
  as fast as the answers come back; latency = request sent to answer read;
* loop:   `predictor.predict(path)` on the same WAV file in a plain Python loop (reading and
  decoding the file included, as the server decodes each upload), run in a worker thread, as the
  server runs its inference;
* loop, main thread: the same loop in the main thread. On a 2-core machine shared with other jobs,
  torch's OpenMP threads were 4-5x slower there than in a worker thread (measured: 250-650 ms vs
  50-60 ms per 4-s Whisper tiny.en clip at load average 5), so comparing the server with a
  main-thread loop would credit the server with what is a threading effect; it is shown as a row.

Printed: requests, throughput (requests/s and seconds of audio per second), p50/p95 latency, and
the ratio of each mode's throughput to the worker-thread loop's (the median over rounds of the
per-round ratio, its range, and the ratio of the best rounds). The order of the modes rotates from
round to round. Every side uses the same torch thread count (`--threads`). The client runs on the
same cores as the server: on a small machine it takes part of the CPU, which is part of what this
measures.

With `--batching`, it compares instead two servers on the same run, one batching the clips of
concurrent requests (the server's defaults, `--max-batch 8 --batch-wait-ms 5`, or `--max-batch N`) and
one encoding each clip alone
(`--max-batch 1 --batch-wait-ms 0`), at 1, 4 and 16 concurrent clients, the two servers' phases
interleaved (order alternating) in every round: throughput ratio (on / off, median over rounds)
and p50 / p95 latency of each.

    python benchmarks/serve_load.py                              # 60 s of measurement, 4 clients
    python benchmarks/serve_load.py --duration 120 --clients 8 --seconds 6
    python benchmarks/serve_load.py --run runs/iemo-lora         # a trained run instead
    python benchmarks/serve_load.py --batching --duration 180    # cross-request batching on vs off
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch

from _timing import environment, load_average, log, median, setup, spread, table
from sertune.inference import Predictor, load

SAMPLE_RATE = 16000
Phase = tuple[float, list[float]]  # wall seconds of a phase, latency of each request in it
REFERENCE = "loop"
LABELS = ["neutral", "angry", "sad", "happy"]


def make_run(directory: Path, backbone_name: str) -> Path:
    """A LoRA-16 run on the real encoder with random LoRA and head weights (lora_B non-zero, so merging
    really changes the encoder's weights)."""
    from sertune.backbones import load_backbone
    from sertune.checkpoint import save_classifier
    from sertune.model import EmotionClassifier
    from sertune.tuning import TuningConfig

    classifier = EmotionClassifier(load_backbone(backbone_name), LABELS, TuningConfig(method="lora", lora_rank=16))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in classifier.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.01 * torch.randn(parameter.shape, generator=generator))
    save_classifier(classifier, directory)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    run: Path, port: int, threads: int, max_wait: float = 180.0, options: tuple[str, ...] = ()
) -> subprocess.Popen:
    """`sertune serve` for `run` on loopback (with extra `options`); returns once /health answers."""
    command = [sys.executable, "-m", "sertune", "serve", "--model", f"bench={run}", "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "warning", *options]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.25)
    process.terminate()
    raise SystemExit(f"the server did not answer within {max_wait:.0f} s")


async def _client(client: httpx.AsyncClient, data: bytes, deadline: float, latencies: list[float]) -> None:
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        response = await client.post("/predict", files={"file": ("clip.wav", data)})
        response.raise_for_status()
        latencies.append(time.perf_counter() - start)


def server_phase(url: str, data: bytes, clients: int, seconds: float) -> Phase:
    """`clients` concurrent clients for `seconds`: (wall seconds until the last answer, latencies)."""

    async def run() -> Phase:
        latencies: list[float] = []
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            start = time.perf_counter()
            await asyncio.gather(*(_client(client, data, start + seconds, latencies) for _ in range(clients)))
            return time.perf_counter() - start, latencies

    return asyncio.run(run())


def loop_phase(predictor: Predictor, path: Path, seconds: float) -> Phase:
    """`predictor.predict(path)` back to back for `seconds`, in this thread: (wall seconds, latencies)."""
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        begin = time.perf_counter()
        predictor.predict(path)
        latencies.append(time.perf_counter() - begin)
    return time.perf_counter() - start, latencies


def in_worker_thread(function: Callable[[], Phase]) -> Phase:
    """Run `function` in a fresh worker thread (as the server's thread pool runs its inference)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share)) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run to serve (default: random LoRA on --backbone)")
    parser.add_argument("--backbone", default="whisper-tiny.en", help="encoder of the generated run")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measurement in all (every mode)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every mode once")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the clip sent")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server and the loop")
    parser.add_argument("--batching", action="store_true", help="compare cross-request batching on and off")
    parser.add_argument("--max-batch", type=int, help="with --batching: the batching server's --max-batch")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.clients < 1:
        parser.error("--rounds, --duration and --clients must be positive")

    setup(args.threads)
    print(environment(args.threads))
    if args.batching:
        compare_batching(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        run = args.run or make_run(scratch / "run", args.backbone)
        clip_path = scratch / "clip.wav"
        noise = np.random.default_rng(0).standard_normal(round(args.seconds * SAMPLE_RATE)) * 0.1
        sf.write(clip_path, noise.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        data = clip_path.read_bytes()
        predictor = load(run, device="cpu")
        port = free_port()
        log(f"starting the server on port {port} ...")
        server = start_server(run, port, args.threads)
        url = f"http://127.0.0.1:{port}"
        try:
            phases: dict[str, Callable[[float], Phase]] = {
                "server": lambda seconds: server_phase(url, data, args.clients, seconds),
                REFERENCE: lambda seconds: in_worker_thread(lambda: loop_phase(predictor, clip_path, seconds)),
                "loop, main thread": lambda seconds: loop_phase(predictor, clip_path, seconds),
            }
            for measure in phases.values():  # warm-up: first requests, thread pools, allocator
                measure(2.0)
            seconds = args.duration / (len(phases) * args.rounds)
            results: dict[str, list[Phase]] = {name: [] for name in phases}
            names = list(phases)
            for round_index in range(args.rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    results[name].append(phases[name](seconds))
                log(f"round {round_index + 1}/{args.rounds}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(results, args)


# "on" is the server's default (--max-batch 8 --batch-wait-ms 5) unless --max-batch says otherwise.
BATCHING = {"on": (), "off": ("--max-batch", "1", "--batch-wait-ms", "0")}
CLIENTS = (1, 4, 16)


def compare_batching(args: argparse.Namespace) -> None:
    """Batching on vs off at 1, 4 and 16 clients (see the module docstring)."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        run = args.run or make_run(scratch / "run", args.backbone)
        noise = np.random.default_rng(0).standard_normal(round(args.seconds * SAMPLE_RATE)) * 0.1
        sf.write(scratch / "clip.wav", noise.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        data = (scratch / "clip.wav").read_bytes()
        servers, urls = {}, {}
        try:
            for name, options in BATCHING.items():
                if name == "on" and args.max_batch:
                    options = ("--max-batch", str(args.max_batch))
                port = free_port()
                log(f"starting the server with batching {name} on port {port} ...")
                servers[name] = start_server(run, port, args.threads, options=options)
                urls[name] = f"http://127.0.0.1:{port}"
            for name in BATCHING:  # warm-up
                server_phase(urls[name], data, 4, 2.0)
            seconds = args.duration / (len(BATCHING) * len(CLIENTS) * args.rounds)
            results: dict[tuple[str, int], list[Phase]] = {(n, c): [] for n in BATCHING for c in CLIENTS}
            for round_index in range(args.rounds):
                for clients in CLIENTS:
                    order = list(BATCHING) if (round_index + clients) % 2 == 0 else list(BATCHING)[::-1]
                    for name in order:
                        results[name, clients].append(server_phase(urls[name], data, clients, seconds))
                log(f"round {round_index + 1}/{args.rounds}")
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(timeout=30)

    def throughput(phase: Phase) -> float:
        return len(phase[1]) / phase[0]

    rows = []
    for clients in CLIENTS:
        on, off = results["on", clients], results["off", clients]
        ratios = [throughput(a) / throughput(b) for a, b in zip(on, off, strict=True)]
        row = [str(clients)]
        for phases in (on, off):
            latencies = [value for _, values in phases for value in values]
            rate = len(latencies) / sum(wall for wall, _ in phases)
            row += [f"{rate:.2f}", f"{1000 * percentile(latencies, 50):.0f}", f"{1000 * percentile(latencies, 95):.0f}"]
        rows.append([*row, f"{median(ratios):.2f}", spread(ratios)])
    print(f"# {args.seconds:g}-s clip, {args.rounds} rounds x {len(CLIENTS)} client counts x on/off x {seconds:.0f} s, "
          f"torch threads {args.threads}; on: --max-batch {args.max_batch or 8} --batch-wait-ms 5; "
          f"off: {' '.join(BATCHING['off'])}")
    header = ["clients", "on req/s", "on p50 ms", "on p95 ms", "off req/s", "off p50 ms", "off p95 ms", "on/off",
              "range"]
    print(table(header, rows))
    print(f"# at the end: {load_average()}")


def report(results: dict[str, list[Phase]], args: argparse.Namespace) -> None:
    """Print one row per mode: volume, throughput, latency, and throughput relative to the loop."""

    def throughput(phase: Phase) -> float:
        return len(phase[1]) / phase[0]

    rows = []
    for name, phases in results.items():
        latencies = [value for _, values in phases for value in values]
        rate = len(latencies) / sum(wall for wall, _ in phases)
        ratios = [throughput(a) / throughput(b) for a, b in zip(phases, results[REFERENCE], strict=True)]
        best = max(map(throughput, phases)) / max(map(throughput, results[REFERENCE]))
        label = f"server, {args.clients} clients" if name == "server" else name
        rows.append(
            [
                label,
                str(len(latencies)),
                f"{rate:.2f}",
                f"{rate * args.seconds:.1f}",
                f"{1000 * percentile(latencies, 50):.0f}",
                f"{1000 * percentile(latencies, 95):.0f}",
                f"{median(ratios):.2f}",
                spread(ratios),
                f"{best:.2f}",
            ]
        )
    print(
        f"# {args.seconds:g}-s clip (16-bit WAV), {args.rounds} rounds x {len(results)} modes x "
        f"{args.duration / (len(results) * args.rounds):.0f} s, order rotating; torch threads {args.threads} everywhere"
    )
    header = ["mode", "requests", "req/s", "audio s/s", "p50 ms", "p95 ms", "/ loop", "range", "best/best"]
    print(table(header, rows))
    print(f"# at the end: {load_average()}")


if __name__ == "__main__":
    main()
