"""Operator endpoints: liveness, readiness, metrics, and the live feed of counts."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from projections.runner import Projector
from services.api.deps import FEED, backbone_of
from services.api.responses import OrjsonResponse, errors
from services.settings import Settings

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

router = APIRouter()

RELAY_TIMEOUT_S = 1.0
HALTED = ("paused", "failed", "stopped")  # states that wait for an operator (or a restart)


READINESS = {
    "type": "object",
    "required": ["status", "components", "reasons"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unready"]},
        "components": {"type": "object", "description": "each component's state (see README)"},
        "reasons": {"type": "array", "items": {"type": "string"}, "description": "why unready"},
    },
}


def _readiness(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": READINESS}}}


@router.get("/healthz", responses=errors(roles=False))
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: 200 while the process serves, whatever its components do (see /readyz)."""
    backbone = backbone_of(request)
    projector = backbone.projector
    store = _event_store(backbone)
    components: dict[str, Any] = {"event_store": store}
    if projector is not None:
        for name, each, thread in backbone.projectors():
            components[name] = _projector(each, thread)
    return {
        "status": "ok",
        "event_store_position": store.get("position"),
        "projected_events": projector.stored if projector else None,
        "projector_alive": bool(backbone.thread and backbone.thread.is_alive()),
        "components": components,
    }


