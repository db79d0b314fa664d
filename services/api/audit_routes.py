"""Auditor and admin reads of personal history: every read is recorded before it is answered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from projections.audit import verify_history
from services.api.deps import ADMIN, AUDIT, PersonalNumberPath, aware, backbone_of
from services.api.errors import ApiError
from services.registry.domain import Account

Purpose = Annotated[str, Query(min_length=3, max_length=200, description="why the data is read")]

router = APIRouter()


def _audited_account(request: Request, citizen_id: str, purpose: str, scope: str) -> Account:
    """The citizen's account, after recording this read of it; 404 if there is none."""
    registry = backbone_of(request).registry
    account = registry.account(citizen_id)
    if account is None:
        raise ApiError(404, "account_not_found", "no history is recorded for this citizen")
    registry.record_access(account, request.state.actor, request.state.role, purpose, scope)
    return account


@router.get("/v1/citizens/{citizen_id}/history", dependencies=[AUDIT])
def history(citizen_id: PersonalNumberPath, purpose: Purpose, request: Request) -> dict[str, Any]:
    """Every event of the citizen in order, with the chain and completeness verified.

    The read itself is recorded (who, when, why) before anything is returned.
    """
    backbone = backbone_of(request)
    account = _audited_account(request, citizen_id, purpose, "history")
    events = backbone.trail.history(account.id)
    recorded = backbone.registry.recorded_times(account.id)
    projector = backbone.projector
    watermark = (
        projector.watermark(str(account.id)) if projector else backbone.trail.watermark(account.id)
    )
    verification = verify_history(events, recorded, watermark)
    backbone.metrics.verification(verification["status"])
    return {
        "account_id": str(account.id),
        "state": account.snapshot_state(),
        "events": events,
        "verification": verification,
    }


@router.get("/v1/citizens/{citizen_id}/state", dependencies=[AUDIT])
def state(
    citizen_id: PersonalNumberPath,
    purpose: Purpose,
    request: Request,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """The account replayed from the event store up to `as_of` (default: now)."""
    moment = aware(as_of) if as_of else datetime.now(UTC)
    _audited_account(request, citizen_id, purpose, "state")
    account = backbone_of(request).registry.account_as_of(citizen_id, moment)
    if account is None:
        return {"as_of": moment.isoformat(), "exists": False, "version": 0}
    return {
        "as_of": moment.isoformat(), "exists": True, "account_id": str(account.id),
        "version": account.version, **account.snapshot_state(),
        "commune_code": account.commune_code, "province_code": account.province_code,
        "attempts": account.attempts,
    }  # fmt: skip


@router.get("/v1/access-log", dependencies=[ADMIN])
def access_log(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> dict[str, Any]:
    """Reads of citizens' histories and states: who, when, what, for what stated purpose."""
    until = aware(until) if until else datetime.now(UTC) + timedelta(minutes=1)
    since = aware(since) if since else until - timedelta(days=7)
    return {"reads": backbone_of(request).trail.access_log(since, until, limit)}
