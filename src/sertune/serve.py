"""HTTP server for trained runs (FastAPI): many adapters on one copy of each encoder.

`create_app(predictors)` serves predictors from `sertune.inference.load_many`. POST /predict takes
an uploaded audio file (multipart field `file`), an encoded file as the raw body, or raw 16-bit
PCM, and answers what `Predictor.predict` returns. Bad input gets a specific 4xx, never a 500:

    400  empty upload, no `file` field, malformed multipart or PCM, PCM without a sample rate,
         no `model` while several are served
    404  unknown model
    413  upload over --max-upload-mb, or audio over --max-duration seconds (checked from the header,
         before decoding)
    415  a Content-Type that is neither multipart, audio/* nor application/octet-stream
    422  bytes that are not decodable audio, a truncated file, a clip shorter than the encoder's
         minimum input, NaN samples

Silence is answered like any audio, with `"silent": true` (see docs/serving.md for why).

Inference runs in Starlette's thread pool, so the event loop keeps accepting and parsing requests
while a model computes; predictors sharing an encoder take turns on its lock (sertune.inference).
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from sertune import __version__
from sertune.audio import mix_down, truncation
from sertune.errors import SertuneError
from sertune.inference import ModelInfo, Prediction, Predictor

MAX_SAMPLE_RATE = 384_000
_ENCODED_TYPES = ("application/octet-stream", "audio/")
_PCM_TYPE = "audio/l16"


@dataclass(frozen=True)
class Limits:
    """What one request may send: bytes on the wire and seconds of audio."""

    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 600.0


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


_ERRORS = {status: {"model": ErrorMessage} for status in (400, 404, 413, 415, 422)}
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
    _check_duration(len(upload.data) // frame_bytes, upload.pcm_rate, limits)
    pcm = np.frombuffer(upload.data, dtype=">i2" if upload.big_endian else "<i2")
    samples = pcm.reshape(-1, upload.channels).astype(np.float32) / 32768.0
    return samples, upload.pcm_rate


def _decode_file(data: bytes, limits: Limits) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            declared, rate = audio.frames, audio.samplerate
            _check_duration(declared, rate, limits)
            samples = audio.read(dtype="float32", always_2d=True)
            cut = truncation(audio, len(samples))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise Rejected(422, f"not a readable audio file ({_libsndfile_reason(error)})") from None
    if len(samples) == 0:
        raise Rejected(422, "the audio file holds no samples (empty or truncated)")
    if cut is not None:
        raise Rejected(422, f"the audio file is truncated: {cut}")
    return samples, rate


def _check_duration(frames: int, rate: int, limits: Limits) -> None:
    if rate <= 0:
        raise Rejected(422, f"invalid sample rate {rate}")
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise Rejected(413, f"{seconds:.1f} s of audio is over this server's limit of {limits.max_seconds:g} s")


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
    async for chunk in request.stream():
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
    if not value.isdigit() or not 0 < int(value) <= MAX_SAMPLE_RATE:
        raise Rejected(400, f"invalid {key}={value!r} in Content-Type")
    return int(value)


# -- the application ---------------------------------------------------------------------------------
def create_app(predictors: Mapping[str, Predictor], limits: Limits | None = None) -> FastAPI:
    """A FastAPI app serving `predictors` by name (load them with `sertune.inference.load_many`)."""
    if not predictors:
        raise SertuneError("no models to serve")
    limits = limits or Limits()
    models = dict(predictors)
    app = FastAPI(
        title="sertune",
        version=__version__,
        description="Speech emotion recognition with parameter-efficient fine-tuned speech encoders.",
    )

    @app.exception_handler(Rejected)
    async def rejected(request: Request, error: Rejected) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.exception_handler(SertuneError)
    async def unusable_audio(request: Request, error: SertuneError) -> JSONResponse:
        # The predictor's own checks (too short for the encoder, NaN samples, bad window settings).
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the server answers and holds its models."""
        encoders = len({id(p.backbone) for p in models.values()})
        return Health(status="ok", version=__version__, models=list(models), encoders=encoders)

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
        channels: int = Query(1, ge=1, le=32, description="interleaved channels of raw PCM bodies"),
        window: float | None = Query(None, gt=0, description="window seconds for long audio"),
        hop: float | None = Query(None, gt=0, description="hop seconds between windows"),
    ) -> Prediction:
        """Emotion label and class probabilities of one clip (windows too, for long audio)."""
        predictor = _pick(models, model)
        upload = await read_upload(request, limits, sample_rate, channels)

        def work() -> Prediction:
            wave = decode(upload, limits, predictor.sample_rate)
            return predictor.predict(wave, window=window, hop=hop)

        return await run_in_threadpool(work)

    return app


def _pick(models: Mapping[str, Predictor], name: str | None) -> Predictor:
    if name is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise Rejected(400, f"name a model with ?model=NAME; served: {', '.join(models)}")
    if name not in models:
        raise Rejected(404, f"no model named {name!r}; served: {', '.join(models)}")
    return models[name]
