"""The HTTP API: `create_app(settings)` assembles the routers; the wiring is in bootstrap."""

from __future__ import annotations

from fastapi import FastAPI

from services.api import audit_routes, command_routes, dashboard, health, progress
from services.api.bootstrap import lifespan
from services.api.errors import install
from services.api.limits import BodyLimit
from services.api.responses import OrjsonResponse
from services.settings import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024


def create_app(settings: Settings, embedded_projector: bool = True) -> FastAPI:
    app = FastAPI(
        title="Project 06 e-ID event backbone",
        version="0.1.0",
        default_response_class=OrjsonResponse,
        lifespan=lifespan(settings, embedded_projector),
    )
    app.state.settings = settings
    install(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    for module in (command_routes, audit_routes, progress, health, dashboard):
        app.include_router(module.router)
    return app
