"""The live progress dashboard: `GET /` serves a static page that reads the API with a token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
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


def _serve(name: str, media_type: str) -> Callable[[], FileResponse]:
    def serve() -> FileResponse:
        return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)

    serve.__name__ = f"dashboard_{name.replace('.', '_')}"
    return serve


# `GET /` (the page) and its script and style sheet; all public, none in the schema.
router = APIRouter(include_in_schema=False)
for _path, (_name, _media_type) in ASSETS.items():
    router.add_api_route(_path, _serve(_name, _media_type), methods=["GET"])
