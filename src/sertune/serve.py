"""HTTP server for trained runs (FastAPI): many adapters on one copy of each encoder.

`create_app(predictors)` serves predictors from `sertune.inference.load_many`. POST /predict takes
an uploaded audio file (multipart field `file`), an encoded file as the raw body, or raw 16-bit
PCM, and answers what `Predictor.predict` returns. Bad input gets a specific 4xx, never a 500:

    400  empty upload, no `file` field, malformed multipart or PCM, PCM without a sample rate,
         no `model` while several are served, a window or hop that is not a sane number of seconds
    401  a wrong or missing API key (with --api-key-file; every route but /health)
    404  unknown model
    408  an upload that stalls for longer than the body timeout between two chunks
    413  upload over --max-upload-mb; audio over --max-duration seconds, over the decoded-size limit
         (frames x channels), over the sample-rate or channel cap (all checked from the header, before
         decoding); more windows than --max-windows
    415  a Content-Type that is neither multipart, audio/* nor application/octet-stream
    422  bytes that are not decodable audio, a truncated file, a clip shorter than the encoder's
         minimum input, NaN samples

Silence is answered like any audio, with `"silent": true` (see docs/serving.md for why).

Decoding runs in Starlette's thread pool, so the event loop keeps accepting and parsing requests;
the clips (or windows) of concurrent requests on one encoder are then encoded together in batches
(`sertune.batching`), and a client that disconnects takes its clips out of the queue.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from sertune import __version__
from sertune.audio import mix_down, truncation
from sertune.batching import Batcher
from sertune.errors import SertuneError
from sertune.inference import ModelInfo, Prediction, Predictor
from sertune.segmentation import timeline
from sertune.serve_ops import ServerMetrics, install_middleware
from sertune.web import mount_web

MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
# Frames x channels decoded per second of allowed duration: 48 kHz stereo; a file holding more samples
# than that for its length limit is refused before decoding (an 8-channel 384-kHz header would be GBs).
DECODED_SAMPLES_PER_SECOND = 2 * 48_000
# How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.1
_ENCODED_TYPES = ("application/octet-stream", "audio/")
_PCM_TYPE = "audio/l16"


@dataclass(frozen=True)
class Limits:
    """What one request may send and cost: bytes on the wire, seconds of audio, windows to encode, and
    the longest pause between two chunks of its body."""

    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 600.0
    max_windows: int = 1000
    body_timeout: float = 30.0

    @property
    def max_decoded_samples(self) -> int:
        """Frames x channels a request may decode to."""
        return int(self.max_seconds * DECODED_SAMPLES_PER_SECOND)


class Rejected(Exception):
    """A request the server refuses, with the HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# -- response models (OpenAPI) -------------------------------------------------------------------
class Health(BaseModel):
    status: str
    version: str
    models: list[str]
    encoders: int


class ErrorMessage(BaseModel):
    detail: str


_ERRORS = {status: {"model": ErrorMessage} for status in (400, 401, 404, 408, 413, 415, 422)}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "An audio file (multipart field `file`, or the raw body), or raw 16-bit PCM: "
        "`audio/L16;rate=16000` (big-endian, RFC 2586) or `application/octet-stream` with `sample_rate` "
        "(little-endian).",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY["schema"]}, "required": ["file"]}
            },
            "audio/wav": _BINARY,
            "audio/flac": _BINARY,
            "audio/L16": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


# -- decoding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """The audio bytes of a request and how to read them (PCM when `pcm_rate` is set)."""

    data: bytes
    pcm_rate: int | None = None
    channels: int = 1
    big_endian: bool = False


def decode(upload: Upload, limits: Limits, sample_rate: int) -> np.ndarray:
    """The upload as float32 mono at `sample_rate` Hz; `Rejected` with the status if it is not usable."""
    if not upload.data:
        raise Rejected(400, "empty upload: the request carried no audio bytes")
    if upload.pcm_rate is not None:
        samples, rate = _decode_pcm(upload, limits)
    else:
        samples, rate = _decode_file(upload.data, limits)
    return mix_down(samples, rate, sample_rate)


