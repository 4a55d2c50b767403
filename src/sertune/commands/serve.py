"""`sertune serve --model NAME=RUN_DIR ...`: an HTTP server for trained runs, one encoder copy per backbone.

Serves the web page at /, GET /health, GET /models, GET /metrics (Prometheus), POST /predict?model=NAME,
and the OpenAPI page at /docs. Runs trained on the same encoder share one copy of it in memory, and
concurrent requests on it are encoded in shared batches. Every number and the device are checked
before anything loads. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys

from sertune.errors import SertuneError
from sertune.options import add_precision_argument, number_in
from sertune.prediction import MAX_WINDOW_SECONDS


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `serve`."""
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=RUN_DIR",
        help="a model to serve under NAME: a run, fold or checkpoint directory (repeat for more)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=number_in(0, 65535, kind=int), default=8000, help="TCP port to listen on")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    add_precision_argument(parser)
    parser.add_argument("--max-upload-mb", type=number_in(0, 1e6), default=50.0, help="largest request body accepted")
    parser.add_argument("--max-duration", type=number_in(0, 7 * 86400), default=600.0,
                        help="longest audio accepted, in seconds")
    parser.add_argument("--max-windows", type=number_in(0, 1e6, kind=int), default=1000,
                        help="most windows one request may be cut into (413 beyond)")
    parser.add_argument("--body-timeout", type=number_in(0, 3600), default=30.0,
                        help="seconds an upload may stall between two chunks before it is dropped (408)")
    parser.add_argument("--window", type=number_in(0, MAX_WINDOW_SECONDS),
                        help="window seconds for long audio (default: the run's crop)")
    parser.add_argument("--hop", type=number_in(0, MAX_WINDOW_SECONDS),
                        help="hop seconds between windows (default: half the window)")
    parser.add_argument("--max-batch", type=number_in(1, 1024, kind=int, low_open=False), default=8,
                        help="most clips (or windows) of concurrent requests encoded together (1: no batching)")
    parser.add_argument("--batch-wait-ms", type=number_in(0, 10_000, low_open=False), default=5.0,
                        help="how long the first waiting clip waits for others to share its batch")
    parser.add_argument("--api-key-file", help="require 'Authorization: Bearer <key>' (the key in FILE) on every "
                        "route but /health")
    parser.add_argument("--threads", type=number_in(0, 1024, kind=int), help="torch CPU threads (default: torch's "
                        "choice)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (requests are logged at info)",
    )
    parser.set_defaults(func=run)


def parse_models(values: list[str]) -> dict[str, str]:
    """NAME=RUN_DIR arguments as a dict; names must be unique."""
    models: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SertuneError(f"--model {value!r}: expected NAME=RUN_DIR")
        if name in models:
            raise SertuneError(f"--model: the name {name!r} is given twice")
        models[name] = path
    return models


def run(args: argparse.Namespace) -> int:
    """Load every model (errors stop here, before the port opens), then serve until interrupted."""
    try:
        import uvicorn

        from sertune.serve import Limits, create_app
        from sertune.serve_ops import read_api_key
    except ImportError as error:
        raise SertuneError(f"serving needs the 'serve' extra ({error}): pip install 'sertune[serve]'") from None
    import logging

    import torch

    from sertune.inference import load_many

    api_key = read_api_key(args.api_key_file) if args.api_key_file else None
    if args.threads:
        torch.set_num_threads(args.threads)
    predictors = load_many(
        parse_models(args.model), device=args.device, window=args.window, hop=args.hop, precision=args.precision
    )
    encoders: dict[int, list[str]] = {}
    for name, predictor in predictors.items():
        encoders.setdefault(id(predictor.backbone), []).append(name)
    for names in encoders.values():
        first = predictors[names[0]]
        described = ", ".join(f"{n} ({predictors[n].classifier.tuning_config.method})" for n in names)
        print(
            f"sertune serve: {first.backbone.name} on {first.backbone.device}, precision {first.precision} "
            f"({first.precision_reason}): {described}",
            file=sys.stderr,
        )
    limits = Limits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_seconds=args.max_duration,
                    max_windows=args.max_windows, body_timeout=args.body_timeout)
    app = create_app(predictors, limits, api_key=api_key, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    # One access line per request, with its id, from the app itself (uvicorn's own has no id).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access = logging.getLogger("sertune.access")
    access.addHandler(handler)
    access.setLevel(args.log_level.upper())
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
