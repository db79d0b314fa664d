"""The live progress dashboard: `GET /` serves a static page that reads the API with a token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
# The page holds no data and loads nothing from elsewhere; the token stays in the browser.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def install(app: FastAPI) -> None:
    """Add `GET /` (the page) and its script and style sheet; all public, none in the schema."""
    for path, (name, media_type) in ASSETS.items():
        app.add_api_route(path, _serve(name, media_type), methods=["GET"], include_in_schema=False)


def _serve(name: str, media_type: str) -> Callable[[], FileResponse]:
    def serve() -> FileResponse:
        return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)

    serve.__name__ = f"dashboard_{name.replace('.', '_')}"
    return serve
