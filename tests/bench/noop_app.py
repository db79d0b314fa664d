"""A no-op endpoint on the API's own server stack: the ceiling commands/s is measured against.

`python -m tests.bench.noop_app --port P` serves `POST /v1/noop` with what `services.api`
serves every route with: FastAPI with the same default response class, error handlers and
middleware (HttpMetrics, LegacyLocality, BodyLimit, in the same order), run by the same
`uvicorn.run` call (its default event loop and HTTP parser). The route reads nothing and
answers 201 with a small JSON body; no registry, read models or projector behind it.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

from services.api import progress
from services.api.app import MAX_BODY_BYTES, TELEMETRY_OFF
from services.api.errors import install
from services.api.limits import BodyLimit
from services.api.responses import OrjsonResponse
from services.metrics import HttpMetrics, Metrics


def create_noop_app() -> FastAPI:
    """The API's stack around one route that does nothing (mirrors `services.api.app`)."""
    metrics = Metrics()
    app = FastAPI(title="no-op", default_response_class=OrjsonResponse, telemetry=TELEMETRY_OFF)
    app.state.metrics = metrics
    install(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(progress.LegacyLocality)
    app.add_middleware(HttpMetrics, metrics=metrics)

    @app.post("/v1/noop", status_code=201)
    async def noop() -> dict[str, Any]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.noop_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_noop_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
