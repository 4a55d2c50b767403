"""The server in operation: API keys, request ids, Prometheus metrics, and the limits that keep a request
from costing more than it may (windows, decoded size, stalled uploads, clients that leave)."""

from __future__ import annotations

import io
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from test_inference import RATE, make_run

from served import running_server

KEY = "s3cret-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops")


@pytest.fixture(scope="module")
def runs(root: Path) -> dict[str, Path]:
    runs = {"a": root / "a", "b": root / "b"}
    make_run(runs["a"], method="lora", seed=1)
    make_run(runs["b"], method="adapter", seed=2)
    return runs


@pytest.fixture(scope="module")
def server(root: Path, runs: dict[str, Path]) -> Iterator[str]:
    """Two adapters on one tiny Whisper, behind an API key, with a 60-s limit, at most 10,000 windows per
    request and a 1-s body timeout; its log is `root / "server.log"`."""
    (root / "key").write_text(KEY + "\n")
    options = ["--api-key-file", str(root / "key"), "--max-duration", "60", "--body-timeout", "1",
               "--max-windows", "10000", "--log-level", "info"]
    with running_server(runs, root / "server.log", *options, headers=AUTH) as url:
        yield url


def _wav(seconds: float, channels: int = 1, rate: int = RATE, fmt: str = "WAV") -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    sf.write(buffer, (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32), rate,
             format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def _post(url: str, data: bytes, headers: dict | None = AUTH, **params) -> httpx.Response:
    return httpx.post(f"{url}/predict", params={"model": "a", **params}, content=data,
                      headers={"content-type": "audio/wav", **(headers or {})}, timeout=60)


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match[1] or "").split(","))) == wanted:
            return float(match[2])
    return 0.0