def _decode_pcm(upload: Upload, limits: Limits) -> tuple[np.ndarray, int]:
    frame_bytes = 2 * upload.channels
    if len(upload.data) % frame_bytes:
        raise Rejected(400, f"{len(upload.data)} bytes are not whole 16-bit frames of {upload.channels} channel(s)")
    _check_header(len(upload.data) // frame_bytes, upload.pcm_rate, upload.channels, limits)
    pcm = np.frombuffer(upload.data, dtype=">i2" if upload.big_endian else "<i2")
    samples = pcm.reshape(-1, upload.channels).astype(np.float32) / 32768.0
    return samples, upload.pcm_rate


def _decode_file(data: bytes, limits: Limits) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            rate = audio.samplerate
            _check_header(audio.frames, rate, audio.channels, limits)
            # Mixed down block by block: memory grows with the mono signal, not with every channel.
            blocks = [block.mean(axis=1) for block in audio.blocks(blocksize=1 << 16, dtype="float32", always_2d=True)]
            samples = np.concatenate(blocks)[:, None] if blocks else np.zeros((0, 1), dtype=np.float32)
            cut = truncation(audio, len(samples))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise Rejected(422, f"not a readable audio file ({_libsndfile_reason(error)})") from None
    if len(samples) == 0:
        raise Rejected(422, "the audio file holds no samples (empty or truncated)")
    if cut is not None:
        raise Rejected(422, f"the audio file is truncated: {cut}")
    return samples, rate


def _check_header(frames: int, rate: int, channels: int, limits: Limits) -> None:
    """Refuse, from what the header declares, audio too long or too large to decode."""
    if rate <= 0:
        raise Rejected(422, f"invalid sample rate {rate}")
    if rate > MAX_SAMPLE_RATE:
        raise Rejected(413, f"a sample rate of {rate} Hz is over this server's limit of {MAX_SAMPLE_RATE} Hz")
    if channels > MAX_CHANNELS:
        raise Rejected(413, f"{channels} channels are over this server's limit of {MAX_CHANNELS}")
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise Rejected(413, f"{seconds:.1f} s of audio is over this server's limit of {limits.max_seconds:g} s")
    if frames * channels > limits.max_decoded_samples:
        raise Rejected(413, f"{frames} frames x {channels} channels would decode to more samples than this server "
                            f"accepts ({limits.max_decoded_samples})")


def _libsndfile_reason(error: Exception) -> str:
    # Drop the "<_io.BytesIO object at 0x...>" that names the in-memory file.
    return re.sub(r"^Error opening <[^>]*>: ", "", str(error)).strip() or type(error).__name__


# -- reading requests ------------------------------------------------------------------------------
async def _limited(request: Request, limits: Limits) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk; `Rejected(413)` as soon as it passes the byte limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise Rejected(413, f"upload of {int(declared)} bytes is over this server's limit of {limits.max_bytes}")
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), limits.body_timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Rejected(408, f"the upload stalled: no data for {limits.body_timeout:g} s") from None
        received += len(chunk)
        if received > limits.max_bytes:
            raise Rejected(413, f"upload is over this server's limit of {limits.max_bytes} bytes")
        yield chunk


async def read_upload(request: Request, limits: Limits, sample_rate: int | None, channels: int) -> Upload:
    """The audio of a POST /predict request, by its Content-Type (see the module docstring)."""
    content_type = request.headers.get("content-type") or "application/octet-stream"
    media, params = _media_type(content_type)
    try:
        if media == "multipart/form-data":
            return await _read_multipart(request, limits)
        if media == _PCM_TYPE:
            rate = sample_rate or _int_param(params, "rate")
            if rate is None:
                raise Rejected(400, "audio/L16 needs a rate: 'audio/L16;rate=16000' or ?sample_rate=16000")
            data = b"".join([chunk async for chunk in _limited(request, limits)])
            return Upload(data, rate, _int_param(params, "channels") or channels, big_endian=True)
        if media.startswith(_ENCODED_TYPES):
            data = b"".join([chunk async for chunk in _limited(request, limits)])
            # octet-stream with a sample rate is raw PCM; without one it is an encoded file.
            is_pcm = media == "application/octet-stream" and sample_rate is not None
            return Upload(data, sample_rate if is_pcm else None, channels)
    except ClientDisconnect:
        raise Rejected(400, "the client disconnected before the upload was complete") from None
    raise Rejected(415, f"unsupported Content-Type {media!r}: send multipart/form-data, audio/* or octet-stream")


