"""Operator endpoints: liveness and the live feed of counts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.api.deps import READ, backbone_of

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    backbone = backbone_of(request)
    projector = backbone.projector
    return {
        "status": "ok",
        "event_store_position": backbone.registry.recorder.max_notification_id() or 0,
        "projected_events": projector.stored if projector else None,
        "projector_alive": bool(backbone.thread and backbone.thread.is_alive()),
    }


@router.get("/v1/feed", dependencies=[READ])
async def feed(request: Request) -> StreamingResponse:
    """Server-sent events: one `counts` event per stored batch (token may be ?token=)."""
    return StreamingResponse(
        backbone_of(request).feed.stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
