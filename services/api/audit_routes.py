"""Auditor and admin reads of personal history: every read is recorded before it is answered.

The personal number travels in the JSON body, never in a URL (URLs end up in proxy and
browser logs); the retired GET paths that carried it answer 410.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request

from services.api.deps import ADMIN, AUDIT, EARLIEST, backbone_of, bounded, gone
from services.api.errors import ApiError
from services.api.models import HistoryIn, Instant, StateIn, WholeNumber
from services.api.responses import errors
from services.registry.application import Registry
from services.registry.domain import Account
from services.signer.proofs import SignedView, attach_proofs, checkpoint_json, verify_signed_history

if TYPE_CHECKING:
    from services.api.bootstrap import Backbone

# The personal fields an event's payload holds sealed (`sealed_<name>`), shown in clear to the
# auditor beside the sealed value.
PERSONAL_FIELDS = ("full_name", "date_of_birth", "sex", "reason")

router = APIRouter()


def _audited_account(
    request: Request, citizen_id: str, purpose: str, scope: str
) -> tuple[Account, dict[int, datetime]]:
    """The citizen's account (and when each of its events was recorded), after recording this
    read of it; 404 if there is none."""
    account, recorded = _account(request, citizen_id, purpose, scope)
    _record(request, account, purpose, scope)
    return account, recorded


def _account(
    request: Request, citizen_id: str, purpose: str, scope: str
) -> tuple[Account, dict[int, datetime]]:
    """The citizen's account (and when each of its events was recorded); 404 if there is none.

    A read of a number with no account is recorded too (under the account id the number would
    have), so that probing for who is registered leaves a trace.
    """
    registry = backbone_of(request).registry
    account, recorded = registry.account_with_times(citizen_id)
    if account is None:
        place = {"commune_code": "", "province_code": ""}
        registry.record_access_to(registry.account_id(citizen_id), place, request.state.actor,
                                  request.state.role, purpose, scope)  # fmt: skip
        raise ApiError(404, "account_not_found", "no history is recorded for this citizen")
    return account, recorded


def _record(request: Request, account: Account, purpose: str, scope: str) -> None:
    """Record this read of `account` (committed when this returns; else it raises)."""
    actor, role = request.state.actor, request.state.role
    backbone_of(request).registry.record_access(account, actor, role, purpose, scope)


# A history read waits on three engines: the read model (watermarks, then rows, then the
# signed log's proofs of them) in one thread, and the event store (the account, then the
# commit of the read's access record) in another, side by side. The route awaits them on the
# event loop: no request thread is held, and nothing that blocks (a store, a key read, a lock
# the command writer may hold) runs on the loop. An answer still leaves only once its record
# is committed, and personal fields are opened only after that.
_QUERIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="history-rows")
_RECORDS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="history-record")


def revealed(registry: Registry, account_id: UUID, event: dict[str, Any]) -> dict[str, Any]:
    """A copy of `event` whose payload also holds its personal fields in clear ("[erased]"
    once the citizen's data is erased); the sealed values stay as stored."""
    payload = dict(event["payload"])
    for name in PERSONAL_FIELDS:
        sealed = payload.get(f"sealed_{name}")
        if isinstance(sealed, str):
            payload[name] = registry.reveal(account_id, sealed)
    return {**event, "payload": payload}


@dataclass(frozen=True)
class _Shown:
    """What the read model shows of one account, as of its watermarks, with its proofs; the
    events with their personal fields in clear once the read is recorded (else None)."""

    watermark: datetime | None
    reads_watermark: datetime | None
    events: list[dict[str, Any]]
    reads: list[dict[str, Any]]
    view: SignedView | None
    clear: list[dict[str, Any]] | None


def _shown(backbone: Backbone, account_id: UUID, audited: Future[Any]) -> _Shown:
    """The read model's part of a history read (one thread, in this order)."""
    # The watermarks first, the rows after: whatever the projectors had read by then is in the
    # rows; read the other way round, a row stored in between would count as missing. (The
    # event store may be read before or after: it only grows, and what it holds beyond the
    # watermark is pending either way.)
    projector, readers = backbone.projector, backbone.access_projector
    watermark = (
        projector.watermark(str(account_id)) if projector else backbone.trail.watermark(account_id)
    )
    reads_watermark = readers.watermark(str(account_id)) if readers else watermark
    events, reads = backbone.trail.history_and_reads(account_id)
    view = attach_proofs(backbone.log, account_id, events, reads) if backbone.log else None
    try:
        audited.result()  # the record is usually committed by now: the query takes longer
    except BaseException:  # not recorded (the route answers with the error): nothing opened
        return _Shown(watermark, reads_watermark, events, reads, view, None)
    clear = [revealed(backbone.registry, account_id, e) for e in events]
    return _Shown(watermark, reads_watermark, events, reads, view, clear)


READ_ERRORS = errors({404: ["account_not_found"]}, body=True)


@router.post("/v1/citizens/history", dependencies=[AUDIT], responses=READ_ERRORS)
async def history(body: HistoryIn, request: Request) -> dict[str, Any]:
    """Every event of the citizen in order, with the chain and completeness verified, and the
    personal fields in clear for the auditor.

    The read itself is recorded (who, when, why) before anything is returned.
    """
    backbone = backbone_of(request)
    account_id = backbone.registry.account_id(body.citizen_id)
    audited = _RECORDS.submit(_audited_account, request, body.citizen_id, body.purpose, "history")
    shown = asyncio.wrap_future(_QUERIES.submit(_shown, backbone, account_id, audited))
    try:
        account, recorded = await asyncio.wrap_future(audited)  # committed, before any answer
    except BaseException:
        await asyncio.wait([shown])  # not left running behind the error, the one raised
        raise
    rows = await shown
    assert rows.clear is not None  # the record was committed
    origin = backbone.settings.checkpoint_origin
    verification = verify_signed_history(  # the rows exactly as stored, against what was signed
        origin, rows.events, rows.reads, recorded, rows.watermark, rows.reads_watermark,
        rows.view or SignedView(None, []),
    )  # fmt: skip
    backbone.metrics.verification(verification["status"])
    return {
        "citizen_id": body.citizen_id,
        "account_id": str(account.id),
        "state": account.snapshot_state(),
        "events": rows.clear,
        "reads": rows.reads,
        "checkpoint": checkpoint_json(origin, rows.view.checkpoint if rows.view else None),
        "verification": verification,
    }


@router.post("/v1/citizens/state", dependencies=[AUDIT], responses=READ_ERRORS)
def state(body: StateIn, request: Request) -> dict[str, Any]:
    """The account replayed from the event store up to `as_of` (default: now)."""
    moment = body.as_of or datetime.now(UTC)
    _audited_account(request, body.citizen_id, body.purpose, "state")
    account = backbone_of(request).registry.account_as_of(body.citizen_id, moment)
    if account is None:
        return {"as_of": moment.isoformat(), "exists": False, "version": 0}
    return {
        "as_of": moment.isoformat(), "exists": True, "account_id": str(account.id),
        "version": account.version, **account.snapshot_state(),
        "commune_code": account.commune_code, "province_code": account.province_code,
        "attempts": account.attempts,
    }  # fmt: skip


# Retired: the personal number was in the path. Any segment matches (plain str, nothing
# validated or echoed), nothing is recorded, and the answer names the replacement.
@router.get("/v1/citizens/{citizen_id}/history", status_code=410, include_in_schema=False)
async def history_gone(citizen_id: str) -> None:
    raise gone("POST /v1/citizens/history")


@router.get("/v1/citizens/{citizen_id}/state", status_code=410, include_in_schema=False)
async def state_gone(citizen_id: str) -> None:
    raise gone("POST /v1/citizens/state")


@router.get("/v1/access-log", dependencies=[ADMIN], responses=errors({422: ["invalid_request"]}))
def access_log(
    request: Request,
    since: Annotated[Instant | None, Query(description="default: 7 days before `until`")] = None,
    until: Annotated[Instant | None, Query(description="default: a minute from now")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000), WholeNumber] = 500,
) -> dict[str, Any]:
    """Reads of citizens' histories and states: who, when, what, for what stated purpose.
    Times are RFC 3339 with an offset; outside 1900-2299 they read as those bounds (no read is
    recorded there), and a window whose `since` is not before its `until` holds nothing."""
    end = bounded(until) if until else datetime.now(UTC) + timedelta(minutes=1)
    start = bounded(since) if since else max(end - timedelta(days=7), EARLIEST)
    return {"reads": backbone_of(request).trail.access_log(start, end, limit)}