def test_every_route_but_health_needs_the_key(server) -> None:
    assert httpx.get(f"{server}/health").status_code == 200
    for route in ("/models", "/metrics", "/", "/docs"):
        assert httpx.get(f"{server}{route}").status_code == 401, route
        wrong = httpx.get(f"{server}{route}", headers={"Authorization": "Bearer not-the-key"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{server}{route}", headers=AUTH).status_code == 200, route
    refused = _post(server, _wav(1.0), headers=None)
    assert refused.status_code == 401 and "API key" in refused.json()["detail"]
    assert _post(server, _wav(1.0)).status_code == 200


def test_metrics_count_known_requests_by_model_and_status(server, tmp_path: Path) -> None:
    before = {status: _metric(server, "sertune_requests_total", route="/predict", model="b", status=status)
              for status in ("200", "413")}
    errors = _metric(server, "sertune_request_errors_total", route="/predict", model="b", status="413")
    for _ in range(3):
        assert _post(server, _wav(1.0), model="b").status_code == 200
    assert _post(server, _wav(61.0), model="b").status_code == 413
    assert _metric(server, "sertune_requests_total", route="/predict", model="b", status="200") == before["200"] + 3
    assert _metric(server, "sertune_requests_total", route="/predict", model="b", status="413") == before["413"] + 1
    assert _metric(server, "sertune_request_errors_total", route="/predict", model="b", status="413") == errors + 1
    assert _metric(server, "sertune_request_seconds_count", route="/predict", model="b") >= 4
    assert _metric(server, "sertune_batch_clips_count") >= 3
    assert "sertune_queue_clips" in httpx.get(f"{server}/metrics", headers=AUTH).text
    # A made-up model name is counted as "unknown": clients cannot grow the label set.
    assert _post(server, _wav(1.0), model="zzz").status_code == 404
    assert _metric(server, "sertune_requests_total", route="/predict", model="unknown", status="404") >= 1


def test_request_ids_are_echoed_and_logged(server, root: Path) -> None:
    given = httpx.get(f"{server}/models", headers={**AUTH, "X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{server}/models", headers={**AUTH, "X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    log = (root / "server.log").read_text()
    assert re.search(r'abc-123 127\.0\.0\.1 "GET /models" 200 [\d.]+ ms', log), log[-500:]
    assert made.headers["x-request-id"] in log


def test_absurd_windows_are_refused_before_any_work(server) -> None:
    clip = _wav(12.0)
    tiny_hop = _post(server, clip, window=1, hop=0.0001)  # 110,001 windows: was ~29 s of CPU after the client left
    assert tiny_hop.status_code == 413 and "windows are over this server's limit of 10000" in tiny_hop.json()["detail"]
    for window in ("inf", "1e305", "nan", "-1"):
        answer = _post(server, clip, window=window)
        assert answer.status_code == 400 and "window" in answer.json()["detail"], window


def test_the_decoded_size_is_limited_from_the_header(server) -> None:
    too_many_channels = _wav(0.5, channels=12)
    answer = _post(server, too_many_channels)
    assert answer.status_code == 413 and "12 channels are over this server's limit of 8" in answer.json()["detail"]
    high_rate = _wav(0.5, rate=384_000)
    answer = _post(server, high_rate)
    assert answer.status_code == 413 and "384000 Hz is over" in answer.json()["detail"]
    # 50 s of 8 channels at 48 kHz: under the 60-s limit, but 19.2 M samples to decode (limit: 60 s x 96,000).
    wide = io.BytesIO()
    sf.write(wide, np.zeros((50 * 48_000, 8), dtype=np.int16), 48_000, format="FLAC")
    answer = _post(server, wide.getvalue())
    assert answer.status_code == 413 and "would decode to more samples" in answer.json()["detail"]


def test_a_stalled_upload_is_dropped_after_the_body_timeout(server) -> None:
    host, port = server.removeprefix("http://").split(":")
    began = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = (f"POST /predict?model=a HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                "Content-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n")
        connection.sendall(head.encode() + b"RIFF")  # then nothing more
        reply = ""
        while "}" not in reply and (chunk := connection.recv(65536)):  # the JSON body may come in its own packet
            reply += chunk.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 408") and "stalled" in reply
    assert time.monotonic() - began < 10


def test_a_client_that_leaves_takes_its_work_with_it(server) -> None:
    # 5,801 one-second windows: seconds of encoding on 2 cores; the client gives up after 0.5 s.
    long_clip = _wav(59.0)
    start = _metric(server, "sertune_batch_clips_sum")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/predict", params={"model": "a", "window": 1.0, "hop": 0.01}, content=long_clip,
                   headers={"content-type": "audio/wav", **AUTH}, timeout=httpx.Timeout(60, read=0.5))
    time.sleep(1.5)
    settled = _metric(server, "sertune_batch_clips_sum")
    time.sleep(1.0)
    assert _metric(server, "sertune_batch_clips_sum") == settled  # nothing is encoded for it any more
    assert settled - start < 5801
    assert _metric(server, "sertune_queue_clips") == 0
    assert _post(server, _wav(1.0)).status_code == 200


def test_segment_vad_answers_the_timeline_the_python_api_gives(server, runs, speech: np.ndarray) -> None:
    from sertune.inference import load_many
    from sertune.segmentation import timeline

    pause = np.zeros(RATE, dtype=np.float32)
    recording = np.concatenate([pause, speech, pause, speech[::-1], pause, speech, pause])
    wav = io.BytesIO()
    sf.write(wav, recording, RATE, format="WAV", subtype="PCM_16")
    answer = _post(server, wav.getvalue(), segment="vad")
    assert answer.status_code == 200, answer.text
    served = answer.json()
    local = load_many(runs, device="cpu")["a"]
    pcm, _ = sf.read(io.BytesIO(wav.getvalue()), dtype="int16")  # the samples the server decodes
    expected = timeline(local, local.waveform(pcm, RATE))
    assert len(served["segments"]) == len(expected.segments) >= 3 and served["no_speech"] is False
    for got, want in zip(served["segments"], expected.segments, strict=True):
        assert (got["start"], got["end"], got["label"]) == (want.start, want.end, want.label)
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-4)
    silent = io.BytesIO()
    sf.write(silent, np.zeros(3 * RATE, dtype=np.int16), RATE, format="WAV")
    quiet = _post(server, silent.getvalue(), segment="vad").json()
    assert quiet["segments"] == [] and quiet["message"] == "no speech"
    assert _post(server, wav.getvalue(), segment="vad", window=2).status_code == 400
    assert _post(server, wav.getvalue(), segment="words").status_code == 422  # only vad is known
