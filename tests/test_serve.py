"""`sertune serve`: a real uvicorn server on loopback, two adapters on one encoder, bad input, memory."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from sertune.checkpoint import METADATA
from sertune.cli import main
from sertune.inference import load_many
from test_checkpoint_metadata import MALFORMED, drop_key, edited_run, poisoned_run
from test_inference import RATE, make_run

from served import free_port, running_server

MAX_UPLOAD_MB = 1
MAX_DURATION = 60


def _encode(wave: np.ndarray, rate: int = RATE, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a and b on one tiny Whisper (different methods and labels), c on a tiny WavLM."""
    root = tmp_path_factory.mktemp("served")
    make_run(root / "a", method="lora", seed=1)
    make_run(root / "b", method="adapter", labels=["calm", "tense"], seed=2)
    make_run(root / "c", kind="wavlm-ln", method="lora", seed=3)
    return {name: root / name for name in "abc"}


@pytest.fixture(scope="module")
def server(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m sertune serve` on a free loopback port; yields its base URL."""
    log = tmp_path_factory.mktemp("server-log") / "stderr.txt"
    limits = ["--max-upload-mb", str(MAX_UPLOAD_MB), "--max-duration", str(MAX_DURATION)]
    with running_server(runs, log, *limits) as url:
        yield url


@pytest.fixture(scope="module")
def local(runs: dict[str, Path]):
    """The same models loaded in this process, as the server loads them."""
    return load_many(runs, device="cpu")


@pytest.fixture(scope="module")
def clip(speech: np.ndarray) -> np.ndarray:
    # 16-bit like the uploads, so that server and local predictions see the same samples.
    return np.round(speech[: RATE * 3 // 2] * 32767).astype(np.int16)


def _post(url: str, model: str | None, content: bytes, content_type: str = "audio/wav", **params) -> httpx.Response:
    if model is not None:
        params["model"] = model
    return httpx.post(f"{url}/predict", params=params, content=content, headers={"content-type": content_type})


def _upload(url: str, model: str, data: bytes, name: str = "clip.wav") -> httpx.Response:
    return httpx.post(f"{url}/predict", params={"model": model}, files={"file": (name, data)}, timeout=60)


def test_health_and_models(server) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health == {"status": "ok", "version": health["version"], "models": ["a", "b", "c"], "encoders": 2}
    models = {m["name"]: m for m in httpx.get(f"{server}/models").json()}
    assert models["a"]["labels"] == ["neutral", "angry", "sad", "happy"] and models["b"]["labels"] == ["calm", "tense"]
    assert (models["a"]["method"], models["b"]["method"]) == ("lora", "adapter")
    assert models["a"]["shares_encoder_with"] == ["b"] and models["c"]["shares_encoder_with"] == []
    assert models["c"]["merged"] and not models["a"]["merged"]  # a lone encoder gets its LoRA merged
    assert models["a"]["backbone"] == "random-whisper"


def test_every_upload_form_gives_the_python_api_answer(server, local, clip) -> None:
    for name in ("a", "b", "c"):
        expected = local[name].predict(clip)
        answers = [
            _upload(server, name, _encode(clip)),
            _post(server, name, _encode(clip, fmt="FLAC")),
            _post(server, name, clip.astype("<i2").tobytes(), "application/octet-stream", sample_rate=RATE),
            _post(server, name, clip.astype(">i2").tobytes(), f"audio/L16; rate={RATE}"),
        ]
        for response in answers:
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == name and body["label"] == expected.label and not body["silent"]
            np.testing.assert_allclose(body["logits"], expected.logits, atol=1e-6)
    stereo_8k = np.repeat(clip[::2, None], 2, axis=1)  # PCM at another rate, interleaved channels
    response = _post(server, "a", stereo_8k.tobytes(), "application/octet-stream", sample_rate=8000, channels=2)
    assert response.status_code == 200 and response.json()["duration"] == pytest.approx(1.5, abs=1e-3)


def test_long_audio_answers_with_windows(server, local, speech) -> None:
    long = np.round(speech[: RATE * 5 // 2] * 32767).astype(np.int16)
    body = _upload(server, "b", _encode(long)).json()
    expected = local["b"].predict(long)
    assert [(w["start"], w["end"]) for w in body["windows"]] == [(w.start, w.end) for w in expected.windows]
    assert body["logits"] is None and body["label"] == expected.label
    custom = _post(server, "b", _encode(long), window=2.5)  # one window: the whole clip
    assert custom.json()["windows"] is None


def _batched_clips(url: str) -> tuple[float, float]:
    """(forwards, clips) the server's batch-size histogram has counted so far."""
    text = httpx.get(f"{url}/metrics").text
    count = float(re.search(r"^sertune_batch_clips_count (\S+)$", text, re.M)[1])
    total = float(re.search(r"^sertune_batch_clips_sum (\S+)$", text, re.M)[1])
    return count, total


def test_concurrent_requests_for_both_adapters_are_batched_and_match_sequential_answers(server, clip) -> None:
    # Clips of different lengths, so that batches mix lengths (Whisper masks its padding exactly).
    clips = {name: [_encode(clip[: len(clip) - 800 * k]) for k in range(4)] for name in ("a", "b")}
    sequential = {name: [_upload(server, name, data).json() for data in clips[name]] for name in clips}
    before = _batched_clips(server)

    async def all_at_once() -> list[tuple[str, int, httpx.Response]]:
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:
            jobs = [(name, k % 4) for k in range(16) for name in ("a", "b")]
            requests = [client.post("/predict", params={"model": n}, files={"file": ("x.wav", clips[n][k])})
                        for n, k in jobs]
            return [(n, k, r) for (n, k), r in zip(jobs, await asyncio.gather(*requests), strict=True)]

    answers = asyncio.run(all_at_once())
    assert len(answers) == 32
    for name, k, response in answers:
        assert response.status_code == 200
        body, expected = response.json(), sequential[name][k]
        assert body["label"] == expected["label"]
        assert body["logits"] == pytest.approx(expected["logits"], abs=1e-4)
        assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
    forwards, pieces = (after - start for after, start in zip(_batched_clips(server), before, strict=True))
    assert pieces == 32 and forwards < 32  # some forwards encoded several requests' clips


def _two_hours_of_flac() -> bytes:
    """Two hours of silence at 8 kHz as FLAC: about 180 kB, under the upload limit."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=8000, channels=1, format="FLAC", subtype="PCM_16") as out:
        minute = np.zeros(8000 * 60, dtype=np.int16)
        for _ in range(120):
            out.write(minute)
    return buffer.getvalue()


def _bad_requests(speech: np.ndarray) -> dict[str, tuple[dict, int, str]]:
    """name -> (arguments of _post / _upload, expected status, words in the error message)."""
    wav = _encode(np.round(speech[:RATE] * 32767).astype(np.int16))
    flac = _encode(speech[:RATE], fmt="FLAC")
    nan = _encode(np.full(RATE, np.nan, dtype=np.float32), subtype="FLOAT")
    return {
        "empty upload": ({"file": b""}, 400, "empty upload"),
        "empty body": ({"content": b""}, 400, "empty upload"),
        "non-audio bytes": ({"file": b"%PDF-1.4 this is not audio" * 40}, 422, "not a readable audio file"),
        "truncated wav": ({"file": wav[: len(wav) * 3 // 4]}, 422, "truncated"),
        "truncated flac": ({"content": flac[: len(flac) // 2], "content_type": "audio/flac"}, 422, "readable"),
        "header only": ({"file": wav[:44]}, 422, "holds no samples"),
        "nan samples": ({"file": nan}, 422, "NaN"),
        "shorter than the encoder's minimum": ({"file": _encode(np.zeros(150, np.int16))}, 422, "too short"),
        "two hours": ({"file": _two_hours_of_flac()}, 413, f"limit of {MAX_DURATION} s"),
        "over the upload limit": ({"file": b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 10)}, 413, "limit of"),
        "unknown model": ({"file": wav, "model": "nope"}, 404, "no model named 'nope'"),
        "no model named": ({"file": wav, "model": None}, 400, "name a model"),
        "unsupported type": ({"content": wav, "content_type": "text/plain"}, 415, "unsupported Content-Type"),
        "pcm without a rate": ({"content": wav, "content_type": "audio/L16"}, 400, "needs a rate"),
        "odd pcm bytes": ({"content": b"\0" * 1001, "content_type": "audio/L16;rate=16000"}, 400, "16-bit frames"),
        "multipart without file": ({"form": {"note": "hi"}}, 400, "'file' field"),
        "bad window": ({"file": wav, "window": 0.001}, 400, "window is shorter"),
        # These overflowed the sample arithmetic into a 500 and a dropped connection.
        "infinite window": ({"file": wav, "window": "inf"}, 400, "need a finite number of seconds"),
        "absurd window": ({"file": wav, "window": "1e305"}, 400, "need a finite number of seconds"),
        "nan window": ({"file": wav, "window": "nan"}, 400, "need a finite number of seconds"),
    }


def test_bad_input_gets_a_specific_4xx_and_the_server_keeps_serving(server, speech) -> None:
    for name, (request, status, words) in _bad_requests(speech).items():
        request = dict(request)
        model = request.pop("model", "a")
        params = {"model": model} if model else {}
        if "window" in request:
            params["window"] = request.pop("window")
        if "file" in request:
            response = httpx.post(f"{server}/predict", params=params, files={"file": ("x.wav", request["file"])})
        elif "form" in request:
            response = httpx.post(f"{server}/predict", params=params, data=request["form"], files={"x": ("", b"")})
        else:
            headers = {"content-type": request.get("content_type", "audio/wav")}
            response = httpx.post(f"{server}/predict", params=params, content=request["content"], headers=headers)
        assert (name, response.status_code) == (name, status), response.text
        assert words in response.json()["detail"], (name, response.text)
    silence = _upload(server, "a", _encode(np.zeros(RATE, dtype=np.int16)))
    assert silence.status_code == 200 and silence.json()["silent"] is True
    assert httpx.get(f"{server}/health").status_code == 200


def test_openapi_describes_the_endpoints(server) -> None:
    schema = httpx.get(f"{server}/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Prediction")
    assert {"400", "404", "413", "415", "422"} <= set(predict["responses"])
    assert "multipart/form-data" in predict["requestBody"]["content"]
    fields = schema["components"]["schemas"]["Prediction"]["properties"]
    assert {"label", "probabilities", "logits", "windows", "silent", "duration"} <= set(fields)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("x=/no/such/run", "no such run directory"),
        ("x", "expected NAME=RUN_DIR"),
        ("bad.name={run}", "model name 'bad.name'"),
        ("x={corrupt}", "sertune.json is corrupt"),
    ],
)
def test_serve_refuses_unusable_runs_at_startup(tmp_path, capsys, runs, model, message) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "sertune.json").write_text("{")
    argv = ["serve", "--model", model.format(run=runs["a"], corrupt=corrupt), "--port", str(free_port())]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_serve_refuses_malformed_metadata_at_startup(tmp_path, capsys, runs, edit, message) -> None:
    run = edited_run(runs["a"], tmp_path / "run", edit)
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--model", f"x={run}", "--port", str(free_port())])
    assert (stop.value.code, capsys.readouterr().err) == (2, f"sertune serve: error: {run / METADATA}: {message}\n")


@pytest.mark.parametrize("broken", ["no-tuning", "nan-adapter"])
def test_real_serve_command_exits_2_with_one_line_before_serving(tmp_path, runs, broken) -> None:
    if broken == "no-tuning":  # once `KeyError: 'tuning'` from a real server
        run = edited_run(runs["a"], tmp_path / "run", drop_key("tuning"))
        expected = f"{run / METADATA}: tuning is missing"
    else:
        run, tensor = poisoned_run(runs["a"], tmp_path / "run", float("nan"))
        expected = f"tensor {tensor} holds 1 NaN of"
    command = [sys.executable, "-m", "sertune", "serve", "--model", f"x={run}", "--port", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("sertune serve: error: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- memory -----------------------------------------------------------------------------------------
_MEASURE = textwrap.dedent(
    """
    import ctypes, gc, json, sys
    import numpy as np
    from sertune.inference import EncoderPool

    def rss():
        # Hand freed heap pages back first: RSS then counts live memory, not the allocator's slack
        # (without this the second adapter's figure wanders between 1 and 7 MiB from run to run).
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

    clip = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.1
    pool = EncoderPool(device="cpu")
    sizes = [rss()]
    for name, run in zip(["first", "second", "third"], sys.argv[1:]):
        pool.add(name, run)
        for predictor in pool.predictors.values():
            predictor.predict(clip)
        sizes.append(rss())
    print(json.dumps(sizes))
    """
)


@pytest.mark.slow
def test_a_second_adapter_on_real_whisper_tiny_costs_under_10_percent_of_the_first(tmp_path) -> None:
    from sertune.backbones import load_backbone
    from sertune.checkpoint import save_classifier
    from sertune.model import EmotionClassifier
    from sertune.tuning import TuningConfig

    labels = ["neutral", "angry", "sad", "happy"]
    names = ("first", "second", "third")
    for name in names:
        classifier = EmotionClassifier(load_backbone("whisper-tiny.en"), labels, TuningConfig(method="lora"))
        save_classifier(classifier, tmp_path / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _MEASURE, *(str(tmp_path / name) for name in names)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    sizes = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    first, *others = np.diff(sizes)
    print(
        f"RSS: first model +{first / 2**20:.1f} MiB; each further adapter "
        + ", ".join(f"+{extra / 2**20:.1f} MiB ({100 * extra / first:.1f}%)" for extra in others)
    )
    assert all(extra < 0.10 * first for extra in others)
