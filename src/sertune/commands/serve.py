"""`sertune serve --model NAME=RUN_DIR ...`: an HTTP server for trained runs, one encoder copy per backbone.

Serves GET /health, GET /models, POST /predict?model=NAME, and the OpenAPI page at /docs. Runs
trained on the same encoder share one copy of it in memory. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys

from sertune.errors import SertuneError
from sertune.options import add_precision_argument


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
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    add_precision_argument(parser)
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest request body accepted")
    parser.add_argument("--max-duration", type=float, default=600.0, help="longest audio accepted, in seconds")
    parser.add_argument("--window", type=float, help="window seconds for long audio (default: the run's crop)")
    parser.add_argument("--hop", type=float, help="hop seconds between windows (default: half the window)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
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
    except ImportError as error:
        raise SertuneError(f"serving needs the 'serve' extra ({error}): pip install 'sertune[serve]'") from None
    import torch

    from sertune.inference import load_many

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_upload_mb <= 0 or args.max_duration <= 0:
        raise SertuneError("--max-upload-mb and --max-duration must be positive")
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
    limits = Limits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_seconds=args.max_duration)
    uvicorn.run(create_app(predictors, limits), host=args.host, port=args.port, log_level=args.log_level)
    return 0