async def _read_multipart(request: Request, limits: Limits) -> Upload:
    parser = MultiPartParser(request.headers, _limited(request, limits), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise Rejected(400, f"malformed multipart upload: {error.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Rejected(400, "multipart upload without a 'file' field holding the audio")
        return Upload(await upload.read())
    finally:
        await form.close()


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    media, *rest = header.split(";")
    params = {}
    for item in rest:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def _int_param(params: Mapping[str, str], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) <= (MAX_SAMPLE_RATE if key == "rate" else MAX_CHANNELS):
        raise Rejected(400, f"invalid {key}={value!r} in Content-Type")
    return int(value)


# -- the application ---------------------------------------------------------------------------------
def create_app(
    predictors: Mapping[str, Predictor], limits: Limits | None = None, *, api_key: str | None = None,
    max_batch: int = 8, batch_wait_ms: float = 5.0,
) -> FastAPI:
    """A FastAPI app serving `predictors` by name (load them with `sertune.inference.load_many`).

    Clips of concurrent requests on one encoder are batched: up to `max_batch` clips (or windows),
    gathered for at most `batch_wait_ms` (`max_batch=1` encodes each piece alone). With `api_key`
    every route but /health needs `Authorization: Bearer <api_key>`.
    """
    if not predictors:
        raise SertuneError("no models to serve")
    limits = limits or Limits()
    models = dict(predictors)
    metrics = ServerMetrics()
    batcher = Batcher(models.values(), max_batch=max_batch, wait_seconds=batch_wait_ms / 1000,
                      observe=metrics.observe_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="sertune",
        version=__version__,
        description="Speech emotion recognition with parameter-efficient fine-tuned speech encoders.",
        lifespan=lifespan,
    )
    install_middleware(app, metrics, api_key, list(models))

    @app.exception_handler(Rejected)
    async def rejected(request: Request, error: Rejected) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.exception_handler(SertuneError)
    async def unusable_audio(request: Request, error: SertuneError) -> JSONResponse:
        # The predictor's own checks (too short for the encoder, NaN samples, bad window settings).
        return JSONResponse({"detail": str(error)}, status_code=422)

    mount_web(app)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the server answers and holds its models."""
        encoders = len({id(p.backbone) for p in models.values()})
        return Health(status="ok", version=__version__, models=list(models), encoders=encoders)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Requests and errors by route, model and status, latency, batch sizes and queue depth (Prometheus)."""
        return metrics.exposition()

    @app.get("/models", response_model=list[ModelInfo])
    async def list_models() -> list[ModelInfo]:
        """The served models: labels, encoder, tuning method, checkpoint, and which share an encoder."""
        return [
            replace(
                predictor.info(),
                shares_encoder_with=[n for n, p in models.items() if n != name and p.backbone is predictor.backbone],
            )
            for name, predictor in models.items()
        ]

    @app.post("/predict", response_model=Prediction, responses=_ERRORS, openapi_extra=_UPLOAD_BODY)
    async def predict(
        request: Request,
        model: str | None = Query(None, description="a served model name (optional when only one is served)"),
        sample_rate: int | None = Query(None, gt=0, le=MAX_SAMPLE_RATE, description="rate of raw PCM bodies"),
        channels: int = Query(1, ge=1, le=MAX_CHANNELS, description="interleaved channels of raw PCM bodies"),
        window: float | None = Query(None, description="window seconds for long audio"),
        hop: float | None = Query(None, description="hop seconds between windows"),
        segment: Literal["vad"] | None = Query(
            None, description="vad: cut the recording at speech pauses (Silero VAD) and answer its emotion timeline"
        ),
        min_segment: float | None = Query(None, description="with segment=vad: shortest segment, seconds"),
        max_segment: float | None = Query(None, description="with segment=vad: longest segment, seconds"),
    ) -> Prediction:
        """Emotion label and class probabilities of one clip (windows too, for long audio); with
        `segment=vad`, the timeline of a recording's speech segments instead (docs/serving.md)."""
        predictor = _pick(models, model)
        if segment is not None:
            if window is not None or hop is not None:
                raise Rejected(400, "segment=vad cuts at speech pauses: leave out window and hop")
            upload = await read_upload(request, limits, sample_rate, channels)

            def segmented() -> JSONResponse:
                wave = _waveform(predictor, upload, limits)
                try:
                    found = timeline(predictor, wave, min_segment=min_segment, max_segment=max_segment)
                except SertuneError as error:
                    raise Rejected(400, str(error)) from None
                return JSONResponse(found.to_dict())

            return await run_in_threadpool(segmented)
        plan = _window_plan(predictor, window, hop)
        batcher.expect(predictor, +1)
        try:
            return await _batched(request, predictor, plan, sample_rate, channels)
        finally:
            batcher.expect(predictor, -1)

    async def _batched(request: Request, predictor: Predictor, plan, sample_rate: int | None, channels: int
                       ) -> Prediction | Response:
        """Read and decode the request's audio, queue its clip or windows, and wait for the answer (or for the
        client to leave)."""
        upload = await read_upload(request, limits, sample_rate, channels)

        def prepare() -> tuple[np.ndarray, list]:
            wave = _waveform(predictor, upload, limits)
            spans = plan.spans(len(wave))
            if len(spans) > limits.max_windows:
                raise Rejected(413, f"{len(spans)} windows are over this server's limit of {limits.max_windows} per "
                                    "request; use a longer window or hop")
            return wave, spans

        wave, spans = await run_in_threadpool(prepare)
        job = batcher.submit(predictor, wave, spans)
        answer = asyncio.wrap_future(job.future)
        while True:
            done, _ = await asyncio.wait({answer}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return answer.result()
            if await request.is_disconnected():
                batcher.cancel(job)  # nobody will read the answer: its clips leave the queue
                return Response(status_code=499)

    return app


def _waveform(predictor: Predictor, upload: Upload, limits: Limits) -> np.ndarray:
    """The upload decoded and checked as the predictor's waveform (too short, out of range: a 422)."""
    return predictor.waveform(decode(upload, limits, predictor.sample_rate), predictor.sample_rate)


def _window_plan(predictor: Predictor, window: float | None, hop: float | None):
    """The request's windowing; a window or hop that is not a sane number of seconds is a 400."""
    try:
        return predictor.plan_for(window, hop)
    except SertuneError as error:
        raise Rejected(400, str(error)) from None


def _pick(models: Mapping[str, Predictor], name: str | None) -> Predictor:
    if name is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise Rejected(400, f"name a model with ?model=NAME; served: {', '.join(models)}")
    if name not in models:
        raise Rejected(404, f"no model named {name!r}; served: {', '.join(models)}")
    return models[name]
