"""The HTTP API: `create_app(settings)` assembles the routers; the wiring is in bootstrap."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from services.api import (
    audit_routes,
    checkpoint_routes,
    command_routes,
    dashboard,
    erasure_routes,
    health,
    progress,
)
from services.api.bootstrap import lifespan
from services.api.errors import install
from services.api.limits import BodyLimit
from services.api.responses import OrjsonResponse
from services.metrics import HttpMetrics, Metrics
from services.settings import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024
# FastAPI's own OpenTelemetry spans, metrics and logs: off. The API exports its metrics itself
# (services.metrics, /metrics) and configures no OpenTelemetry provider, so these would record
# nothing; left on, FastAPI still asks the global providers on every request whether one was
# configured since (a tenth of the event loop's time on a registration, py-spy).
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings, embedded_projector: bool = True, embedded_signer: bool = True
) -> FastAPI:
    metrics = Metrics()  # this app's own registry (tests build many apps in one process)
    app = FastAPI(
        title="Project 06 e-ID event backbone",
        version="0.1.0",
        default_response_class=OrjsonResponse,
        telemetry=TELEMETRY_OFF,
        lifespan=lifespan(settings, embedded_projector, metrics, embedded_signer),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(progress.LegacyLocality)
    app.add_middleware(HttpMetrics, metrics=metrics)  # outermost: bodies refused count too
    for module in (command_routes, audit_routes, progress, health, dashboard):
        app.include_router(module.router)
    app.include_router(erasure_routes.router)
    app.include_router(checkpoint_routes.router)
    return app
