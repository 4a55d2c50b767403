"""The browser page of `sertune serve`: static HTML, CSS and JavaScript kept in the package (no build
step, no CDN, works offline), served at `/` by the same FastAPI app and calling its `/predict` API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its files under `/static/`."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")