@router.get(
    "/readyz",
    responses={
        200: _readiness("ready: every component works and keeps up"),
        503: _readiness("not ready: see `reasons`"),
        **errors(roles=False),
    },
)
def readyz(request: Request) -> OrjsonResponse:
    """Readiness: 200 when every component works and keeps up, 503 with the reasons if not."""
    backbone = backbone_of(request)
    settings = backbone.settings
    components: dict[str, Any] = {}
    reasons: list[str] = []
    for name, projector, thread in backbone.projectors():
        state = components[name] = _projector(projector, thread)
        if not state["thread_alive"]:
            reasons.append(f"{name} thread is not running (state {state['state']})")
        reasons += component_reasons(name, state, settings)
    signer, thread = backbone.signer, backbone.signer_thread
    if signer is not None:
        state = components["signer"] = {
            **signer.health.as_dict(), "thread_alive": bool(thread and thread.is_alive()),
            "appended": signer.appended, "checkpoints_signed": signer.signed,
        }  # fmt: skip
        if not state["thread_alive"]:
            reasons.append(f"signer thread is not running (state {state['state']})")
        reasons += component_reasons("signer", state, settings)
    store = components["event_store"] = _event_store(backbone)
    if not store["ok"]:
        reasons.append(f"event_store cannot be read: {store['error']}")
    model = components["read_model"] = _read_model(backbone)
    if "error" in model:
        reasons.append(f"read_model cannot be read: {model['error']}")
    elif not model["complete"]:
        reasons.append(
            f"read_model is incomplete: rebuilt at {model['rebuilt_at']} without "
            f"{model['missing_offsets']} events the topic no longer holds"
        )
    relay = components["relay"] = _relay(settings)
    if relay["monitored"]:
        reasons += (
            [f"relay metrics unreachable at {relay['url']}: {relay['error']}"]
            if "error" in relay
            else component_reasons("relay", relay, settings)
        )
    body = {"status": "unready" if reasons else "ready", "components": components,
            "reasons": reasons}  # fmt: skip
    return OrjsonResponse(body, status_code=503 if reasons else 200)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "the Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(roles=False),
    },
)
def metrics(request: Request) -> Response:
    """This process's metrics in the Prometheus text format (eid_...; see README)."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def component_reasons(name: str, health: dict[str, Any], settings: Settings) -> list[str]:
    """Why a component (a `ComponentHealth.as_dict()`) makes the service unready, if it does:
    halted (paused, failed, stopped), not started yet, stuck, or lagging past the limit."""
    reasons = []
    state, detail = health.get("state"), health.get("detail")
    if state in HALTED:
        reasons.append(f"{name} is {state}" + (f": {detail}" if detail else ""))
    elif state == "starting":
        reasons.append(f"{name} is starting")
    elif state not in ("running", "retrying"):
        reasons.append(f"{name} is in an unknown state {state!r}")
    since = health.get("seconds_since_progress")
    if state not in HALTED and since is not None and since > settings.ready_stuck_seconds:
        reasons.append(
            f"{name} is stuck: no progress for {since:.0f} s "
            f"(READY_STUCK_SECONDS={settings.ready_stuck_seconds:g})"
            + (f"; last error: {health['last_error']}" if health.get("last_error") else "")
        )
    lag = health.get("lag")
    if lag is not None and lag > settings.ready_max_lag:
        reasons.append(
            f"{name} is lagging: {lag:.0f} events behind (READY_MAX_LAG={settings.ready_max_lag})"
        )
    return reasons


def _projector(projector: Projector, thread: threading.Thread | None) -> dict[str, Any]:
    return {
        **projector.health.as_dict(),
        "thread_alive": bool(thread and thread.is_alive()),
        "stored": projector.stored,
        "dead_letters": projector.dead_letters.sent,
        "paused_partitions": sorted(projector.paused),
    }


def _event_store(backbone: Backbone) -> dict[str, Any]:
    try:
        position = backbone.registry.recorder.max_notification_id() or 0
    except Exception as exc:
        return {"ok": False, "position": None, "error": _describe(exc)}
    return {"ok": True, "position": position}


def _read_model(backbone: Backbone) -> dict[str, Any]:
    try:
        return backbone.trail.completeness()
    except Exception as exc:
        return {"complete": None, "error": _describe(exc)}


def _relay(settings: Settings) -> dict[str, Any]:
    """The relay (its own process), read from its metrics when RELAY_METRICS_URL is set."""
    url = settings.relay_metrics_url
    if not url:
        return {"monitored": False,
                "detail": "the relay runs as its own process: set RELAY_METRICS_URL to check "
                          "it from here, or scrape its metrics port"}  # fmt: skip
    try:
        response = httpx.get(url, timeout=RELAY_TIMEOUT_S)
        response.raise_for_status()
        return {"monitored": True, "url": url, **relay_from_metrics(response.text)}
    except (httpx.HTTPError, ValueError) as exc:
        return {"monitored": True, "url": url, "error": _describe(exc)}


def relay_from_metrics(text: str) -> dict[str, Any]:
    """The relay's state, lag, progress and totals from its Prometheus text."""
    found: dict[str, Any] = {"state": None, "lag": None, "seconds_since_progress": None}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("component", "relay") != "relay":
                continue
            if sample.name == "eid_component_state" and sample.value == 1:
                found["state"] = sample.labels["state"]
            elif sample.name == "eid_relay_lag_events":
                found["lag"] = int(sample.value)
            elif sample.name == "eid_component_seconds_since_progress":
                found["seconds_since_progress"] = round(sample.value, 1)
            elif sample.name == "eid_component_restarts_total":
                found["restarts"] = int(sample.value)
            elif sample.name == "eid_relay_published_total":
                found["published"] = int(sample.value)
            elif sample.name == "eid_relay_position":
                found["position"] = int(sample.value)
    if found["state"] is None:
        raise ValueError("no eid_component_state of the relay in its metrics")
    return found


def _describe(exc: BaseException) -> str:
    """The error's class and first line (store and engine errors carry no personal data)."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@router.get(
    "/v1/feed",
    dependencies=[FEED],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "an endless stream of server-sent events (`hello`, then `counts`)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors(),
    },
)
async def feed(request: Request) -> StreamingResponse:
    """Server-sent events: one `counts` event per stored batch. The token may come as
    `?token=` here (EventSource cannot send headers), and on no other endpoint."""
    return StreamingResponse(
        backbone_of(request).feed.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
