"""What operating the server needs besides answering: Prometheus metrics, API keys, request ids.

`ServerMetrics` keeps its own registry (not prometheus-client's global one), so that several apps
in one process, as in tests, count separately. `install_middleware` adds one ASGI middleware that
gives every request an id (the client's `X-Request-ID` when it is a sane token, else a new one),
checks the API key when the server has one, times the request, counts it by route, model and
status, and writes one access-log line with the id.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sertune.errors import SertuneError

access_log = logging.getLogger("sertune.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Routes that answer without a key: load balancers and orchestrators probe liveness unauthenticated.
OPEN_ROUTES = ("/health",)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sertune_requests", "HTTP requests by route, model and status",
                                ["route", "model", "status"], registry=self.registry)
        self.errors = Counter("sertune_request_errors", "HTTP requests answered 4xx or 5xx, by route, model and status",
                              ["route", "model", "status"], registry=self.registry)
        self.latency = Histogram("sertune_request_seconds", "Time from request to answer, by route and model",
                                 ["route", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("sertune_batch_clips", "Clips (or windows) encoded in one forward",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("sertune_queue_clips", "Clips (or windows) waiting for the encoder",
                                 registry=self.registry)

    def observe_batch(self, clips: int, waiting: int) -> None:
        """Record one forward of `clips` pieces, with `waiting` still queued (the batcher calls this)."""
        self.batch_size.observe(clips)
        self.queue_depth.set(waiting)

    def exposition(self) -> Response:
        """The metrics in Prometheus text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def read_api_key(path: str | Path) -> str:
    """The key in `path` (surrounding whitespace removed); a missing, unreadable or empty file is an error."""
    path = Path(path)
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SertuneError(f"--api-key-file {path}: cannot read it ({error})") from None
    if not key or any(c.isspace() for c in key):
        raise SertuneError(f"--api-key-file {path}: the file must hold one key (no spaces), found "
                           f"{'nothing' if not key else 'whitespace inside'}")
    return key


def _authorised(headers: Headers, key: str) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ: no timing hint of the key.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class OperationsMiddleware:
    """Request ids, the API key check, metrics and the access log (see the module docstring).

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps
    `receive`, and behind it a route no longer sees its client disconnect.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, api_key: str | None, models: list[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.models = set(models)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500  # what the client gets if the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        path = scope["path"]
        try:
            if self.api_key is not None and path not in OPEN_ROUTES and not _authorised(headers, self.api_key):
                refusal = JSONResponse({"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                                       status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, path, status, time.perf_counter() - began, request_id)

    def _record(self, scope: Scope, path: str, status: int, seconds: float, request_id: str) -> None:
        route = path if path in ("/predict", "/models", "/health", "/metrics", "/") else "other"
        model = ""
        if route == "/predict":
            model = QueryParams(scope.get("query_string", b"")).get("model", "")
            model = model if not model or model in self.models else "unknown"
        metrics, code = self.metrics, str(status)
        metrics.requests.labels(route, model, code).inc()
        if status >= 400:
            metrics.errors.labels(route, model, code).inc()
        metrics.latency.labels(route, model).observe(seconds)
        client = scope.get("client") or ("-", 0)
        access_log.info('%s %s "%s %s" %s %.1f ms', request_id, client[0], scope["method"], path, code, seconds * 1e3)


def install_middleware(app: FastAPI, metrics: ServerMetrics, api_key: str | None, models: list[str]) -> None:
    """Add `OperationsMiddleware` to `app`; `models` are the served names (any other `?model=` counts as
    `unknown`, so clients cannot grow the label set)."""
    app.add_middleware(OperationsMiddleware, metrics=metrics, api_key=api_key, models=models)
